"""TensorFlow's own log output under `zoo`: quiet unless --verbose, and a
user's TF_CPP_MIN_LOG_LEVEL wins. tests/zoo/test_cli.py runs a command."""

import logging
import os

import pytest

from zoo import logs

# What TensorFlow 2.21 writes while its libraries load, before it reads the level.
LOADING = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
           b"I0000 00:00:1795685964.429424   27154 port.cc:153] oneDNN custom operations are on.\n",
           b"W0000 00:00:1795685964.429767   27154 cudart_stub.cc:31] Could not find cuda drivers.\n",
           b"E0000 00:00:1795685974.717571   27154 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n",
           b"F0000 00:00:1795685974.717571   27154 check.cc:1] Check failed: a fatal error\n"]


@pytest.mark.parametrize("level, kept", [(3, [4]), (2, [3, 4]), (1, [2, 3, 4]), (0, [0, 1, 2, 3, 4])])
def test_log_lines_below_the_level_are_dropped_and_the_rest_kept(capfd, level, kept):
    with logs._stderr_without_logs_below(level):
        for line in LOADING:
            os.write(2, line)
        os.write(2, b"a warning of zoo's own\n")  # as Python's sys.stderr writes it
    assert capfd.readouterr().err == b"".join(LOADING[i] for i in kept).decode() + "a warning of zoo's own\n"


@pytest.fixture
def loggers():
    """The two loggers as a fresh process has them (an earlier in-process
    `zoo` command may have quietened them), restored afterwards."""
    levels = {name: logging.getLogger(name).level for name in ("tensorflow", "absl")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("user, verbose, level", [(None, False, "3"), ("1", False, "1"), (None, True, None),
                                                  ("0", True, "0")])
def test_the_level_is_3_unless_verbose_or_the_user_set_one(monkeypatch, loggers, user, verbose, level):
    monkeypatch.setattr(logs, "USER_LEVEL", user)
    monkeypatch.setenv(logs.LEVEL, user or "2")  # "2": what `import zoo` set
    logs.import_tensorflow(verbose)
    assert os.environ.get(logs.LEVEL) == level
    quiet = logging.ERROR if not verbose else logging.NOTSET
    assert logging.getLogger("tensorflow").level == logging.getLogger("absl").level == quiet

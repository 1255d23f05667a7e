"""The frameworks' own log output: quiet unless asked for.

TensorFlow's C++ logging honours `TF_CPP_MIN_LOG_LEVEL` (0 all, 1 no info
lines, 2 no warnings, 3 no errors either), read once, when TensorFlow is
loaded. zoo sets 2 on `import zoo` unless the user set it; the `zoo`
command sets 3 unless the user set it, or leaves it unset with `--verbose`.

Some lines escape the level: those written while TensorFlow's shared
libraries load, before it is read ("WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR", "oneDNN custom
operations are on", "Could not find cuda drivers"). `import_tensorflow`
drops the log lines below the level from what TensorFlow writes to the
process's stderr while it loads; every other line, and everything written
after, passes unchanged.
"""

import contextlib
import logging
import os
import re
import sys
import threading

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# The user's own setting, read before zoo sets its default below.
USER_LEVEL = os.environ.get(LEVEL)
# TensorFlow's C++ info lines drown the progress output; a user's own setting wins.
os.environ.setdefault(LEVEL, "2")

# A glog/absl line: severity (I, W, E, F), date, time, thread, file:line].
_LOG_LINE = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ [^ \]]+:\d+\] ")
_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# The Python loggers of TensorFlow and absl (which Keras and TensorFlow log warnings to).
_LOGGERS = ("tensorflow", "absl")


def import_tensorflow(verbose=False):
    """Import TensorFlow for a `zoo` command.

    Quiet (the default): its C++ log lines below `TF_CPP_MIN_LOG_LEVEL` (3,
    unless the user set it) are dropped, also those it writes while it
    loads, and the `tensorflow` and `absl` loggers show errors only.
    `verbose`: everything TensorFlow says, at its own default level unless
    the user set one.
    """
    if verbose:
        if USER_LEVEL is None:
            os.environ.pop(LEVEL, None)
        filtered = contextlib.nullcontext()
    else:
        os.environ[LEVEL] = USER_LEVEL if USER_LEVEL is not None else "3"
        import absl.logging  # noqa: F401 (absl makes its logger its own class: before we get it)

        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        filtered = _stderr_without_logs_below(_level())
    with filtered:
        import tensorflow  # noqa: F401


def _level():
    try:
        return int(os.environ[LEVEL])
    except ValueError:  # not a level: drop nothing
        return 0


@contextlib.contextmanager
def _stderr_without_logs_below(level):
    """File descriptor 2, inside, goes through a thread that drops the
    glog/absl lines of a severity below `level` (I 0, W 1, E 2, F 3), and
    absl's notice when it drops any; the rest passes as it comes."""
    if level <= 0:
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    forward = threading.Thread(target=_forward, args=(read, os.dup(original), level), daemon=True)
    forward.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the thread reads to its end
        os.close(original)
        # A process started inside would still hold the pipe: do not wait for it.
        forward.join(timeout=5)


def _forward(read, write, level):
    with open(read, "rb") as source, open(write, "wb", buffering=0) as sink:
        for line in source:
            found = _LOG_LINE.match(line)
            if (found and "IWEF".index(found.group(1).decode()) < level) or line.rstrip() == _ABSL_NOTICE:
                continue
            sink.write(line)

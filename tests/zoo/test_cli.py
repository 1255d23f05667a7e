"""The `zoo` command line: the commands that need no framework load none,
and the ones that load TensorFlow keep its log lines off the terminal.

Each command runs in a fresh Python, as `zoo` does; this test process has
imported Keras already (tests/conftest.py), which is what "the full path"
means below.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.zoo.conftest import SPECS, write_spec
from zoo.backbones import list_backbones
from zoo.cli import main
from zoo.spec import QUICK_VALID, SpecError
from zoo.train import validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAMEWORKS = ["jax", "keras", "keras_hub", "tensorflow"]
SPEC_FILES = sorted(os.path.join(SPECS, f) for f in os.listdir(SPECS) if f.endswith(".json") and f != "schema.json")
PRETRAIN = os.path.join(SPECS, "digits_pretrain.json")
# Runs `zoo` on its arguments, then writes the frameworks it imported to the file $IMPORTED.
PROBE = f"""
import json, os, sys
from zoo.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:  # --help
    status = exit.code
with open(os.environ["IMPORTED"], "w") as f:
    json.dump(sorted({{name.split(".")[0] for name in sys.modules}} & set({FRAMEWORKS!r})), f)
sys.exit(status)
"""


def zoo(*args, tmp_path, env=None):
    """`zoo ARGS` in a fresh Python: `(exit status, stdout, stderr, frameworks imported)`."""
    imported = tmp_path / "imported.json"
    environment = {**os.environ, "PYTHONPATH": ROOT, "IMPORTED": str(imported), **(env or {})}
    environment = {key: value for key, value in environment.items() if value is not None}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=environment,
                          cwd=ROOT, timeout=300)
    return done.returncode, done.stdout, done.stderr, json.loads(imported.read_text())


def invalid_spec(tmp_path):
    """Schema errors in `head` and a rule error in each other section."""
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 0, "droput": 0.5},
            "solver": {"base_lr": 0.01, "epochs": 1, "lr_policy": "step", "gamma": 0.1},
            "data": {"builtin": "digits", "image_size": [8, 8], "augment": {"random_crop": [10, 10]}},
            "frozen": [{"match": "conv*", "regex": "bn"}]}
    return write_spec(tmp_path, spec, "invalid.json")


@pytest.mark.parametrize("args, expected", [(["--help"], 0), (["list"], 0), (["list", "resnet", "--source", "keras_hub"], 0),
                                            (["validate", "--quick", *SPEC_FILES], 1)],
                         ids=["help", "list", "list-resnet", "quick"])
def test_help_list_and_quick_validation_import_no_framework(tmp_path, args, expected):
    status, out, err, imported = zoo(*args, tmp_path=tmp_path)
    assert imported == []
    assert out and status == expected, err
    if args[0] == "validate":
        # Every spec is valid but those whose backbone is a run not trained here.
        untrained = [path for path in SPEC_FILES if "../runs/" in open(path).read()]
        assert out.count(QUICK_VALID) == len(SPEC_FILES) - len(untrained) and untrained
        assert [line for line in err.splitlines() if " error in " in line] == [
            f"1 error in {path}:" for path in untrained]


def test_zoo_list_gives_the_rows_of_the_full_path(tmp_path, capsys):
    status, out, _, imported = zoo("list", tmp_path=tmp_path)
    assert (status, imported) == (0, [])
    assert main(["list"]) == 0
    assert out == capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [(e.source, e.name) for e in list_backbones()]
    status, out, _, _ = zoo("list", "resnet", "--source", "keras_hub", tmp_path=tmp_path)
    assert [line.split()[1] for line in out.splitlines()[1:]] == [e.name for e in list_backbones("resnet", "keras_hub")]


def test_quick_validation_says_what_validate_says(tmp_path):
    spec = invalid_spec(tmp_path)
    status, out, err, imported = zoo("validate", "--quick", PRETRAIN, str(spec), tmp_path=tmp_path)
    assert (status, imported) == (1, [])
    assert out == f"{PRETRAIN}: {validate(PRETRAIN, deep=False).summary()}\n"
    assert QUICK_VALID == validate(PRETRAIN, deep=False).summary()
    with pytest.raises(SpecError) as caught:
        validate(spec, deep=False)
    assert err == f"{caught.value}\n"
    # Every error at once: the schema's (head) and the rules' (data, frozen, solver).
    assert [path for path, _ in caught.value.errors] == [
        "$.data.augment.random_crop", "$.frozen[0]", "$.head.classes", "$.head.droput", "$.solver.stepsize"]


def test_a_command_that_loads_tensorflow_keeps_its_log_lines_off_the_terminal(tmp_path):
    status, out, err, imported = zoo("validate", PRETRAIN, tmp_path=tmp_path,
                                     env={"TF_CPP_MIN_LOG_LEVEL": None})
    assert (status, err) == (0, "")
    assert "valid (deep: model built" in out and "tensorflow" in imported


def test_verbose_goes_on_the_command_or_the_subcommand():
    from zoo.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--verbose", "list"]).verbose
    assert parser.parse_args(["train", "s.json", "--verbose"]).verbose
    assert not parser.parse_args(["train", "s.json"]).verbose

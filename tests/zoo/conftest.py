import json
import os
import shutil

import pytest

from zoo.train import train

SPECS = os.path.join(os.path.dirname(__file__), "..", "..", "specs")


@pytest.fixture(scope="session")
def spec_dir(tmp_path_factory):
    """A copy of specs/ whose relative paths work: digits_pretrain has been
    trained (briefly) into ../runs/digits_pretrain, as the README's first
    command does."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(SPECS, root / "specs")
    pretrain = json.loads((root / "specs" / "digits_pretrain.json").read_text())
    pretrain["solver"]["epochs"] = 2
    (root / "specs" / "digits_pretrain.json").write_text(json.dumps(pretrain))
    train(root / "specs" / "digits_pretrain.json", run_dir=root / "runs" / "digits_pretrain", verbose=0)
    return root / "specs"


def write_spec(directory, spec, name="spec.json"):
    path = directory / name
    path.write_text(json.dumps(spec))
    return path

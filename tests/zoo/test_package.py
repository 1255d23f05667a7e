import os

import pytest

from zoo.spec import schema_text
from tests.zoo.conftest import SPECS


def test_specs_schema_is_a_copy_of_the_schema_shipped_in_the_package():
    # One source of truth: zoo/schema.json, package data in the wheel (read
    # through importlib.resources); specs/schema.json is the same file for
    # people browsing the specs.
    with open(os.path.join(SPECS, "schema.json")) as copy:
        assert copy.read() == schema_text(), "specs/schema.json differs from zoo/schema.json: copy it over"


def test_the_package_imports_its_names_on_first_use():
    import subprocess
    import sys

    import zoo
    import zoo.train  # the module, which binds `zoo.train` on the package: the function stays

    assert (zoo.train.__module__, zoo.tune.__module__, zoo.small_cnn.__module__) == (
        "zoo.train", "zoo.tune", "zoo.small_cnn")
    assert all(callable(getattr(zoo, name)) for name in zoo.__all__)
    assert set(zoo.__all__) <= set(dir(zoo))
    with pytest.raises(AttributeError, match="module 'zoo' has no attribute 'trian'"):
        zoo.trian
    code = ("import sys, zoo; zoo.SpecError, zoo.load_spec, zoo.list_backbones, zoo.get_backbone; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'keras_hub', 'jax')))")
    root = os.path.dirname(os.path.normpath(SPECS))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout == "[]\n"

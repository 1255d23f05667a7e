import os

from zoo.spec import schema_text
from tests.zoo.conftest import SPECS


def test_specs_schema_is_a_copy_of_the_schema_shipped_in_the_package():
    # One source of truth: zoo/schema.json, package data in the wheel (read
    # through importlib.resources); specs/schema.json is the same file for
    # people browsing the specs.
    with open(os.path.join(SPECS, "schema.json")) as copy:
        assert copy.read() == schema_text(), "specs/schema.json differs from zoo/schema.json: copy it over"

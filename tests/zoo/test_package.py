import os

import zoo
from zoo.spec import schema_text
from tests.zoo.conftest import SPECS


def test_specs_schema_is_a_copy_of_the_schema_shipped_in_the_package():
    # One source of truth: zoo/schema.json, package data in the wheel;
    # specs/schema.json is the same file for people browsing the specs.
    shipped = os.path.join(os.path.dirname(zoo.__file__), "schema.json")
    with open(os.path.join(SPECS, "schema.json")) as copy:
        assert copy.read() == schema_text(), "specs/schema.json differs from zoo/schema.json: copy it over"
    assert schema_text().startswith("{") and os.path.exists(shipped)

"""Only `SpecError` comes out of the spec loader, whatever it is given.

Property-based: random JSON values, and mutated copies of every example
spec (keys deleted, types swapped, NaN and infinities, huge numbers, empty
and unicode strings, deep nesting), go through `load_spec`, which also runs
the search loader on specs with a `search` section. The example counts are
the figures in the README's "Reliability" section.
"""

import copy
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.zoo.conftest import SPECS
from zoo.spec import SpecError, load_spec

RANDOM_VALUES = 4000
MUTATED_SPECS = 8000

EXAMPLES = {name: json.loads(open(os.path.join(SPECS, name)).read())
            for name in sorted(os.listdir(SPECS)) if name.endswith(".json") and name != "schema.json"}

FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-10**400, 10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
           | st.sampled_from(["", "\x00", "\ud800", "../..", "imagenet", "é" * 300, "digits", "small_cnn"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
# Values chosen to hit limits: NaN, infinities, 1e12 epochs, 1e6-sized shapes, whole floats.
hostile = st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**12, 1e12, -1, 0, 2.0,
                           [10**6, 10**6, 3], [10**6, 10**6], "", " ", "\u202e\u0000", True, None, {}, []])


def deep(levels):
    value = 1
    for _ in range(levels):
        value = [value]
    return value


def paths(value, prefix=()):
    """Every JSON path in `value`, down to 10 levels."""
    yield prefix
    if len(prefix) >= 10:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, prefix + (index,))


def swapped_type(value):
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return float(value) if value % 2 and abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return [value]
    if isinstance(value, str):
        return {"value": value}
    if isinstance(value, (list, dict)):
        try:
            return json.dumps(value)
        except RecursionError:  # the 1,000-deep nesting of an earlier mutation
            return "deep"
    return 0


@st.composite
def mutated_specs(draw):
    spec = copy.deepcopy(EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))])
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(spec))[1:]))
        *parents, last = where
        parent = spec
        for key in parents:
            parent = parent[key]
        kind = draw(st.sampled_from(["delete", "swap", "hostile", "random", "deep", "unicode"]))
        if kind == "delete":
            del parent[last]
        elif kind == "swap":
            parent[last] = swapped_type(parent[last])
        elif kind == "hostile":
            parent[last] = copy.deepcopy(draw(hostile))
        elif kind == "random":
            parent[last] = draw(json_values)
        elif kind == "deep":
            parent[last] = deep(draw(st.sampled_from([40, 1000])))
        else:
            parent[last] = draw(st.text(min_size=1, max_size=30))
        if not isinstance(spec, dict) or not spec:
            break
    return spec


def only_spec_errors(spec):
    try:
        load_spec(spec)
    except SpecError as error:
        assert error.errors and all(path.startswith("$") and message for path, message in error.errors)


@settings(FUZZ, max_examples=RANDOM_VALUES)
@given(json_values | st.fixed_dictionaries({key: json_values for key in ("backbone", "head", "solver", "data")}))
def test_random_json_values_give_only_spec_errors(spec):
    only_spec_errors(spec)


@settings(FUZZ, max_examples=MUTATED_SPECS)
@given(mutated_specs())
def test_mutated_example_specs_give_only_spec_errors(spec):
    only_spec_errors(spec)


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe{\x00}", "not UTF-8 text"),
    (b"[" * 1000 + b"]" * 1000, "nested"),
    (b'{"backbone": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested"),
    (b'{"head": {"classes": NaN}}', "not a number a spec can hold"),
    (b'{"seed": ' + b"9" * 5000 + b"}", "holds an integer of thousands of digits; no field allows one"),
    (b'{"seed": ' + b"9" * 400 + b"}", r"\$.seed: an integer beyond 2\^63 - 1 in size; no field allows one"),
    (b"", "not valid JSON"),
])
def test_files_that_are_not_specs(tmp_path, content, expected):
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_a_folder_is_not_a_spec(tmp_path):
    with pytest.raises(SpecError, match="is a folder; give the spec's .json file"):
        load_spec(tmp_path)


def test_non_finite_and_huge_numbers_are_refused_with_their_path():
    spec = copy.deepcopy(EXAMPLES["digits_scratch.json"])
    spec["solver"].update(momentum=float("nan"), weight_decay=float("inf"), epochs=10**12)
    spec["head"]["weight_filler"] = {"type": "gaussian", "std": float("inf")}
    spec["slow"] = [{"match": "head_*", "lr_mult": float("nan")}]
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    paths_found = {path for path, _ in caught.value.errors}
    assert paths_found == {"$.solver.momentum", "$.solver.weight_decay", "$.head.weight_filler.std",
                           "$.slow[0].lr_mult"}
    spec = copy.deepcopy(EXAMPLES["digits_scratch.json"])
    spec["solver"]["epochs"] = 10**12
    spec["backbone"]["input_shape"] = [10**6, 10**6, 1]
    spec["head"]["hidden"] = [10**9]
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert {path for path, _ in caught.value.errors} == {
        "$.solver.epochs", "$.backbone.input_shape[0]", "$.backbone.input_shape[1]", "$.head.hidden[0]"}
    assert "is greater than the maximum of 10000" in str(caught.value)

import json
import os

import keras
import pytest

from zoo.spec import SpecError, load_spec
from zoo.train import build_model
from tests.zoo.conftest import SPECS, write_spec

SPEC_FILES = sorted(f for f in os.listdir(SPECS) if f.endswith(".json") and f != "schema.json")


def minimal():
    return {
        "backbone": {"name": "small_cnn"},
        "head": {"classes": 10},
        "solver": {"base_lr": 0.01, "epochs": 1},
        "data": {"builtin": "digits"},
    }


@pytest.mark.parametrize("name", SPEC_FILES)
def test_every_spec_file_validates_and_builds(spec_dir, name, tiny_preset):
    path = spec_dir / name
    spec = json.loads(path.read_text())
    # No network here: build the same architecture with random weights, a
    # KerasHub preset from a small one of its family in a folder.
    if spec["backbone"].get("weights") == "imagenet":
        spec["backbone"]["weights"] = None
        path = write_spec(spec_dir, spec, "offline-" + name)
    if "preset" in spec["backbone"]:
        spec["backbone"]["preset"] = str(tiny_preset)
        path = write_spec(spec_dir, spec, "offline-" + name)
    resolved = load_spec(path)
    model = build_model(path)
    assert isinstance(model, keras.Model) and model.optimizer is not None
    assert model.output_shape == (None, resolved.head.classes)


def test_a_minimal_spec_gets_defaults():
    spec = load_spec(minimal())
    (stage,) = spec.stages
    assert stage.name == "train" and stage.solver.optimizer == "sgd" and stage.solver.lr_policy == "fixed"
    assert spec.head.pooling == "avg" and spec.data.validation_split == 0.2
    assert spec.name == "zoo-run" and spec.seed == 0 and not spec.deterministic


def test_all_errors_are_reported_at_once_with_json_paths(tmp_path):
    spec = minimal()
    spec["solver"].update(base_lr=-1, lr_policy="step", gamma=0.1, learning_rate=0.1)
    spec["head"]["classes"] = 0
    spec["head"]["droput"] = 0.5
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, spec))
    messages = dict(caught.value.errors)
    assert messages["$.solver.base_lr"] == "-1 is less than or equal to the minimum of 0"
    assert messages["$.head.classes"] == "0 is less than the minimum of 1"
    assert messages["$.head.droput"] == "unknown key; did you mean 'dropout'?"
    assert messages["$.solver.learning_rate"].startswith("unknown key")
    assert "4 errors in" in str(caught.value)


@pytest.mark.parametrize(
    "change, path, message",
    [
        (lambda s: s["solver"].update(lr_policy="step", gamma=0.1), "$.solver.stepsize",
         "Argument `stepsize` is required when policy='step'"),
        (lambda s: s["solver"].update(lr_policy="multistep", gamma=0.1, stepvalue=[30, 20]),
         "$.solver.stepvalue", "strictly increasing"),
        (lambda s: s["solver"].update(lr_policy="triangular"), "$.solver.max_lr", "`max_lr` must be a finite number"),
        (lambda s: s["solver"].pop("epochs"), "$.solver", "give the training length: `epochs` or `max_iter`"),
        (lambda s: s["backbone"].update(name="resnet5"), "$.backbone.name", "Did you mean resnet50"),
        (lambda s: s["backbone"].update(model="x.keras"), "$.backbone",
             "give exactly one of `name`, `model`, `preset`; got name, model"),
        (lambda s: s["backbone"].update(weights="missing.weights.h5"), "$.backbone.weights", "no such weights file"),
        (lambda s: s.update(frozen=[{"match": "conv*", "regex": "bn"}]), "$.frozen[0]", "give exactly one of"),
        (lambda s: s.update(slow=[{"regex": "("}]), "$.slow[0].regex", "not a regular expression"),
        (lambda s: s.update(stages=[{"solver": {"lr_policy": "poly"}}]), "$.stages[0].solver.power",
         "`power` is required when policy='poly'"),
        (lambda s: s.update(deterministic=True, stages=[{}, {"solver": {"jit_compile": True}}]),
         "$.stages[1].solver.jit_compile", "XLA is off under `deterministic: true`"),
        (lambda s: s.update(stages=[{"solver": {"early_stopping": {"monitor": "val_accuracy"}}}, {}]),
         "$.stages[1].solver.early_stopping", "watches 'val_loss' (auto), but the run keeps one best epoch over all stages: give every stage "
         "the first stage's monitor 'val_accuracy'"),
    ],
)
def test_semantic_errors_name_their_path(tmp_path, change, path, message):
    spec = minimal()
    change(spec)
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, spec))
    messages = dict(caught.value.errors)
    assert path in messages, caught.value.errors
    assert message in messages[path]


def test_paths_are_resolved_against_the_spec_file(spec_dir):
    spec = load_spec(spec_dir / "digits_finetune.json")
    assert spec.backbone.model == str(spec_dir.parent / "runs" / "digits_pretrain" / "model.keras")


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"backbone": }')
    with pytest.raises(SpecError, match=r"\$: not valid JSON: Expecting value at line 1, column 14"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.json")


def test_a_layer_pattern_that_matches_nothing_fails_before_training(tmp_path):
    spec = minimal()
    spec["frozen"] = [{"match": "cnov*"}]
    with pytest.raises(SpecError) as caught:
        build_model(write_spec(tmp_path, spec))
    assert "'cnov*' matches no layer; close layer names: conv" in dict(caught.value.errors)["$.frozen[0].match"]
    spec["stages"] = [{}, {"slow": [{"up_to": "relu9", "lr_mult": 0.1}]}]
    with pytest.raises(SpecError) as caught:
        build_model(write_spec(tmp_path, spec))
    messages = dict(caught.value.errors)
    assert "'relu9' matches no layer" in messages["$.stages[1].slow[0].up_to"]
    assert "'cnov*' matches no layer" in messages["$.stages[0].frozen[0].match"]  # each stage inherits it


def test_schema_file_is_valid_json_schema_2020_12():
    import jsonschema

    schema = json.loads(open(os.path.join(SPECS, "schema.json")).read())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("section, target", [
    ("Plateau", "callbacks.PlateauDecay"),
    ("EarlyStopping", "callbacks.BestWeights"),
    ("Warmup", "callbacks.Warmup"),
])
def test_section_fields_are_the_keyword_arguments_of_what_they_build(section, target):
    import dataclasses
    import importlib
    import inspect

    from zoo import sections

    module, name = target.rsplit(".", 1)
    parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    for field in dataclasses.fields(getattr(sections, section)):
        assert field.name in parameters, f"{section}.{field.name} is no argument of {target}"
        if field.default is not dataclasses.MISSING:
            assert field.default == parameters[field.name].default, (section, field.name)


def test_a_spec_written_out_loads_back_equal_and_mixed_precision_is_run_level(tmp_path):
    from zoo.sections import to_dict

    spec = load_spec(os.path.join(SPECS, "digits_scratch.json"))
    assert load_spec(write_spec(tmp_path, to_dict(spec))) == spec
    raw = minimal()
    raw["solver"]["mixed_precision"] = "bfloat16"
    with pytest.raises(SpecError, match=r"\$.solver.mixed_precision: unknown key; `mixed_precision` holds for "
                                        r"the whole run: set it at the top level"):
        load_spec(raw)
    assert load_spec({**minimal(), "mixed_precision": "bfloat16"}).mixed_precision == "bfloat16"


def test_mixed_precision_names_its_precision_and_true_is_refused_with_the_choices():
    import dataclasses

    assert load_spec(minimal()).mixed_precision is False
    for precision in ("bfloat16", "float16", False):
        assert load_spec({**minimal(), "mixed_precision": precision}).mixed_precision == precision
    expected = ('true names no precision: choose "float16" (what true meant: mixed_float16, with loss scaling) '
                'or "bfloat16" (mixed_bfloat16, no loss scaling: recent GPUs such as A100 and H100, and TPUs)')
    with pytest.raises(SpecError) as error:
        load_spec({**minimal(), "mixed_precision": True})
    assert error.value.errors == [("$.mixed_precision", expected)]
    with pytest.raises(SpecError) as error:  # a Spec built in Python, as before
        load_spec(dataclasses.replace(load_spec(minimal()), mixed_precision=True))
    assert error.value.errors == [("$.mixed_precision", expected)]
    with pytest.raises(SpecError, match=r"\$.mixed_precision: 'bf16' is not one of \['bfloat16', 'float16', false\]; "
                                        r"did you mean 'bfloat16'\?"):
        load_spec({**minimal(), "mixed_precision": "bf16"})


def test_integer_fields_refuse_whole_number_floats():
    raw = minimal()
    raw["solver"].update(epochs=2.0, batch_size=16.0)
    raw["head"]["classes"] = 5.0
    with pytest.raises(SpecError) as caught:
        load_spec(raw)
    assert set(caught.value.errors) == {
        ("$.solver.epochs", "2.0 is not of type 'integer'"),
        ("$.solver.batch_size", "16.0 is not of type 'integer'"),
        ("$.head.classes", "5.0 is not of type 'integer'")}
    assert isinstance(load_spec({**raw, "head": {"classes": 5}, "solver": minimal()["solver"]}).head.classes, int)


def test_a_written_out_single_stage_hyperband_spec_loads_back(tmp_path):
    from zoo.sections import to_dict

    raw = {**minimal(), "search": {"tuner": "hyperband", "space": {
        "solver.base_lr": {"type": "float", "min": 0.01, "max": 0.1}}}}
    spec = load_spec(raw)
    assert len(spec.stages) == 1
    assert load_spec(write_spec(tmp_path, to_dict(spec))) == spec


def test_an_unknown_value_gets_a_did_you_mean():
    raw = minimal()
    raw["solver"]["lr_policy"] = "steps"
    with pytest.raises(SpecError, match=r"\$.solver.lr_policy: 'steps' is not one of .*; did you mean 'step'\?"):
        load_spec(raw)


@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "a\\b", "tab\there", "x" * 101, ""])
def test_a_run_name_is_a_plain_name(name):
    with pytest.raises(SpecError, match=r"\$.name: "):
        load_spec({**minimal(), "name": name})
    assert load_spec({**minimal(), "name": "résumé run-2.1"}).name == "résumé run-2.1"


@pytest.mark.parametrize("change, path, message", [
    ({"distribute": "multi_worker"}, "$.distribute", "'multi_worker' is not one of ['mirrored']"),
    ({"data": {"folder": ".", "image_size": [8, 8], "cache": "memroy"}}, "$.data.cache",
     "'memroy' is not one of ['memory', 'file', false]; did you mean 'memory'?"),
    ({"data": {"builtin": "digits", "image_size": [8, 8], "augment": {"random_crop": [9, 8]}}},
     "$.data.augment.random_crop",
     "[9, 8] is larger than the images, [8, 8]"),
    ({"head": {"classes": 100000, "hidden": [16384]}}, "$.head", "1,638,400,000 weights"),
    ({"head": {"classes": 10, "hidden": [8] * 17}}, "$.head.hidden", "is too long"),
])
def test_what_would_fail_later_is_refused_now(change, path, message):
    with pytest.raises(SpecError) as caught:
        load_spec({**minimal(), **change})
    assert any(where == path and message in text for where, text in caught.value.errors), caught.value.errors


def errors_of(raw):
    with pytest.raises(SpecError) as caught:
        load_spec(raw)
    return caught.value.errors


def test_schema_errors_and_rule_errors_are_reported_together():
    raw = minimal()
    raw["head"]["droput"] = 0.5  # the schema's
    raw["solver"].update(lr_policy="step", gamma=0.1)  # the rules': no stepsize
    raw["data"].update(image_size=[8, 8], augment={"random_crop": [10, 10]})
    raw["frozen"] = [{"match": "conv*", "regex": "bn"}]
    raw["stages"] = [{}, {"solver": {"epochs": "ten"}}]
    assert [path for path, _ in errors_of(raw)] == [
        "$.data.augment.random_crop", "$.frozen[0]", "$.head.droput", "$.stages[0].solver.stepsize",
        "$.stages[1].solver.epochs"]


def test_a_rule_skips_a_section_the_schema_refused():
    raw = minimal()
    raw["solver"].update(base_lr="fast", lr_policy="step")  # not repeated as "`base_lr` must be a number"
    raw["backbone"].update(name="resnet5", weights=3)  # no "did you mean" for a backbone that is wrong anyway
    assert errors_of(raw) == [("$.backbone.weights", "3 is not of type 'string', 'null'"),
                              ("$.solver.base_lr", "'fast' is not one of ['auto'] nor a number")]


@pytest.mark.parametrize("change", [
    {"head": 5}, {"head": []}, {"solver": []}, {"solver": {"warmup": 3}}, {"stages": [3, {"solver": 4}]},
    {"stages": {}}, {"stages": [{"frozen": {"match": "x"}}]}, {"frozen": "conv*"}, {"data": None},
    {"backbone": {"name": 5}}, {"deterministic": "yes", "solver": {"jit_compile": 1}}, {"name": 3},
])
def test_malformed_sections_get_schema_errors_only(change):
    errors = errors_of({**minimal(), **change})
    assert errors and all(not message.startswith(("Argument", "give exactly")) for _, message in errors), errors


def test_errors_come_in_the_order_of_their_paths():
    raw = minimal()
    raw["stages"] = [{}] * 11
    raw["stages"][10] = raw["stages"][2] = {"solver": {"lr_policy": "poly"}}
    raw["head"]["classes"] = 0
    assert [path for path, _ in errors_of(raw)] == [
        "$.head.classes", "$.stages[2].solver.power", "$.stages[10].solver.power"]


def test_a_schedule_error_is_the_callbacks_own():
    from callbacks import CaffeLR, CyclicLR

    with pytest.raises(ValueError) as caffe:
        CaffeLR("multistep", 0.01, gamma=0.1, stepvalue=[30, 20])
    with pytest.raises(ValueError) as cyclic:
        CyclicLR(0.01, 0.001, 10)
    raw = minimal()
    raw["solver"].update(lr_policy="multistep", gamma=0.1, stepvalue=[30, 20])
    raw["stages"] = [{}, {"solver": {"lr_policy": "triangular", "max_lr": 0.001, "step_size": 10}}]
    assert errors_of(raw) == [("$.stages[0].solver.stepvalue", str(caffe.value)),
                              ("$.stages[1].solver.max_lr", str(cyclic.value))]


def test_auto_base_lr_checks_the_other_parameters():
    raw = minimal()
    raw["solver"].update(base_lr="auto", lr_policy="step", gamma=0.1)
    assert [path for path, _ in errors_of(raw)] == ["$.solver.stepsize"]
    raw["solver"]["stepsize"] = 100
    assert load_spec(raw).stages[0].solver.base_lr == "auto"


@pytest.mark.parametrize("name", SPEC_FILES + ["stages"])
def test_the_rules_resolve_each_stages_solver_as_the_typed_spec_does(name):
    from zoo.sections import spec_from_json
    from zoo.spec import _stage_solvers

    raw = minimal() if name == "stages" else json.loads(open(os.path.join(SPECS, name)).read())
    if name == "stages":
        raw["stages"] = [{"solver": {"lr_policy": "step", "gamma": 0.5, "stepsize": 9}}, {"name": "b"}]
    solvers = _stage_solvers(raw)
    assert [solver for _, solver in solvers] == [stage.solver for stage in spec_from_json(raw).stages]

"""Loading and validating a spec: every error at once, each with its JSON path."""

import copy
import difflib
import functools
import json
import os
import re

import jsonschema

from callbacks import CaffeLR, CyclicLR, Warmup
from callbacks.cyclic_lr import MODES as CYCLIC_MODES
from zoo.backbones import get_backbone

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "specs", "schema.json")
SELECTOR_KEYS = ("match", "regex", "up_to", "indices")
SOLVER_DEFAULTS = {
    "optimizer": "sgd",
    "momentum": 0.9,
    "nesterov": False,
    "lr_policy": "fixed",
    "weight_decay": 0.0,
    "regularization_type": "L2",
    "batch_size": 32,
    "jit_compile": False,
    "mixed_precision": False,
    "steps_per_execution": 1,
}
HEAD_DEFAULTS = {
    "pooling": "avg",
    "dropout": 0.0,
    "hidden": [],
    "hidden_activation": "relu",
    "activation": "softmax",
    "weight_filler": {"type": "xavier"},
    "bias_filler": {"type": "constant", "value": 0.0},
}


class SpecError(ValueError):
    """A spec that cannot run; `errors` lists `(json_path, message)` pairs."""

    def __init__(self, errors, source=None):
        self.errors = list(errors)
        where = f" in {source}" if source else ""
        lines = [f"  {path}: {message}" for path, message in self.errors]
        count = len(self.errors)
        super().__init__(
            f"{count} error{'s' if count != 1 else ''}{where}:\n" + "\n".join(lines)
        )


@functools.lru_cache(maxsize=1)
def schema_validator():
    with open(SCHEMA_PATH) as f:
        return jsonschema.Draft202012Validator(json.load(f))


def json_path(parts):
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def read_spec(source):
    """`(spec, base_dir, name)` from a JSON file path or a dict (whose
    relative paths are taken from the working directory)."""
    if isinstance(source, dict):
        return copy.deepcopy(source), os.getcwd(), None
    name = os.fspath(source)
    try:
        with open(name) as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise SpecError([("$", f"no such file: {name}")], name) from None
    except json.JSONDecodeError as error:
        raise SpecError(
            [("$", f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")],
            name,
        ) from None
    return spec, os.path.dirname(os.path.abspath(name)), name


def load_spec(source):
    """A validated spec dict from a JSON file path or a dict.

    Relative paths in the spec are resolved against the spec file's folder
    (the working directory for a dict). Defaults are filled in. Raises
    `SpecError` listing every problem found.
    """
    spec, base_dir, name = read_spec(source)
    errors = schema_errors(spec) or semantic_errors(spec, base_dir)
    if errors:
        raise SpecError(errors, name)
    return resolve(spec, base_dir)


def schema_errors(spec):
    errors = []
    for error in sorted(schema_validator().iter_errors(spec), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(allowed)}"
                errors.append((json_path(path + [key]), f"unknown key{hint}"))
        else:
            errors.append((json_path(path), error.message))
    return errors


def semantic_errors(spec, base_dir):
    """What JSON Schema cannot say: the rules between fields."""
    errors = []
    errors += _backbone_errors(spec["backbone"], base_dir)
    errors += _data_errors(spec["data"], spec["backbone"], base_dir)
    errors += _selector_errors(spec.get("frozen", []), ["frozen"])
    errors += _selector_errors(spec.get("slow", []), ["slow"])
    for index, stage in enumerate(spec.get("stages", [])):
        errors += _selector_errors(stage.get("frozen", []), ["stages", index, "frozen"])
        errors += _selector_errors(stage.get("slow", []), ["stages", index, "slow"])
    for index, (*_, solver) in enumerate(stages_of(spec)):
        where = ["stages", index, "solver"] if spec.get("stages") else ["solver"]
        errors += _solver_errors(solver, where)
    return errors


def _backbone_errors(backbone, base_dir):
    path = ["backbone"]
    has_name, has_model = "name" in backbone, "model" in backbone
    if has_name == has_model:
        return [(json_path(path), "give either `name` (a registry backbone) or `model` (a .keras file)")]
    errors = []
    if has_name:
        try:
            get_backbone(backbone["name"])
        except ValueError as error:
            errors.append((json_path(path + ["name"]), str(error)))
        if "cut_at" in backbone:
            errors.append((json_path(path + ["cut_at"]), "only with `model`"))
        weights = backbone.get("weights")
        if weights not in (None, "imagenet") and not os.path.exists(_resolve_path(weights, base_dir)):
            errors.append((json_path(path + ["weights"]), f"no such weights file: {weights}"))
    else:
        for key in ("weights", "input_shape"):
            if key in backbone:
                errors.append((json_path(path + [key]), "only with `name`; a saved model has its own"))
        if not os.path.exists(_resolve_path(backbone["model"], base_dir)):
            errors.append((json_path(path + ["model"]), f"no such model file: {backbone['model']}"))
        if "cut_at" not in backbone:
            errors.append((json_path(path + ["cut_at"]), "required with `model`: the layer the new head goes on"))
    return errors


FILE_SOURCES = ("folder", "listing", "csv")
PATH_KEYS = FILE_SOURCES + ("root",)


def _data_errors(data, backbone, base_dir):
    errors = []
    sources = [key for key in ("builtin",) + FILE_SOURCES if key in data]
    if len(sources) != 1:
        errors.append(("$.data", f"give exactly one source: builtin, folder, listing or csv; got {sources or 'none'}"))
    elif sources[0] != "builtin" and "image_size" not in data:
        errors.append(("$.data.image_size", f"required with `{sources[0]}`: the size images are resized to"))
    if "validation" in data:
        given = [key for key in FILE_SOURCES if key in data["validation"]]
        if len(given) != 1:
            errors.append(("$.data.validation", f"give exactly one of folder, listing, csv; got {given or 'none'}"))
        if "builtin" in data:
            errors.append(("$.data.validation", "the builtin dataset has its own; use validation_split"))
    if "classes" in data and "builtin" not in data:
        errors.append(("$.data.classes", "only with `builtin`"))
    for path, section in (("$.data", data), ("$.data.validation", data.get("validation", {}))):
        for key in PATH_KEYS:
            if key in section and not os.path.exists(_resolve_path(section[key], base_dir)):
                errors.append((f"{path}.{key}", f"no such {'folder' if key in ('folder', 'root') else 'file'}: {section[key]}"))
    if data.get("normalization") == "backbone" and "name" not in backbone:
        errors.append(("$.data.normalization", "\"backbone\" needs a registry backbone (`backbone.name`)"))
    return errors


def _selector_errors(groups, path):
    errors = []
    for index, group in enumerate(groups):
        given = [key for key in SELECTOR_KEYS if key in group]
        where = json_path(path + [index])
        if len(given) != 1:
            errors.append((where, f"give exactly one of {', '.join(SELECTOR_KEYS)}; got {given or 'none'}"))
        elif given[0] == "regex":
            try:
                re.compile(group["regex"])
            except re.error as error:
                errors.append((json_path(path + [index, "regex"]), f"not a regular expression: {error}"))
    return errors


# The spec key behind each argument named in a schedule's ValueError.
_SPEC_KEY = {"policy": "lr_policy", "mode": "lr_policy", "schedule": "base_lr",
             "warmup_steps": "warmup.warmup_steps", "start_lr": "warmup.start_lr"}


def _solver_errors(solver, path):
    errors = []
    if "epochs" not in solver and "max_iter" not in solver:
        errors.append((json_path(path), "give the training length: `epochs` or `max_iter`"))
    try:
        lr_schedule(solver)
    except ValueError as error:
        argument = re.search(r"Argument `(\w+)`", str(error))
        key = argument and _SPEC_KEY.get(argument.group(1), argument.group(1))
        errors.append((json_path(path) + (f".{key}" if key else ""), str(error)))
    return errors


def lr_schedule(solver):
    """The LR callback a solver section declares (`CaffeLR` or `CyclicLR`,
    wrapped in `Warmup` when it has one)."""
    policy = solver.get("lr_policy", "fixed")
    if policy in CYCLIC_MODES:
        schedule = CyclicLR(
            solver.get("base_lr"),
            solver.get("max_lr"),
            solver.get("step_size"),
            mode=policy,
            gamma=solver.get("gamma", 1.0),
        )
    else:
        schedule = CaffeLR(
            policy,
            solver.get("base_lr"),
            **{k: solver.get(k) for k in ("gamma", "power", "stepsize", "stepvalue", "max_iter")},
        )
    if "warmup" in solver:
        schedule = Warmup(schedule, **solver["warmup"])
    return schedule


def _resolve_path(path, base_dir):
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def resolve(spec, base_dir):
    """The spec with defaults filled in and paths made absolute."""
    spec = copy.deepcopy(spec)
    backbone = spec["backbone"]
    if "model" in backbone:
        backbone["model"] = _resolve_path(backbone["model"], base_dir)
    elif backbone.get("weights") not in (None, "imagenet"):
        backbone["weights"] = _resolve_path(backbone["weights"], base_dir)
    else:
        backbone.setdefault("weights", None)
    spec["head"] = {**HEAD_DEFAULTS, **spec["head"]}
    spec["solver"] = {**SOLVER_DEFAULTS, **spec["solver"]}
    spec.setdefault("seed", 0)
    spec.setdefault("name", "zoo-run")
    spec.setdefault("frozen", [])
    spec.setdefault("slow", [])
    spec["data"] = {"validation_split": 0.2, "seed": spec["seed"], **spec["data"]}
    for section in (spec["data"], spec["data"].get("validation", {})):
        for key in PATH_KEYS:
            if key in section:
                section[key] = _resolve_path(section[key], base_dir)
    return spec


def stages_of(spec):
    """Each stage as `(name, frozen, slow, solver)`, the top-level fields
    filling in what a stage does not say. A spec without stages is one stage."""
    stages = spec.get("stages") or [{"name": "train"}]
    resolved = []
    for index, stage in enumerate(stages):
        resolved.append((
            stage.get("name", f"stage{index + 1}"),
            stage.get("frozen", spec.get("frozen", [])),
            stage.get("slow", spec.get("slow", [])),
            {**spec["solver"], **stage.get("solver", {})},
        ))
    return resolved

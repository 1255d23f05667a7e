"""Loading and validating a spec: every error at once, each with its JSON path.

`load_spec` checks a JSON spec against the schema (`zoo/schema.json`,
shipped with the package), then for the rules between fields, and builds the
typed `Spec` (`zoo.sections`).
"""

import copy
import difflib
import functools
import importlib.resources
import json
import os
import re

import jsonschema

from zoo import search_space
from zoo.backbones import get_backbone
from zoo.sections import Spec, spec_from_json
from zoo.solver import lr_schedule

SELECTOR_KEYS = ("match", "regex", "up_to", "indices")
FILE_SOURCES = ("folder", "listing", "csv")
PATH_KEYS = FILE_SOURCES + ("root",)
# Fields that hold for a whole run, by the section they used to be in.
MOVED_TO_TOP = {"solver": ("mixed_precision",), "data": ("seed",)}


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


def schema_text():
    """The spec's JSON Schema, as shipped inside the package."""
    return importlib.resources.files("zoo").joinpath("schema.json").read_text()


@functools.lru_cache(maxsize=1)
def schema_validator():
    return jsonschema.Draft202012Validator(json.loads(schema_text()))


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
    """The typed `Spec` of a JSON file path, a dict or a `Spec`.

    Relative paths are resolved against the spec file's folder (the working
    directory for a dict). A `search` section is checked too. Raises
    `SpecError` listing every problem found.
    """
    if isinstance(source, Spec):
        return source
    return spec_from_json(validated_json(source))


def validated_json(source):
    """The JSON spec of `source`, validated, with its paths made absolute."""
    spec, base_dir, name = read_spec(source)
    errors = schema_errors(spec) or semantic_errors(spec, base_dir)
    if not errors and "search" in spec:
        errors = search_errors(spec, base_dir)
    if errors:
        raise SpecError(errors, name)
    return resolve_paths(spec, base_dir)


def schema_errors(spec):
    errors = []
    for error in sorted(schema_validator().iter_errors(spec), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                errors.append((json_path(path + [key]), "unknown key" + _unknown_key_hint(key, path, allowed)))
        else:
            errors.append((json_path(path), error.message))
    return errors


def _unknown_key_hint(key, path, allowed):
    if path and key in MOVED_TO_TOP.get(path[-1], ()):
        return f"; `{key}` holds for the whole run: set it at the top level of the spec"
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(allowed)}"


def semantic_errors(spec, base_dir):
    """What JSON Schema cannot say: the rules between fields."""
    errors = []
    errors += _backbone_errors(spec["backbone"], base_dir)
    errors += _data_errors(spec["data"], spec["backbone"], base_dir)
    errors += _selector_errors(spec.get("frozen", []), ["frozen"])
    errors += _selector_errors(spec.get("slow", []), ["slow"])
    stages = spec.get("stages", [])
    for index, stage in enumerate(stages):
        errors += _selector_errors(stage.get("frozen", []), ["stages", index, "frozen"])
        errors += _selector_errors(stage.get("slow", []), ["stages", index, "slow"])
    if "solver" not in spec and not stages:
        return errors + [("$.solver", "required: the optimizer, learning rate and training length")]
    first_monitor = None
    for index, stage in enumerate(spec_from_json(spec).stages):
        where = ["stages", index, "solver"] if stages else ["solver"]
        solver = stage.solver
        errors += _solver_errors(solver, where)
        if solver.jit_compile and spec.get("deterministic"):
            errors.append((json_path(where + ["jit_compile"]), "XLA is off under `deterministic: true` "
                                                               "(TensorFlow's op determinism does not support it)"))
        monitor = (solver.early_stopping.monitor, solver.early_stopping.mode)
        first_monitor = first_monitor or monitor
        if monitor != first_monitor:
            errors.append((json_path(where + ["early_stopping"]),
                           f"watches {monitor[0]!r} ({monitor[1]}), but the run keeps one best epoch over "
                           f"all stages: give every stage the first stage's monitor {first_monitor[0]!r} "
                           f"and mode {first_monitor[1]!r}"))
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
    if solver.epochs is None and solver.max_iter is None:
        errors.append((json_path(path), "give the training length: `epochs` or `max_iter`"))
    try:
        lr_schedule(solver)
    except ValueError as error:
        argument = re.search(r"Argument `(\w+)`", str(error))
        key = argument and _SPEC_KEY.get(argument.group(1), argument.group(1))
        errors.append((json_path(path) + (f".{key}" if key else ""), str(error)))
    return errors


def search_errors(spec, base_dir):
    """Every problem with the `search` section, found before any trial runs:
    paths the spec cannot have and values its schema or rules reject."""
    base = {k: v for k, v in spec.items() if k != "search"}
    errors = []

    def check(space, context, where):
        for name, hp in space.items():
            here = f"{where}[{json.dumps(name)}]"
            problems = search_space.hyperparameter_errors(hp, here)
            errors.extend(problems)
            if problems:
                continue
            for value in search_space.extremes(hp):
                try:
                    candidate = search_space.set_path(context, name, value)
                except ValueError as error:
                    errors.append((here, str(error)))
                    break
                candidate = search_space.with_defaults(candidate, hp.get("branches", {}).get(str(value), {}))
                found = schema_errors(candidate) or semantic_errors(candidate, base_dir)
                errors.extend((here, f"{value!r} gives {path}: {message}") for path, message in found)
            for value, branch in hp.get("branches", {}).items():
                chosen = search_space.set_path(context, name, search_space.typed(hp, value))
                check(branch, search_space.with_defaults(chosen, branch), f"{here}.branches.{value}")

    check(spec["search"]["space"], base, "$.search.space")
    if len(spec.get("stages", [])) > 1 and spec["search"].get("tuner") == "hyperband":
        errors.append(("$.search.tuner", "hyperband budgets epochs of one stage; "
                                         "search a multi-stage spec with random, bayesian or grid"))
    return list(dict.fromkeys(errors))


def _resolve_path(path, base_dir):
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def resolve_paths(spec, base_dir):
    """The JSON spec with its file paths made absolute."""
    spec = copy.deepcopy(spec)
    backbone = spec["backbone"]
    for key in ("model", "weights"):
        if backbone.get(key) not in (None, "imagenet"):
            backbone[key] = _resolve_path(backbone[key], base_dir)
    for section in (spec["data"], spec["data"].get("validation", {})):
        for key in PATH_KEYS:
            if key in section:
                section[key] = _resolve_path(section[key], base_dir)
    return spec

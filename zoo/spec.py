"""Loading and validating a spec: every error at once, each with its JSON path.

`load_spec` checks a JSON spec against the schema (`zoo/schema.json`,
shipped with the package), then for the rules between fields, and builds the
typed `Spec` (`zoo.sections`).
"""

import contextlib
import copy
import dataclasses
import difflib
import functools
import importlib.resources
import json
import math
import os
import re

import jsonschema

from zoo import search_space
from zoo import backbones
from zoo.errors import SpecError, json_path
from zoo.sections import AUTO, Spec, spec_from_json
from zoo.solver import CYCLIC_MODES, lr_schedule

SELECTOR_KEYS = ("match", "regex", "up_to", "indices")
FILE_SOURCES = ("folder", "listing", "csv")
PATH_KEYS = FILE_SOURCES + ("root",)
# Fields that hold for a whole run, by the section they used to be in.
MOVED_TO_TOP = {"solver": ("mixed_precision",), "data": ("seed",)}
# A spec is a few levels deep; anything far deeper is a mistake (or an attack on the parser).
MAX_DEPTH = 32
# No field holds a larger integer; bigger ones overflow C integers downstream.
MAX_INTEGER = 2**63 - 1
# Weights between the head's Dense layers (float32: 2 GB).
MAX_HEAD_WEIGHTS = 500_000_000


@contextlib.contextmanager
def naming(source):
    """Name the spec file `source` (a path; data is not named) in the
    `SpecError`s raised inside, such as those of building its model."""
    try:
        yield
    except SpecError as error:
        if error.source is not None or not isinstance(source, (str, os.PathLike)):
            raise
        raise SpecError(error.errors, os.fspath(source)) from None


def schema_text():
    """The spec's JSON Schema, as shipped inside the package."""
    return importlib.resources.files("zoo").joinpath("schema.json").read_text()


@functools.lru_cache(maxsize=1)
def schema_validator():
    # JSON Schema counts 2.0 as an integer; Python's range() and Keras do not.
    strict_integers = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
    validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=strict_integers)
    return validator(json.loads(schema_text()))


def read_spec(source):
    """`(spec, base_dir, name)` from a JSON file path, or from JSON data
    such as a dict (whose relative paths are taken from the working
    directory). The data is not copied: checks only read it."""
    if not isinstance(source, (str, os.PathLike)):
        return source, os.getcwd(), None
    name = os.fspath(source)
    try:
        with open(name, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        raise SpecError([("$", f"no such file: {name}")], name) from None
    except IsADirectoryError:
        raise SpecError([("$", f"{name} is a folder; give the spec's .json file")], name) from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        raise SpecError([("$", f"cannot read {name!r}: {getattr(error, 'strerror', None) or error}")],
                        name) from None
    try:
        spec = json.loads(content.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise SpecError([("$", f"not UTF-8 text (byte {error.start}): a spec is a JSON text file")], name) from None
    except json.JSONDecodeError as error:
        raise SpecError([("$", f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")],
                        name) from None
    except RecursionError:
        raise SpecError([("$", f"nested too deeply (a spec is at most {MAX_DEPTH} levels deep)")], name) from None
    except ValueError:  # Python's json refuses integers of more than 4,300 digits
        raise SpecError([("$", "holds an integer of thousands of digits; no field allows one")], name) from None
    return spec, os.path.dirname(os.path.abspath(name)), name


def load_spec(source):
    """The typed `Spec` of a JSON file path, a dict or a `Spec`.

    Relative paths are resolved against the spec file's folder (the working
    directory for a dict). A `search` section is checked too. Raises
    `SpecError` listing every problem found.
    """
    if isinstance(source, Spec):  # built in Python: its name still becomes a folder
        errors = _name_errors(source.name)
        if errors:
            raise SpecError(errors)
        return source
    return spec_from_json(validated_json(source))


def validated_json(source):
    """The JSON spec of `source`, validated, with its paths made absolute."""
    spec, base_dir, name = read_spec(source)
    errors = value_errors(spec) or schema_errors(spec) or semantic_errors(spec, base_dir)
    if not errors and "search" in spec:
        errors = search_errors(spec, base_dir)
    if errors:
        raise SpecError(errors, name)
    return resolve_paths(spec, base_dir)


def value_errors(spec):
    """What the schema cannot be trusted with: nesting deeper than
    `MAX_DEPTH`, numbers that are not finite (Python's json reads `NaN` and
    `Infinity`) or too large for any field, and keys that are not strings."""
    errors, pending = [], [([], spec)]
    while pending:  # iterative: a deep spec must not exhaust the stack here
        path, value = pending.pop()
        if len(path) > MAX_DEPTH:
            errors.append((json_path(path[:MAX_DEPTH]), f"nested more than {MAX_DEPTH} levels deep"))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    pending.append((path + [key], item))
                else:
                    errors.append((json_path(path), f"key {key!r} is not a string"))
        elif isinstance(value, list):
            pending.extend((path + [index], item) for index, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append((json_path(path), f"{value} is not a number a spec can hold; expected a finite number"))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
            errors.append((json_path(path), "an integer beyond 2^63 - 1 in size; no field allows one"))
    return sorted(set(errors))


def schema_errors(spec):
    errors = []
    for error in sorted(schema_validator().iter_errors(spec), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                errors.append((json_path(path + [key]), "unknown key" + _unknown_key_hint(key, path, allowed)))
        elif error.validator == "enum" and isinstance(error.instance, str):
            allowed = [str(value) for value in error.validator_value]
            close = difflib.get_close_matches(error.instance, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errors.append((json_path(path), f"{error.instance!r} is not one of {allowed}{hint}"))
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
    errors = _name_errors(spec.get("name"))
    errors += _backbone_errors(spec["backbone"], base_dir)
    errors += _head_errors(spec["head"])
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
        errors += _lr_finder_errors(solver, where)
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


def _head_errors(head):
    """A head whose Dense layers alone would not fit in memory."""
    widths = list(head.get("hidden", [])) + [head["classes"]]
    weights = sum(a * b for a, b in zip(widths, widths[1:]))
    if weights > MAX_HEAD_WEIGHTS:
        return [("$.head", f"its hidden layers and classifier hold {weights:,} weights (besides the first "
                           f"layer's); at most {MAX_HEAD_WEIGHTS:,} fit a GPU: use fewer or narrower layers")]
    return []


def _name_errors(name):
    """The run's name becomes a folder under `runs/`: it must stay there."""
    if name is None:
        return []
    if name in (".", "..") or any(c in name for c in "/\\") or not name.isprintable():
        return [("$.name", f"{name!r} is not a plain name: no path separators or control characters, "
                           "not . or ..; choose where the run goes with --run-dir (run_dir=...)")]
    return []


def _exists(path, base_dir, kind=os.path.isfile):
    """Whether a spec's path is a file (or with `kind=os.path.isdir`, a
    folder); a path the OS cannot take (a NUL byte, a lone surrogate) is not."""
    try:
        return kind(_resolve_path(path, base_dir))
    except (ValueError, OSError):
        return False


def _backbone_errors(backbone, base_dir):
    """The backbone source's own checks (`zoo.backbones`)."""
    return backbones.backbone_errors(
        backbone, lambda path, folder=False: _exists(path, base_dir, os.path.isdir if folder else os.path.isfile))


def _data_errors(data, backbone, base_dir):
    errors = []
    sources = [key for key in ("builtin",) + FILE_SOURCES if key in data]
    if len(sources) != 1:
        errors.append(("$.data", f"give exactly one source: builtin, folder, listing or csv; got {sources or 'none'}"))
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
            is_folder = key in ("folder", "root")
            if key in section and not _exists(section[key], base_dir, os.path.isdir if is_folder else os.path.isfile):
                errors.append((f"{path}.{key}", f"no such {'folder' if is_folder else 'file'}: {section[key]}"))
    errors += crop_errors(data.get("augment", {}).get("random_crop"), data.get("image_size"))
    if data.get("normalization") == "backbone" and not _knows_preprocessing(backbone):
        knowing = " or ".join(f"`backbone.{key}`" for key, source in backbones.SOURCES.items()
                              if source.has_preprocessing)
        errors.append(("$.data.normalization", f"\"backbone\" needs a backbone that knows its input "
                                               f"preprocessing ({knowing})"))
    return errors


def crop_errors(crop, image_size):
    """A `random_crop` larger than the images (of `image_size`; None: not known yet)."""
    if crop and image_size and (crop[0] > image_size[0] or crop[1] > image_size[1]):
        return [("$.data.augment.random_crop", f"{list(crop)} is larger than the images, {list(image_size)}")]
    return []


def _knows_preprocessing(backbone):
    keys = backbones.given_sources(backbone)
    return len(keys) != 1 or backbones.SOURCES[keys[0]].has_preprocessing  # several: reported already


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
    if solver.base_lr == AUTO:  # found before training; any LR checks the other parameters
        solver = dataclasses.replace(solver, base_lr=solver.lr_finder.min_lr)
    if solver.epochs is None and solver.max_iter is None:
        errors.append((json_path(path), "give the training length: `epochs` or `max_iter`"))
    try:
        lr_schedule(solver)
    except ValueError as error:
        argument = re.search(r"Argument `(\w+)`", str(error))
        key = argument and _SPEC_KEY.get(argument.group(1), argument.group(1))
        errors.append((json_path(path) + (f".{key}" if key else ""), str(error)))
    return errors


def _lr_finder_errors(solver, path):
    """`base_lr: "auto"` with a sweep that can find something."""
    errors = []
    finder = solver.lr_finder
    if finder.max_lr <= finder.min_lr:
        errors.append((json_path(path + ["lr_finder", "max_lr"]),
                       f"{finder.max_lr:g} must be larger than lr_finder.min_lr ({finder.min_lr:g})"))
    if solver.base_lr == AUTO and solver.lr_policy in CYCLIC_MODES:
        errors.append((json_path(path + ["base_lr"]),
                       f"\"auto\" picks the LR of a fixed or decaying policy; a cyclical policy "
                       f"({solver.lr_policy}) needs its bounds base_lr < max_lr: run `zoo lr-find` and set both"))
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
    for key in backbones.source_for(backbone).local_paths(backbone):
        backbone[key] = _resolve_path(backbone[key], base_dir)
    for section in (spec["data"], spec["data"].get("validation", {})):
        for key in PATH_KEYS:
            if key in section:
                section[key] = _resolve_path(section[key], base_dir)
    return spec

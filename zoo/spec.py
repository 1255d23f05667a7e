"""Loading and validating a spec: every error at once, each with its JSON path.

`load_spec` checks a JSON spec against the schema (`zoo/schema.json`,
shipped with the package) and for the rules between fields, and builds the
typed `Spec` (`zoo.sections`). This is the quick tier of `zoo validate`: it
imports neither TensorFlow nor Keras (nor KerasHub).
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
from zoo.datasets import digits_subset_errors
from zoo.errors import SpecError, json_path
from zoo.lr_policies import lr_finder_arguments, percentage
from zoo.sections import AUTO, Data, Normalization, Solver, Spec, from_dict, spec_from_json, stage_section, to_dict
from zoo.solver import CYCLIC_MODES, check_schedule, sized_solver

SELECTOR_KEYS = ("match", "regex", "up_to", "indices")
# Where a spec (or a stage) lists layer selectors.
LAYER_SELECTORS = (["frozen"], ["slow"], ["batchnorm", "layers"])
FILE_SOURCES = ("folder", "listing", "csv")
PATH_KEYS = FILE_SOURCES + ("root",)
# The `data` keys that take a subset of the builtin digits (`zoo.datasets.load_digits`).
DIGITS_SUBSET_KEYS = ("per_class", "limit", "validation_count")
# Fields that hold for a whole run, by the section they used to be in.
MOVED_TO_TOP = {"solver": ("mixed_precision",), "data": ("seed",)}
# A spec is a few levels deep; anything far deeper is a mistake (or an attack on the parser).
MAX_DEPTH = 32
# No field holds a larger integer; bigger ones overflow C integers downstream.
MAX_INTEGER = 2**63 - 1
# The stage length the quick checks size a schedule's percentages ("40%")
# against when `epochs` gives it: long enough that distinct percentages stay
# distinct iterations.
NOMINAL_STAGE_ITERATIONS = 10**7
# Weights between the head's Dense layers (float32: 2 GB).
MAX_HEAD_WEIGHTS = 500_000_000
# `mixed_precision: true`, which meant float16 until a spec could name the precision.
MIXED_PRECISION_TRUE = ("true names no precision: choose \"float16\" (what true meant: mixed_float16, with loss "
                        "scaling) or \"bfloat16\" (mixed_bfloat16, no loss scaling: recent GPUs such as A100 "
                        "and H100, and TPUs)")
# What `zoo validate --quick` (`zoo.validate(spec, deep=False)`) says of a valid spec.
QUICK_VALID = "valid (quick: schema and rules; without --quick the model is built and the data read)"


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
        if source.mixed_precision is True:  # an old spec's value
            errors.append(("$.mixed_precision", MIXED_PRECISION_TRUE))
        if errors:
            raise SpecError(errors)
        return source
    return spec_from_json(validated_json(source))


def validated_json(source):
    """The JSON spec of `source`, validated, with its paths made absolute."""
    spec, base_dir, name = read_spec(source)
    errors = value_errors(spec) or spec_errors(spec, base_dir)
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


def spec_errors(spec, base_dir):
    """The schema's errors and the rules' errors of a spec, together, in the
    order of their JSON paths. A rule runs on the sections that passed the
    schema (`semantic_errors`)."""
    found = schema_errors(spec)
    errors = [(json_path(path), message) for path, message in found]
    errors += semantic_errors(spec, base_dir, invalid=[path for path, _ in found])
    return sorted(dict.fromkeys(errors), key=_path_order)


def _path_order(error):
    """An error's JSON path in parts, its indices as numbers: `$.stages[2]`
    comes before `$.stages[10]`."""
    parts = re.split(r"\[(\d+)\]", error[0])  # "$.stages[10].solver": "$.stages", "10", ".solver"
    return [int(part) if index % 2 else part for index, part in enumerate(parts)]


def schema_errors(spec):
    """`(path, message)` of each schema error, the path a list of keys and indices."""
    return _described(sorted(schema_validator().iter_errors(spec), key=lambda e: list(map(str, e.absolute_path))))


def _described(errors):
    """`(path, message)` of each of jsonschema's `errors`, in words."""
    described = []
    for error in errors:
        path = list(error.absolute_path)
        branch = _fitting_branch(error) if error.validator in ("oneOf", "anyOf") else None
        if branch:  # say what is wrong with the value, not that no alternative took it
            described += _described(branch)
        elif error.validator in ("oneOf", "anyOf") and isinstance(error.instance, str):
            described.append((path, _no_alternative(error)))
        elif error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                described.append((path + [key], "unknown key" + _unknown_key_hint(key, path, allowed)))
        elif error.validator == "enum" and path == ["mixed_precision"] and error.instance is True:
            described.append((path, MIXED_PRECISION_TRUE))
        elif error.validator == "enum" and isinstance(error.instance, str):
            allowed = [value for value in error.validator_value if isinstance(value, str)]
            close = difflib.get_close_matches(error.instance, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            described.append((path, f"{error.instance!r} is not one of {_as_json(error.validator_value)}{hint}"))
        elif error.validator == "enum":
            described.append((path, f"{_as_json([error.instance])[1:-1]} is not one of "
                                    f"{_as_json(error.validator_value)}"))
        else:
            described.append((path, error.message))
    return described


def _as_json(values):
    """Allowed values as a spec writes them, strings quoted as in the
    rest of a message: `['memory', 'file', false]`."""
    return "[" + ", ".join(repr(value) if isinstance(value, str) else json.dumps(value) for value in values) + "]"


def _fitting_branch(error):
    """The errors of the one alternative of a `oneOf`/`anyOf` that takes a
    value of this kind (no `type`, `const` or `enum` error on the value
    itself): `-1` for `base_lr` (a number > 0, or "auto") is a number too
    small. None when no alternative, or several, fit."""
    branches = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [subs for subs in branches.values()
               if not any(sub.validator in ("type", "const", "enum") and sub.absolute_path == error.absolute_path
                          for sub in subs)]
    return fitting[0] if len(fitting) == 1 else None


def _no_alternative(error):
    """A string that no alternative of a `oneOf`/`anyOf` takes: the strings
    they allow, the closest one, and the other kinds of value."""
    allowed, kinds = [], []
    for branch in error.validator_value:
        allowed += branch.get("enum", []) + ([branch["const"]] if "const" in branch else [])
        if branch.get("type") not in (None, "string"):
            kinds.append(f"an {branch['type']}" if branch["type"][0] in "aeiou" else f"a {branch['type']}")
    strings = [value for value in allowed if isinstance(value, str)]
    close = difflib.get_close_matches(error.instance, strings, n=1) or difflib.get_close_matches(
        error.instance.lower(), strings, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{error.instance!r} is not one of {_as_json(allowed)}" + "".join(f" nor {kind}" for kind in kinds) + hint


def _unknown_key_hint(key, path, allowed):
    if path and key in MOVED_TO_TOP.get(path[-1], ()):
        return f"; `{key}` holds for the whole run: set it at the top level of the spec"
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(allowed)}"


def semantic_errors(spec, base_dir, invalid=()):
    """What JSON Schema cannot say: the rules between fields.

    A rule reads fields as the schema has them (their types, the keys it
    requires), so it runs only on sections that are there and passed the
    schema: `invalid` holds the paths (lists of keys and indices) of the
    schema's errors, and a rule skips a section with an error at or under it.
    """
    if not isinstance(spec, dict):
        return []
    invalid = [tuple(path) for path in invalid]

    def checked(*path, default=None):
        return _checked(spec, invalid, path, default)

    errors = _name_errors(checked("name"))
    backbone = checked("backbone")
    if backbone is not None:
        errors += _backbone_errors(backbone, base_dir)
    head = checked("head")
    if head is not None:
        errors += _head_errors(head)
    data = checked("data")
    if data is not None:
        errors += _data_errors(data, backbone, base_dir)
    stages = spec.get("stages", [])
    selectors = list(LAYER_SELECTORS)
    if isinstance(stages, list):
        selectors += [["stages", index, *key] for index in range(len(stages)) for key in LAYER_SELECTORS]
    for path in selectors:
        groups = checked(*path, default=[])
        if groups is not None:
            errors += _selector_errors(groups, path)
    if "solver" not in spec and stages == []:
        return errors + [("$.solver", "required: the optimizer, learning rate and training length")]
    return errors + _stage_solver_errors(_stage_solvers(spec, invalid), checked("deterministic"))


def _checked(spec, invalid, path, default=None):
    """The field of `spec` at `path` (keys and indices), for a rule: None if
    the schema found an error at or under it (`invalid`: the paths of its
    errors, as tuples) or a field on the way is of another type; `default`
    if a key or an index on the way is not there."""
    if any(error[:len(path)] == tuple(path) for error in invalid):
        return None
    node = spec
    for key in path:
        if not isinstance(node, dict if isinstance(key, str) else list):
            return None
        if key not in node if isinstance(node, dict) else key >= len(node):
            return default
        node = node[key]
    return node


def _stage_solvers(spec, invalid=()):
    """`(path, Solver)` of each stage, resolved as `spec_from_json` resolves
    it (`stage_section`). The
    Solver is None where one of those did not pass the schema (`invalid`,
    as for `_checked`); the list is empty when `stages` is not a list."""
    top = _checked(spec, invalid, ("solver",), default={})
    stages = spec.get("stages", [])
    if not isinstance(stages, list):
        return []
    solvers = []
    for index in range(len(stages) or 1):
        own = _checked(spec, invalid, ("stages", index, "solver"), default={}) if stages else {}
        where = ["stages", index, "solver"] if stages else ["solver"]
        solvers.append((where, None if top is None or own is None else from_dict(Solver, stage_section(top, own))))
    return solvers


def _stage_solver_errors(solvers, deterministic):
    """Each stage's solver rules, and the one best epoch's monitor over all
    stages (when every stage's solver passed the schema)."""
    errors = []
    for where, solver in solvers:
        if solver is None:
            continue
        errors += _solver_errors(solver, where)
        errors += _lr_finder_errors(solver, where)
        if solver.jit_compile and deterministic:
            errors.append((json_path(where + ["jit_compile"]), "XLA is off under `deterministic: true` "
                                                               "(TensorFlow's op determinism does not support it)"))
    if not solvers or any(solver is None for _, solver in solvers):
        return errors
    first_monitor = None
    for where, solver in solvers:
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
    for key in ("classes",) + DIGITS_SUBSET_KEYS:
        if key in data and "builtin" not in data:
            errors.append((f"$.data.{key}", "only with `builtin`"))
    if "validation_split" in data and "validation_count" in data:
        errors.append(("$.data.validation_count", "not with `validation_split`: give the validation images as "
                                                  "a count or as a share, not both"))
    elif "builtin" in data:
        errors += [(f"$.data.{argument}", message) for argument, message in digits_subset_errors(
            data.get("classes"), data.get("per_class"), data.get("limit"),
            data.get("validation_split", Data.validation_split), data.get("validation_count"))]
    if data.get("cache") and "builtin" in data:
        errors.append(("$.data.cache", f"{json.dumps(data['cache'])} caches decoded image files; the builtin "
                                       "digits are in memory already: remove it"))
    for path, section in (("$.data", data), ("$.data.validation", data.get("validation", {}))):
        for key in PATH_KEYS:
            is_folder = key in ("folder", "root")
            if key in section and not _exists(section[key], base_dir, os.path.isdir if is_folder else os.path.isfile):
                errors.append((f"{path}.{key}", f"no such {'folder' if is_folder else 'file'}: {section[key]}"))
    errors += crop_errors(data.get("augment", {}).get("random_crop"), data.get("image_size"))
    normalization = data.get("normalization")
    if isinstance(normalization, dict):
        try:
            Normalization(**normalization)
        except ValueError as error:
            errors.append(("$.data.normalization", str(error)))
    reason = _preprocessing_error(backbone) if normalization == "backbone" and backbone is not None else None
    if reason:
        knowing = " or ".join(f"`backbone.{key}`" for key, source in backbones.SOURCES.items()
                              if source.has_preprocessing)
        errors.append(("$.data.normalization", f"\"backbone\" needs a backbone that knows its input "
                                               f"preprocessing ({knowing}); {reason}"))
    return errors


def crop_errors(crop, image_size):
    """A `random_crop` larger than the images (of `image_size`; None: not known yet)."""
    if crop and image_size and (crop[0] > image_size[0] or crop[1] > image_size[1]):
        return [("$.data.augment.random_crop", f"{list(crop)} is larger than the images, {list(image_size)}")]
    return []


def _preprocessing_error(backbone):
    """Why the JSON `backbone` section does not know its input preprocessing; None if it does."""
    keys = backbones.given_sources(backbone)
    if len(keys) != 1:
        return None  # reported already
    return backbones.SOURCES[keys[0]].preprocessing_error(backbone)


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
    shares = _percentage_errors(solver, path)
    if shares:
        return errors + shares
    # Steps per epoch come from the data, read by the deep checks: until
    # then percentages are shares of a nominal length.
    length_is_max_iter = solver.epochs is None and solver.max_iter is not None
    return errors + schedule_errors(solver, path, solver.max_iter if length_is_max_iter else NOMINAL_STAGE_ITERATIONS)


def schedule_errors(solver, path, iterations):
    """The errors of the schedule a stage's `solver` declares, the stage
    `iterations` iterations long: `(json path, message)` of the
    `ValueError` that building it would raise (`zoo.solver.lr_schedule`
    on `zoo.solver.sized_solver`), naming the argument; `path` is the
    solver's (keys and indices)."""
    if solver.base_lr == AUTO:  # found before training; any LR checks the other parameters
        solver = dataclasses.replace(solver, base_lr=solver.lr_finder.min_lr)
    try:
        check_schedule(sized_solver(solver, iterations))
    except ValueError as error:
        argument = re.search(r"Argument `(\w+)`", str(error))
        key = argument and _SPEC_KEY.get(argument.group(1), argument.group(1))
        message = str(error)
        if key == "stepvalue" and any(isinstance(value, str) for value in solver.stepvalue or ()):
            # distinct percentages that round to the same iteration of a short stage
            message += f" ({_as_json(solver.stepvalue)} of the stage's {iterations} iterations)"
        return [(json_path(path) + (f".{key}" if key else ""), message)]
    return []


def _percentage_errors(solver, path):
    """The schedule's lengths given as percentages of the stage
    (`zoo.lr_policies.percentage`) that are not one; `stepvalue`s that mix
    percentages with iterations, or whose percentages do not increase; and
    a percentage `max_iter` where `max_iter` gives the stage's length."""
    errors = []
    lengths = [(["stepsize"], solver.stepsize), (["step_size"], solver.step_size), (["max_iter"], solver.max_iter)]
    lengths += [(["stepvalue", index], value) for index, value in enumerate(solver.stepvalue or ())]
    if solver.warmup is not None:
        lengths.append((["warmup", "warmup_steps"], solver.warmup.warmup_steps))
    for keys, value in lengths:
        if not isinstance(value, str):
            continue
        if keys == ["max_iter"] and solver.epochs is None:
            errors.append((json_path(path + keys), f"{value!r} is a share of the stage's length, which max_iter "
                                                   "gives here (the solver has no `epochs`): give max_iter in "
                                                   "iterations, or set `epochs`"))
            continue
        try:
            percentage(next(key for key in reversed(keys) if isinstance(key, str)), value)
        except ValueError as error:
            errors.append((json_path(path + keys), str(error)))
    stepvalue = solver.stepvalue or ()
    kinds = {isinstance(value, str) for value in stepvalue}
    if kinds == {True, False}:
        errors.append((json_path(path + ["stepvalue"]), f"give every stepvalue in iterations or every one as a "
                                                        f"percentage of the stage's; got {_as_json(stepvalue)}"))
    elif kinds == {True} and not errors:
        shares = [percentage("stepvalue", value) for value in stepvalue]
        if any(b <= a for a, b in zip(shares, shares[1:])):
            errors.append((json_path(path + ["stepvalue"]), f"Argument `stepvalue` must be strictly increasing. "
                                                            f"Received: stepvalue={list(stepvalue)!r}"))
    return errors


def _lr_finder_errors(solver, path):
    """`base_lr: "auto"` with a sweep that can find something."""
    errors = []
    try:
        lr_finder_arguments(**to_dict(solver.lr_finder))
    except ValueError as error:
        argument = re.search(r"Argument `(\w+)`", str(error)).group(1)
        errors.append((json_path(path + ["lr_finder", argument]), str(error)))
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
                found = spec_errors(candidate, base_dir)
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

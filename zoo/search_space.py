"""A search space over spec fields: its paths, its checks, and its
declaration on keras-tuner's `HyperParameters`."""

import contextlib
import copy
import math


def set_path(spec, path, value):
    """`spec` with the field at dotted `path` set to `value` (a copy).

    A number addresses a list item: `frozen.0.up_to`, `head.hidden.0`."""
    spec = copy.deepcopy(spec)
    node = spec
    keys = path.split(".")
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ValueError(f"{path!r}: {key!r} is not an item of a list of {len(node)}")
            key = int(key)
        elif not isinstance(node, dict):
            raise ValueError(f"{path!r}: {'.'.join(keys[:depth])!r} is not an object or a list")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict):
                node.setdefault(key, {})
            node = node[key]
    return spec


def hyperparameter_errors(hp, where):
    kind = hp["type"]
    errors = []
    if kind in ("float", "int"):
        for key in ("min", "max"):
            if key not in hp:
                errors.append((f"{where}.{key}", f"required for a {kind} range"))
        if not errors and hp["min"] >= hp["max"]:
            errors.append((where, f"`min` must be < `max`; got {hp['min']} and {hp['max']}"))
        if hp.get("sampling", "linear") != "linear" and hp.get("min", 1) <= 0:
            errors.append((f"{where}.sampling", f"{hp['sampling']} sampling needs min > 0"))
        if kind == "int" and not all(float(hp.get(k, 0)).is_integer() for k in ("min", "max", "step")):
            errors.append((where, "an int range needs integer min, max and step"))
    if kind == "choice" and "values" not in hp:
        errors.append((f"{where}.values", "required for a choice"))
    if "branches" in hp:
        if kind != "choice":
            errors.append((f"{where}.branches", "only for a choice"))
        else:
            for value in hp["branches"]:
                if value not in [str(v) for v in hp.get("values", [])]:
                    errors.append((f"{where}.branches.{value}", f"{value!r} is not among the choice's values"))
    return errors


def extremes(hp):
    """The values of a hyperparameter that the schema must accept."""
    if hp["type"] == "int":
        return [int(hp["min"]), int(hp["max"])]
    if hp["type"] == "float":
        return [hp["min"], hp["max"]]
    if hp["type"] == "boolean":
        return [False, True]
    return list(hp["values"])


def with_defaults(spec, space):
    """`spec` with every well-formed hyperparameter of `space` at its first value."""
    for name, hp in space.items():
        if not hyperparameter_errors(hp, ""):
            spec = set_path(spec, name, extremes(hp)[0])
    return spec


def typed(hp, key):
    """The choice value whose string form is the branch key `key`."""
    return next(v for v in hp["values"] if str(v) == key)


def declare(hp, space, parent=None):
    """Declare `space` on keras-tuner's `hp`; branches as conditional scopes."""
    for name, config in space.items():
        scope = hp.conditional_scope(*parent) if parent else contextlib.nullcontext()
        with scope:
            kind = config["type"]
            if kind == "float":
                hp.Float(name, config["min"], config["max"], step=config.get("step"),
                         sampling=config.get("sampling", "linear"))
            elif kind == "int":
                hp.Int(name, int(config["min"]), int(config["max"]), step=int(config.get("step", 1)),
                       sampling=config.get("sampling", "linear"))
            elif kind == "boolean":
                hp.Boolean(name)
            else:
                hp.Choice(name, config["values"])
        for value, branch in config.get("branches", {}).items():
            declare(hp, branch, (name, [typed(config, value)]))


def trial_spec(spec, hp):
    """The JSON spec with a trial's active hyperparameter values, without `search`."""
    result = {k: v for k, v in spec.items() if k != "search"}
    for name, value in hp.values.items():
        if not name.startswith("tuner/") and hp.is_active(name):
            result = set_path(result, name, value)
    return result


def refined_space(space, best):
    """`space` narrowed around the best values: ranges shrink to a quarter of
    their width (log width under log sampling) centred on the best value."""
    narrowed = {}
    for name, config in space.items():
        config = copy.deepcopy(config)
        if name in best and config["type"] in ("float", "int"):
            low, high, value = config["min"], config["max"], best[name]
            if config.get("sampling", "linear") == "log":
                half = (math.log(high) - math.log(low)) / 8
                low, high = max(low, value * math.exp(-half)), min(high, value * math.exp(half))
            else:
                half = (high - low) / 8
                low, high = max(low, value - half), min(high, value + half)
            if config["type"] == "int":
                low, high = int(math.floor(low)), int(math.ceil(high))
            if low < high:
                config.update(min=low, max=high)
        if "branches" in config:
            config["branches"] = {k: refined_space(v, best) for k, v in config["branches"].items()}
        narrowed[name] = config
    return narrowed


def flat(space):
    """`{name: config}` of every hyperparameter, branches included."""
    found = {}
    for name, config in space.items():
        found[name] = config
        for branch in config.get("branches", {}).values():
            found.update(flat(branch))
    return found

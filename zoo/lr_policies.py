"""The learning-rate schedules' policies and the checks on their arguments,
without Keras.

`callbacks.CaffeLR`, `callbacks.CyclicLR` and `callbacks.Warmup` check
their arguments with these functions in `__init__`; the spec loader
(`zoo.spec`) runs the same functions on a spec's solver without building a
schedule, so `zoo validate --quick` imports no Keras and both say the same
thing: the rule and the value received, as Keras does. A spec may give a
schedule's lengths as a share of its stage (`"stepsize": "40%"`):
`in_iterations` turns them into iterations before a schedule is built.

```
caffe_arguments("step", 0.01, gamma=0.1)
# ValueError: Argument `stepsize` is required when policy='step'. Received: stepsize=None
```

This module imports nothing but the standard library; the formulas, which
need `keras.ops`, stay with the callbacks.
"""

import difflib
import fractions
import math
import numbers
import re

# --- argument checks that say the rule and the value received, as Keras does


def _fail(name, rule, value, context):
    where = f" {context}" if context else ""
    raise ValueError(f"Argument `{name}` must be {rule}{where}. Received: {name}={value!r}")


def number(name, value, minimum=None, exclusive=True, context=""):
    """`value` as a float; a finite number (> or >= `minimum` when given)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
    ):
        _fail(name, "a finite number", value, context)
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        _fail(name, f"{'>' if exclusive else '>='} {minimum}", value, context)
    return float(value)


def integer(name, value, minimum, context=""):
    """`value` as an int >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        _fail(name, f"an integer >= {minimum}", value, context)
    return int(value)


def one_of(name, value, choices):
    """`value` if it is in `choices`; else the error lists them and the closest."""
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"Argument `{name}` must be one of {', '.join(choices)}. "
        f"Received: {name}={value!r}{hint}"
    )


# Caffe's `lr_policy` values: name -> the parameters it uses besides base_lr
# (its formula: `callbacks.caffe_lr`).
CAFFE_POLICIES = {
    "fixed": (),
    "step": ("gamma", "stepsize"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "multistep": ("gamma", "stepvalue"),
    "poly": ("power", "max_iter"),
    "sigmoid": ("gamma", "stepsize"),
}
# Smith's cyclical modes, `CyclicLR`'s `mode` (their formulas: `callbacks.cyclic_lr`).
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def caffe_arguments(policy, base_lr, gamma=None, power=None, stepsize=None, stepvalue=None, max_iter=None):
    """`CaffeLR`'s arguments, checked: a dict of all of them, with the
    numbers a policy uses as floats or ints and `stepvalue` as a list.

    Each policy checks only the parameters it uses; the others are kept as
    given. Raises `ValueError` naming the first argument that is wrong.
    """
    arguments = {
        "policy": one_of("policy", policy, list(CAFFE_POLICIES)),
        "base_lr": number("base_lr", base_lr, minimum=0),
        "gamma": gamma,
        "power": power,
        "stepsize": stepsize,
        "stepvalue": None if stepvalue is None else list(stepvalue),
        "max_iter": max_iter,
    }
    uses = CAFFE_POLICIES[policy]
    context = f"when policy={policy!r}"
    for name in uses:
        if arguments[name] is None:
            raise ValueError(f"Argument `{name}` is required {context}. Received: {name}=None")
    if "gamma" in uses:  # sigmoid's gamma takes any sign: negative decays, positive rises
        arguments["gamma"] = number("gamma", gamma, minimum=None if policy == "sigmoid" else 0, context=context)
    if "power" in uses:
        arguments["power"] = number("power", power, minimum=0, context=context)
    for name in ("stepsize", "max_iter"):
        if name in uses:
            arguments[name] = integer(name, arguments[name], 1, context=context)
    if "stepvalue" in uses:
        arguments["stepvalue"] = _stepvalue(arguments["stepvalue"], context)
    return arguments


def _stepvalue(stepvalue, context):
    if not stepvalue:
        raise ValueError(f"Argument `stepvalue` must be a non-empty list {context}. Received: stepvalue={stepvalue!r}")
    values = [integer("stepvalue", value, 1, context=context) for value in stepvalue]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"Argument `stepvalue` must be strictly increasing {context}. "
                         f"Received: stepvalue={stepvalue!r}")
    return values


def cyclic_arguments(base_lr, max_lr, step_size, mode="triangular", gamma=1.0):
    """`CyclicLR`'s arguments, checked: a dict of them, numbers as floats
    and ints. Raises `ValueError` naming the first argument that is wrong."""
    base_lr = number("base_lr", base_lr, minimum=0)
    return {
        "base_lr": base_lr,
        "max_lr": number("max_lr", max_lr, minimum=base_lr),
        "step_size": integer("step_size", step_size, 1),
        "mode": one_of("mode", mode, list(CYCLIC_MODES)),
        "gamma": number("gamma", gamma, minimum=0),
    }


# --- lengths given as a share of the stage, so that a recipe carries over between datasets and budgets

# "40%", "12.5%": at most 3 digits before the point and 12 after (no field needs more).
_PERCENTAGE = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,12})?)%")


def percentage(name, value, context=""):
    """The share of the stage's iterations that a percentage string such
    as `"40%"` or `"12.5%"` gives: a `fractions.Fraction` in (0, 1]."""
    match = _PERCENTAGE.fullmatch(value) if isinstance(value, str) else None
    share = fractions.Fraction(match.group(1)) / 100 if match else None
    if share is None or not 0 < share <= 1:
        _fail(name, "a percentage of the stage's iterations, > 0% and <= 100%, such as \"40%\" or \"12.5%\"",
              value, context)
    return share


def in_iterations(name, value, iterations, context=""):
    """`value` in iterations: an integer as given, a percentage string
    (`percentage`) as that share of `iterations`, rounded to the nearest
    integer (halves up) and at least 1: "40%" of 150 is 60, "12.5%" of 100
    is 13."""
    if not isinstance(value, str):
        return value
    return max(1, math.floor(percentage(name, value, context) * iterations + fractions.Fraction(1, 2)))


def warmup_arguments(warmup_steps, start_lr=0.0):
    """`Warmup`'s arguments besides the schedule it wraps, checked: a dict of
    them. Raises `ValueError` naming the first argument that is wrong."""
    return {
        "warmup_steps": integer("warmup_steps", warmup_steps, 1),
        "start_lr": number("start_lr", start_lr, minimum=0, exclusive=False),
    }


# The rules by which an LR range test suggests an LR (`callbacks.lr_finder.suggest_lrs`).
LR_FINDER_RULES = {
    "valley": "middle of the longest stretch where the smoothed loss keeps falling",
    "steep": "steepest fall of the smoothed loss before its minimum",
    "minimum": "learning rate at the minimum smoothed loss / 10",
}


def lr_finder_arguments(min_lr=1e-7, max_lr=10.0, num_steps=100, stop_factor=3.0, smoothing=0.98,
                        rule="valley"):
    """`LRFinder`'s arguments, checked: a dict of them, numbers as floats
    and ints. Raises `ValueError` naming the first argument that is wrong."""
    min_lr = number("min_lr", min_lr, minimum=0)
    smoothing = number("smoothing", smoothing, minimum=0, exclusive=False)
    if smoothing >= 1:
        raise ValueError(f"Argument `smoothing` must be < 1. Received: smoothing={smoothing!r}")
    return {
        "min_lr": min_lr,
        "max_lr": number("max_lr", max_lr, minimum=min_lr),
        "num_steps": integer("num_steps", num_steps, 2),
        "stop_factor": number("stop_factor", stop_factor, minimum=1),
        "smoothing": smoothing,
        "rule": one_of("rule", rule, list(LR_FINDER_RULES)),
    }

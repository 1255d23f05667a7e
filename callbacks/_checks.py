"""Argument checks that say the rule and the value received, as Keras does."""

import difflib
import math
import numbers


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

"""Caffe's seven `lr_policy` values as one schedule callback."""

import math

from keras import ops
from keras.saving import register_keras_serializable

from callbacks import _checks
from callbacks.base import LRScheduleCallback


def _f(x):
    return ops.cast(x, "float32")


def _gamma_pow(gamma, exponent):
    # gamma ** exponent as exp(exponent * log(gamma)), log taken in float64:
    # float32 pow loses ~1e-4 relative accuracy by iteration 5000.
    return ops.exp(_f(exponent) * math.log(gamma))


# Caffe's SGDSolver::GetLearningRate, `it` being the 0-based iteration:
#   fixed:     base_lr
#   step:      base_lr * gamma ^ floor(it / stepsize)
#   exp:       base_lr * gamma ^ it
#   inv:       base_lr * (1 + gamma * it) ^ (-power)
#   multistep: base_lr * gamma ^ (number of stepvalues <= it)
#   poly:      base_lr * (1 - min(it, max_iter) / max_iter) ^ power
#   sigmoid:   base_lr / (1 + exp(-gamma * (it - stepsize)))
# name: (the parameters it needs, the formula).
POLICIES = {
    "fixed": ((), lambda p, it: p.base_lr),
    "step": (
        ("gamma", "stepsize"),
        lambda p, it: p.base_lr * _gamma_pow(p.gamma, ops.floor_divide(it, p.stepsize)),
    ),
    "exp": (("gamma",), lambda p, it: p.base_lr * _gamma_pow(p.gamma, it)),
    "inv": (
        ("gamma", "power"),
        lambda p, it: p.base_lr * ops.exp(-p.power * ops.log1p(p.gamma * _f(it))),
    ),
    "multistep": (
        ("gamma", "stepvalue"),
        lambda p, it: p.base_lr
        * _gamma_pow(p.gamma, ops.sum(ops.cast(ops.greater_equal(ops.expand_dims(it, -1), p.stepvalue), "int32"), axis=-1)),
    ),
    # Clamped at max_iter (Caffe's formula goes negative, or NaN, past it);
    # the integer difference keeps float32 exact near max_iter.
    "poly": (
        ("power", "max_iter"),
        lambda p, it: p.base_lr
        * ops.power(_f(p.max_iter - ops.minimum(it, p.max_iter)) / p.max_iter, p.power),
    ),
    "sigmoid": (
        ("gamma", "stepsize"),
        lambda p, it: p.base_lr * ops.sigmoid(p.gamma * _f(it - p.stepsize)),
    ),
}


@register_keras_serializable(package="zoo")
class CaffeLR(LRScheduleCallback):
    """Caffe's learning-rate policies, with Caffe's per-iteration semantics.

    The learning rate is a function of the 0-based optimizer iteration `it`,
    recomputed at every optimizer step:

    ```
    fixed:     base_lr
    step:      base_lr * gamma ^ floor(it / stepsize)
    exp:       base_lr * gamma ^ it
    inv:       base_lr * (1 + gamma * it) ^ (-power)
    multistep: base_lr * gamma ^ (number of stepvalue entries <= it)
    poly:      base_lr * (1 - it / max_iter) ^ power, 0 from max_iter on
    sigmoid:   base_lr / (1 + exp(-gamma * (it - stepsize)))
    ```

    Use it as a callback (it drives the optimizer's LR during `fit` and logs
    `lr` each epoch) or as a schedule (`keras.optimizers.SGD(learning_rate=...)`).

    Example:

    ```python
    lr = CaffeLR("step", base_lr=0.01, gamma=0.1, stepsize=1000)
    lr.lr_at(999), lr.lr_at(1000)  # (0.01, 0.001)
    model.fit(x, y, epochs=10, callbacks=[lr])
    ```

    Args:
        policy: String. One of `fixed`, `step`, `exp`, `inv`, `multistep`,
            `poly`, `sigmoid`.
        base_lr: Float > 0. The learning rate at iteration 0 (the plateau of
            `sigmoid`).
        gamma: Float. Decay factor: > 0 for `step`, `exp`, `inv`, `multistep`;
            any sign for `sigmoid` (negative decays, positive rises).
        power: Float > 0. Exponent of `inv` and `poly`.
        stepsize: Integer >= 1. Iterations per decay for `step`; the midpoint
            of `sigmoid`.
        stepvalue: List of strictly increasing integers >= 1. The iterations at
            which `multistep` multiplies the LR by `gamma`.
        max_iter: Integer >= 1. The iteration at which `poly` reaches 0.

    Each policy checks only the parameters it uses; the others are ignored.
    """

    def __init__(
        self,
        policy,
        base_lr,
        gamma=None,
        power=None,
        stepsize=None,
        stepvalue=None,
        max_iter=None,
    ):
        super().__init__()
        self.policy = _checks.one_of("policy", policy, list(POLICIES))
        self.base_lr = _checks.number("base_lr", base_lr, minimum=0)
        self.gamma, self.power, self.stepsize = gamma, power, stepsize
        self.stepvalue = None if stepvalue is None else list(stepvalue)
        self.max_iter = max_iter
        context = f"when policy={policy!r}"
        for name in POLICIES[policy][0]:
            if getattr(self, name) is None:
                raise ValueError(
                    f"Argument `{name}` is required when policy={policy!r}. "
                    f"Received: {name}=None"
                )
        if "gamma" in POLICIES[policy][0]:
            minimum = None if policy == "sigmoid" else 0
            self.gamma = _checks.number("gamma", gamma, minimum=minimum, context=context)
        if "power" in POLICIES[policy][0]:
            self.power = _checks.number("power", power, minimum=0, context=context)
        if "stepsize" in POLICIES[policy][0]:
            self.stepsize = _checks.integer("stepsize", stepsize, 1, context=context)
        if "max_iter" in POLICIES[policy][0]:
            self.max_iter = _checks.integer("max_iter", max_iter, 1, context=context)
        if "stepvalue" in POLICIES[policy][0]:
            self.stepvalue = _check_stepvalue(self.stepvalue, context)

    def _lr(self, iteration):
        return POLICIES[self.policy][1](self, iteration)

    def get_config(self):
        return {
            "policy": self.policy,
            "base_lr": self.base_lr,
            "gamma": self.gamma,
            "power": self.power,
            "stepsize": self.stepsize,
            "stepvalue": self.stepvalue,
            "max_iter": self.max_iter,
        }


def _check_stepvalue(stepvalue, context):
    if not stepvalue:
        raise ValueError(
            f"Argument `stepvalue` must be a non-empty list {context}. "
            f"Received: stepvalue={stepvalue!r}"
        )
    values = [_checks.integer("stepvalue", v, 1, context=context) for v in stepvalue]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(
            f"Argument `stepvalue` must be strictly increasing {context}. "
            f"Received: stepvalue={stepvalue!r}"
        )
    return values

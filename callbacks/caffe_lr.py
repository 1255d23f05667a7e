"""Caffe's seven `lr_policy` values as one schedule callback."""

import math

from keras import ops
from keras.saving import register_keras_serializable

from callbacks.base import LRScheduleCallback
from zoo.lr_policies import CAFFE_POLICIES, caffe_arguments


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
# name: the factor of base_lr (the parameters each uses: `zoo.lr_policies.CAFFE_POLICIES`).
POLICIES = {
    "fixed": lambda p, it: 1.0,
    "step": lambda p, it: _gamma_pow(p.gamma, ops.floor_divide(it, p.stepsize)),
    "exp": lambda p, it: _gamma_pow(p.gamma, it),
    "inv": lambda p, it: ops.exp(-p.power * ops.log1p(p.gamma * _f(it))),
    "multistep": lambda p, it: _gamma_pow(
        p.gamma, ops.sum(ops.cast(ops.greater_equal(ops.expand_dims(it, -1), p.stepvalue), "int32"), axis=-1)),
    # Clamped at max_iter (Caffe's formula goes negative, or NaN, past it);
    # the integer difference keeps float32 exact near max_iter.
    "poly": lambda p, it: ops.power(_f(p.max_iter - ops.minimum(it, p.max_iter)) / p.max_iter, p.power),
    "sigmoid": lambda p, it: ops.sigmoid(p.gamma * _f(it - p.stepsize)),
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
        # The checks the spec loader runs too, without Keras.
        checked = caffe_arguments(policy, base_lr, gamma=gamma, power=power, stepsize=stepsize,
                                  stepvalue=stepvalue, max_iter=max_iter)
        for name, value in checked.items():
            setattr(self, name, value)

    def _relative_lr(self, iteration):
        return POLICIES[self.policy](self, iteration)

    def _shape_key(self):
        used = CAFFE_POLICIES[self.policy]
        return ("CaffeLR", self.policy, *(tuple(getattr(self, name) or ()) if name == "stepvalue"
                                          else getattr(self, name) for name in used))

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


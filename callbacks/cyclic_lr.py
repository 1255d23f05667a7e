"""Smith's cyclical learning rates."""

from keras import ops
from keras.saving import register_keras_serializable

from callbacks.base import LRScheduleCallback
from zoo.lr_policies import cyclic_arguments

# mode (`zoo.lr_policies.CYCLIC_MODES`): the amplitude's scale as a function of (cycle, iteration, gamma).
MODES = {
    "triangular": lambda cycle, it, gamma: 1.0,
    "triangular2": lambda cycle, it, gamma: 1.0 / ops.power(2.0, cycle - 1.0),
    "exp_range": lambda cycle, it, gamma: ops.power(gamma, it),
}


@register_keras_serializable(package="zoo")
class CyclicLR(LRScheduleCallback):
    """Cyclical learning rate (Smith, "Cyclical Learning Rates for Training
    Neural Networks", 2017): the LR moves linearly between `base_lr` and
    `max_lr` and back, one half-cycle every `step_size` iterations.

    With `it` the 0-based optimizer iteration (the formulas of the widely used
    Keras CLR reference implementation):

    ```
    cycle = floor(1 + it / (2 * step_size))
    x     = abs(it / step_size - 2 * cycle + 1)
    lr    = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale
    scale = 1                       # triangular
            1 / 2 ^ (cycle - 1)     # triangular2: amplitude halves each cycle
            gamma ^ it              # exp_range
    ```

    Example:

    ```python
    clr = CyclicLR(base_lr=1e-4, max_lr=1e-2, step_size=200, mode="triangular2")
    clr.lr_at(0), clr.lr_at(200), clr.lr_at(600)  # (1e-4, 1e-2, ~5e-3)
    model.fit(x, y, epochs=20, callbacks=[clr])
    ```

    Args:
        base_lr: Float > 0. The lower bound of the cycle, the LR at iteration 0.
        max_lr: Float > `base_lr`. The upper bound of the first cycle.
        step_size: Integer >= 1. Iterations in half a cycle (Smith advises 2-10
            epochs' worth).
        mode: String. `triangular`, `triangular2` or `exp_range`.
            Defaults to `triangular`.
        gamma: Float > 0. The per-iteration decay of `exp_range`.
            Defaults to `1.0`.
    """

    def __init__(self, base_lr, max_lr, step_size, mode="triangular", gamma=1.0):
        super().__init__()
        # The checks the spec loader runs too, without Keras.
        checked = cyclic_arguments(base_lr, max_lr, step_size, mode=mode, gamma=gamma)
        for name, value in checked.items():
            setattr(self, name, value)

    def _relative_lr(self, iteration):
        # lr / base_lr = 1 + (max_lr / base_lr - 1) * max(0, 1 - x) * scale
        it = ops.cast(iteration, "float32")
        cycle = ops.floor(1.0 + it / (2.0 * self.step_size))
        x = ops.abs(it / self.step_size - 2.0 * cycle + 1.0)
        scale = MODES[self.mode](cycle, it, self.gamma)
        return 1.0 + (self.max_lr / self.base_lr - 1.0) * ops.maximum(0.0, 1.0 - x) * scale

    def _shape_key(self):
        return ("CyclicLR", self.max_lr / self.base_lr, self.step_size, self.mode, self.gamma)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
        }

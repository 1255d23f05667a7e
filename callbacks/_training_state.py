"""Helpers shared by the callbacks that watch each step's loss and roll back."""

import math

from keras import ops


def snapshot(model):
    """Copies of the model's variables (its seed generators' states
    included) and its optimizer's, for `restore`."""
    variables = list(model.weights) + seed_states(model) + list(model.optimizer.variables)
    return [(v, ops.convert_to_numpy(v)) for v in variables]


def seed_states(model):
    """The model's variables that `save_weights` leaves out: the states of
    its random seed generators (Dropout's masks follow them)."""
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


def restore(saved):
    for variable, value in saved:
        variable.assign(value)


class StepLoss:
    """The loss of each step, recovered from the epoch's running mean.

    Keras logs `loss` at batch end as the mean over the epoch so far, and calls
    batch hooks once per `steps_per_execution` steps; the difference of
    successive running totals gives the mean loss of the steps since the last
    call (exact when batches are of equal size).
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self._steps = 0
        self._total = 0.0

    def update(self, batch, logs):
        steps = batch + 1
        mean = float(logs["loss"])
        if not math.isfinite(mean):
            return mean
        total = mean * steps
        loss = (total - self._total) / max(steps - self._steps, 1)
        self._steps, self._total = steps, total
        return loss

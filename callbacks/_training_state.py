"""Helpers shared by the callbacks that watch each step's loss and roll back."""

import math

import keras
from keras import ops


class Snapshot:
    """Copies of some variables, kept on their device.

    `take()` copies the variables' values in, `restore()` copies them back,
    both device to device (`assign`): host memory is never touched. The
    cost is one more copy of the variables in device memory.
    """

    def __init__(self, variables):
        self.variables = list(variables)
        self._copies = None

    def take(self, values=None):
        """Copy the variables' values in (or `values`, one per variable)."""
        values = [v.value for v in self.variables] if values is None else values
        if self._copies is None:
            self._copies = [keras.Variable(_own_buffer(value), dtype=v.dtype, trainable=False, name="snapshot")
                            for v, value in zip(self.variables, values)]
        else:
            for copy, value in zip(self._copies, values):
                copy.assign(_own_buffer(value))
        return self

    @property
    def values(self):
        """Copies of the values taken, as tensors on the device (copies:
        what a caller does with them cannot reach this snapshot)."""
        return [_own_buffer(copy.value) for copy in self._copies]

    def restore(self):
        for variable, copy in zip(self.variables, self._copies):
            variable.assign(_own_buffer(copy.value))


def _own_buffer(value):
    # Assigning a variable's value can share it (a TensorFlow variable
    # handle, a JAX array that the train step donates and frees): a copy
    # and its variable must not share one buffer.
    return ops.copy(value)


def snapshot(model):
    """A `Snapshot` of the model's variables (its seed generators' states
    included) and its optimizer's, taken now."""
    return Snapshot(list(model.weights) + seed_states(model) + list(model.optimizer.variables)).take()


def seed_states(model):
    """The model's variables that `save_weights` leaves out: the states of
    its random seed generators (Dropout's masks follow them)."""
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


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

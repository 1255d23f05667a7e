"""The one place where zoo callbacks take over an optimizer's learning rate.

During a `fit`, the optimizer's learning rate is replaced by a `ControlledLR`:
a schedule of the optimizer iteration (set by at most one LR callback, else the
optimizer's own learning rate) times a scale (lowered by `PlateauDecay`). The
train function is rebuilt so that the LR is computed in-graph from
`optimizer.iterations` at every optimizer step, also inside
`steps_per_execution` loops and XLA. At the end of `fit` the optimizer gets its
own learning rate back, so a saved model loads without this package.
"""

import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule
import keras
from keras.saving import (
    deserialize_keras_object,
    register_keras_serializable,
    serialize_keras_object,
)


def _base_optimizer(optimizer):
    # LossScaleOptimizer (mixed precision) delegates the LR to its inner optimizer.
    return getattr(optimizer, "inner_optimizer", optimizer)


def evaluate_lr(learning_rate, iteration):
    """The value of any Keras learning-rate object at `iteration`, as a tensor."""
    if isinstance(learning_rate, LearningRateSchedule):
        return learning_rate(iteration)
    if isinstance(learning_rate, keras.Variable):
        return learning_rate.value
    if callable(learning_rate):
        return learning_rate()
    return learning_rate


@register_keras_serializable(package="zoo")
class ControlledLR(LearningRateSchedule):
    """`schedule(iteration) * scale`, installed on an optimizer during a fit.

    Args:
        original: the optimizer's own learning rate (Variable, schedule, float),
            restored at the end of the fit and used while no schedule is set.
        fit_token: the `params` dict of the fit that installed it.

    An LR callback sets `schedule`; `PlateauDecay` sets `scale`, a scalar
    `keras.Variable`.
    """

    def __init__(self, original, fit_token):
        self.original = original
        self.fit_token = fit_token
        self.schedule = None
        self.scale = None

    def __call__(self, step):
        base = self.original if self.schedule is None else self.schedule
        lr = ops.cast(evaluate_lr(base, step), "float32")
        if self.scale is not None:
            lr = lr * self.scale.value
        return lr

    def get_config(self):
        # Reached when a full model is saved in the middle of a fit
        # (ModelCheckpoint). Save the optimizer as it is outside the fit, so the
        # checkpoint has the same variables and loads without this package's
        # callbacks; their state is theirs to save.
        original = self.original
        if isinstance(original, LearningRateSchedule):
            original = serialize_keras_object(original)
        else:
            original = float(ops.convert_to_numpy(evaluate_lr(original, 0)))
        return {"original": original}

    @classmethod
    def from_config(cls, config):
        # The optimizer's own learning rate, not a ControlledLR: see get_config.
        original = config["original"]
        return deserialize_keras_object(original) if isinstance(original, dict) else original


def attach(model, fit_params):
    """The `ControlledLR` of the current fit, installed on first use.

    `fit_params` is the `params` dict that Keras hands to every callback of one
    `fit` call; it tells a controller left behind by an interrupted fit (which
    never reached `on_train_end`) from the one of the fit in progress.
    """
    optimizer = _base_optimizer(model.optimizer)
    current = optimizer._learning_rate
    if isinstance(current, ControlledLR):
        if current.fit_token is fit_params:
            return current
        current = current.original  # left behind by an interrupted fit
    controller = ControlledLR(current, fit_params)
    # Swap the private attribute: the public setter would untrack the LR
    # variable and change the optimizer's checkpoint layout.
    optimizer._learning_rate = controller
    # The traced train function read the old LR; rebuild it (tracing is lazy,
    # so this costs nothing before the first step).
    model.make_train_function(force=True)
    return controller


def set_schedule(model, fit_params, schedule):
    """Make `schedule` drive the LR of the current fit; one schedule a fit."""
    controller = attach(model, fit_params)
    if controller.schedule is not None and controller.schedule is not schedule:
        raise ValueError(
            "Two learning-rate schedules in one fit: "
            f"{type(controller.schedule).__name__} and {type(schedule).__name__}. "
            "Pass one; wrap it in `Warmup(...)` to add a warmup."
        )
    controller.schedule = schedule


def set_scale(model, fit_params, scale):
    """Multiply the learning rate of the current fit by `scale` from now on."""
    controller = attach(model, fit_params)
    if controller.scale is None:
        # Not an optimizer variable: that would change the optimizer's
        # checkpoint layout for the length of the fit.
        controller.scale = keras.Variable(1.0, dtype="float32", trainable=False, name="lr_scale")
    if float(ops.convert_to_numpy(controller.scale)) == scale:
        return
    controller.scale.assign(scale)
    if keras.backend.backend() == "jax":
        # A jitted JAX step holds variables outside the model's and optimizer's
        # state as constants; retrace so that it sees the new scale.
        model.make_train_function(force=True)


def current_lr(model, iteration=None):
    """The learning rate `model`'s optimizer applies at `iteration` (default:
    the last step taken), zoo callbacks and plateau scaling included."""
    optimizer = _base_optimizer(model.optimizer)
    if iteration is None:
        iteration = max(int(ops.convert_to_numpy(optimizer.iterations)) - 1, 0)
    return float(ops.convert_to_numpy(evaluate_lr(optimizer._learning_rate, iteration)))


def lr_per_step(model, first, stop):
    """The learning rates at iterations `first..stop-1`, a numpy array, from
    one evaluation of the schedule over all of them."""
    optimizer = _base_optimizer(model.optimizer)
    iterations = np.arange(first, stop)
    try:
        rates = ops.convert_to_numpy(evaluate_lr(optimizer._learning_rate, iterations))
        return np.broadcast_to(rates, iterations.shape).astype("float64")
    except (ValueError, TypeError):
        # A schedule that branches on a scalar step (CosineDecay with warmup
        # uses ops.cond) cannot take a vector: evaluate step by step.
        return np.array([current_lr(model, int(i)) for i in iterations])


def detach(model):
    """Give the optimizer its own learning rate back (idempotent)."""
    optimizer = _base_optimizer(model.optimizer)
    controller = optimizer._learning_rate
    if isinstance(controller, ControlledLR):
        optimizer._learning_rate = controller.original
        model.train_function = None  # it was traced with the controller

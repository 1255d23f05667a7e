"""The one place where zoo callbacks take over an optimizer's learning rate.

During a `fit`, the optimizer's learning rate is replaced by a `ControlledLR`:
a schedule of the optimizer iteration (set by at most one LR callback, else the
optimizer's own learning rate) times a scale (lowered by `PlateauDecay`). The
train function is rebuilt so that the LR is computed in-graph from
`optimizer.iterations` at every optimizer step, also inside
`steps_per_execution` loops and XLA. At the end of `fit` the optimizer gets its
own learning rate back, so a saved model loads without this package.
"""

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
        schedule: `LearningRateSchedule` set by an LR callback, or `None`.
        scale: a scalar `keras.Variable` that `PlateauDecay` lowers, a float
            (in a model saved in the middle of a fit), or `None`.
    """

    def __init__(self, original, schedule=None, scale=None):
        self.original = original
        self.schedule = schedule
        self.scale = scale
        self.fit_token = None  # the `params` dict of the fit that installed it

    def __call__(self, step):
        lr = ops.cast(evaluate_lr(self._base(), step), "float32")
        if isinstance(self.scale, keras.Variable):
            lr = lr * self.scale.value
        elif self.scale is not None:
            lr = lr * self.scale
        return lr

    def _base(self):
        return self.original if self.schedule is None else self.schedule

    def get_config(self):
        # Reached when a full model is saved in the middle of a fit
        # (ModelCheckpoint): the loaded optimizer keeps the LR it had then.
        base = self._base()
        if isinstance(base, LearningRateSchedule):
            base = serialize_keras_object(base)
        else:
            base = float(ops.convert_to_numpy(evaluate_lr(base, 0)))
        scale = None if self.scale is None else float(ops.convert_to_numpy(self.scale))
        return {"original": base, "scale": scale}

    @classmethod
    def from_config(cls, config):
        original = config["original"]
        if isinstance(original, dict):
            original = deserialize_keras_object(original)
        return cls(original, scale=config["scale"])


def attach(model, fit_params):
    """The `ControlledLR` of the current fit, installed on first use.

    `fit_params` is the `params` dict that Keras hands to every callback of one
    `fit` call; it tells a controller left behind by an interrupted fit (which
    never reached `on_train_end`) from the one of the fit in progress.
    """
    optimizer = _base_optimizer(model.optimizer)
    current = optimizer._learning_rate
    # A ControlledLR without a fit token came from a saved model: it is the
    # optimizer's own schedule like any other.
    if isinstance(current, ControlledLR) and current.fit_token is not None:
        if current.fit_token is fit_params:
            return current
        _restore(optimizer, current)
        current = optimizer._learning_rate
    controller = ControlledLR(current)
    controller.fit_token = fit_params
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


def add_scale(model, fit_params):
    """A scalar variable, 1.0, that multiplies the LR of the current fit."""
    controller = attach(model, fit_params)
    if controller.scale is None:
        optimizer = _base_optimizer(model.optimizer)
        # An optimizer variable, so that JAX's stateless train step sees its
        # updates rather than the value it had when traced.
        controller.scale = optimizer.add_variable(
            shape=(), initializer="ones", dtype="float32", name="zoo_lr_scale"
        )
    return controller.scale


def current_lr(model, iteration=None):
    """The learning rate at `iteration` (default: the last step taken)."""
    optimizer = _base_optimizer(model.optimizer)
    if iteration is None:
        iteration = max(int(ops.convert_to_numpy(optimizer.iterations)) - 1, 0)
    return float(ops.convert_to_numpy(evaluate_lr(optimizer._learning_rate, iteration)))


def detach(model):
    """Give the optimizer its own learning rate back (idempotent)."""
    optimizer = _base_optimizer(model.optimizer)
    controller = optimizer._learning_rate
    if isinstance(controller, ControlledLR) and controller.fit_token is not None:
        _restore(optimizer, controller)
        model.train_function = None  # it was traced with the controller


def _restore(optimizer, controller):
    optimizer._learning_rate = controller.original
    if controller.scale is not None:
        optimizer._untrack_variable(controller.scale)

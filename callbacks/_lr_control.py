"""The one place where zoo callbacks take over an optimizer's learning rate.

During a `fit`, the optimizer's learning rate is replaced by a `ControlledLR`:

```
lr(iteration) = level * shape(iteration)
level = base_lr * scale     # the schedule's base_lr (else the optimizer's own LR) times PlateauDecay's scale
shape = the relative schedule of at most one LR callback (1 without one)
```

computed in-graph from `optimizer.iterations` at every optimizer step, also
inside `steps_per_execution` loops and XLA.

Compiled once. When the optimizer has a learning-rate variable (it was built
with a float, the usual case), `level` lives in that variable. It is state of
the compiled train step on every backend (a jitted JAX step has no other state
than the model's and optimizer's variables), so a new `base_lr`, a plateau cut
or a resumed scale never recompiles. The shape is compiled in: a model keeps the
train function compiled for each shape it has run since its last `compile()`
(keyed by the schedule's `_shape_key()`), and a `fit` with a shape seen before
reuses it. Only a new shape (another policy, `gamma`, `stepsize`, ...) traces,
once. An optimizer built with a schedule has no such variable: its train
function is rebuilt at every `fit` (on JAX also at every plateau cut).

At the end of `fit` the optimizer gets its own learning rate back, so a saved
model loads without this package. During the fit its learning-rate variable
holds the level, as with Keras's `ReduceLROnPlateau`, and so does a checkpoint
written then.
"""

import functools

import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule
import keras
from keras.saving import (
    deserialize_keras_object,
    register_keras_serializable,
    serialize_keras_object,
)

# The shape key of a fit without an LR schedule (the optimizer's own learning rate).
_NO_SCHEDULE = None
# Where the function rebuilt for an optimizer without a learning-rate variable
# is kept (never reused: the next fit rebuilds it).
_REBUILT = ("rebuilt",)
# The model attribute that holds {shape key: train function} since its last
# compile(). On the model, not in a module-level table: the functions refer
# to the model, and would keep it alive.
_TRAIN_FUNCTIONS = "_zoo_train_functions"


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
    """The learning rate of a fit, installed on its optimizer by `attach`.

    Args:
        original: the optimizer's own learning rate (Variable, schedule,
            float), restored at the end of the fit.
        fit_token: the `params` dict of the fit that installed it.

    An LR callback sets the schedule (`set_schedule`); `PlateauDecay` sets
    the scale (`set_scale`). With a learning-rate variable (`level_variable`),
    the step computes `level_variable * schedule's shape`; without one,
    `schedule(iteration) * scale`, the scale a `keras.Variable` outside the
    optimizer (not an optimizer variable: that would change the optimizer's
    checkpoint layout for the length of the fit).
    """

    def __init__(self, original, fit_token):
        self.original = original
        self.fit_token = fit_token
        self.schedule = None
        self.scale = 1.0
        self.level_variable = original if isinstance(original, keras.Variable) else None
        self._own_value = None if self.level_variable is None else ops.convert_to_numpy(original)
        self._scale_variable = None

    def __call__(self, step):
        if self.level_variable is not None:
            lr = self.level_variable.value
            if self.schedule is not None:
                lr = lr * self.schedule._relative_lr(ops.cast(ops.convert_to_tensor(step), "int32"))
            return ops.cast(lr, "float32")
        base = self.original if self.schedule is None else self.schedule
        lr = ops.cast(evaluate_lr(base, step), "float32")
        if self._scale_variable is not None:
            lr = lr * self._scale_variable.value
        return lr

    @property
    def shape_key(self):
        """What the compiled step holds as constants: the schedule's shape."""
        return _NO_SCHEDULE if self.schedule is None else self.schedule._shape_key()

    def set_schedule(self, schedule):
        """Make `schedule` drive the LR from now on (its level, at once)."""
        self.schedule = schedule
        if self.level_variable is not None:
            self._update_level()

    def set_scale(self, scale):
        """Multiply the level by `scale` from now on; True when the compiled
        step must be rebuilt to see it (a JAX step without a level variable)."""
        changed = scale != self.scale
        self.scale = scale
        if self.level_variable is not None:
            self._update_level()
            return False
        if self._scale_variable is None:
            self._scale_variable = keras.Variable(1.0, dtype="float32", trainable=False, name="lr_scale")
        if not changed:
            return False
        self._scale_variable.assign(scale)
        # A jitted JAX step holds variables outside the model's and optimizer's
        # state as constants.
        return keras.backend.backend() == "jax"

    def _update_level(self):
        base = self._own_value if self.schedule is None else self.schedule._level()
        self.level_variable.assign(base * self.scale)

    def release(self):
        """Give the learning-rate variable its own value back."""
        if self.level_variable is not None:
            self.level_variable.assign(self._own_value)

    def get_config(self):
        # Reached when a full model is saved in the middle of a fit
        # (ModelCheckpoint). Save the optimizer as a plain Keras one, so the
        # checkpoint loads without this package's callbacks (their state is
        # theirs to save): at the level its LR variable holds now, or with
        # its own schedule.
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
        current.release()  # left behind by an interrupted fit
        current = current.original
    controller = ControlledLR(current, fit_params)
    # Swap the private attribute: the public setter would untrack the LR
    # variable and change the optimizer's checkpoint layout.
    optimizer._learning_rate = controller
    _use_train_function(model, controller)
    return controller


def _compiled(model):
    """The train functions built here for `model`, by shape key. A train
    function not among them was built by Keras after a `compile()`: the kept
    ones, compiled for the old optimizer, are dropped."""
    functions = model.__dict__.get(_TRAIN_FUNCTIONS)
    if functions is None or not any(f is model.train_function for f in functions.values()):
        functions = {}
        # Past Keras's attribute tracking: these are no state of the model.
        object.__setattr__(model, _TRAIN_FUNCTIONS, functions)
    return functions


def _use_train_function(model, controller):
    """Point `model.train_function` at the one compiled for the controller's
    shape, building it (lazily: it traces at its first step) when new."""
    if controller.level_variable is None:
        # The schedule's every parameter is compiled in: always rebuild.
        _rebuild(model, _REBUILT)
        return
    function = _compiled(model).get(controller.shape_key)
    if function is None:
        _rebuild(model, controller.shape_key)
    else:
        model.train_function = function


def _rebuild(model, key):
    """Build a new train function for `model` and keep it under `key`."""
    functions = _compiled(model)
    if keras.backend.backend() == "jax":
        # JAX shares one compiled step among all live jit wrappers of equal
        # functions, and Keras jits the bound method `model.train_step`: the
        # functions kept here, and the one Keras builds after a compile(),
        # would run whichever traced first. Each build gets its own function.
        own = model.__dict__.get("train_step")
        model.train_step = functools.partial(own or model.train_step)
        try:
            model.make_train_function(force=True)
        finally:
            if own is None:
                del model.train_step
            else:
                model.train_step = own
    else:
        model.make_train_function(force=True)
    functions[key] = model.train_function


def set_schedule(model, fit_params, schedule):
    """Make `schedule` drive the LR of the current fit; one schedule a fit."""
    controller = attach(model, fit_params)
    if controller.schedule is not None and controller.schedule is not schedule:
        raise ValueError(
            "Two learning-rate schedules in one fit: "
            f"{type(controller.schedule).__name__} and {type(schedule).__name__}. "
            "Pass one; wrap it in `Warmup(...)` to add a warmup."
        )
    controller.set_schedule(schedule)
    _use_train_function(model, controller)


def set_scale(model, fit_params, scale):
    """Multiply the learning rate of the current fit by `scale` from now on."""
    if attach(model, fit_params).set_scale(scale):
        _rebuild(model, _REBUILT)


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
    """Give the optimizer its own learning rate and `model` the train
    function of no schedule back (idempotent)."""
    optimizer = _base_optimizer(model.optimizer)
    controller = optimizer._learning_rate
    if isinstance(controller, ControlledLR):
        optimizer._learning_rate = controller.original
        controller.release()
        function = _compiled(model).get(_NO_SCHEDULE)
        if function is None:
            _rebuild(model, _NO_SCHEDULE)
        else:
            model.train_function = function

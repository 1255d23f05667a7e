"""Keras optimizers with Caffe's per-layer `lr_mult` and `decay_mult`.

The multiplier is applied in exactly one place, the learning rate handed to
each variable's update (`local_rate = rate * lr_mult`, as in Caffe's
SGDSolver). That is exact for every optimizer: scaling the gradient instead
would be undone by Adam's and RMSprop's normalization.

Weight decay follows Caffe for SGD, Adam and RMSprop: `weight_decay *
decay_mult * w` (L2) or `weight_decay * decay_mult * sign(w)` (L1) is added
to the (clipped) gradient. AdamW keeps its decoupled decay, scaled per
variable by `lr_mult * decay_mult`.
"""

import keras
from keras import ops

_BASES = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
}


class _LayerwiseMixin:
    """Per-variable `lr_mult`/`decay_mult`, keyed by the variable's path."""

    def __init__(self, lr_mult=None, decay_mult=None, decay=0.0,
                 regularization_type="L2", **kwargs):
        super().__init__(**kwargs)
        self.lr_mult = dict(lr_mult or {})
        self.decay_mult = dict(decay_mult or {})
        self.decay = float(decay)
        if regularization_type not in ("L2", "L1"):
            raise ValueError(
                "Argument `regularization_type` must be one of L2, L1. "
                f"Received: regularization_type={regularization_type!r}"
            )
        self.regularization_type = regularization_type

    def _multipliers(self, variable):
        # Backends hand update_step a raw variable (a tf.Variable on
        # TensorFlow); the optimizer's own index maps it back to its path.
        path = self._trainable_variables[self._get_variable_index(variable)].path
        return self.lr_mult.get(path, 1.0), self.decay_mult.get(path, 1.0)

    def update_step(self, gradient, variable, learning_rate):
        lr_mult, decay_mult = self._multipliers(variable)
        decay = self.decay * decay_mult
        if decay and not isinstance(self, keras.optimizers.AdamW):
            value = ops.cast(variable, gradient.dtype)
            penalty = value if self.regularization_type == "L2" else ops.sign(value)
            gradient = gradient + decay * penalty
        if lr_mult != 1.0:
            learning_rate = learning_rate * lr_mult
        super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        # Only AdamW reaches here with a decay: its decoupled
        # w -= lr * lr_mult * weight_decay * decay_mult * w.
        if not self.weight_decay:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                lr_mult, decay_mult = self._multipliers(variable)
                lr = ops.cast(self.learning_rate, variable.dtype) * (lr_mult * decay_mult)
                wd = ops.cast(self.weight_decay, variable.dtype)
                variable.assign(variable - variable * wd * lr)

    def get_config(self):
        config = super().get_config()
        config.update(
            lr_mult=self.lr_mult,
            decay_mult=self.decay_mult,
            decay=self.decay,
            regularization_type=self.regularization_type,
        )
        return config


def _layerwise_class(name, base):
    cls = type(f"Layerwise{base.__name__}", (_LayerwiseMixin, base), {
        "__doc__": f"`keras.optimizers.{base.__name__}` with per-layer lr_mult and decay_mult.",
    })
    return keras.saving.register_keras_serializable(package="zoo")(cls)


LAYERWISE = {name: _layerwise_class(name, base) for name, base in _BASES.items()}


def make_optimizer(name, learning_rate, lr_mult=None, decay_mult=None, weight_decay=0.0,
                   regularization_type="L2", **options):
    """An optimizer by spec name (`sgd`, `adam`, `adamw`, `rmsprop`).

    Args:
        learning_rate: Float or schedule (the global rate, Caffe's `base_lr`).
        lr_mult, decay_mult: `{variable.path: multiplier}`; missing means 1.
        weight_decay: Caffe's `weight_decay` (AdamW: its decoupled decay).
        regularization_type: `L2` or `L1` (not for AdamW, whose decay is L2).
        options: The optimizer's own arguments (`momentum`, `clipnorm`, ...).
    """
    cls = LAYERWISE[name]
    if name == "adamw":
        if regularization_type != "L2":
            raise ValueError("AdamW's decoupled weight decay is L2 only. Received: regularization_type='L1'")
        return cls(learning_rate=learning_rate, lr_mult=lr_mult, decay_mult=decay_mult,
                   weight_decay=weight_decay, **options)
    return cls(learning_rate=learning_rate, lr_mult=lr_mult, decay_mult=decay_mult,
               decay=weight_decay, regularization_type=regularization_type, **options)


def plain_copy(optimizer):
    """The plain Keras optimizer behind a layerwise one: its class and
    arguments at the learning rate it has now, without `lr_mult`,
    `decay_mult` or Caffe's weight decay (of the optimizer inside a
    `LossScaleOptimizer`, under mixed precision)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    base = next(cls for cls in type(optimizer).__mro__ if cls in _BASES.values())
    config = {key: value for key, value in optimizer.get_config().items()
              if key not in ("name", "lr_mult", "decay_mult", "decay", "regularization_type")}
    config["learning_rate"] = float(ops.convert_to_numpy(optimizer.learning_rate))
    return base.from_config(config)

"""Base class of the learning-rate callbacks: a callback that is also a schedule."""

import numbers

import keras
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from callbacks import _lr_control


class LRScheduleCallback(keras.callbacks.Callback, LearningRateSchedule):
    """A learning rate that is a pure function of the optimizer iteration.

    One object serves two ways:

    - as a callback, `model.fit(..., callbacks=[schedule])`: for the length of
      the fit it drives the optimizer's learning rate in-graph from
      `optimizer.iterations`, so every optimizer step gets its own LR, also
      with `steps_per_execution > 1` and `jit_compile=True`, and no Python runs
      per batch. It adds `lr` (the LR of the epoch's last step) to the epoch
      logs. When the fit ends the optimizer gets its own learning rate back.
    - as a `keras.optimizers.schedules.LearningRateSchedule`,
      `keras.optimizers.SGD(learning_rate=schedule)`.

    The iteration is the optimizer's 0-based step counter, which carries on
    across `fit` calls and checkpoints (Caffe's `iter`), so a resumed run
    continues the schedule where it stopped.

    The LR is `_level() * _relative_lr(iteration)`, Caffe's `base_lr` times
    the policy's factor. During a fit the level is state of the compiled step
    (a new `base_lr` or a plateau cut never recompiles) and the factor is
    compiled in: a later fit whose schedule has the same `_shape_key()`
    reuses the compiled step (`callbacks._lr_control`).

    Subclasses implement `_relative_lr(iteration)` with elementwise
    `keras.ops` on an int32 tensor (a scalar in training, a vector for a
    whole range of steps); `_shape_key()`, hashable, equal for two schedules
    whose `_relative_lr` are the same function; `_level()` when the level is
    not `base_lr`; and `get_config()` returning every `__init__` argument.
    """

    def __init__(self):
        keras.callbacks.Callback.__init__(self)

    def _level(self):
        return self.base_lr

    def _relative_lr(self, iteration):
        raise NotImplementedError

    def _shape_key(self):
        raise NotImplementedError

    def __call__(self, step):
        iteration = ops.cast(ops.convert_to_tensor(step), "int32")
        return ops.cast(self._level() * self._relative_lr(iteration), "float32")

    def lr_at(self, iteration):
        """The learning rate at 0-based optimizer iteration `iteration`, a float."""
        if not isinstance(iteration, numbers.Integral) or iteration < 0:
            raise ValueError(
                f"Argument `iteration` must be an integer >= 0. Received: iteration={iteration!r}"
            )
        return float(ops.convert_to_numpy(self(int(iteration))))

    def on_train_begin(self, logs=None):
        _lr_control.set_schedule(self.model, self.params, self)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.setdefault("lr", _lr_control.current_lr(self.model))

    def on_train_end(self, logs=None):
        _lr_control.detach(self.model)

    def get_config(self):
        raise NotImplementedError


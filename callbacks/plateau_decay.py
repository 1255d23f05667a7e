"""Plateau decay that composes with any learning-rate schedule."""

import numpy as np
from keras.saving import register_keras_serializable

from callbacks import _lr_control
from callbacks._monitor import Monitor
from callbacks._resumable import ResumableCallback
from zoo.lr_policies import integer, number


@register_keras_serializable(package="zoo")
class PlateauDecay(ResumableCallback):
    STATE = ("best", "wait", "cooldown_counter", "lr_scale")

    """Multiply the learning rate by `factor` when a metric stops improving.

    Unlike `keras.callbacks.ReduceLROnPlateau`, which raises `TypeError` as
    soon as it fires on an optimizer built with a schedule, PlateauDecay scales
    whatever drives the learning rate: a float, the optimizer's own
    `LearningRateSchedule`, or a zoo LR callback in the same fit. A schedule
    keeps its shape from the reduced level (a `step` policy goes on stepping):

    ```
    lr(it) = schedule(it) * scale      # scale starts at 1.0
    after `patience` epochs without improvement (and outside cooldown):
        scale = max(scale * factor, min_lr / schedule(it))
    ```

    Each reduction is printed (with `verbose=1`) and kept in `reductions` as
    `(epoch, new_lr)`. `lr` is added to the epoch logs.

    Example:

    ```python
    model.fit(x, y, validation_split=0.2, epochs=50, callbacks=[
        CaffeLR("step", base_lr=0.01, gamma=0.5, stepsize=500),
        PlateauDecay(monitor="val_loss", factor=0.1, patience=3),
    ])
    ```

    Args:
        monitor: String. The logged quantity to watch. Defaults to `val_loss`.
        factor: Float in (0, 1). The LR multiplier at each reduction.
            Defaults to `0.1`.
        patience: Integer >= 0. Epochs without improvement before reducing.
            Defaults to `10`.
        min_delta: Float >= 0. The least change that counts as improvement.
            Defaults to `1e-4`.
        cooldown: Integer >= 0. Epochs to wait after a reduction before
            counting again. Defaults to `0`.
        min_lr: Float >= 0. A reduction never takes the LR below this.
            Defaults to `0.0`.
        mode: String. `auto`, `min` or `max`. Defaults to `auto` (from the
            monitor's name).
        verbose: Integer. 1 prints each reduction, 0 is silent. Defaults to `1`.
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
        mode="auto",
        verbose=1,
    ):
        super().__init__()
        self._monitor = Monitor(monitor, mode, min_delta)
        self.monitor, self.mode, self.min_delta = monitor, mode, self._monitor.min_delta
        self.factor = number("factor", factor, minimum=0)
        if self.factor >= 1.0:
            raise ValueError(f"Argument `factor` must be < 1. Received: factor={factor!r}")
        self.patience = integer("patience", patience, 0)
        self.cooldown = integer("cooldown", cooldown, 0)
        self.min_lr = number("min_lr", min_lr, minimum=0, exclusive=False)
        self.verbose = verbose

    def _reset(self):
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0
        self.lr_scale = 1.0
        self.reductions = []

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        _lr_control.set_scale(self.model, self.params, self.lr_scale)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        lr = _lr_control.current_lr(self.model)
        logs.setdefault("lr", lr)
        value = self._monitor.value(logs, "PlateauDecay")
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._monitor.improves(value, self.best):
            self.best = value
            self.wait = 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        # The LR is float32: compare with min_lr as float32, or a cut to
        # exactly min_lr would repeat forever.
        if self.wait >= self.patience and lr > np.float32(self.min_lr):
            new_lr = max(lr * self.factor, self.min_lr)
            self.lr_scale *= new_lr / lr
            _lr_control.set_scale(self.model, self.params, self.lr_scale)
            self.reductions.append((epoch, new_lr))
            self.cooldown_counter = self.cooldown
            self.wait = 0
            if self.verbose:
                print(
                    f"\nEpoch {epoch + 1}: PlateauDecay: {self.monitor} has not improved "
                    f"for {self.patience} epochs; learning rate {lr:.4g} -> {new_lr:.4g}."
                )

    def on_train_end(self, logs=None):
        _lr_control.detach(self.model)

    def get_config(self):
        return {
            "monitor": self.monitor,
            "factor": self.factor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "mode": self.mode,
            "verbose": self.verbose,
        }


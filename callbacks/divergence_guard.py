"""Stop a run whose loss blows up, keeping the last good weights."""

import math

from keras.saving import register_keras_serializable

from callbacks import _training_state
from callbacks._resumable import ResumableCallback
from zoo.lr_policies import number


@register_keras_serializable(package="zoo")
class DivergenceGuard(ResumableCallback):
    """Stop training when the loss diverges, and keep the last good weights.

    After every step (every `steps_per_execution` steps) the step's training
    loss is checked: training stops when it is NaN or infinite, or exceeds
    `factor` times the first step's loss (the classic "abort if the loss goes
    above 3x its initial value" rule of hyperparameter search). The model's and
    optimizer's variables are then put back to the end of the last complete
    epoch (or to where the fit started, if it diverged in its first epoch).

    Keras still ends the epoch it stopped (and validates it); the guard sets
    every value in that epoch's logs to NaN, so callbacks after it in the
    list (`BestWeights`, `PlateauDecay`, checkpoints) never take the
    diverged model's metrics for progress, and `History` shows the epoch as
    NaN. Put it before them.

    After the fit, `diverged` tells whether it fired, `reason` says why, and
    `reference_loss` is the loss it compared with. `get_state()` keeps
    `reference_loss`, so a resumed run compares with the same loss.

    The last good variables are copied on the device (`assign`), never to
    host memory: the guard costs one more copy of the model's and the
    optimizer's variables in device memory.

    Example:

    ```python
    guard = DivergenceGuard(factor=3.0)
    model.fit(x, y, epochs=10, callbacks=[guard])
    if guard.diverged:
        print(guard.reason)
    ```

    Args:
        factor: Float > 1. The loss may grow to this many times its first
            value. Defaults to `3.0`.
        baseline: Float > 0 or `None`. The loss to compare with instead of
            the first step's, e.g. `ln(classes)` (a fresh classifier's loss)
            for a run that resumes from trained weights, whose first loss is
            already low. Defaults to `None`.
        verbose: Integer. 1 prints the reason when it stops training.
            Defaults to `1`.
    """

    STATE = ("reference_loss",)

    def __init__(self, factor=3.0, baseline=None, verbose=1):
        self.factor = number("factor", factor, minimum=1)
        self.baseline = None if baseline is None else number("baseline", baseline, minimum=0)
        self.verbose = verbose
        super().__init__()

    def _reset(self):
        self.diverged = False
        self.reason = None
        self.reference_loss = self.baseline

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._step_loss = _training_state.StepLoss()
        self._last_good = _training_state.snapshot(self.model)
        self._last_good_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._step_loss.reset()
        self._epoch = epoch
        if self._last_good_epoch is None:
            self._first_epoch = epoch  # where this fit started: the snapshot's epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.diverged:
            return
        loss = self._step_loss.update(batch, logs)
        if self.reference_loss is None and math.isfinite(loss):
            self.reference_loss = loss
        if not math.isfinite(loss):
            self.reason = f"the loss became {loss}"
        elif loss > self.factor * self.reference_loss:
            self.reason = (
                f"the loss {loss:.4g} exceeded {self.factor:g} x "
                f"{'the baseline' if self.baseline else 'its first value'} {self.reference_loss:.4g}"
            )
        else:
            return
        self.diverged = True
        self._step = batch + 1
        self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged:
            for key in logs or {}:
                logs[key] = float("nan")
            return
        self._last_good.take()
        self._last_good_epoch = epoch

    def on_train_end(self, logs=None):
        # Rolled back here, after the backend has written its final state.
        if not self.diverged:
            return
        self._last_good.restore()
        where = (
            f"the start of epoch {self._first_epoch + 1}"
            if self._last_good_epoch is None
            else f"the end of epoch {self._last_good_epoch + 1}"
        )
        self.reason += f" at step {self._step} of epoch {self._epoch + 1}; weights restored to {where}"
        if self.verbose:
            print(f"DivergenceGuard: stopped training: {self.reason}.")

    def get_config(self):
        return {"factor": self.factor, "baseline": self.baseline, "verbose": self.verbose}

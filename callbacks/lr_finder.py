"""The learning-rate range test."""

import dataclasses
import math

import numpy as np
import pandas as pd
from keras import ops
from keras.saving import register_keras_serializable

from callbacks import _checks, _training_state
from callbacks.base import LRScheduleCallback

STEEPEST = "steepest fall of the smoothed loss"
MINIMUM_OVER_10 = "learning rate at the minimum smoothed loss / 10"


@dataclasses.dataclass
class LRFinderResult:
    """What an LR range test found.

    Attributes:
        history: `pandas.DataFrame` with one row per recorded step and the
            columns `lr`, `loss` and `smoothed_loss`.
        suggested_lr: Float. The suggested learning rate.
        rule: String. How `suggested_lr` was chosen.
        stop_reason: String. Why the sweep ended.
    """

    history: pd.DataFrame
    suggested_lr: float
    rule: str
    stop_reason: str

    def plot(self, path):
        """Write the loss against the LR (log x axis) to the PNG file `path`."""
        from matplotlib.figure import Figure  # no pyplot: no GUI backend needed

        figure = Figure(figsize=(7, 4.5))
        axes = figure.add_subplot()
        axes.plot(self.history["lr"], self.history["loss"], alpha=0.35, label="loss")
        axes.plot(self.history["lr"], self.history["smoothed_loss"], label="smoothed loss")
        axes.axvline(self.suggested_lr, color="tab:red", linestyle="--",
                     label=f"suggested {self.suggested_lr:.2g}")
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss")
        axes.set_title(f"LR range test ({self.rule})")
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        return path


@register_keras_serializable(package="zoo")
class LRFinder(LRScheduleCallback):
    """The LR range test (Smith 2017): sweep the LR up exponentially, watch the loss.

    For `num_steps` optimizer steps the LR grows from `min_lr` to `max_lr`:

    ```
    lr(i) = min_lr * (max_lr / min_lr) ^ (i / (num_steps - 1))
    smoothed(i) = bias-corrected exponential moving average of the loss
    stop when smoothed(i) > stop_factor * min(smoothed), or the loss is NaN/inf
    ```

    When the fit ends, the model's weights and the optimizer's state
    (iteration counter included) are put back exactly as they were, and
    `result` holds an `LRFinderResult`: the per-step DataFrame and a suggested
    LR, the steepest fall of the smoothed loss before its minimum (or that
    minimum's LR / 10 when there are too few points). Use `find_lr` to run it
    in one call.

    With `steps_per_execution=k` a point is recorded every `k` steps (the
    mean loss of those steps, at the last step's LR).

    Example:

    ```python
    finder = LRFinder(min_lr=1e-6, max_lr=1.0, num_steps=100)
    model.fit(x, y, epochs=100, callbacks=[finder], verbose=0)  # it stops itself
    finder.result.suggested_lr
    finder.result.plot("lr_find.png")
    ```

    Args:
        min_lr: Float > 0. The first LR. Defaults to `1e-7`.
        max_lr: Float > `min_lr`. The LR at step `num_steps - 1`. Defaults to `10.0`.
        num_steps: Integer >= 2. Steps of the sweep. Defaults to `100`.
        stop_factor: Float > 1. Stop once the smoothed loss exceeds this many
            times its minimum. Defaults to `3.0`.
        smoothing: Float in [0, 1). The moving average's weight of the past.
            Defaults to `0.98`.
        verbose: Integer. 1 prints the suggestion at the end. Defaults to `1`.
    """

    def __init__(self, min_lr=1e-7, max_lr=10.0, num_steps=100, stop_factor=3.0,
                 smoothing=0.98, verbose=1):
        super().__init__()
        self.min_lr = _checks.number("min_lr", min_lr, minimum=0)
        self.max_lr = _checks.number("max_lr", max_lr, minimum=self.min_lr)
        self.num_steps = _checks.integer("num_steps", num_steps, 2)
        self.stop_factor = _checks.number("stop_factor", stop_factor, minimum=1)
        self.smoothing = _checks.number("smoothing", smoothing, minimum=0, exclusive=False)
        if self.smoothing >= 1:
            raise ValueError(f"Argument `smoothing` must be < 1. Received: smoothing={smoothing!r}")
        self.verbose = verbose
        self.result = None

    def _lr(self, iteration):
        fraction = ops.cast(ops.minimum(iteration, self.num_steps - 1), "float32") / (
            self.num_steps - 1
        )
        return self.min_lr * ops.power(self.max_lr / self.min_lr, fraction)

    def on_train_begin(self, logs=None):
        self._saved = _training_state.snapshot(self.model)
        # The sweep runs on iterations 0..num_steps-1; restored at the end.
        self.model.optimizer.iterations.assign(0)
        super().on_train_begin(logs)
        self._step_loss = _training_state.StepLoss()
        self._steps_before_epoch = 0
        self._rows = []
        self._average = 0.0
        self._best = math.inf
        self._stop_reason = f"reached num_steps={self.num_steps}"
        self.result = None

    def on_epoch_begin(self, epoch, logs=None):
        self._step_loss.reset()
        self._batches_this_epoch = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches_this_epoch = batch + 1
        steps = self._steps_before_epoch + batch + 1
        loss = self._step_loss.update(batch, logs)
        if not math.isfinite(loss):
            self._stop_reason = f"loss became {loss} at step {steps - 1}"
            self.model.stop_training = True
            return
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing ** (len(self._rows) + 1))
        self._rows.append((steps - 1, loss, smoothed))
        self._best = min(self._best, smoothed)
        if smoothed > self.stop_factor * self._best:
            self._stop_reason = (
                f"smoothed loss {smoothed:.4g} exceeded {self.stop_factor:g}x "
                f"its minimum {self._best:.4g} at step {steps - 1}"
            )
            self.model.stop_training = True
        elif steps >= self.num_steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._steps_before_epoch += self._batches_this_epoch
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        _training_state.restore(self._saved)
        self._saved = None
        if not self._rows:
            raise RuntimeError(f"LRFinder recorded no step: {self._stop_reason}.")
        steps, losses, smoothed = zip(*self._rows)
        # The LR column in one evaluation, rather than one per batch.
        lr = ops.convert_to_numpy(self(np.array(steps))).astype("float64")
        history = pd.DataFrame({"lr": lr, "loss": losses, "smoothed_loss": smoothed})
        lr, rule = suggest_lr(history)
        self.result = LRFinderResult(history, lr, rule, self._stop_reason)
        if self.verbose:
            print(f"LRFinder: {self._stop_reason}; suggested lr {lr:.3g} ({rule}).")

    def get_config(self):
        return {
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "num_steps": self.num_steps,
            "stop_factor": self.stop_factor,
            "smoothing": self.smoothing,
            "verbose": self.verbose,
        }


def suggest_lr(history):
    """`(lr, rule)` from an LR range test's `history` DataFrame.

    The steepest fall of the smoothed loss before its minimum, measured over
    windows of a tenth of the points (single-step slopes are mostly noise);
    with too few points, the LR at the minimum divided by 10.
    """
    upto = int(np.argmin(history["smoothed_loss"].to_numpy())) + 1
    log_lr = np.log(history["lr"].to_numpy()[:upto])
    smoothed = history["smoothed_loss"].to_numpy()[:upto]
    window = max(2, len(history) // 10)
    if upto > window:
        slopes = (smoothed[window:] - smoothed[:-window]) / (log_lr[window:] - log_lr[:-window])
        start = int(np.argmin(slopes))
        return float(np.exp(log_lr[start + window // 2])), STEEPEST
    return float(np.exp(log_lr[-1]) / 10), MINIMUM_OVER_10


def find_lr(model, x, y=None, *, batch_size=None, min_lr=1e-7, max_lr=10.0,
            num_steps=100, stop_factor=3.0, smoothing=0.98, plot_path=None, verbose=1):
    """Run the LR range test on a compiled `model`; see `LRFinder`.

    The data is repeated for as many epochs as the sweep needs. The model's
    weights and optimizer state are left exactly as they were.

    Args:
        model: A compiled Keras model.
        x, y, batch_size: The training data, as `model.fit` takes them.
        min_lr, max_lr, num_steps, stop_factor, smoothing: See `LRFinder`.
        plot_path: String or `None`. Where to write the PNG plot.
        verbose: Integer. 1 prints the suggestion.

    Returns:
        An `LRFinderResult`.
    """
    finder = LRFinder(min_lr, max_lr, num_steps, stop_factor, smoothing, verbose)
    # Every epoch has at least one step, so num_steps epochs always suffice.
    model.fit(x, y, batch_size=batch_size, epochs=num_steps, callbacks=[finder], verbose=0)
    if plot_path is not None:
        finder.result.plot(plot_path)
    return finder.result

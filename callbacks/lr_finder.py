"""The learning-rate range test."""

import dataclasses
import math

import numpy as np
import pandas as pd
from keras import ops
from keras.saving import register_keras_serializable

from callbacks import _training_state
from callbacks.base import LRScheduleCallback
from zoo.lr_policies import lr_finder_arguments

# Below this relative fall from where the sweep started, no LR "lowered the loss".
MIN_FALL = 0.05


@dataclasses.dataclass
class LRFinderResult:
    """What an LR range test found.

    Attributes:
        history: `pandas.DataFrame` with one row per recorded step and the
            columns `lr`, `loss` and `smoothed_loss`.
        suggestions: Dict. The LR each rule of `LR_FINDER_RULES` suggests, by rule
            name; empty when no LR lowered the loss.
        rule: String. The rule behind `suggested_lr`.
        stop_reason: String. Why the sweep ended.
    """

    history: pd.DataFrame
    suggestions: dict
    rule: str
    stop_reason: str

    @property
    def suggested_lr(self):
        """The LR `rule` suggests. Raises `ValueError` when no LR of the
        sweep lowered the loss."""
        if not self.suggestions:
            if self.history.empty:
                raise ValueError(f"The LR range test recorded no step ({self.stop_reason}): lower its `min_lr`, "
                                 "or check the data and the model.")
            first, last = self.history["lr"].iloc[0], self.history["lr"].iloc[-1]
            raise ValueError(
                f"No learning rate from {first:.3g} to {last:.3g} lowered the loss by {MIN_FALL:.0%} "
                f"({self.stop_reason}): widen the sweep (a larger `max_lr`, or more `num_steps`), or check "
                "that the model has layers to train and that its labels match its data."
            )
        return self.suggestions[self.rule]

    def plot(self, path):
        """Write the loss against the LR (log x axis) to the PNG file
        `path`, each rule's suggestion marked."""
        from matplotlib.figure import Figure  # no pyplot: no GUI backend needed

        figure = Figure(figsize=(7, 4.5))
        self.draw(figure.add_subplot())
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        return path

    def draw(self, axes, title="LR range test"):
        """Draw the sweep on matplotlib `axes`."""
        axes.plot(self.history["lr"], self.history["loss"], alpha=0.35, label="loss")
        axes.plot(self.history["lr"], self.history["smoothed_loss"], label="smoothed loss")
        for (rule, lr), color in zip(self.suggestions.items(), ("tab:red", "tab:green", "tab:purple")):
            chosen = rule == self.rule
            axes.axvline(lr, color=color, linestyle="-" if chosen else "--", linewidth=2 if chosen else 1,
                         label=f"{rule} {lr:.2g}" + (" (chosen)" if chosen else ""))
        axes.set_xscale("log")
        # The blow-up at the end would flatten the rest: show up to the smoothed loss's highest.
        if self.history.empty:
            axes.set_title(f"{title}: no step recorded")
            return
        low = min(self.history["loss"].min(), self.history["smoothed_loss"].min())
        high = self.history["smoothed_loss"].max()
        margin = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
        axes.set_ylim(low - margin, high + margin)
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss")
        axes.set_title(title if self.suggestions else f"{title}: no LR lowered the loss")
        axes.legend()


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
    `result` holds an `LRFinderResult`: the per-step DataFrame and the LR
    each rule suggests (`suggest_lrs`), `rule`'s being `suggested_lr`. Use
    `find_lr` to run it in one call.

    With `steps_per_execution=k` a point is recorded every `k` steps (the
    mean loss of those steps, at the last step's LR).

    Example:

    ```python
    finder = LRFinder(min_lr=1e-6, max_lr=1.0, num_steps=100)
    model.fit(x, y, epochs=100, callbacks=[finder], verbose=0)  # it stops itself
    finder.result.suggested_lr     # valley
    finder.result.suggestions      # {"valley": ..., "steep": ..., "minimum": ...}
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
        rule: String, one of `LR_FINDER_RULES`: the suggestion that becomes
            `result.suggested_lr`. Defaults to `"valley"`.
        verbose: Integer. 1 prints the suggestions at the end. Defaults to `1`.
    """

    def __init__(self, min_lr=1e-7, max_lr=10.0, num_steps=100, stop_factor=3.0,
                 smoothing=0.98, rule="valley", verbose=1):
        super().__init__()
        for name, value in lr_finder_arguments(min_lr, max_lr, num_steps, stop_factor, smoothing, rule).items():
            setattr(self, name, value)
        self.verbose = verbose
        self.result = None

    def _level(self):
        return self.min_lr

    def _relative_lr(self, iteration):
        fraction = ops.cast(ops.minimum(iteration, self.num_steps - 1), "float32") / (
            self.num_steps - 1
        )
        return ops.power(self.max_lr / self.min_lr, fraction)

    def _shape_key(self):
        return ("LRFinder", self.max_lr / self.min_lr, self.num_steps)

    def on_train_begin(self, logs=None):
        self._saved = _training_state.snapshot(self.model)
        # The sweep runs on iterations 0..num_steps-1; restored at the end.
        self.model.optimizer.iterations.assign(0)
        super().on_train_begin(logs)
        self._step_loss = _training_state.StepLoss()
        self._rows = []
        self._average = 0.0
        self._best = math.inf
        self._stop_reason = f"reached num_steps={self.num_steps}"
        self.result = None

    def on_epoch_begin(self, epoch, logs=None):
        self._step_loss.reset()

    def on_train_batch_end(self, batch, logs=None):
        # The optimizer's count, not the batches': a step that mixed
        # precision's loss scaling skipped did not advance the sweep.
        steps = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        step = max(steps, 1) - 1  # whose LR the last update used
        loss = self._step_loss.update(batch, logs)
        if not math.isfinite(loss):
            self._stop_reason = f"loss became {loss} at step {step}"
            self.model.stop_training = True
            return
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing ** (len(self._rows) + 1))
        self._rows.append((step, loss, smoothed))
        self._best = min(self._best, smoothed)
        if smoothed > self.stop_factor * self._best:
            self._stop_reason = (
                f"smoothed loss {smoothed:.4g} exceeded {self.stop_factor:g}x "
                f"its minimum {self._best:.4g} at step {step}"
            )
            self.model.stop_training = True
        elif steps >= self.num_steps:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._saved.restore()
        self._saved = None
        steps, losses, smoothed = zip(*self._rows) if self._rows else ((), (), ())
        # The LR column in one evaluation, rather than one per batch.
        lr = ops.convert_to_numpy(self(np.array(steps, dtype="int64"))).astype("float64") if steps else []
        history = pd.DataFrame({"lr": lr, "loss": losses, "smoothed_loss": smoothed}, dtype="float64")
        self.result = LRFinderResult(history, suggest_lrs(history), self.rule, self._stop_reason)
        if self.verbose:
            found = ", ".join(f"{rule} {lr:.3g}" for rule, lr in self.result.suggestions.items())
            print(f"LRFinder: {self._stop_reason}; suggested: {found or 'none (no LR lowered the loss)'}.")

    def get_config(self):
        return {
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "num_steps": self.num_steps,
            "stop_factor": self.stop_factor,
            "smoothing": self.smoothing,
            "rule": self.rule,
            "verbose": self.verbose,
        }


def suggest_lrs(history):
    """The LR each rule of `LR_FINDER_RULES` suggests, from an LR range test's
    `history` DataFrame (`lr`, `smoothed_loss`); `{}` when the smoothed loss
    never fell `MIN_FALL` below where the sweep started.

    - `valley` (fastai's default since v2.5): the longest run of points
      whose smoothed loss keeps falling (a longest decreasing subsequence),
      and the LR at its middle. It uses the whole descent, so one noisy
      slope cannot move it much, and it lands well before the blow-up.
    - `steep`: the steepest fall of the smoothed loss before its minimum,
      measured over windows of a tenth of the points (single-step slopes
      are mostly noise). Often the fastest LR that still learns.
    - `minimum`: the LR at the minimum smoothed loss / 10 (the classic,
      conservative rule).

    As fastai does, `valley` and `steep` skip the first tenth of the points
    (the moving average still warms up) and the last five (the blow-up).
    """
    lr = history["lr"].to_numpy()
    smoothed = history["smoothed_loss"].to_numpy()
    head = max(1, len(lr) // 10)
    if not len(lr) or smoothed.min() >= (1 - MIN_FALL) * history["loss"].to_numpy()[:head].mean():
        return {}
    lowest = int(np.argmin(smoothed))
    start, stop = (head, len(lr) - 5) if len(lr) - 5 - head >= 3 else (0, len(lr))
    descent = slice(start, max(lowest + 1, start + 1))  # up to the minimum, for `steep`
    return {
        "valley": float(lr[start:stop][_valley(smoothed[start:stop])]),
        "steep": _steepest(lr[descent], smoothed[descent], window=max(2, len(lr) // 10)),
        "minimum": float(lr[lowest] / 10),
    }


def _valley(loss):
    """The index halfway along the longest decreasing run of `loss`."""
    length = np.ones(len(loss), dtype=int)  # of the longest decreasing subsequence ending at i
    for i in range(1, len(loss)):
        falls_to_i = loss[:i] > loss[i]
        if falls_to_i.any():
            length[i] = length[:i][falls_to_i].max() + 1
    end = int(np.argmax(length))
    start = end - length[end] + 1
    return start + (end - start) // 2


def _steepest(lr, smoothed, window):
    """The LR where the smoothed loss falls fastest against log(lr); the
    first LR when there are too few points to measure a slope."""
    log_lr = np.log(lr)
    if len(lr) <= window:
        return float(lr[0])
    slopes = (smoothed[window:] - smoothed[:-window]) / (log_lr[window:] - log_lr[:-window])
    return float(np.exp(log_lr[int(np.argmin(slopes)) + window // 2]))


def find_lr(model, x, y=None, *, batch_size=None, steps_per_epoch=None, min_lr=1e-7, max_lr=10.0,
            num_steps=100, stop_factor=3.0, smoothing=0.98, rule="valley", plot_path=None, verbose=1):
    """Run the LR range test on a compiled `model`; see `LRFinder`.

    The data is repeated for as many epochs as the sweep needs. The model's
    weights and optimizer state are left exactly as they were.

    Args:
        model: A compiled Keras model.
        x, y, batch_size, steps_per_epoch: The training data, as `model.fit`
            takes them. With `steps_per_epoch`, `x` (a dataset) must yield
            `ceil(num_steps / steps_per_epoch)` epochs of batches.
        min_lr, max_lr, num_steps, stop_factor, smoothing, rule: See `LRFinder`.
        plot_path: String or `None`. Where to write the PNG plot.
        verbose: Integer. 1 prints the suggestions.

    Returns:
        An `LRFinderResult`.
    """
    finder = LRFinder(min_lr, max_lr, num_steps, stop_factor, smoothing, rule, verbose)
    # Every epoch has at least one step, so num_steps epochs always suffice.
    epochs = num_steps if steps_per_epoch is None else math.ceil(num_steps / steps_per_epoch)
    # A dataset of `steps_per_epoch` batches an epoch orders itself.
    model.fit(x, y, batch_size=batch_size, steps_per_epoch=steps_per_epoch, epochs=epochs,
              shuffle=steps_per_epoch is None, callbacks=[finder], verbose=0)
    if plot_path is not None:
        finder.result.plot(plot_path)
    return finder.result

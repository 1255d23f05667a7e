"""Best-weight early stopping that always ends on the best weights."""

import os
import warnings

import keras
from keras.saving import register_keras_serializable

from callbacks._files import write_atomically
from callbacks._monitor import Monitor
from callbacks._resumable import ResumableCallback
from callbacks._training_state import Snapshot
from zoo.lr_policies import integer

WEIGHTS_SUFFIX = ".weights.h5"


@register_keras_serializable(package="zoo")
class BestWeights(ResumableCallback):
    """Keep the weights of the best epoch and end training on them.

    After every epoch the monitored value is compared with the best so far;
    on improvement the weights are copied on the device (`assign`, never
    through host memory: one more copy of the weights in device memory) and,
    with `filepath`, written to disk atomically (a crash mid-write never
    leaves a torn file). When
    training ends, early or after its last epoch, the model gets the best
    epoch's weights back. With `patience`, training stops once that many
    epochs pass without improvement; `patience=None` never stops early.

    `best_epoch` (0-based) and `best_<monitor>` are added to the epoch logs
    and kept as the attributes `best_epoch` and `best`; `best_weights` holds
    the best epoch's weights, as tensors on the device.

    Example:

    ```python
    best = BestWeights(monitor="val_accuracy", patience=5, filepath="best.weights.h5")
    model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[best])
    best.best_epoch, best.best  # the model now holds that epoch's weights
    ```

    Args:
        monitor: String. The logged quantity to watch. Defaults to `val_loss`.
        mode: String. `auto`, `min` or `max`. Defaults to `auto` (from the
            monitor's name).
        patience: Integer >= 1, or `None`. Epochs without improvement before
            stopping; `None` only restores. Defaults to `None`.
        min_delta: Float >= 0. The least change that counts as improvement.
            Defaults to `0.0`.
        filepath: String or `None`. Where to write the best weights (must end
            in `.weights.h5`, as Keras's `save_weights` requires).
            Defaults to `None`.
        verbose: Integer. 1 prints when training stops early and when the
            best weights are restored. Defaults to `1`.
    """

    STATE = ("best", "best_epoch", "wait")

    def __init__(
        self,
        monitor="val_loss",
        mode="auto",
        patience=None,
        min_delta=0.0,
        filepath=None,
        verbose=1,
    ):
        super().__init__()
        self._pending_weights = None
        self._monitor = Monitor(monitor, mode, min_delta)
        self.monitor, self.mode, self.min_delta = monitor, mode, self._monitor.min_delta
        self.patience = None if patience is None else integer("patience", patience, 1)
        if filepath is not None and not str(filepath).endswith(WEIGHTS_SUFFIX):
            raise ValueError(
                f"Argument `filepath` must end in {WEIGHTS_SUFFIX!r}. Received: filepath={filepath!r}"
            )
        self.filepath = None if filepath is None else os.fspath(filepath)
        self.verbose = verbose

    def _reset(self):
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self._best_snapshot = None

    @property
    def best_weights(self):
        """The best epoch's weights (tensors on the device, in the order of
        `model.weights`), or None before the first epoch."""
        return None if self._best_snapshot is None else self._best_snapshot.values

    def set_state(self, state, weights=None):
        """Resume from `get_state()`'s dict at the next `on_train_begin`.

        The best weights are read back from `filepath`, or taken from
        `weights` (a list as `model.get_weights()` gives, or another
        instance's `best_weights`) when given."""
        super().set_state(state)
        self._pending_weights = weights

    def take_model_weights(self):
        """Make the model's weights, as they are now, the best epoch's, and
        write them to `filepath`: after `on_train_end` put the best weights
        back and something changed them on purpose, such as
        `recompute_batchnorm` recomputing their BatchNorm statistics."""
        if self._best_snapshot is None:
            raise ValueError("No best epoch yet: `take_model_weights` replaces the weights of one.")
        self._best_snapshot.take()
        if self.filepath:
            write_atomically(self.filepath, self.model.save_weights)

    def on_train_begin(self, logs=None):
        weights, self._pending_weights = self._pending_weights, None
        if super().on_train_begin(logs) and self.best_epoch is not None:
            if weights is None and self.filepath and os.path.exists(self.filepath):
                weights = _read_weights(self.model, self.filepath)
            if weights is not None:
                self._best_snapshot = Snapshot(self.model.weights).take(weights)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        value = self._monitor.value(logs, "BestWeights")
        if self._monitor.improves(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self._best_snapshot is None:
                self._best_snapshot = Snapshot(self.model.weights)
            self._best_snapshot.take()
            if self.filepath:
                write_atomically(self.filepath, self.model.save_weights)
        else:
            self.wait += 1
            if self.patience is not None and self.wait >= self.patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True
                if self.verbose:
                    print(
                        f"\nEpoch {epoch + 1}: BestWeights: {self.monitor} has not improved "
                        f"for {self.patience} epochs; stopping."
                    )
        if self.best_epoch is not None:
            logs["best_epoch"] = self.best_epoch
            logs[f"best_{self.monitor}"] = self.best

    def on_train_end(self, logs=None):
        if self._best_snapshot is None:
            return
        self._best_snapshot.restore()
        if self.verbose:
            print(
                f"BestWeights: restored the weights of epoch {self.best_epoch + 1} "
                f"({self.monitor}={self.best:.4g})."
            )

    def get_config(self):
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "filepath": self.filepath,
            "verbose": self.verbose,
        }


def _read_weights(model, filepath):
    """The layer weights stored in `filepath`, read through an uncompiled
    clone so that neither the model nor its optimizer state is touched."""
    clone = keras.models.clone_model(model)
    with warnings.catch_warnings():
        # The file also holds optimizer variables, which the clone has none of.
        warnings.simplefilter("ignore")
        clone.load_weights(filepath)
    return clone.get_weights()

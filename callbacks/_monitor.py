"""Watching one logged quantity for improvement (PlateauDecay, BestWeights)."""

import math

from zoo.lr_policies import number, one_of

_MAXIMIZED = ("acc", "auc", "precision", "recall", "f1", "iou")


class Monitor:
    """Tells whether a logged value improves on the best one so far.

    `mode="auto"` minimizes unless the name says accuracy, AUC, precision,
    recall, F1 or IoU. NaN is never an improvement.
    """

    def __init__(self, monitor, mode, min_delta):
        self.monitor = monitor
        self.mode = one_of("mode", mode, ["auto", "min", "max"])
        self.min_delta = number("min_delta", min_delta, minimum=0, exclusive=False)
        if mode == "auto":
            name = monitor.lower()
            mode = "max" if any(word in name for word in _MAXIMIZED) else "min"
        self.maximize = mode == "max"

    def value(self, logs, owner):
        """The monitored value in `logs`; a missing key is an error naming the keys."""
        if not logs or self.monitor not in logs:
            available = ", ".join(sorted(logs or {})) or "none"
            raise ValueError(
                f"{owner} monitors {self.monitor!r}, which is not in the epoch logs. "
                f"Available: {available}. (val_* needs validation data.)"
            )
        return float(logs[self.monitor])

    def improves(self, value, best):
        if math.isnan(value):
            return False
        if best is None:
            return True
        if self.maximize:
            return value > best + self.min_delta
        return value < best - self.min_delta

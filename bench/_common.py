"""What the benchmarks share: the machine they ran on, and an epoch timer."""

import os
import platform
import time

import keras


def processor():
    """'AMD EPYC 7B13, 2 CPUs' (the model name from /proc/cpuinfo where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} CPUs"


class EpochTimer(keras.callbacks.Callback):
    """The seconds of each epoch of a fit, in `seconds`. Put it last: an
    epoch's time then includes the other callbacks' epoch end."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        float(logs["loss"])  # waits for the epoch's last step (dispatch is asynchronous on JAX)
        self.seconds.append(time.perf_counter() - self._start)

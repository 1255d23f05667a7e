"""Models, optimizers and callbacks that make what a fit does observable."""

import contextlib

import numpy as np
import pytest
import keras
from keras import ops


class RecordingSGD(keras.optimizers.SGD):
    """SGD that writes the learning rate of step `i` into `applied_lr[i]`, in-graph."""

    def __init__(self, max_steps=256, **kwargs):
        super().__init__(**kwargs)
        self.max_steps = max_steps

    def build(self, variables):
        super().build(variables)
        self.applied_lr = self.add_variable(
            shape=(self.max_steps,), dtype="float32", name="applied_lr"
        )

    def update_step(self, gradient, variable, learning_rate):
        index = ops.reshape(ops.cast(self.iterations, "int32"), (1, 1))
        value = ops.reshape(ops.cast(learning_rate, "float32"), (1,))
        self.applied_lr.assign(ops.scatter_update(self.applied_lr, index, value))
        super().update_step(gradient, variable, learning_rate)

    def recorded(self, steps):
        return ops.convert_to_numpy(self.applied_lr)[:steps]


@keras.saving.register_keras_serializable(package="zoo_tests")
def mean_prediction(y_true, y_pred):
    return ops.mean(y_pred)


def unit_gradient_model(optimizer, steps_per_execution=1, jit_compile="auto"):
    """One weight w (starting at 0) whose loss gradient is exactly 1, so plain
    SGD leaves w = -(sum of the applied learning rates)."""
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(
        optimizer=optimizer,
        loss=mean_prediction,
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model


def weight_of(model):
    return float(ops.convert_to_numpy(model.weights[0]).ravel()[0])


# 8 batches of 4: 8 optimizer steps an epoch.
UNIT_X = np.ones((32, 1), "float32")
UNIT_Y = np.zeros((32, 1), "float32")
STEPS_PER_EPOCH = 8


class ScriptedMetric(keras.callbacks.Callback):
    """Logs `values[epoch]` as `name` at each epoch end (put it first in the list)."""

    def __init__(self, values, name="score"):
        super().__init__()
        self.values, self.name = list(values), name

    def on_epoch_end(self, epoch, logs=None):
        logs[self.name] = self.values[epoch]


class WeightsAtEpochEnd(keras.callbacks.Callback):
    """Keeps a copy of the model's weights after every epoch."""

    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def mlp(optimizer, hidden=32):
    """A small classifier of flattened digits."""
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@contextlib.contextmanager
def host_reads_of_variables():
    """Counts, in `count[0]`, the reads of a `keras.Variable` into host memory."""
    count = [0]

    def counted(read):
        def wrapper(self, *args, **kwargs):
            count[0] += 1
            return read(self, *args, **kwargs)
        return wrapper

    with pytest.MonkeyPatch.context() as patch:
        for name in ("numpy", "__array__"):
            patch.setattr(keras.Variable, name, counted(getattr(keras.Variable, name)))
        yield count

"""The compiled train step is reused across fits: the LR level is state, the
schedule's shape is compiled in (`callbacks._lr_control`). Traces are counted
by the Python body of `train_step`, which runs once a trace."""

import gc
import os
import subprocess
import sys
import weakref

import keras
import pytest

from callbacks import BestWeights, CaffeLR, DivergenceGuard, PlateauDecay, Warmup
from tests.callbacks.helpers import UNIT_X, UNIT_Y, ScriptedMetric, mean_prediction, weight_of


def counting_model(optimizer):
    """`unit_gradient_model` (w moves by minus each applied LR) that counts
    the traces of its train step in `model.traces`."""
    traces = []

    class Counting(keras.Sequential):
        def train_step(self, *args):
            traces.append(1)
            return super().train_step(*args)

    model = Counting([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=optimizer, loss=mean_prediction)
    return model, traces


def fit(model, callbacks, epochs=1):
    """8 steps an epoch; returns how far the weight moved (the sum of the LRs)."""
    before = weight_of(model)
    model.fit(UNIT_X, UNIT_Y, batch_size=4, epochs=epochs, callbacks=callbacks, shuffle=False, verbose=0)
    return before - weight_of(model)


def zoo_callbacks(base_lr, gamma=0.5):
    return [CaffeLR("step", base_lr=base_lr, gamma=gamma, stepsize=4), PlateauDecay(monitor="loss"),
            DivergenceGuard(baseline=1e6, verbose=0), BestWeights(monitor="loss", verbose=0)]


def test_a_second_fit_with_fresh_callbacks_reuses_the_compiled_step_at_its_new_base_lr():
    model, traces = counting_model(keras.optimizers.SGD(learning_rate=1.0))
    assert fit(model, zoo_callbacks(0.1)) == pytest.approx(4 * 0.1 + 4 * 0.05)
    assert len(traces) == 1
    # Fresh instances, another base_lr: the same compiled step, the new level.
    schedule = zoo_callbacks(0.2)
    moved = fit(model, schedule)
    assert len(traces) == 1
    assert moved == pytest.approx(sum(schedule[0].lr_at(i) for i in range(8, 16)), rel=1e-6)
    assert float(model.optimizer.learning_rate) == 1.0  # its own, after the fit


def test_a_plateau_cut_is_state_not_a_recompile():
    model, traces = counting_model(keras.optimizers.SGD(learning_rate=1.0))
    # The score never improves on the first epoch's: a cut after every later epoch.
    plateau = PlateauDecay(monitor="score", mode="max", factor=0.5, patience=1, verbose=0)
    moved = fit(model, [ScriptedMetric([0.0, 0.0, 0.0, 0.0]), CaffeLR("fixed", base_lr=0.1), plateau], epochs=4)
    assert [lr for _, lr in plateau.reductions] == pytest.approx([0.05, 0.025, 0.0125])
    assert moved == pytest.approx(8 * (0.1 + 0.1 + 0.05 + 0.025))
    assert len(traces) == 1


def test_a_new_shape_traces_once_and_a_shape_seen_before_is_reused():
    model, traces = counting_model(keras.optimizers.SGD(learning_rate=0.25))
    fit(model, [CaffeLR("step", base_lr=0.1, gamma=0.5, stepsize=4)])
    fit(model, [CaffeLR("step", base_lr=0.1, gamma=0.1, stepsize=4)])  # another gamma: another shape
    assert len(traces) == 2
    third = CaffeLR("step", base_lr=0.3, gamma=0.5, stepsize=4)
    assert fit(model, [third]) == pytest.approx(sum(third.lr_at(i) for i in range(16, 24)), rel=1e-6)
    warmup = Warmup(CaffeLR("step", base_lr=0.1, gamma=0.5, stepsize=4), warmup_steps=30)
    fit(model, [warmup])
    assert len(traces) == 3
    # A fit without zoo callbacks runs at the optimizer's own LR, compiled once.
    assert fit(model, []) == pytest.approx(8 * 0.25)
    assert fit(model, []) == pytest.approx(8 * 0.25)
    assert len(traces) == 4


def test_compile_drops_the_compiled_steps():
    # On JAX, a step kept alive for the old optimizer must not run for the new one.
    model, traces = counting_model(keras.optimizers.SGD(learning_rate=0.25))
    fit(model, [CaffeLR("fixed", base_lr=0.1)])
    fit(model, [])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=mean_prediction)
    assert fit(model, []) == pytest.approx(8 * 0.5)
    assert fit(model, [CaffeLR("fixed", base_lr=0.1)]) == pytest.approx(8 * 0.1)
    assert fit(model, []) == pytest.approx(8 * 0.5)


def test_an_optimizer_built_with_a_schedule_recompiles_at_every_fit():
    # No learning-rate variable to hold the level: the schedule is compiled in.
    schedule = CaffeLR("step", base_lr=0.1, gamma=0.5, stepsize=4)
    model, traces = counting_model(keras.optimizers.SGD(learning_rate=schedule))
    plateau = PlateauDecay(monitor="score", mode="max", factor=0.5, patience=1, verbose=0)
    moved = fit(model, [ScriptedMetric([0.0, 0.0, 0.0]), plateau], epochs=3)
    assert moved == pytest.approx(sum(schedule.lr_at(i) for i in range(16)) +
                                  0.5 * sum(schedule.lr_at(i) for i in range(16, 24)), rel=1e-6)
    before = len(traces)
    fit(model, [PlateauDecay(monitor="loss")])
    assert len(traces) == before + 1


JAX_WITHOUT_TENSORFLOW = """
import sys
import weakref
import keras, numpy as np
from callbacks import BestWeights, CaffeLR, DivergenceGuard, PlateauDecay
from zoo.optimizers import make_optimizer
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="head")])
model.compile(optimizer=make_optimizer("sgd", 0.1, lr_mult={model.weights[0].path: 10.0}, momentum=0.9),
              loss="sparse_categorical_crossentropy")
callbacks = [CaffeLR("step", base_lr=0.1, gamma=0.5, stepsize=2), PlateauDecay("loss"), DivergenceGuard(verbose=0),
             BestWeights("loss", verbose=0)]
model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int32"), batch_size=4, epochs=2, callbacks=callbacks, verbose=0)
print(keras.backend.backend(), "tensorflow" in sys.modules)
"""


def test_the_callbacks_and_the_layerwise_optimizer_run_on_jax_without_tensorflow():
    # bench/gpu.py's path, for a GPU machine with JAX and no TensorFlow.
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.getcwd()}
    run = subprocess.run([sys.executable, "-c", JAX_WITHOUT_TENSORFLOW], env=environment, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["jax", "False"]


def test_a_model_fitted_with_the_callbacks_is_freed_like_any_other():
    # The compiled steps kept for a model refer to it: they must not keep it alive.
    def fitted(callbacks):
        model, _ = counting_model(keras.optimizers.SGD(learning_rate=0.1))
        fit(model, callbacks)
        return weakref.ref(model)

    bare, with_callbacks = fitted([]), fitted(zoo_callbacks(0.1))
    gc.collect()
    assert bare() is None
    assert with_callbacks() is None

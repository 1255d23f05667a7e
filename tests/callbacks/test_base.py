"""LR callbacks inside a real `model.fit`: every optimizer step gets `lr_at(step)`."""

import os

import keras
import numpy as np
import pandas as pd
import pytest

from callbacks import CaffeLR, CyclicLR, LRFinder, PlateauDecay, Warmup, _lr_control, lr_per_step
from tests.callbacks.helpers import (
    STEPS_PER_EPOCH,
    UNIT_X,
    UNIT_Y,
    RecordingSGD,
    unit_gradient_model,
    weight_of,
)

SCHEDULES = {
    "step": lambda: CaffeLR("step", base_lr=0.1, gamma=0.5, stepsize=3),
    "multistep": lambda: CaffeLR("multistep", base_lr=0.1, gamma=0.5, stepvalue=[2, 5, 11]),
    "poly": lambda: CaffeLR("poly", base_lr=0.1, power=2.0, max_iter=20),
    "sigmoid": lambda: CaffeLR("sigmoid", base_lr=0.1, gamma=-0.5, stepsize=10),
    "triangular2": lambda: CyclicLR(0.01, 0.1, step_size=3, mode="triangular2"),
    "exp_range": lambda: CyclicLR(0.01, 0.1, step_size=3, mode="exp_range", gamma=0.95),
    "warmup": lambda: Warmup(CaffeLR("exp", base_lr=0.1, gamma=0.9), warmup_steps=5, start_lr=0.0),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_schedule_evaluates_a_whole_range_of_iterations_at_once(name):
    schedule = SCHEDULES[name]()
    at_once = np.asarray(schedule(np.arange(40)))
    # float32: vector and scalar kernels may round the last bit differently.
    np.testing.assert_allclose(at_once, [schedule.lr_at(i) for i in range(40)], rtol=1e-5)
    finder = LRFinder(min_lr=1e-4, max_lr=1.0, num_steps=30)
    np.testing.assert_allclose(np.asarray(finder(np.arange(40))), [finder.lr_at(i) for i in range(40)], rtol=1e-5)


def test_lr_per_step_reads_any_optimizer_learning_rate(monkeypatch):
    schedule = SCHEDULES["multistep"]()
    scheduled = unit_gradient_model(keras.optimizers.SGD(learning_rate=schedule))
    constant = unit_gradient_model(keras.optimizers.SGD(learning_rate=0.3))
    cosine = keras.optimizers.schedules.CosineDecay(0.1, 20, warmup_target=0.2, warmup_steps=5)
    branching = unit_gradient_model(keras.optimizers.SGD(learning_rate=cosine))
    expected = [float(cosine(i)) for i in range(10)]
    # Step by step for a schedule that cannot take a vector of steps...
    np.testing.assert_allclose(lr_per_step(branching, 0, 10), expected, rtol=1e-6)
    # ...and in one evaluation for the others.
    monkeypatch.setattr(_lr_control, "current_lr", None)
    np.testing.assert_allclose(lr_per_step(scheduled, 3, 20), [schedule.lr_at(i) for i in range(3, 20)], rtol=1e-6)
    np.testing.assert_allclose(lr_per_step(constant, 0, 5), [0.3] * 5, rtol=1e-6)


def fit(model, callbacks, epochs=3):
    return model.fit(
        UNIT_X, UNIT_Y, batch_size=4, epochs=epochs, callbacks=callbacks, shuffle=False, verbose=0
    )


@pytest.mark.parametrize("steps_per_execution", [1, 4])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_applied_lr_at_every_step_equals_lr_at(name, steps_per_execution):
    schedule = SCHEDULES[name]()
    model = unit_gradient_model(RecordingSGD(learning_rate=1.0), steps_per_execution)
    history = fit(model, [schedule])
    steps = 3 * STEPS_PER_EPOCH
    expected = np.array([schedule.lr_at(i) for i in range(steps)])
    np.testing.assert_allclose(model.optimizer.recorded(steps), expected, rtol=1e-6)
    # And the weight moved by exactly those rates (its gradient is 1).
    assert weight_of(model) == pytest.approx(-expected.sum(), rel=1e-5)
    # `lr` in the epoch logs is the LR of each epoch's last step.
    last_steps = [STEPS_PER_EPOCH * (e + 1) - 1 for e in range(3)]
    assert history.history["lr"] == pytest.approx([schedule.lr_at(i) for i in last_steps])


def test_works_under_xla_jit_compile():
    schedule = SCHEDULES["step"]()
    model = unit_gradient_model(RecordingSGD(learning_rate=1.0), 4, jit_compile=True)
    fit(model, [schedule], epochs=2)
    expected = [schedule.lr_at(i) for i in range(16)]
    np.testing.assert_allclose(model.optimizer.recorded(16), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "optimizer", [keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.RMSprop]
)
def test_drives_any_keras_optimizer_exactly_like_the_same_schedule_given_to_it(optimizer):
    schedule = CaffeLR("step", base_lr=0.1, gamma=0.1, stepsize=8)
    model = unit_gradient_model(optimizer(learning_rate=0.5))
    history = fit(model, [schedule], epochs=2)
    assert history.history["lr"] == pytest.approx([0.1, 0.01])
    same = keras.optimizers.schedules.PiecewiseConstantDecay([7], [0.1, 0.01])
    reference = unit_gradient_model(optimizer(learning_rate=same))
    fit(reference, None, epochs=2)
    assert weight_of(model) == pytest.approx(weight_of(reference), rel=1e-6)
    assert weight_of(model) != pytest.approx(weight_of(unit_gradient_model(optimizer(0.5))))


def test_optimizer_gets_its_own_lr_back_and_the_instance_is_reusable():
    schedule = CaffeLR("step", base_lr=0.1, gamma=0.5, stepsize=8)
    model = unit_gradient_model(RecordingSGD(learning_rate=0.25))
    fit(model, [schedule], epochs=1)
    assert float(model.optimizer.learning_rate) == 0.25
    # A second fit with the same instance continues Caffe's global iteration.
    history = fit(model, [schedule], epochs=1)
    assert history.history["lr"] == pytest.approx([0.05])
    # And a fit without it trains at the optimizer's own rate again.
    before = weight_of(model)
    fit(model, [], epochs=1)
    assert weight_of(model) == pytest.approx(before - 8 * 0.25, rel=1e-6)


def test_history_with_lr_becomes_a_dataframe_and_csv(tmp_path):
    csv_path = tmp_path / "history.csv"
    model = unit_gradient_model(keras.optimizers.SGD())
    history = fit(
        model, [SCHEDULES["poly"](), keras.callbacks.CSVLogger(str(csv_path))], epochs=2
    )
    frame = pd.DataFrame(history.history)
    assert list(frame.columns) == ["loss", "lr"]
    logged = pd.read_csv(csv_path)
    assert logged["lr"].tolist() == pytest.approx(frame["lr"].tolist())


def test_used_directly_as_an_optimizer_schedule_and_saved_with_the_model(tmp_path):
    schedule = CaffeLR("multistep", base_lr=0.1, gamma=0.1, stepvalue=[4, 12])
    model = unit_gradient_model(RecordingSGD(learning_rate=schedule))
    fit(model, None, epochs=2)
    np.testing.assert_allclose(
        model.optimizer.recorded(16), [schedule.lr_at(i) for i in range(16)], rtol=1e-6
    )
    path = os.path.join(tmp_path, "model.keras")
    plain = unit_gradient_model(keras.optimizers.SGD(learning_rate=schedule))
    fit(plain, None, epochs=1)
    plain.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer._learning_rate, CaffeLR)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(schedule.lr_at(8))


def test_two_schedules_in_one_fit_is_an_error():
    model = unit_gradient_model(keras.optimizers.SGD())
    with pytest.raises(ValueError, match="Two learning-rate schedules in one fit: CaffeLR and CyclicLR"):
        fit(model, [SCHEDULES["step"](), SCHEDULES["triangular2"]()], epochs=1)
    # The interrupted fit left no controller behind.
    fit(model, [SCHEDULES["step"]()], epochs=1)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_full_model_checkpoint_during_a_fit_holds_a_plain_optimizer_at_the_level_of_the_moment(tmp_path):
    path = str(tmp_path / "checkpoint.keras")
    model = unit_gradient_model(keras.optimizers.SGD(learning_rate=0.2))
    schedule = CaffeLR("step", base_lr=0.1, gamma=0.5, stepsize=8)
    fit(model, [schedule, PlateauDecay(monitor="loss"), keras.callbacks.ModelCheckpoint(path)], 2)
    loaded = keras.saving.load_model(path)
    # Same optimizer variables as saved (the iteration count survives); the
    # LR variable held the level of the fit (base_lr, no plateau cut), as with
    # Keras's ReduceLROnPlateau.
    assert isinstance(loaded.optimizer._learning_rate, keras.Variable)
    assert int(loaded.optimizer.iterations) == 16
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.1)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.2)  # its own, after the fit
    # Resuming with the same callback continues the schedule.
    history = fit(loaded, [schedule], epochs=1)
    assert history.history["lr"] == pytest.approx([schedule.lr_at(23)])

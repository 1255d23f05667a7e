import math
import re

import keras
import numpy as np
import pytest

from callbacks import BestWeights, DivergenceGuard
from tests.callbacks.helpers import WeightsAtEpochEnd, host_reads_of_variables, mlp


def initial_weights_and_fit(digits, lr, epochs, guard, recorder=None):
    model = mlp(keras.optimizers.SGD(lr))
    initial = model.get_weights()
    callbacks = [guard] + ([recorder] if recorder else [])
    history = model.fit(digits[0], digits[1], batch_size=32, epochs=epochs, callbacks=callbacks, verbose=0)
    return model, initial, history


def test_stops_a_run_with_a_huge_lr_and_keeps_the_initial_weights(digits, capsys):
    guard = DivergenceGuard(factor=3.0)
    model, initial, history = initial_weights_and_fit(digits, 1e4, 5, guard)
    assert guard.diverged
    assert len(history.history["loss"]) == 1  # stopped inside the first epoch
    for actual, expected in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(actual, expected)
    assert "weights restored to the start of epoch 1" in guard.reason
    assert "DivergenceGuard: stopped training: the loss" in capsys.readouterr().out


class RaiseLRAfter(keras.callbacks.Callback):
    """Sets a huge LR from the given epoch on, so a healthy run diverges later."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.optimizer.learning_rate = 1e5


def test_a_late_divergence_rolls_back_to_the_last_complete_epoch(digits):
    guard = DivergenceGuard(verbose=0)
    recorder = WeightsAtEpochEnd()
    model = mlp(keras.optimizers.SGD(0.05))
    history = model.fit(digits[0], digits[1], batch_size=32, epochs=6,
                        callbacks=[RaiseLRAfter(2), guard, recorder], verbose=0)
    assert guard.diverged
    assert len(history.history["loss"]) == 3
    for actual, expected in zip(model.get_weights(), recorder.weights[1]):
        np.testing.assert_array_equal(actual, expected)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert re.search(r"at step \d+ of epoch 3; weights restored to the end of epoch 2$", guard.reason)


def test_the_epoch_it_stops_is_no_progress_for_the_callbacks_after_it(digits):
    # Keras validates the stopped epoch too; its metrics must not count.
    guard = DivergenceGuard(verbose=0)
    best = BestWeights(monitor="val_accuracy", mode="min", verbose=0)  # any finite value would "improve"
    recorder = WeightsAtEpochEnd()
    model = mlp(keras.optimizers.SGD(0.05))
    history = model.fit(digits[0], digits[1], batch_size=32, epochs=6, validation_split=0.2,
                        callbacks=[RaiseLRAfter(2), guard, best, recorder], verbose=0)
    assert guard.diverged and len(history.history["val_accuracy"]) == 3
    assert all(math.isnan(v) for v in (history.history["loss"][2], history.history["val_accuracy"][2]))
    assert best.best_epoch in (0, 1)
    for actual, expected in zip(model.get_weights(), recorder.weights[best.best_epoch]):
        np.testing.assert_array_equal(actual, expected)


def test_leaves_a_healthy_run_alone(digits):
    guard = DivergenceGuard()
    model, _, history = initial_weights_and_fit(digits, 0.05, 3, guard)
    assert not guard.diverged and guard.reason is None
    assert len(history.history["loss"]) == 3
    assert math.isfinite(guard.reference_loss) and guard.reference_loss > 1.5  # about ln(10)


def test_bad_arguments_and_config_round_trip():
    with pytest.raises(ValueError, match="`factor` must be > 1. Received: factor=0.5"):
        DivergenceGuard(factor=0.5)
    guard = DivergenceGuard(factor=5.0, verbose=0)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(guard))
    assert rebuilt.get_config() == guard.get_config() == {"factor": 5.0, "baseline": None, "verbose": 0}


def test_a_baseline_replaces_the_first_loss(digits):
    # A generous baseline lets a run whose loss rises from a low start go on...
    lenient = DivergenceGuard(factor=3.0, baseline=100.0, verbose=0)
    _, _, history = initial_weights_and_fit(digits, 2.0, 2, lenient)
    assert not lenient.diverged and lenient.reference_loss == 100.0
    # ...and a tiny one stops it at once, naming the baseline.
    strict = DivergenceGuard(factor=3.0, baseline=0.01, verbose=0)
    initial_weights_and_fit(digits, 0.05, 2, strict)
    assert strict.diverged and "exceeded 3 x the baseline 0.01" in strict.reason


def test_a_resumed_guard_compares_with_the_saved_reference_loss(digits):
    first = DivergenceGuard(verbose=0)
    model, _, _ = initial_weights_and_fit(digits, 0.05, 1, first)
    state = first.get_state()
    assert state == {"reference_loss": first.reference_loss} and state["reference_loss"] > 1.5
    resumed = DivergenceGuard(verbose=0)
    resumed.set_state({"reference_loss": 0.01})  # a tiny saved reference: the next step exceeds 3x
    model.fit(digits[0], digits[1], batch_size=32, epochs=1, callbacks=[resumed], verbose=0)
    assert resumed.diverged and "its first value 0.01" in resumed.reason


def test_the_last_good_state_stays_on_the_device(digits):
    # Every epoch's snapshot of the model and optimizer is a device copy.
    def host_reads(callbacks):
        model = mlp(keras.optimizers.SGD(0.1, momentum=0.9))
        with host_reads_of_variables() as count:
            model.fit(digits[0], digits[1], batch_size=32, epochs=3, callbacks=callbacks, verbose=0)
        return count[0]

    assert host_reads([DivergenceGuard(factor=3.0)]) == host_reads([])

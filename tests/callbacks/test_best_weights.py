import os

import keras
import numpy as np
import pytest

from callbacks import BestWeights
from tests.callbacks.helpers import ScriptedMetric, WeightsAtEpochEnd, host_reads_of_variables, mlp


def fit(model, data, callbacks, epochs):
    x, y, x_val, y_val = data
    return model.fit(x, y, batch_size=64, epochs=epochs, callbacks=callbacks,
                     validation_data=(x_val, y_val), verbose=0)


def assert_weights_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


def test_restores_the_best_epoch_when_training_runs_to_the_last_epoch(digits):
    # The best score comes at epoch 1; the run goes on to epoch 4 regardless.
    best = BestWeights(monitor="score", mode="max", verbose=0)
    recorder = WeightsAtEpochEnd()
    model = mlp(keras.optimizers.SGD(0.1))
    history = fit(model, digits, [ScriptedMetric([0.5, 0.9, 0.8, 0.7, 0.85]), best, recorder], 5)
    assert len(history.history["loss"]) == 5
    assert best.best_epoch == 1 and best.best == 0.9
    assert history.history["best_epoch"] == [0, 1, 1, 1, 1]
    assert history.history["best_score"] == [0.5, 0.9, 0.9, 0.9, 0.9]
    assert_weights_equal(model.get_weights(), recorder.weights[1])
    with pytest.raises(AssertionError):
        assert_weights_equal(model.get_weights(), recorder.weights[4])


def test_stops_early_after_patience_and_restores_the_best(digits, capsys):
    best = BestWeights(monitor="score", mode="min", patience=2)
    recorder = WeightsAtEpochEnd()
    model = mlp(keras.optimizers.SGD(0.1))
    history = fit(model, digits, [ScriptedMetric([3.0, 2.0, 2.5, 2.2, 1.0, 0.5]), best, recorder], 6)
    assert len(history.history["loss"]) == 4
    assert (best.best_epoch, best.stopped_epoch) == (1, 3)
    assert_weights_equal(model.get_weights(), recorder.weights[1])
    out = capsys.readouterr().out
    assert "Epoch 4: BestWeights: score has not improved for 2 epochs; stopping." in out
    assert "restored the weights of epoch 2 (score=2)" in out


def test_real_val_loss_and_patience_none_never_stops(digits):
    best = BestWeights(verbose=0)
    recorder = WeightsAtEpochEnd()
    model = mlp(keras.optimizers.SGD(0.5))
    history = fit(model, digits, [best, recorder], 6)
    val_loss = history.history["val_loss"]
    assert len(val_loss) == 6
    assert best.best_epoch == int(np.argmin(val_loss))
    assert best.best == pytest.approx(min(val_loss))
    assert_weights_equal(model.get_weights(), recorder.weights[best.best_epoch])
    x_val, y_val = digits[2], digits[3]
    assert model.evaluate(x_val, y_val, verbose=0)[0] == pytest.approx(min(val_loss), rel=1e-5)


def test_writes_the_best_weights_to_disk_atomically(digits, tmp_path):
    path = tmp_path / "out" / "best.weights.h5"
    best = BestWeights(monitor="score", mode="max", filepath=path, verbose=0)
    recorder = WeightsAtEpochEnd()
    model = mlp(keras.optimizers.SGD(0.1))
    fit(model, digits, [ScriptedMetric([0.1, 0.3, 0.2]), best, recorder], 3)
    assert os.listdir(path.parent) == ["best.weights.h5"]  # no temporary file left
    fresh = mlp(keras.optimizers.SGD(0.1))
    fresh.load_weights(path)
    assert_weights_equal(fresh.get_weights(), recorder.weights[1])


def test_a_resumed_run_restores_state_and_best_weights_from_disk(digits, tmp_path):
    path = tmp_path / "best.weights.h5"
    first = BestWeights(monitor="score", mode="max", filepath=path, verbose=0)
    recorder = WeightsAtEpochEnd()
    model = mlp(keras.optimizers.SGD(0.1))
    fit(model, digits, [ScriptedMetric([0.1, 0.9, 0.2]), first, recorder], 3)
    state = first.get_state()
    assert state == {"best": 0.9, "best_epoch": 1, "wait": 1}

    resumed = BestWeights.from_config(first.get_config())
    resumed.set_state(state)
    model = mlp(keras.optimizers.SGD(0.1))  # a new process would start from scratch
    fit(model, digits, [ScriptedMetric([0.5, 0.6]), resumed], 2)
    assert resumed.best_epoch == 1 and resumed.best == 0.9
    assert_weights_equal(model.get_weights(), recorder.weights[1])


def test_best_weights_carry_over_in_memory_without_a_file(digits):
    # A later stage's instance takes the earlier one's best weights, not from disk.
    first = BestWeights(monitor="score", mode="max", verbose=0)
    recorder = WeightsAtEpochEnd()
    model = mlp(keras.optimizers.SGD(0.1))
    fit(model, digits, [ScriptedMetric([0.1, 0.9, 0.2]), first, recorder], 3)
    second = BestWeights(monitor="score", mode="max", verbose=0)
    second.set_state({**first.get_state(), "wait": 0}, weights=first.best_weights)
    fit(model, digits, [ScriptedMetric([0.5, 0.6]), second], 2)  # no better epoch
    assert second.best_epoch == 1 and second.best == 0.9
    assert_weights_equal(model.get_weights(), recorder.weights[1])


def test_take_model_weights_replaces_the_best_weights_and_their_file(digits, tmp_path):
    # As zoo does after recomputing the BatchNorm statistics of the restored best weights.
    path = tmp_path / "best.weights.h5"
    best = BestWeights(monitor="score", mode="max", filepath=path, verbose=0)
    model = mlp(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="No best epoch yet"):
        best.set_model(model)
        best.take_model_weights()
    fit(model, digits, [ScriptedMetric([0.1, 0.9, 0.2]), best], 3)
    changed = [w + 1.0 for w in model.get_weights()]
    model.set_weights(changed)
    best.take_model_weights()
    assert_weights_equal([keras.ops.convert_to_numpy(w) for w in best.best_weights], changed)
    fresh = mlp(keras.optimizers.SGD(0.1))
    fresh.load_weights(path)
    assert_weights_equal(fresh.get_weights(), changed)


def test_missing_monitor_is_an_error(digits):
    x, y, _, _ = digits
    model = mlp(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="BestWeights monitors 'val_loss', which is not in the epoch logs"):
        model.fit(x, y, epochs=1, callbacks=[BestWeights()], verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(patience=0), "`patience` must be an integer >= 1"),
        (dict(filepath="best.h5"), r"`filepath` must end in '.weights.h5'"),
        (dict(mode="up"), "`mode` must be one of auto, min, max"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BestWeights(**kwargs)


def test_get_config_round_trips():
    best = BestWeights("val_accuracy", mode="max", patience=4, min_delta=0.001,
                       filepath="b.weights.h5", verbose=0)
    assert BestWeights(**best.get_config()).get_config() == best.get_config()
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(best))
    assert rebuilt.get_config() == best.get_config()


def test_the_best_weights_stay_on_the_device(digits):
    # One extra copy of the weights, in device memory: no epoch reads a
    # variable into host memory more often than a fit without the callback.
    def host_reads(callbacks):
        model = mlp(keras.optimizers.SGD(0.1))
        with host_reads_of_variables() as count:
            fit(model, digits, [ScriptedMetric([0.5, 0.6, 0.7, 0.2]), *callbacks], 4)
        return count[0], model

    best = BestWeights(monitor="score", mode="max", verbose=0)
    recorder = WeightsAtEpochEnd()
    reads, model = host_reads([best, recorder])
    assert reads == host_reads([WeightsAtEpochEnd()])[0]
    assert best.best_epoch == 2
    assert_weights_equal(model.get_weights(), recorder.weights[2])
    assert_weights_equal([keras.ops.convert_to_numpy(w) for w in best.best_weights], recorder.weights[2])


def test_best_weights_are_a_copy_that_later_epochs_leave_alone(digits):
    best = BestWeights(monitor="score", mode="max", verbose=0)
    recorder = WeightsAtEpochEnd()
    held = []

    class Hold(keras.callbacks.Callback):  # takes the best weights as epoch 2 leaves them
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                held.extend(best.best_weights)

    model = mlp(keras.optimizers.SGD(0.1))
    fit(model, digits, [ScriptedMetric([0.5, 0.9, 0.95, 0.99]), best, recorder, Hold()], 4)
    assert best.best_epoch == 3  # two more improvements were taken after `held`
    assert_weights_equal([keras.ops.convert_to_numpy(w) for w in held], recorder.weights[1])

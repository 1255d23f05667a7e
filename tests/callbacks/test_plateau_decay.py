import keras
import numpy as np
import pytest

from callbacks import CaffeLR, PlateauDecay
from tests.callbacks.helpers import (
    STEPS_PER_EPOCH,
    UNIT_X,
    UNIT_Y,
    RecordingSGD,
    ScriptedMetric,
    unit_gradient_model,
)

# The monitored score stalls after epoch 1: with patience 2 the LR is cut at
# the end of epoch 3 and, the score still stalling, again at the end of epoch 5.
STALLING = [1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def fit(model, callbacks, epochs=len(STALLING), steps_per_execution=1):
    return model.fit(UNIT_X, UNIT_Y, batch_size=4, epochs=epochs, callbacks=callbacks,
                     shuffle=False, verbose=0)


def per_step(values_per_epoch):
    return np.repeat(values_per_epoch, STEPS_PER_EPOCH)


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_reduces_a_float_lr_after_patience_epochs(steps_per_execution, capsys):
    decay = PlateauDecay(monitor="score", factor=0.5, patience=2)
    model = unit_gradient_model(RecordingSGD(learning_rate=0.1), steps_per_execution)
    history = fit(model, [ScriptedMetric(STALLING), decay])
    scale = [1, 1, 1, 1, 0.5, 0.5, 0.25]
    steps = len(STALLING) * STEPS_PER_EPOCH
    np.testing.assert_allclose(model.optimizer.recorded(steps), 0.1 * per_step(scale), rtol=1e-6)
    assert history.history["lr"] == pytest.approx([0.1 * s for s in scale])
    assert decay.reductions == [(3, pytest.approx(0.05)), (5, pytest.approx(0.025))]
    assert "Epoch 4: PlateauDecay: score has not improved for 2 epochs; learning rate 0.1 -> 0.05" in capsys.readouterr().out
    # The optimizer gets its own learning rate back.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)


def test_scales_a_step_policy_which_keeps_stepping_from_the_reduced_level():
    schedule = CaffeLR("step", base_lr=0.1, gamma=0.5, stepsize=2 * STEPS_PER_EPOCH)
    decay = PlateauDecay(monitor="score", factor=0.1, patience=2)
    model = unit_gradient_model(RecordingSGD(learning_rate=1.0))
    fit(model, [ScriptedMetric(STALLING), decay, schedule])
    steps = len(STALLING) * STEPS_PER_EPOCH
    scale = per_step([1, 1, 1, 1, 0.1, 0.1, 0.01])
    expected = np.array([schedule.lr_at(i) for i in range(steps)]) * scale
    np.testing.assert_allclose(model.optimizer.recorded(steps), expected, rtol=1e-6)


def test_works_where_keras_reduce_lr_on_plateau_raises_on_a_schedule_optimizer():
    def optimizer():
        return RecordingSGD(learning_rate=keras.optimizers.schedules.ExponentialDecay(
            0.1, decay_steps=STEPS_PER_EPOCH, decay_rate=0.9))

    with pytest.raises(TypeError, match="not settable"):
        fit(unit_gradient_model(optimizer()),
            [ScriptedMetric(STALLING), keras.callbacks.ReduceLROnPlateau("score", patience=2, mode="min")])
    model = unit_gradient_model(optimizer())
    fit(model, [ScriptedMetric(STALLING), PlateauDecay("score", factor=0.5, patience=2)])
    steps = len(STALLING) * STEPS_PER_EPOCH
    decayed = 0.1 * 0.9 ** (np.arange(steps) / STEPS_PER_EPOCH)
    expected = decayed * per_step([1, 1, 1, 1, 0.5, 0.5, 0.25])
    np.testing.assert_allclose(model.optimizer.recorded(steps), expected, rtol=1e-5)


def test_cooldown_and_min_lr():
    decay = PlateauDecay(monitor="score", factor=0.1, patience=1, cooldown=2, min_lr=0.0005, verbose=0)
    model = unit_gradient_model(RecordingSGD(learning_rate=0.1))
    history = fit(model, [ScriptedMetric([1.0] * 9), decay], epochs=9)
    # Cut after epoch 1 (0-based); as in Keras, the cooldown counter runs out
    # on the second epoch after a cut, which counts again. Never below min_lr.
    assert history.history["lr"] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0005, 0.0005, 0.0005])
    assert [epoch for epoch, _ in decay.reductions] == [1, 3, 5]


def test_resumes_from_its_state_and_resets_without_it():
    decay = PlateauDecay(monitor="score", factor=0.5, patience=2, verbose=0)
    model = unit_gradient_model(RecordingSGD(learning_rate=0.1))
    fit(model, [ScriptedMetric(STALLING), decay])
    state = decay.get_state()
    assert state == {"best": 0.5, "wait": 1, "cooldown_counter": 0, "lr_scale": 0.25}
    resumed = PlateauDecay.from_config(decay.get_config())
    resumed.set_state(state)
    history = fit(model, [ScriptedMetric([0.9]), resumed], epochs=1)
    assert history.history["lr"] == pytest.approx([0.025])
    assert resumed.reductions == [(0, pytest.approx(0.0125))]  # wait 1 + 1 = patience
    # A plain reuse starts afresh.
    history = fit(model, [ScriptedMetric([0.9]), resumed], epochs=1)
    assert history.history["lr"] == pytest.approx([0.1])


def test_missing_monitor_is_an_error_listing_the_logged_keys():
    model = unit_gradient_model(keras.optimizers.SGD())
    with pytest.raises(ValueError, match=r"monitors 'val_loss', which is not in the epoch logs. Available: loss, lr"):
        fit(model, [PlateauDecay()], epochs=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(factor=1.0), "`factor` must be < 1"),
        (dict(factor=0), "`factor` must be > 0"),
        (dict(patience=-1), "`patience` must be an integer >= 0"),
        (dict(cooldown=1.5), "`cooldown` must be an integer >= 0"),
        (dict(min_lr=-0.1), "`min_lr` must be >= 0"),
        (dict(mode="minimum"), "`mode` must be one of auto, min, max"),
        (dict(min_delta=-1), "`min_delta` must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PlateauDecay(**kwargs)


def test_get_config_round_trips():
    decay = PlateauDecay("val_accuracy", factor=0.2, patience=3, min_delta=0.01, cooldown=1,
                         min_lr=1e-6, mode="max", verbose=0)
    assert PlateauDecay(**decay.get_config()).get_config() == decay.get_config()
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(decay))
    assert rebuilt.get_config() == decay.get_config()

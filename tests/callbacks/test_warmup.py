import keras
import pytest

from callbacks import CaffeLR, CyclicLR, Warmup


def test_ramps_linearly_to_the_schedule_value_then_follows_it_unshifted():
    inner = CaffeLR("step", base_lr=0.1, gamma=0.1, stepsize=20)
    schedule = Warmup(inner, warmup_steps=10, start_lr=0.01)
    expected = [0.01 + (0.1 - 0.01) * i / 10 for i in range(10)]
    assert [schedule.lr_at(i) for i in range(10)] == pytest.approx(expected, rel=1e-6)
    for it in (10, 19, 20, 21, 45):
        assert schedule.lr_at(it) == pytest.approx(inner.lr_at(it), rel=1e-6)


def test_warms_up_to_a_constant_and_to_any_keras_schedule():
    constant = Warmup(0.5, warmup_steps=4)
    assert [constant.lr_at(i) for i in range(6)] == pytest.approx([0, 0.125, 0.25, 0.375, 0.5, 0.5])
    decay = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    schedule = Warmup(decay, warmup_steps=10)
    assert schedule.lr_at(5) == pytest.approx(0.05 / 2, rel=1e-6)
    assert schedule.lr_at(30) == pytest.approx(0.1 * 0.5**3, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schedule=0.1, warmup_steps=0), "`warmup_steps` must be an integer >= 1"),
        (dict(schedule=0.1, warmup_steps=5, start_lr=-1), "`start_lr` must be >= 0"),
        (dict(schedule="fast", warmup_steps=5), "`schedule` must be a finite number"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Warmup(**kwargs)


@pytest.mark.parametrize(
    "inner", [0.25, CyclicLR(0.01, 0.1, step_size=8), CaffeLR("exp", base_lr=0.1, gamma=0.99)]
)
def test_get_config_round_trips_with_the_wrapped_schedule(inner):
    schedule = Warmup(inner, warmup_steps=5, start_lr=0.001)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(rebuilt, Warmup)
    assert rebuilt.get_config() == schedule.get_config()
    assert [rebuilt.lr_at(i) for i in (0, 3, 5, 17)] == [schedule.lr_at(i) for i in (0, 3, 5, 17)]

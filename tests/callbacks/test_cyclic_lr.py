import math

import keras
import pytest

from callbacks import CyclicLR


def clr_reference(it, base_lr, max_lr, step_size, mode, gamma):
    """The Keras CLR reference implementation (bckenstler/CLR), float64."""
    cycle = math.floor(1 + it / (2 * step_size))
    x = abs(it / step_size - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / (2.0 ** (cycle - 1)), "exp_range": gamma**it}[mode]
    return base_lr + (max_lr - base_lr) * max(0.0, 1 - x) * scale


ITERATIONS = [0, 1, 99, 100, 101, 199, 200, 201, 300, 400, 401, 1000, 12_345]


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_every_mode_matches_the_reference(mode):
    params = dict(base_lr=1e-3, max_lr=6e-3, step_size=100, mode=mode, gamma=0.9995)
    schedule = CyclicLR(**params)
    expected = [clr_reference(it, **params) for it in ITERATIONS]
    assert [schedule.lr_at(it) for it in ITERATIONS] == pytest.approx(expected, rel=1e-5)


def test_triangular_shape_at_cycle_points():
    schedule = CyclicLR(base_lr=0.1, max_lr=1.0, step_size=10)
    assert schedule.lr_at(0) == pytest.approx(0.1)
    assert schedule.lr_at(5) == pytest.approx(0.55)
    assert schedule.lr_at(10) == pytest.approx(1.0)
    assert schedule.lr_at(20) == pytest.approx(0.1)
    assert schedule.lr_at(30) == pytest.approx(1.0)


def test_triangular2_halves_the_amplitude_each_cycle():
    schedule = CyclicLR(base_lr=0.0001, max_lr=1.0001, step_size=10, mode="triangular2")
    peaks = [schedule.lr_at(10 + 20 * k) - 0.0001 for k in range(4)]
    assert peaks == pytest.approx([1.0, 0.5, 0.25, 0.125], rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(base_lr=0, max_lr=1, step_size=10), "`base_lr` must be > 0"),
        (dict(base_lr=0.1, max_lr=0.1, step_size=10), r"`max_lr` must be > 0.1. Received: max_lr=0.1"),
        (dict(base_lr=0.1, max_lr=1, step_size=0), "`step_size` must be an integer >= 1"),
        (dict(base_lr=0.1, max_lr=1, step_size=10, mode="triangle"), "did you mean 'triangular'"),
        (dict(base_lr=0.1, max_lr=1, step_size=10, mode="exp_range", gamma=0), "`gamma` must be > 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CyclicLR(**kwargs)


def test_get_config_round_trips():
    schedule = CyclicLR(base_lr=1e-3, max_lr=1e-2, step_size=50, mode="exp_range", gamma=0.999)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert rebuilt.get_config() == schedule.get_config() == CyclicLR(**schedule.get_config()).get_config()
    assert rebuilt.lr_at(77) == schedule.lr_at(77)

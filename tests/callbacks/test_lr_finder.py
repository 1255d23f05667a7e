import keras
import numpy as np
import pandas as pd
import pytest
from keras import ops

from callbacks import LRFinder, find_lr
from callbacks.lr_finder import suggest_lrs
from zoo.lr_policies import LR_FINDER_RULES as RULES
from tests.callbacks.helpers import mlp


def state_of(model):
    variables = list(model.weights) + list(model.optimizer.variables)
    return [ops.convert_to_numpy(v).copy() for v in variables]


def trained_mlp(digits, optimizer):
    x, y, _, _ = digits
    model = mlp(optimizer)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # non-trivial optimizer state
    return model


@pytest.mark.parametrize("optimizer, lr", [(keras.optimizers.Adam, 1e-3), (keras.optimizers.SGD, 0.01)])
def test_leaves_weights_and_optimizer_state_exactly_as_before(digits, optimizer, lr):
    model = trained_mlp(digits, optimizer(lr))
    before = state_of(model)
    iterations = int(model.optimizer.iterations)
    result = find_lr(model, digits[0], digits[1], batch_size=64, min_lr=1e-5, max_lr=1.0,
                     num_steps=30, verbose=0)
    assert len(result.history) > 5
    after = state_of(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations) == iterations
    assert float(model.optimizer.learning_rate) == pytest.approx(lr)


def test_sweeps_exponentially_and_stops_when_the_loss_blows_up(digits):
    model = mlp(keras.optimizers.SGD())
    finder = LRFinder(min_lr=1e-4, max_lr=1e3, num_steps=120, verbose=0)
    # 1347 samples / 32 = 43 steps an epoch: the sweep spans several epochs.
    model.fit(digits[0], digits[1], batch_size=32, epochs=120, callbacks=[finder], verbose=0)
    result = finder.result
    history = result.history
    assert list(history.columns) == ["lr", "loss", "smoothed_loss"]
    assert 43 < len(history) < 120  # diverged before the last step
    expected_lr = [1e-4 * (1e7) ** (i / 119) for i in range(len(history))]
    assert history["lr"].tolist() == pytest.approx(expected_lr, rel=1e-5)
    assert "exceeded 3x its minimum" in result.stop_reason or "loss became" in result.stop_reason
    assert history["smoothed_loss"].iloc[-1] > 2 * history["smoothed_loss"].min() or not np.isfinite(history["loss"].iloc[-1])
    assert result.rule == "valley" and set(result.suggestions) == set(RULES)
    assert result.suggested_lr == result.suggestions["valley"]
    # Every suggestion is an LR from before the loss minimum, where the loss falls.
    lowest = history["smoothed_loss"].idxmin()
    for lr in result.suggestions.values():
        assert history["lr"].iloc[0] <= lr <= history["lr"].iloc[lowest]


def test_a_quick_fit_at_the_suggested_lr_learns(digits):
    model = mlp(keras.optimizers.SGD())
    result = find_lr(model, digits[0], digits[1], batch_size=32, min_lr=1e-4, max_lr=10.0,
                     num_steps=100, verbose=0)
    model.optimizer.learning_rate = result.suggested_lr
    history = model.fit(digits[0], digits[1], batch_size=32, epochs=5, verbose=0,
                        validation_data=(digits[2], digits[3]))
    assert max(history.history["val_accuracy"]) > 0.8


def test_plot_writes_a_png_marking_every_suggestion(digits, tmp_path):
    from matplotlib.figure import Figure

    model = mlp(keras.optimizers.SGD())
    path = tmp_path / "lr_find.png"
    result = find_lr(model, digits[0], digits[1], batch_size=64, min_lr=1e-3, max_lr=10.0, num_steps=40,
                     rule="steep", plot_path=path, verbose=0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    axes = Figure().add_subplot()
    result.draw(axes)
    labels = axes.get_legend_handles_labels()[1]
    for rule, lr in result.suggestions.items():
        assert f"{rule} {lr:.2g}" + (" (chosen)" if rule == "steep" else "") in labels


def sweep(loss, lr=None):
    lr = np.logspace(-5, 0, len(loss)) if lr is None else lr
    return pd.DataFrame({"lr": lr, "loss": loss, "smoothed_loss": loss})


def test_each_rule_on_a_known_curve():
    lr = np.logspace(-5, 0, 100)
    # Flat, then a sigmoid fall centred (steepest) at 10^-2.5, then a blow-up from 10^-0.75.
    loss = 2.0 - 1.5 / (1 + np.exp(-4 * (np.log10(lr) + 2.5)))
    loss[85:] += np.linspace(0.5, 5, 15)
    suggestions = suggest_lrs(sweep(loss, lr))
    assert list(suggestions) == list(RULES)
    assert suggestions["steep"] == pytest.approx(10**-2.5, rel=0.3)
    assert suggestions["minimum"] == pytest.approx(lr[84] / 10)
    # The longest fall runs from the first point after the trimmed tenth to the minimum.
    assert suggestions["valley"] == pytest.approx(lr[(10 + 84) // 2])


def test_the_valley_is_the_longest_fall_not_the_deepest():
    # A short, deep fall (15 points), a bump, then a long shallow fall (50 points).
    loss = np.concatenate([np.linspace(3.0, 1.0, 15), [2.5] * 5, np.linspace(2.4, 1.5, 50), [1.6] * 30])
    valley = suggest_lrs(sweep(loss))["valley"]
    lr = np.logspace(-5, 0, 100)
    assert lr[20] < valley < lr[70]


def test_no_suggestion_when_the_loss_never_falls():
    result_history = sweep(np.full(60, 2.3))
    assert suggest_lrs(result_history) == {}
    from callbacks import LRFinderResult

    result = LRFinderResult(result_history, {}, "valley", "reached num_steps=60")
    with pytest.raises(ValueError, match=r"No learning rate from 1e-05 to 1 lowered the loss by 5%"):
        result.suggested_lr


def test_a_sweep_over_too_small_rates_says_so(digits):
    model = mlp(keras.optimizers.SGD())
    result = find_lr(model, digits[0], digits[1], batch_size=64, min_lr=1e-12, max_lr=1e-11, num_steps=30,
                     verbose=0)
    assert result.suggestions == {}
    with pytest.raises(ValueError, match="widen the sweep"):
        result.suggested_lr


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(min_lr=0), "`min_lr` must be > 0"),
        (dict(min_lr=1.0, max_lr=0.1), "`max_lr` must be > 1.0"),
        (dict(num_steps=1), "`num_steps` must be an integer >= 2"),
        (dict(stop_factor=1.0), "`stop_factor` must be > 1"),
        (dict(smoothing=1.0), "`smoothing` must be < 1"),
        (dict(rule="valey"), "`rule` must be one of valley, steep, minimum.*did you mean 'valley'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LRFinder(**kwargs)


def test_get_config_round_trips():
    finder = LRFinder(min_lr=1e-6, max_lr=1.0, num_steps=50, stop_factor=4.0, smoothing=0.9, rule="steep")
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(finder))
    assert rebuilt.get_config() == finder.get_config()
    assert rebuilt.lr_at(49) == pytest.approx(1.0)


def test_a_sweep_whose_first_step_fails_says_so(digits):
    model = mlp(keras.optimizers.SGD())
    model.compile(optimizer=keras.optimizers.SGD(), loss=lambda y, p: ops.mean(p) * np.nan)  # every loss NaN
    result = find_lr(model, digits[0], digits[1], batch_size=64, num_steps=10, verbose=0)
    assert result.history.empty and result.suggestions == {}
    assert result.stop_reason == "loss became nan at step 0"
    with pytest.raises(ValueError, match=r"recorded no step \(loss became nan at step 0\)"):
        result.suggested_lr

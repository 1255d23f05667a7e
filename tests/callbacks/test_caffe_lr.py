import math

import keras
import pytest

from callbacks import CaffeLR


def caffe_reference(policy, iterations, base_lr, gamma=None, power=None, stepsize=None,
                    stepvalue=None, max_iter=None):
    """Caffe's SGDSolver::GetLearningRate in plain float64 math, run iteration by
    iteration like the solver (multistep keeps Caffe's `current_step_` counter)."""
    rates, current_step = [], 0
    for it in range(max(iterations) + 1):
        if policy == "fixed":
            rate = base_lr
        elif policy == "step":
            rate = base_lr * gamma ** (it // stepsize)
        elif policy == "exp":
            rate = base_lr * gamma**it
        elif policy == "inv":
            rate = base_lr * (1 + gamma * it) ** (-power)
        elif policy == "multistep":
            if current_step < len(stepvalue) and it >= stepvalue[current_step]:
                current_step += 1
            rate = base_lr * gamma**current_step
        elif policy == "poly":
            rate = base_lr * (1 - min(it, max_iter) / max_iter) ** power
        elif policy == "sigmoid":
            rate = base_lr * (1 / (1 + math.exp(-gamma * (it - stepsize))))
        rates.append(rate)
    return [rates[i] for i in iterations]


CASES = {
    "fixed": (dict(base_lr=0.01), [0, 1, 999, 10**6]),
    "step": (dict(base_lr=0.01, gamma=0.1, stepsize=100), [0, 1, 99, 100, 101, 199, 200, 250]),
    "exp": (dict(base_lr=0.1, gamma=0.999), [0, 1, 2, 1000, 5000]),
    "inv": (dict(base_lr=0.01, gamma=1e-4, power=0.75), [0, 1, 10_000, 10**6]),
    "multistep": (
        dict(base_lr=0.1, gamma=0.5, stepvalue=[10, 25, 70]),
        [0, 9, 10, 11, 24, 25, 26, 69, 70, 71, 5000],
    ),
    "poly": (dict(base_lr=0.1, power=2.0, max_iter=500), [0, 1, 250, 499, 500, 501, 10**5]),
    "sigmoid": (dict(base_lr=0.1, gamma=-0.05, stepsize=200), [0, 199, 200, 201, 1000]),
    "sigmoid_rising": (dict(base_lr=0.1, gamma=0.05, stepsize=200), [0, 199, 200, 201, 1000]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_policy_matches_caffe_at_its_boundaries(case):
    params, iterations = CASES[case]
    policy = case.split("_")[0]
    schedule = CaffeLR(policy, **params)
    expected = caffe_reference(policy, iterations, **params)
    actual = [schedule.lr_at(it) for it in iterations]
    assert actual == pytest.approx(expected, rel=2e-5, abs=1e-12)


def test_step_uses_integer_division():
    schedule = CaffeLR("step", base_lr=1.0, gamma=0.5, stepsize=3)
    assert [schedule.lr_at(i) for i in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]


def test_poly_is_zero_at_and_after_max_iter_never_negative_or_nan():
    schedule = CaffeLR("poly", base_lr=0.1, power=0.5, max_iter=100)
    values = [schedule.lr_at(i) for i in (99, 100, 101, 10_000)]
    assert values[0] > 0
    assert values[1:] == [0.0, 0.0, 0.0]


def test_schedule_call_accepts_an_optimizer_iteration_variable():
    schedule = CaffeLR("step", base_lr=0.1, gamma=0.1, stepsize=2)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    optimizer.iterations.assign(5)
    assert float(optimizer.learning_rate) == pytest.approx(0.001)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(policy="steps", base_lr=0.1), "must be one of fixed, step, exp, inv, multistep, poly, sigmoid"),
        (dict(policy="steps", base_lr=0.1), "did you mean 'step'"),
        (dict(policy="fixed", base_lr=0.0), "`base_lr` must be > 0. Received: base_lr=0.0"),
        (dict(policy="fixed", base_lr=-1), "`base_lr` must be > 0"),
        (dict(policy="step", base_lr=0.1, gamma=0.1), "`stepsize` is required when policy='step'"),
        (dict(policy="step", base_lr=0.1, stepsize=10), "`gamma` is required when policy='step'"),
        (dict(policy="step", base_lr=0.1, gamma=0.1, stepsize=0), "`stepsize` must be an integer >= 1 when policy='step'. Received: stepsize=0"),
        (dict(policy="step", base_lr=0.1, gamma=0.1, stepsize=2.5), "`stepsize` must be an integer"),
        (dict(policy="exp", base_lr=0.1, gamma=-0.9), "`gamma` must be > 0 when policy='exp'"),
        (dict(policy="inv", base_lr=0.1, gamma=0.1), "`power` is required when policy='inv'"),
        (dict(policy="multistep", base_lr=0.1, gamma=0.1), "`stepvalue` is required"),
        (dict(policy="multistep", base_lr=0.1, gamma=0.1, stepvalue=[]), "`stepvalue` must be a non-empty list"),
        (dict(policy="multistep", base_lr=0.1, gamma=0.1, stepvalue=[10, 10]), "strictly increasing"),
        (dict(policy="multistep", base_lr=0.1, gamma=0.1, stepvalue=[20, 10]), "strictly increasing"),
        (dict(policy="poly", base_lr=0.1, power=1.0), "`max_iter` is required when policy='poly'"),
        (dict(policy="poly", base_lr=0.1, power=1.0, max_iter=0), "`max_iter` must be an integer >= 1"),
        (dict(policy="sigmoid", base_lr=0.1, gamma=float("nan"), stepsize=3), "`gamma` must be a finite number"),
    ],
)
def test_bad_arguments_name_the_argument_rule_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        CaffeLR(**kwargs)


def test_each_policy_ignores_parameters_it_does_not_use():
    schedule = CaffeLR("fixed", base_lr=0.1, gamma=-5, stepsize=0)
    assert schedule.lr_at(10) == pytest.approx(0.1)


def test_lr_at_rejects_negative_iterations():
    with pytest.raises(ValueError, match="`iteration` must be an integer >= 0"):
        CaffeLR("fixed", base_lr=0.1).lr_at(-1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_get_config_round_trips(case):
    params, iterations = CASES[case]
    schedule = CaffeLR(case.split("_")[0], **params)
    for rebuilt in (
        CaffeLR.from_config(schedule.get_config()),
        CaffeLR(**schedule.get_config()),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule)),
    ):
        assert isinstance(rebuilt, CaffeLR)
        assert rebuilt.get_config() == schedule.get_config()
        assert [rebuilt.lr_at(i) for i in iterations] == [schedule.lr_at(i) for i in iterations]

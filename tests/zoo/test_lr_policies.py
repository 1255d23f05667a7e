"""The LR policies' names and argument checks: Keras-free, and the ones
the callbacks run."""

import os
import subprocess
import sys

import pytest

from callbacks import caffe_lr, cyclic_lr
from zoo.lr_policies import CAFFE_POLICIES, CYCLIC_MODES, caffe_arguments, cyclic_arguments, warmup_arguments


def test_each_policy_has_a_formula():
    assert list(caffe_lr.POLICIES) == list(CAFFE_POLICIES)
    assert list(cyclic_lr.MODES) == list(CYCLIC_MODES)


def test_it_imports_no_keras():
    code = "import sys, zoo.lr_policies; print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow'}))"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout == "[]\n"


def test_arguments_come_back_checked_and_typed():
    assert caffe_arguments("multistep", 1, gamma=1, stepvalue=(10, 20), power="unused") == {
        "policy": "multistep", "base_lr": 1.0, "gamma": 1.0, "power": "unused", "stepsize": None,
        "stepvalue": [10, 20], "max_iter": None}
    assert cyclic_arguments(1, 2, 10, mode="exp_range", gamma=1) == {
        "base_lr": 1.0, "max_lr": 2.0, "step_size": 10, "mode": "exp_range", "gamma": 1.0}
    assert warmup_arguments(5) == {"warmup_steps": 5, "start_lr": 0.0}


@pytest.mark.parametrize("check, arguments, message", [
    (caffe_arguments, ("steps", 0.1), "Argument `policy` must be one of fixed, step, exp, inv, multistep, poly, "
                                      "sigmoid. Received: policy='steps' (did you mean 'step'?)"),
    (caffe_arguments, ("step", 0.1, 0.1),
     "Argument `stepsize` is required when policy='step'. Received: stepsize=None"),
    (caffe_arguments, ("sigmoid", 0.1, -0.1, None, 0.5),
     "Argument `stepsize` must be an integer >= 1 when policy='sigmoid'. Received: stepsize=0.5"),
    (cyclic_arguments, (0.1, 0.1, 10), "Argument `max_lr` must be > 0.1. Received: max_lr=0.1"),
    (warmup_arguments, (0,), "Argument `warmup_steps` must be an integer >= 1. Received: warmup_steps=0"),
])
def test_a_wrong_argument_is_named_with_its_rule(check, arguments, message):
    with pytest.raises(ValueError) as caught:
        check(*arguments)
    assert str(caught.value) == message

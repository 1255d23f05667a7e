"""One stage runner behind `zoo train` and every `zoo tune` trial."""

import dataclasses

import pandas as pd
import pytest

from zoo.sections import Solver, Stage
from zoo.train import train
from zoo.tune import tune
from tests.zoo.conftest import record_fits, write_spec

# For every field a stage may set: a stage without it and one with it
# (the pair differs in that field alone).
STAGE_FIELDS = {
    "base_lr": ({}, {"base_lr": 0.02}),
    "optimizer": ({}, {"optimizer": "adam"}),
    "momentum": ({}, {"momentum": 0.5}),
    "nesterov": ({}, {"nesterov": True}),
    "lr_policy": ({"gamma": 0.9}, {"gamma": 0.9, "lr_policy": "exp"}),
    "gamma": ({"lr_policy": "exp", "gamma": 0.9}, {"lr_policy": "exp", "gamma": 0.8}),
    "power": ({"lr_policy": "inv", "gamma": 0.1, "power": 0.5}, {"lr_policy": "inv", "gamma": 0.1, "power": 0.75}),
    "stepsize": ({"lr_policy": "step", "gamma": 0.1, "stepsize": 5}, {"lr_policy": "step", "gamma": 0.1, "stepsize": 7}),
    "stepvalue": ({"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [5]},
                  {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [8]}),
    "max_iter": ({"lr_policy": "poly", "power": 1, "max_iter": 100}, {"lr_policy": "poly", "power": 1, "max_iter": 200}),
    "max_lr": ({"lr_policy": "triangular", "max_lr": 0.1, "step_size": 5},
               {"lr_policy": "triangular", "max_lr": 0.2, "step_size": 5}),
    "step_size": ({"lr_policy": "triangular", "max_lr": 0.1, "step_size": 5},
                  {"lr_policy": "triangular", "max_lr": 0.1, "step_size": 8}),
    "warmup": ({}, {"warmup": {"warmup_steps": 5}}),
    "weight_decay": ({}, {"weight_decay": 0.001}),
    "regularization_type": ({"weight_decay": 0.001}, {"weight_decay": 0.001, "regularization_type": "L1"}),
    "clipnorm": ({}, {"clipnorm": 1.0}),
    "clipvalue": ({}, {"clipvalue": 1.0}),
    "batch_size": ({}, {"batch_size": 16}),
    "epochs": ({}, {"epochs": 2}),
    "plateau": ({}, {"plateau": {"patience": 2}}),
    "early_stopping": ({}, {"early_stopping": {"patience": 3}}),
    "divergence_factor": ({}, {"divergence_factor": 4.0}),
    "jit_compile": ({}, {"jit_compile": True}),
    "steps_per_execution": ({}, {"steps_per_execution": 2}),
}
LAYER_FIELDS = {
    "frozen": ({}, {"frozen": [{"up_to": "relu2"}]}),
    "slow": ({}, {"slow": [{"match": "head_*", "lr_mult": 10}]}),
    "batchnorm": ({}, {"batchnorm": {"mode": "train", "momentum": 0.5, "recompute": "epoch"}}),
}


# A stage's own `lr_finder` reaching its sweep is tested where the sweep
# runs for real (tests/zoo/test_lr_auto.py): these fits train nothing.
SWEEP_FIELDS = {"lr_finder"}


def test_the_walk_covers_every_field_a_stage_can_set():
    solver_fields = {f.name for f in dataclasses.fields(Solver)}
    assert set(STAGE_FIELDS) | SWEEP_FIELDS == solver_fields
    assert set(LAYER_FIELDS) == {f.name for f in dataclasses.fields(Stage)} - {"name", "solver"}


def walk_spec():
    """One stage per case: every pair of STAGE_FIELDS and LAYER_FIELDS."""
    stages = []
    for name, (without, with_it) in STAGE_FIELDS.items():
        stages += [{"name": f"{name}-", "solver": without}, {"name": f"{name}+", "solver": with_it}]
    for name, (without, with_it) in LAYER_FIELDS.items():
        stages += [{"name": f"{name}-", **without}, {"name": f"{name}+", **with_it}]
    return {
        "name": "walk", "backbone": {"name": "small_cnn"}, "head": {"classes": 10},
        "solver": {"base_lr": 0.01, "epochs": 1, "batch_size": 64, "divergence_factor": 10.0},
        "stages": stages, "data": {"builtin": "digits"},
    }


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """The fits of every stage of `walk_spec()` through `zoo train` and through a
    one-trial `zoo tune`, neither of which trains (see `recorded_fits`)."""
    monkeypatch = pytest.MonkeyPatch()
    fits = record_fits(monkeypatch)
    root = tmp_path_factory.mktemp("walk")
    spec = walk_spec()
    try:
        train(spec, run_dir=root / "run", verbose=0)
        by_train = list(fits)
        fits.clear()
        spec["search"] = {"tuner": "grid", "max_trials": 1, "space": {"seed": {"type": "choice", "values": [0]}}}
        tune(spec, directory=root / "search", verbose=0)
        by_tune = list(fits)
    finally:
        monkeypatch.undo()
    names = [stage["name"] for stage in spec["stages"]]
    assert len(by_train) == len(by_tune) == len(names)
    return dict(zip(names, by_train)), dict(zip(names, by_tune))


@pytest.mark.parametrize("field", list(STAGE_FIELDS) + list(LAYER_FIELDS))
def test_a_stage_field_reaches_the_fit_through_train_and_through_tune(walked, field):
    by_train, by_tune = walked
    without, with_it = by_train[f"{field}-"], by_train[f"{field}+"]
    assert without != with_it, f"setting {field} in a stage changed nothing"
    assert by_tune[f"{field}-"] == without and by_tune[f"{field}+"] == with_it


def test_a_trial_scores_exactly_what_zoo_train_of_its_best_spec_scores(tmp_path):
    spec = {
        "name": "parity", "deterministic": True, "seed": 5,
        "backbone": {"name": "small_cnn"}, "head": {"classes": 10, "dropout": 0.2},
        "solver": {"base_lr": 0.05, "batch_size": 64, "divergence_factor": 5.0,
                   "early_stopping": {"monitor": "val_accuracy", "patience": 2}},
        "stages": [
            {"name": "head", "frozen": [{"up_to": "relu2"}], "solver": {"epochs": 2}},
            {"name": "all", "solver": {"epochs": 2, "warmup": {"warmup_steps": 8, "start_lr": 0.001},
                                       "plateau": {"monitor": "val_loss", "patience": 0, "factor": 0.5}}},
        ],
        "data": {"builtin": "digits", "augment": {"flip": "horizontal"}},
        "search": {"tuner": "grid", "max_trials": 1, "objective": "val_accuracy",
                   "space": {"solver.base_lr": {"type": "choice", "values": [0.05]}}},
    }
    searched = tune(write_spec(tmp_path, spec), directory=tmp_path / "search", verbose=0)
    trained = train(searched.paths["best_spec.json"], run_dir=tmp_path / "run", verbose=0)
    assert trained.monitor == "val_accuracy"
    assert searched.best_score == trained.best  # bit-identical, not approximately
    assert searched.trials["epochs"].tolist() == [4]
    assert trained.history["stage"].tolist() == ["head", "head", "all", "all"]


def test_deterministic_runs_of_one_spec_give_bit_identical_weights(tmp_path):
    # Flips, crops and dropout: every random choice keyed on the seed.
    spec = {"name": "twice", "deterministic": True, "backbone": {"name": "small_cnn"},
            "head": {"classes": 10, "dropout": 0.5},
            "solver": {"base_lr": 0.05, "epochs": 2, "batch_size": 64},
            "data": {"builtin": "digits", "image_size": [10, 10],
                     "augment": {"flip": "horizontal_and_vertical", "random_crop": [8, 8]}}}
    first = train(spec, run_dir=tmp_path / "a", verbose=0)
    second = train(spec, run_dir=tmp_path / "b", verbose=0)
    pd.testing.assert_frame_equal(first.history, second.history)
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        assert (a == b).all()
    other = train({**spec, "seed": 1}, run_dir=tmp_path / "c", verbose=0)
    assert not (other.model.get_weights()[0] == first.model.get_weights()[0]).all()

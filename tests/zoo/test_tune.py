import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from zoo.cli import main
from zoo.spec import SpecError
from zoo.tune import TuneError, refined_space, tune
from tests.zoo.conftest import write_spec


def search_spec(space, **search):
    return {
        "name": "t",
        "backbone": {"name": "small_cnn"},
        "frozen": [{"up_to": "conv1"}],
        "head": {"classes": 10},
        "solver": {"base_lr": 0.01, "momentum": 0.9, "epochs": 1, "batch_size": 64},
        "data": {"builtin": "digits"},
        "search": {"tuner": "random", "max_trials": 2, "seed": 1, "space": space, **search},
    }


LR = {"solver.base_lr": {"type": "float", "min": 0.005, "max": 0.2, "sampling": "log"}}


@pytest.mark.parametrize(
    "space, where, message",
    [
        ({"solver.base_lrr": {"type": "float", "min": 0.1, "max": 0.2}}, '$.search.space["solver.base_lrr"]',
         "gives $.solver.base_lrr: unknown key; did you mean 'base_lr'?"),
        ({"solver.base_lr": {"type": "float", "min": -0.1, "max": 0.2}}, '$.search.space["solver.base_lr"]',
         "-0.1 gives $.solver.base_lr: -0.1 is less than or equal to the minimum of 0"),
        ({"head.dropout": {"type": "float", "min": 0.0, "max": 1.5}}, '$.search.space["head.dropout"]',
         "1.5 gives $.head.dropout"),
        ({"head.dropout": {"type": "float", "min": 0.5, "max": 0.1}}, '$.search.space["head.dropout"]',
         "`min` must be < `max`"),
        ({"solver.base_lr": {"type": "float", "min": 0.0, "max": 0.1, "sampling": "log"}},
         '$.search.space["solver.base_lr"].sampling', "log sampling needs min > 0"),
        ({"solver.lr_policy": {"type": "choice", "values": ["fixed", "step"]}},
         '$.search.space["solver.lr_policy"]', "'step' gives $.solver.gamma: Argument `gamma` is required when policy='step'"),
        ({"frozen.3.up_to": {"type": "choice", "values": ["relu1"]}}, '$.search.space["frozen.3.up_to"]',
         "'frozen.3.up_to': '3' is not an item of a list of 1"),
        ({"solver.lr_policy": {"type": "choice", "values": ["fixed"], "branches": {"step": LR}}},
         '$.search.space["solver.lr_policy"].branches.step', "'step' is not among the choice's values"),
    ],
)
def test_search_space_errors_before_any_trial(tmp_path, space, where, message):
    path = write_spec(tmp_path, search_spec(space))
    with pytest.raises(SpecError) as caught:
        tune(path, directory=tmp_path / "search", verbose=0)
    messages = dict(caught.value.errors)
    assert where in messages, caught.value.errors
    assert message in messages[where]
    assert not (tmp_path / "search" / "search").exists()  # no trial ran


def test_conditional_branch_parameters_are_valid_together(tmp_path):
    space = {"solver.lr_policy": {"type": "choice", "values": ["fixed", "step"], "branches": {"step": {
        "solver.stepsize": {"type": "int", "min": 5, "max": 10, "step": 5},
        "solver.gamma": {"type": "choice", "values": [0.1, 0.5]}}}}}
    result = tune(write_spec(tmp_path, search_spec(space, tuner="grid", max_trials=5)),
                  directory=tmp_path / "s", verbose=0)
    table = result.trials
    assert len(table) == 5 and (table["status"] == "COMPLETED").all()
    step = table[table["solver.lr_policy"] == "step"]
    assert len(step) == 4 and step["solver.stepsize"].notna().all()
    assert table[table["solver.lr_policy"] == "fixed"]["solver.stepsize"].isna().all()


def test_random_search_writes_table_and_a_best_spec_that_trains(tmp_path, capsys):
    space = dict(LR, **{"head.dropout": {"type": "float", "min": 0.0, "max": 0.5, "step": 0.25}})
    path = write_spec(tmp_path, search_spec(space))
    assert main(["tune", str(path), "--dir", str(tmp_path / "s"), "--quiet"]) == 0
    table = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert list(table.columns[:4]) == ["trial_id", "status", "score", "epochs"]
    assert {"solver.base_lr", "head.dropout"} <= set(table.columns)
    assert len(table) == 2 and (table["epochs"] == 1).all()
    assert (tmp_path / "s" / "scores.png").read_bytes()[:4] == b"\x89PNG"
    best = json.loads((tmp_path / "s" / "best_spec.json").read_text())
    assert "search" not in best
    best_row = table.loc[table["score"].idxmax()]
    assert best["solver"]["base_lr"] == pytest.approx(best_row["solver.base_lr"])
    assert main(["validate", str(tmp_path / "s" / "best_spec.json")]) == 0
    assert main(["train", str(tmp_path / "s" / "best_spec.json"), "--run-dir", str(tmp_path / "r"), "--quiet"]) == 0
    # Same seed, same data order: the retrained spec scores what its trial did.
    retrained = pd.read_csv(tmp_path / "r" / "history.csv")["val_accuracy"].max()
    assert retrained == pytest.approx(best_row["score"], abs=0.02)


def test_bayesian_search_over_a_list_item_path(tmp_path):
    space = {"frozen.0.up_to": {"type": "choice", "values": ["conv1", "relu2"]}}
    result = tune(write_spec(tmp_path, search_spec(space, tuner="bayesian")), directory=tmp_path / "s", verbose=0)
    assert set(result.trials["frozen.0.up_to"]) <= {"conv1", "relu2"}
    assert result.best_spec["frozen"][0]["up_to"] in {"conv1", "relu2"}


def test_a_multi_stage_spec_is_searched_stage_by_stage(tmp_path):
    spec = search_spec({"stages.1.solver.base_lr": {"type": "choice", "values": [0.01, 0.05]}}, tuner="grid")
    spec["stages"] = [{"name": "head", "frozen": [{"up_to": "relu3"}], "solver": {"epochs": 1}},
                      {"name": "all", "solver": {"epochs": 2}}]
    result = tune(write_spec(tmp_path, spec), directory=tmp_path / "s", verbose=0)
    assert (result.trials["status"] == "COMPLETED").all() and (result.trials["epochs"] == 3).all()
    assert result.best_spec["stages"][1]["solver"]["base_lr"] in (0.01, 0.05)
    spec["search"]["tuner"] = "hyperband"
    with pytest.raises(SpecError, match="hyperband budgets epochs of one stage"):
        tune(write_spec(tmp_path, spec, "hb.json"), directory=tmp_path / "hb", verbose=0)


def test_the_trials_share_one_file_cache_in_the_search_folder(tmp_path, monkeypatch):
    import keras
    import numpy as np

    from zoo.data import ImageData
    from zoo.datasets import load_digits

    (x, y), _ = load_digits(validation_split=0.0, seed=0)
    for i, (image, label) in enumerate(zip(x[:60], y[:60])):
        (tmp_path / "images" / str(label)).mkdir(parents=True, exist_ok=True)
        keras.utils.save_img(tmp_path / "images" / str(label) / f"{i}.png", np.round(image * 255), scale=False)
    decodes = []
    decode_into = ImageData._decode_into
    monkeypatch.setattr(ImageData, "_decode_into", lambda self, paths, array: (
        decodes.append(len(paths)), decode_into(self, paths, array)))
    spec = search_spec({"solver.base_lr": {"type": "choice", "values": [0.01, 0.05]}}, tuner="grid")
    spec["data"] = {"folder": str(tmp_path / "images"), "image_size": [8, 8], "cache": "file"}
    result = tune(write_spec(tmp_path, spec), directory=tmp_path / "s", verbose=0)
    assert len(result.trials) == 2 and (result.trials["status"] == "COMPLETED").all()
    # The first trial wrote the training and validation images; the second read them.
    assert decodes == [48, 12]
    assert sorted(name.split("-")[0] for name in os.listdir(tmp_path / "s" / "cache")) == ["training", "validation"]


def test_hyperband_uses_epoch_budgets(tmp_path):
    spec = search_spec(LR, tuner="hyperband", max_epochs=2, factor=2)
    result = tune(write_spec(tmp_path, spec), directory=tmp_path / "s", verbose=0)
    assert set(result.trials["epochs"]) <= {1, 2} and (result.trials["status"] == "COMPLETED").all()
    assert len(result.trials) >= 3


def test_a_diverging_trial_is_recorded_and_the_search_goes_on(tmp_path):
    space = {"solver.base_lr": {"type": "choice", "values": [0.05, 5000.0]}}
    result = tune(write_spec(tmp_path, search_spec(space, tuner="grid")), directory=tmp_path / "s", verbose=0)
    table = result.trials.set_index("solver.base_lr")
    assert table.loc[5000.0, "status"] == "DIVERGED"
    assert "exceeded 3 x its first value" in table.loc[5000.0, "message"] or "loss became" in table.loc[5000.0, "message"]
    assert table.loc[0.05, "status"] == "COMPLETED"
    assert result.best_spec["solver"]["base_lr"] == 0.05


def test_a_search_whose_trials_all_fail_fails_loudly(tmp_path, capsys):
    space = {"solver.base_lr": {"type": "choice", "values": [5000.0, 9000.0]}}
    path = write_spec(tmp_path, search_spec(space, tuner="grid"))
    with pytest.raises(TuneError, match="Every trial of the search .* failed. The first trial's error"):
        tune(path, directory=tmp_path / "s", verbose=0)
    assert main(["tune", str(path), "--dir", str(tmp_path / "s2"), "--quiet"]) == 1
    assert "diverged" in capsys.readouterr().err


def test_refine_narrows_around_the_best_values(tmp_path):
    narrowed = refined_space(LR, {"solver.base_lr": 0.02})
    low, high = narrowed["solver.base_lr"]["min"], narrowed["solver.base_lr"]["max"]
    assert 0.005 < low < 0.02 < high < 0.2
    assert (high / low) == pytest.approx((0.2 / 0.005) ** 0.25, rel=1e-6)
    result = tune(write_spec(tmp_path, search_spec(LR)), directory=tmp_path / "s", refine=True, verbose=0)
    assert result.trials["search"].tolist() == ["coarse", "coarse", "refine", "refine"]
    refined = result.trials[result.trials["search"] == "refine"]["solver.base_lr"]
    assert refined.between(0.005, 0.2).all()


def test_resume_after_killing_the_search_loses_and_reruns_no_trial(tmp_path):
    space = dict(LR, **{"head.dropout": {"type": "float", "min": 0.0, "max": 0.5}})
    spec = search_spec(space, max_trials=3)
    spec["solver"]["epochs"] = 2
    path = write_spec(tmp_path, spec)
    directory = tmp_path / "s"
    command = [sys.executable, "-m", "zoo.cli", "tune", str(path), "--dir", str(directory), "--quiet"]
    process = subprocess.Popen(command, start_new_session=True)
    trials = directory / "search"
    deadline = time.time() + 300
    while time.time() < deadline and _completed(trials) < 1:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first = {t: s for t, s in _scores(trials).items()}
    assert 1 <= len(first) < 3
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(directory / "trials.csv", dtype={"trial_id": str})
    assert len(table) == 3 and (table["status"] == "COMPLETED").all()
    for trial_id, score in first.items():  # completed before the kill: kept, not re-run
        assert table.set_index("trial_id").loc[trial_id, "score"] == pytest.approx(score)


def _trial_files(trials):
    if not trials.exists():
        return []
    return [json.loads((trials / d / "trial.json").read_text()) for d in os.listdir(trials)
            if (trials / d / "trial.json").exists()]


def _completed(trials):
    return sum(t["status"] == "COMPLETED" for t in _trial_files(trials))


def _scores(trials):
    return {t["trial_id"]: t["score"] for t in _trial_files(trials) if t["status"] == "COMPLETED"}


def test_chief_and_worker_on_localhost(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_spec(tmp_path, search_spec(LR, max_trials=2))
    command = [sys.executable, "-m", "zoo.cli", "tune", str(path), "--dir", str(tmp_path / "s"), "--quiet"]

    def start(tuner_id):
        env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=str(port))
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    chief = start("chief")
    time.sleep(3)
    worker = start("tuner0")
    try:
        worker_out, worker_err = worker.communicate(timeout=400)
        chief_out, chief_err = chief.communicate(timeout=120)
    finally:
        for process in (chief, worker):
            process.kill()
    assert worker.returncode == 0, worker_err[-2000:]
    assert chief.returncode == 0, chief_err[-2000:]
    table = pd.read_csv(tmp_path / "s" / "trials.csv")  # written by the chief
    assert len(table) == 2 and (table["status"] == "COMPLETED").all()
    trials = tmp_path / "s" / "search"
    assert all(t["status"] == "COMPLETED" for t in _trial_files(trials))


def test_seed_zero_gives_the_same_trials_in_every_fresh_search(tmp_path, recorded_fits):
    space = dict(LR, **{"head.dropout": {"type": "float", "min": 0.0, "max": 0.5}})
    path = write_spec(tmp_path, search_spec(space, max_trials=3, seed=0))
    first = tune(path, directory=tmp_path / "a", verbose=0).trials
    second = tune(path, directory=tmp_path / "b", verbose=0).trials
    columns = ["solver.base_lr", "head.dropout"]
    assert len(first) == 3 and first[columns].drop_duplicates().shape[0] == 3
    pd.testing.assert_frame_equal(first[columns], second[columns])


def test_each_execution_of_a_trial_trains_with_its_own_seed(tmp_path, recorded_fits, monkeypatch):
    import importlib

    module = importlib.import_module("zoo.tune")  # `zoo.tune` is also the function
    seeds = []

    class Recording(module.Runner):
        def __init__(self, spec, **kwargs):
            seeds.append(spec.seed)
            super().__init__(spec, **kwargs)

    monkeypatch.setattr(module, "Runner", Recording)
    spec = search_spec({"solver.base_lr": {"type": "choice", "values": [0.01, 0.02]}},
                       tuner="grid", executions_per_trial=3)
    spec["seed"] = 7
    tune(write_spec(tmp_path, spec), directory=tmp_path / "s", verbose=0)
    # (keras-tuner builds once more at the start, to declare the space.)
    assert sorted(seeds[-6:-3]) == sorted(seeds[-3:]) == [7, 8, 9]

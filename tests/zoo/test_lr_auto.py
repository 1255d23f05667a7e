"""`base_lr: "auto"`, `zoo lr-find`, and what a run reports: the LR of every
lr_mult group, TensorBoard event files, `zoo plot`."""

import glob
import json
import re
import sys

import numpy as np
import pandas as pd
import pytest

from callbacks.lr_finder import suggest_lrs
from zoo.lr_policies import LR_FINDER_RULES as RULES
from zoo.cli import main
from zoo.runner import Runner
from zoo.spec import SpecError, load_spec
from zoo.train import RunError, train
from tests.zoo.conftest import stop_after_one_epoch, write_spec


def auto_spec(**solver):
    """Two stages of a small CNN on digits 0-4, both at base_lr "auto", with
    the head at lr_mult 10 and conv1 at 0.1."""
    return {
        "name": "auto",
        "backbone": {"name": "small_cnn", "weights": None},
        "head": {"classes": 5},
        "slow": [{"match": "head_*", "lr_mult": 10}, {"match": "conv1", "lr_mult": 0.1}],
        "solver": {"base_lr": "auto", "lr_finder": {"num_steps": 30, "min_lr": 1e-5, "max_lr": 10},
                   "batch_size": 64, "epochs": 1, **solver},
        "stages": [{"name": "first"},
                   {"name": "second", "solver": {"epochs": 2, "lr_finder": {"rule": "minimum", "num_steps": 30,
                                                                            "min_lr": 1e-5, "max_lr": 10}}}],
        "data": {"builtin": "digits", "classes": [0, 1, 2, 3, 4]},
    }


def events(folder):
    """`{tag: [steps]}` of the TensorBoard event files in `folder`."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    tags = {}
    for path in sorted(glob.glob(f"{folder}/events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def test_auto_finds_each_stage_lr_records_it_and_reports_every_lr_mult_group(tmp_path):
    result = train(auto_spec(), run_dir=tmp_path / "run", verbose=0)

    found = [stage.solver.base_lr for stage in result.spec.stages]
    assert all(isinstance(lr, float) and 1e-5 < lr < 10 for lr in found)
    # spec.json holds the values found: it reruns the run without a search.
    recorded = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert [stage["solver"]["base_lr"] for stage in recorded["stages"]] == found
    assert load_spec(tmp_path / "run" / "spec.json") == result.spec
    # lr_find.csv holds both sweeps; each stage's rule applied to its rows gives its LR.
    sweeps = pd.read_csv(tmp_path / "run" / "lr_find.csv")
    assert list(sweeps.columns) == ["stage", "rule", "lr", "loss", "smoothed_loss"]
    for stage, lr, rule in zip(["first", "second"], found, ["valley", "minimum"]):
        rows = sweeps[sweeps.stage == stage]
        assert rows["rule"].unique().tolist() == [rule]
        assert suggest_lrs(rows.reset_index(drop=True))[rule] == pytest.approx(lr)
    assert (tmp_path / "run" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"

    # The stage trains at the LR found (a fixed policy), every lr_mult group at its multiple.
    steps = result.lr_per_step
    assert list(steps.columns) == ["stage", "iteration", "stage_iteration", "lr", "lr_x0.1", "lr_x10"]
    for stage, lr in zip(["first", "second"], found):
        rows = steps[steps.stage == stage]
        np.testing.assert_allclose(rows["lr"], lr, rtol=1e-6)
        np.testing.assert_allclose(rows["lr_x10"], 10 * rows["lr"], rtol=1e-6)
        np.testing.assert_allclose(rows["lr_x0.1"], 0.1 * rows["lr"], rtol=1e-6)
        assert rows["stage_iteration"].tolist() == list(range(len(rows)))  # each stage's schedule from 0
    # The iteration axis runs on across stages.
    assert steps["iteration"].tolist() == list(range(len(steps)))
    history = result.history
    np.testing.assert_allclose(history["lr_x10"], 10 * history["lr"], rtol=1e-6)

    # TensorBoard: metrics per epoch (train and validation), the stage, every LR column per step.
    train_tags = events(tmp_path / "run" / "tensorboard" / "train")
    validation_tags = events(tmp_path / "run" / "tensorboard" / "validation")
    assert train_tags["epoch_loss"] == [0, 1, 2] and validation_tags["epoch_accuracy"] == [0, 1, 2]
    assert train_tags["epoch_stage"] == [0, 1, 2]
    for column in ("lr", "lr_x10", "lr_x0.1"):
        assert train_tags[column] == steps["iteration"].tolist()


def test_the_range_test_leaves_the_model_and_optimizer_as_they_were():
    from callbacks._training_state import seed_states

    spec = auto_spec()
    spec["head"]["dropout"] = 0.5  # a seed generator whose state the sweep moves
    runner = Runner(load_spec(spec))
    model = runner.build()
    model.fit(runner.data.train(64, 0, 1), steps_per_epoch=3, epochs=1, shuffle=False, verbose=0)  # some state
    state = [*model.weights, *seed_states(model), *model.optimizer.variables]
    before = [np.array(v.numpy()) for v in state]
    assert seed_states(model) and int(model.optimizer.iterations.numpy()) == 3

    result = runner.lr_range_test(0)

    assert len(result.history) == 30
    for variable, value in zip(state, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_the_spec_json_of_an_auto_run_trains_the_same_run_again(tmp_path):
    spec = auto_spec()
    del spec["stages"]
    spec.update(deterministic=True, seed=4)
    spec["head"]["dropout"] = 0.5
    first = train(spec, run_dir=tmp_path / "auto", verbose=0)
    again = train(tmp_path / "auto" / "spec.json", run_dir=tmp_path / "again", verbose=0)

    assert again.spec.stages[0].solver.base_lr == first.spec.stages[0].solver.base_lr
    assert not (tmp_path / "again" / "lr_find.csv").exists()  # no search
    pd.testing.assert_frame_equal(again.history, first.history)
    for a, b in zip(again.model.weights, first.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_resumed_run_does_not_search_again(tmp_path, monkeypatch):
    spec = auto_spec()
    spec["stages"][0]["solver"] = {"epochs": 2}
    path = write_spec(tmp_path, spec)
    with pytest.raises(KeyboardInterrupt):
        train(path, run_dir=tmp_path / "run", callbacks=[stop_after_one_epoch()], verbose=0)
    first_lr = json.loads((tmp_path / "run" / "spec.json").read_text())["stages"][0]["solver"]["base_lr"]
    assert isinstance(first_lr, float)

    tested = []
    original = Runner.lr_range_test
    monkeypatch.setattr(Runner, "lr_range_test", lambda self, index: tested.append(index) or original(self, index))
    result = train(path, run_dir=tmp_path / "run", resume=True, verbose=0)

    assert tested == [1]  # only the stage that had not started
    assert result.spec.stages[0].solver.base_lr == first_lr
    assert result.history["stage"].tolist() == ["first", "first", "second", "second"]
    assert result.lr_per_step["iteration"].tolist() == list(range(len(result.lr_per_step)))


def test_no_lr_that_lowers_the_loss_is_a_clear_error_and_a_wider_sweep_resumes(tmp_path):
    spec = auto_spec()
    spec["solver"]["lr_finder"] = {"min_lr": 1e-12, "max_lr": 1e-11, "num_steps": 20}
    path = write_spec(tmp_path, spec)
    with pytest.raises(SpecError) as error:
        train(path, run_dir=tmp_path / "run", verbose=0)
    assert error.value.errors[0][0] == "$.stages[0].solver.base_lr"
    message = str(error.value)
    assert "No learning rate from 1e-12 to 1e-11 lowered the loss" in message
    assert "$.stages[0].solver.lr_finder" in message and str(path) in message and "--resume" in message
    assert len(pd.read_csv(tmp_path / "run" / "lr_find.csv")) == 20
    assert not (tmp_path / "run" / "history.csv").exists()

    # The sweep widened (a spec that differs from spec.json only there), the run resumes.
    spec["solver"]["lr_finder"] = {"min_lr": 1e-5, "max_lr": 10, "num_steps": 30}
    result = train(write_spec(tmp_path, spec), run_dir=tmp_path / "run", resume=True, verbose=0)
    assert result.history["stage"].tolist() == ["first", "second", "second"]
    assert all(isinstance(stage.solver.base_lr, float) for stage in result.spec.stages)
    # Any other change is still refused.
    spec["head"]["dropout"] = 0.3
    with pytest.raises(RunError, match=r"differs from its spec.json at \$.head.dropout"):
        train(write_spec(tmp_path, spec), run_dir=tmp_path / "run", resume=True, verbose=0)


def test_auto_under_mixed_precision_and_the_summary_counts_what_trains(tmp_path, capsys):
    spec = auto_spec()
    del spec["stages"]
    spec["mixed_precision"] = "float16"
    spec["frozen"] = [{"up_to": "relu1"}]
    result = train(spec, run_dir=tmp_path / "run", verbose=1)
    out = capsys.readouterr().out

    assert 1e-5 < result.spec.stages[0].solver.base_lr < 10
    sweep = pd.read_csv(tmp_path / "run" / "lr_find.csv")
    assert sweep["lr"].is_monotonic_increasing and sweep["lr"].iloc[0] == pytest.approx(1e-5)
    summary = int(re.search(r"Trainable params: ([\d,]+)", out).group(1).replace(",", ""))
    table = int(re.search(r"Trainable parameters: ([\d,]+) of", out).group(1).replace(",", ""))
    layers = result.model.layers
    after_frozen = layers[layers.index(result.model.get_layer("relu1")) + 1:]
    assert summary == table == sum(int(np.prod(w.shape)) for layer in after_frozen for w in layer.trainable_weights)


@pytest.mark.parametrize("solver, path, message", [
    ({"lr_policy": "triangular", "max_lr": 1.0, "step_size": 10}, "$.solver.base_lr", "cyclical policy"),
    ({"lr_finder": {"min_lr": 1.0, "max_lr": 0.5}}, "$.solver.lr_finder.max_lr", "Argument `max_lr` must be > 1.0"),
    ({"lr_finder": {"rule": "valey"}}, "$.solver.lr_finder.rule", "did you mean 'valley'"),
])
def test_auto_settings_are_checked_before_training(solver, path, message):
    spec = auto_spec(**solver)
    del spec["stages"]
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    assert any(where == path and message in text for where, text in error.value.errors), error.value.errors


def test_zoo_lr_find_prints_every_rule_and_writes_the_sweep_without_training(tmp_path, capsys):
    path = write_spec(tmp_path, auto_spec())
    assert main(["lr-find", str(path), "--stage", "2", "--out", str(tmp_path / "found")]) == 0
    out = capsys.readouterr().out
    for rule in RULES:
        assert rule in out
    assert "minimum" in out.split("<- lr_finder.rule")[0].splitlines()[-1]  # stage 2's rule is marked
    sweeps = pd.read_csv(tmp_path / "found" / "lr_find.csv")
    assert sweeps["stage"].unique().tolist() == ["second"]
    assert (tmp_path / "found" / "lr_find.png").exists()
    assert not (tmp_path / "runs").exists()
    assert main(["lr-find", str(path), "--stage", "3"]) == 2
    assert "no stage 3" in capsys.readouterr().err


def test_zoo_plot_compares_runs_in_one_png_and_tracking_none_writes_no_events(tmp_path, capsys):
    spec = auto_spec()
    del spec["stages"], spec["slow"]
    spec["solver"] = {"base_lr": 0.05, "epochs": 1, "batch_size": 64}
    first = train(spec, run_dir=tmp_path / "a", verbose=0)
    second = train({**spec, "tracking": "none"}, run_dir=tmp_path / "b", verbose=0)
    # No slow groups: the base LR alone.
    assert list(first.lr_per_step.columns) == ["stage", "iteration", "stage_iteration", "lr"]
    assert events(tmp_path / "a" / "tensorboard" / "train")["lr"] == first.lr_per_step["iteration"].tolist()
    assert not (tmp_path / "b" / "tensorboard").exists() and len(second.history) == 1
    out = tmp_path / "compare.png"
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tmp_path), "--out", str(out)]) == 1
    assert "has no history.csv" in capsys.readouterr().err


def test_each_tuner_trial_finds_its_own_lr_and_a_search_can_vary_the_rule(tmp_path, monkeypatch):
    from zoo.tune import tune

    spec = auto_spec()
    del spec["stages"]
    spec["search"] = {"tuner": "grid", "max_trials": 2, "space": {
        "solver.lr_finder.rule": {"type": "choice", "values": ["valley", "minimum"]}}}
    found = []
    original = Runner.find_base_lr

    def find_base_lr(self, index, verbose=1):
        result = original(self, index, verbose)
        found.append((result.rule, self.spec.stages[index].solver.base_lr))
        return result

    monkeypatch.setattr(Runner, "find_base_lr", find_base_lr)
    result = tune(write_spec(tmp_path, spec), directory=tmp_path / "search", verbose=0)

    assert sorted(rule for rule, _ in found) == ["minimum", "valley"]
    assert (result.trials["status"] == "COMPLETED").all()
    assert result.best_spec["solver"]["base_lr"] == "auto"  # each run of the best spec finds its own


def test_mlflow_tracking_logs_params_metrics_and_the_run_folder_and_a_resume_goes_on(tmp_path):
    from mlflow import MlflowClient

    spec = auto_spec()
    del spec["stages"]
    spec["solver"] = {"base_lr": 0.05, "epochs": 2, "batch_size": 64}
    spec["tracking"] = ["tensorboard", "mlflow"]
    path = write_spec(tmp_path, spec)
    run_dir = tmp_path / "runs" / "auto"
    with pytest.raises(KeyboardInterrupt):
        train(path, run_dir=run_dir, callbacks=[stop_after_one_epoch()], verbose=0)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (interrupted,) = client.search_runs([client.get_experiment_by_name("auto").experiment_id])
    assert interrupted.info.status == "KILLED"

    train(path, run_dir=run_dir, resume=True, verbose=0)

    (run,) = client.search_runs([client.get_experiment_by_name("auto").experiment_id])
    assert run.info.run_id == interrupted.info.run_id and run.info.status == "FINISHED"
    assert run.data.params["solver.base_lr"] == "0.05" and run.data.params["data.builtin"] == "digits"
    history = pd.read_csv(run_dir / "history.csv")
    logged = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in logged] == [0, 1]
    assert [m.value for m in logged] == pytest.approx(history["val_loss"].tolist())
    assert len(client.get_metric_history(run.info.run_id, "lr_x10")) == len(pd.read_csv(run_dir / "lr_per_step.csv"))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec.json", "history.csv", "model.keras", "curves.png", "tensorboard"} <= artifacts
    assert "checkpoint" not in artifacts


def test_mlflow_tracking_without_mlflow_installed_is_an_error_before_training(tmp_path, monkeypatch):
    spec = auto_spec()
    spec["tracking"] = "mlflow"
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(SpecError, match=r'\$.tracking: "mlflow" needs MLflow: pip install'):
        train(write_spec(tmp_path, spec), run_dir=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_a_hyperband_trial_that_goes_on_from_another_keeps_its_lr(tmp_path, monkeypatch):
    from zoo.tune import tune

    spec = auto_spec()
    del spec["stages"]
    spec["search"] = {"tuner": "hyperband", "max_epochs": 2, "factor": 2, "seed": 2, "space": {
        "head.dropout": {"type": "choice", "values": [0.0, 0.5]}}}
    searched = []
    original = Runner.lr_range_test
    monkeypatch.setattr(Runner, "lr_range_test", lambda self, index: searched.append(index) or original(self, index))
    result = tune(write_spec(tmp_path, spec), directory=tmp_path / "search", verbose=0)

    trials = result.trials
    assert (trials["status"] == "COMPLETED").all() and trials["base_lr_found"].notna().all()
    continued = [t for t in result_trials(tmp_path) if "tuner/trial_id" in t["hyperparameters"]["values"]]
    assert continued  # Hyperband went on from earlier trials ...
    assert len(searched) == len(trials) - len(continued)  # ... without a test of their own
    found = dict(zip(trials["trial_id"], trials["base_lr_found"]))
    for trial in continued:
        assert found[trial["trial_id"]] == found[trial["hyperparameters"]["values"]["tuner/trial_id"]]


def result_trials(tmp_path):
    """keras-tuner's trial.json files of the search in `tmp_path`."""
    return [json.loads(open(path).read()) for path in sorted(glob.glob(f"{tmp_path}/search/search/trial_*/trial.json"))]


@pytest.mark.parametrize("change, path, hint", [
    (lambda s: s.update(tracking="tensorbord"), "$.tracking", "did you mean 'tensorboard'?"),
    (lambda s: s["solver"].update(base_lr="Auto"), "$.solver.base_lr", "nor a number; did you mean 'auto'?"),
])
def test_a_misspelt_tracking_or_auto_names_the_closest(change, path, hint):
    spec = auto_spec()
    change(spec)
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    assert [(where, message.endswith(hint)) for where, message in error.value.errors] == [(path, True)]

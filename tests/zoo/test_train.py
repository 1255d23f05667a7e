import importlib
import json
import re
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from callbacks._files import write_atomically
from zoo.cli import main
from zoo.spec import SpecError, load_spec
from zoo.train import RunError, train, validate
from tests.zoo.conftest import stop_after_one_epoch, write_spec


def test_stages_freeze_then_unfreeze_and_carry_weights(spec_dir, tmp_path):
    spec = json.loads((spec_dir / "digits_stages.json").read_text())
    spec["stages"][0]["solver"]["epochs"] = 1
    spec["stages"][1]["solver"]["epochs"] = 2
    path = write_spec(spec_dir, spec, "short_stages.json")
    pretrained = keras.saving.load_model(spec_dir.parent / "runs" / "digits_pretrain" / "model.keras")

    result = train(path, run_dir=tmp_path / "run", verbose=0)

    history = result.history
    assert history["stage"].tolist() == ["head", "all", "all"]
    assert history["epoch"].tolist() == [0, 1, 2]
    # conv1 was frozen in both stages: still the pretrained weights.
    np.testing.assert_array_equal(result.model.get_layer("conv1").kernel.numpy(),
                                  pretrained.get_layer("conv1").kernel.numpy())
    # conv3 was trained in stage 2 (at lr_mult 0.1).
    assert not np.array_equal(result.model.get_layer("conv3").kernel.numpy(),
                              pretrained.get_layer("conv3").kernel.numpy())
    # The LR of every step: stage 2 restarts its own schedule with a warmup.
    lr = result.lr_per_step
    steps = len(lr[lr.stage == "head"])
    assert lr[lr.stage == "head"]["lr"].tolist() == pytest.approx([0.05] * steps)
    assert lr[lr.stage == "all"]["lr"].iloc[0] == pytest.approx(0.001)
    assert result.best_epoch == int(history["val_loss"].idxmin())


def test_run_folder_has_everything_and_the_model_holds_the_best_weights(spec_dir, tmp_path):
    spec = json.loads((spec_dir / "digits_finetune.json").read_text())
    spec["solver"]["epochs"] = 3
    result = train(write_spec(spec_dir, spec, "short_finetune.json"), run_dir=tmp_path / "run", verbose=0)
    for name in ("spec.json", "history.csv", "lr_per_step.csv", "best.weights.h5", "model.keras"):
        assert (tmp_path / "run" / name).exists(), name
    for name in ("curves.png", "lr.png"):
        assert (tmp_path / "run" / name).read_bytes()[:4] == b"\x89PNG"
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert {"loss", "val_accuracy", "lr", "stage"} <= set(history.columns)
    assert result.best == pytest.approx(history["val_accuracy"].max())
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras")
    for a, b in zip(saved.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # spec.json is the typed spec written out, defaults filled in; it loads back equal.
    written = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert written["stages"][0]["solver"]["optimizer"] == "sgd" and written["head"]["pooling"] == "avg"
    assert load_spec(tmp_path / "run" / "spec.json") == load_spec(spec_dir / "short_finetune.json")


def test_cli_validate_list_and_train(spec_dir, tmp_path, capsys):
    assert main(["validate", str(spec_dir / "digits_pretrain.json")]) == 0
    assert "valid" in capsys.readouterr().out
    bad = write_spec(tmp_path, {"backbone": {"name": "resnet5"}, "head": {"classes": 0},
                                "solver": {"base_lr": 0.1, "epochs": 1}, "data": {"builtin": "digits"}}, "bad.json")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "$.head.classes: 0 is less than the minimum of 1" in err
    assert main(["list", "efficientnetv2*"]) == 0
    out = capsys.readouterr().out
    assert "efficientnetv2b0" in out and "efficientnetv2s" in out and "resnet50" not in out
    spec = json.loads((spec_dir / "digits_pretrain.json").read_text())
    spec["solver"]["epochs"] = 1
    assert main(["train", str(write_spec(tmp_path, spec)), "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "lr_mult" in out and "Best epoch 1" in out
    assert main(["train", str(bad)]) == 2


def test_mixed_precision_and_jit_compile_switches(tmp_path):
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10}, "mixed_precision": "float16",
            "solver": {"base_lr": 0.05, "epochs": 1, "jit_compile": True,
                       "steps_per_execution": 4, "lr_policy": "exp", "gamma": 0.99},
            "data": {"builtin": "digits"}}
    result = train(write_spec(tmp_path, spec), run_dir=tmp_path / "run", verbose=0)
    model = result.model
    assert model.get_layer("conv1").dtype_policy.name == "mixed_float16"
    assert model.get_layer("head_classifier").dtype_policy.name == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.jit_compile and np.isfinite(result.history["loss"]).all()
    # The schedule still drove every step through the loss-scale wrapper.
    steps = len(result.lr_per_step)
    assert result.lr_per_step["iteration"].tolist() == list(range(steps))
    assert result.lr_per_step["lr"].tolist() == pytest.approx([0.05 * 0.99**i for i in range(steps)], rel=1e-5)
    assert result.history["lr"].iloc[0] == pytest.approx(0.05 * 0.99 ** (steps - 1), rel=1e-5)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored


@pytest.mark.parametrize("precision, policy, loss_scaling", [("bfloat16", "mixed_bfloat16", False),
                                                           ("float16", "mixed_float16", True)])
def test_each_mixed_precision_trains_saves_and_resumes(tmp_path, capsys, precision, policy, loss_scaling):
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10}, "mixed_precision": precision,
            "deterministic": True, "solver": {"base_lr": 0.05, "epochs": 2, "batch_size": 64},
            "data": {"builtin": "digits"}}
    whole = train(spec, run_dir=tmp_path / "whole", verbose=1)
    assert f"on 1 device(s) in {policy}, sgd" in capsys.readouterr().out  # the stage header says it
    model = whole.model
    assert model.get_layer("conv1").dtype_policy.name == policy
    assert model.get_layer("head_classifier").dtype_policy.name == "float32"
    # Keras scales the loss for float16 only: bfloat16 has float32's range.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == loss_scaling
    assert np.isfinite(whole.history["loss"]).all() and whole.history["val_accuracy"].iloc[-1] > 0.5
    assert json.loads((tmp_path / "whole" / "spec.json").read_text())["mixed_precision"] == precision
    loaded = keras.saving.load_model(tmp_path / "whole" / "model.keras")
    assert loaded.get_layer("conv1").dtype_policy.name == policy
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer) == loss_scaling
    # A resumed run goes on from its checkpoint (loss scale included) to the same end.
    with pytest.raises(KeyboardInterrupt):
        train(spec, run_dir=tmp_path / "part", callbacks=[stop_after_one_epoch()], verbose=0)
    resumed = train(spec, run_dir=tmp_path / "part", resume=True, verbose=0)
    pd.testing.assert_frame_equal(resumed.history, whole.history)
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored


def test_a_precision_without_kernels_is_a_spec_error_before_training(tmp_path, monkeypatch):
    import tensorflow as tf

    def with_lgamma(input_shape, classes):  # TensorFlow has no bfloat16 Lgamma kernel on CPU
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
        x = keras.layers.Lambda(lambda t: tf.math.lgamma(keras.ops.exp(t)), name="lgamma")(x)
        return keras.Model(inputs, keras.layers.ReLU(name="relu3")(x))

    # The module: the attribute `zoo.small_cnn` is the function.
    monkeypatch.setattr(importlib.import_module("zoo.small_cnn"), "small_cnn", with_lgamma)
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10}, "mixed_precision": "bfloat16",
            "solver": {"base_lr": 0.05, "epochs": 1}, "data": {"builtin": "digits"}}
    with pytest.raises(SpecError) as error:
        validate(spec)
    ((where, message),) = error.value.errors
    assert where == "$.mixed_precision"
    assert message.startswith("\"bfloat16\": TensorFlow has no bfloat16 kernel of Lgamma on this machine's CPU")
    # XLA has its own: compiled, the same network builds.
    assert validate({**spec, "solver": {**spec["solver"], "jit_compile": True}}).model is not None


def test_a_diverging_run_stops_keeps_its_folder_and_exits_1(tmp_path, capsys):
    # No divergence_factor: `zoo train` guards every run.
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 5000.0, "epochs": 3}, "data": {"builtin": "digits"}}
    path = write_spec(tmp_path, spec)
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 1
    assert re.search(r"DivergenceGuard stopped stage 'train': the loss (became nan|\S+ exceeded 10 x its first "
                     r"value \S+) at step \d+ of epoch 1; weights "
                     r"restored to the start of epoch 1\. Lower \$.solver.base_lr \(now 5000; try 500\)\. "
                     r"No epoch finished before it, so there are no best weights\.", capsys.readouterr().err)
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["finished"]
    assert (tmp_path / "run" / "model.keras").exists()


def test_a_divergence_in_a_later_stage_names_it_and_keeps_the_best_weights(tmp_path):
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10}, "data": {"builtin": "digits"},
            "solver": {"base_lr": 0.05, "epochs": 1, "batch_size": 64},
            "stages": [{"name": "warm"}, {"name": "hot", "solver": {"base_lr": 5000.0}}]}
    result = train(spec, run_dir=tmp_path / "run", verbose=0)
    assert re.search(r"stopped stage 2 of 2 'hot': the loss (became nan|\S+ exceeded 10 x its first value \S+) "
                     r"at step \d+ of epoch 2; weights restored "
                     r"to the start of epoch 2\. Lower \$.stages\[1\].solver.base_lr \(now 5000; try 500\)\. "
                     r"The best weights \(epoch 1, val_loss=[\d.]+\) are kept in .*best.weights.h5", result.diverged)
    assert result.history["stage"].tolist() == ["warm"]
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras")
    best = keras.models.clone_model(saved)
    best.load_weights(tmp_path / "run" / "best.weights.h5")
    for a, b in zip(saved.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


LOCK_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(3)
"""


class ProbeLock(keras.callbacks.Callback):
    """Asks another process, during training, whether the run folder is locked."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir, self.codes = run_dir, []

    def on_epoch_end(self, epoch, logs=None):
        probe = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(self.run_dir)])
        self.codes.append(probe.returncode)


def test_two_processes_never_train_in_one_run_folder(tmp_path):
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 0.01, "epochs": 1}, "data": {"builtin": "digits"}}
    run_dir = tmp_path / "run"
    probe = ProbeLock(run_dir)
    train(spec, run_dir=run_dir, verbose=0, callbacks=[probe])
    assert probe.codes == [3]  # the folder was locked while it trained
    # Another process holds the folder: this one is refused and changes nothing.
    holder = subprocess.Popen([sys.executable, "-c", LOCK_PROBE.replace("LOCK_EX | fcntl.LOCK_NB", "LOCK_EX")
                               + "print('locked', flush=True); sys.stdin.read()", str(run_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (run_dir / ".tmp-in-flight.h5").write_text("the other process is writing this")
        before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
        for options in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(RunError, match=f"Another process is training in {run_dir}"):
                train(spec, run_dir=run_dir, verbose=0, **options)
        assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    finally:
        holder.communicate("")


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_files_are_never_written_through_a_planted_link(tmp_path):
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 0.01, "epochs": 2}, "data": {"builtin": "digits"}}
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(spec, run_dir=run_dir, verbose=0, callbacks=[Interrupt()])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run_dir / "model.keras").symlink_to(victim)
    for options in ({"resume": True}, {"overwrite": True}):
        with pytest.raises(RunError, match=r"has symbolic links where the run writes its files \(model.keras\)"):
            train(spec, run_dir=run_dir, verbose=0, **options)
    assert victim.read_text() == "precious"
    # What a run writes replaces a link, never its target.
    link = tmp_path / "link.csv"
    link.symlink_to(victim)
    write_atomically(str(link), lambda path: open(path, "w").write("new"))
    assert victim.read_text() == "precious" and not link.is_symlink() and link.read_text() == "new"

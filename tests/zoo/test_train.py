import json

import keras
import numpy as np
import pandas as pd
import pytest

from zoo.cli import main
from zoo.spec import load_spec
from zoo.train import train
from tests.zoo.conftest import write_spec


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
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10}, "mixed_precision": True,
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


def test_a_diverging_run_stops_keeps_its_folder_and_exits_1(tmp_path, capsys):
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 5000.0, "epochs": 3, "divergence_factor": 3.0}, "data": {"builtin": "digits"}}
    path = write_spec(tmp_path, spec)
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 1
    assert "The run diverged: the loss" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["finished"]
    assert (tmp_path / "run" / "model.keras").exists()

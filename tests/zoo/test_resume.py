"""Resumable runs: SIGKILL at any point, Ctrl-C, the run-folder rules."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pandas as pd
import pytest

from zoo.cli import main
from zoo.spec import SpecError
from zoo.train import RunError, train
from tests.zoo.conftest import stop_after_one_epoch, write_spec

# Trains a spec with resume=True; argv[3] says where the process kills itself:
# {"epoch": e, "batch": b} after that batch, {"checkpoint": e} halfway through
# writing the state of epoch e's checkpoint, {"finish": true} after the last
# epoch's checkpoint but before the run is marked finished, or null.
KILLABLE_TRAIN = textwrap.dedent("""
    import json, os, signal, sys
    import keras
    import zoo.checkpoint
    from zoo.train import train

    kill = json.loads(sys.argv[3])

    class KillAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == (kill["epoch"], kill["batch"]):
                os.kill(os.getpid(), signal.SIGKILL)

    if kill and "checkpoint" in kill:
        write = zoo.checkpoint._write_text

        def write_and_die(path, text):
            if json.loads(text)["epoch"] == kill["checkpoint"]:
                with open(path, "w") as f:
                    f.write(text[: len(text) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            write(path, text)

        zoo.checkpoint._write_text = write_and_die
    if kill and "finish" in kill:
        zoo.checkpoint.Checkpoint.update = lambda self, **changes: os.kill(os.getpid(), signal.SIGKILL)
    callbacks = [KillAt()] if kill and "batch" in kill else []
    train(sys.argv[1], run_dir=sys.argv[2], resume=True, callbacks=callbacks, verbose=0)
""")


def two_stage_spec():
    return {
        "name": "resumable", "deterministic": True, "seed": 3,
        "backbone": {"name": "small_cnn"},
        "head": {"classes": 10, "dropout": 0.3},
        # The best epoch by the highest val_loss is an early one, so stage 2
        # starts from weights that are not stage 1's last (as BestWeights
        # leaves them), and the run ends on weights of neither stage's end.
        "solver": {"base_lr": 0.05, "batch_size": 64,
                   "early_stopping": {"monitor": "val_loss", "mode": "max"}},
        "stages": [
            {"name": "head", "frozen": [{"up_to": "relu2"}], "solver": {"epochs": 2}},
            {"name": "all", "solver": {"epochs": 3, "lr_policy": "step", "gamma": 0.5, "stepsize": 30,
                                       "warmup": {"warmup_steps": 10},
                                       "plateau": {"monitor": "val_loss", "patience": 1, "factor": 0.5}}},
        ],
        "data": {"builtin": "digits", "image_size": [10, 10],
                 "augment": {"flip": "horizontal", "random_crop": [8, 8]}},
    }


def run_killable(spec_path, run_dir, kill=None):
    return subprocess.run([sys.executable, "-c", KILLABLE_TRAIN, str(spec_path), str(run_dir), json.dumps(kill)],
                          capture_output=True, text=True, timeout=600)


def weights_of(path):
    return keras.saving.load_model(path).get_weights()


def test_a_run_killed_anywhere_resumes_to_bit_identical_weights_and_history(tmp_path):
    spec_path = write_spec(tmp_path, two_stage_spec())
    done = run_killable(spec_path, tmp_path / "whole")
    assert done.returncode == 0, done.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    kills = [{"epoch": 1, "batch": 10},   # in stage 1, after one finished epoch
             {"epoch": 2, "batch": 3},     # in stage 2, resumed from the end of stage 1
             {"checkpoint": 4},            # while writing the checkpoint of epoch 4
             {"epoch": 4, "batch": 0},     # in the last epoch, right after the restart
             {"finish": True}]             # after it
    for kill in kills:
        killed = run_killable(spec_path, interrupted, kill)
        assert killed.returncode == -signal.SIGKILL, (kill, killed.stderr[-3000:])
        state = json.loads((interrupted / "checkpoint" / "state.json").read_text())
        assert not state.get("finished")
    state_before = json.loads((interrupted / "checkpoint" / "state.json").read_text())
    assert state_before["epoch"] == 5 and state_before["stage"] == 1 and state_before["stage_ended"]
    resumed = run_killable(spec_path, interrupted)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    for name in ("history.csv", "lr_per_step.csv"):
        assert (interrupted / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    history = pd.read_csv(interrupted / "history.csv")
    assert history.loc[history["stage"] == "head", "best_epoch"].iloc[-1] == 0  # stage 2 began from the first epoch's weights
    assert history["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert history["stage"].tolist() == ["head", "head", "all", "all", "all"]
    for a, b in zip(weights_of(interrupted / "model.keras"), weights_of(tmp_path / "whole" / "model.keras")):
        np.testing.assert_array_equal(a, b)
    assert sorted(os.listdir(interrupted / "checkpoint")) == sorted(os.listdir(tmp_path / "whole" / "checkpoint"))


def small_spec(epochs=2):
    return {"name": "small", "backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 0.05, "epochs": epochs, "batch_size": 64}, "data": {"builtin": "digits"}}


def test_a_run_folder_is_never_overwritten_silently(tmp_path, capsys):
    spec_path = write_spec(tmp_path, small_spec(epochs=1))
    run_dir = tmp_path / "run"
    assert main(["train", str(spec_path), "--run-dir", str(run_dir), "--quiet"]) == 0
    before = {name: (run_dir / name).read_bytes() for name in os.listdir(run_dir) if (run_dir / name).is_file()}
    capsys.readouterr()

    assert main(["train", str(spec_path), "--run-dir", str(run_dir), "--quiet"]) == 1
    message = capsys.readouterr().err
    assert "already holds a run" in message and "--resume" in message and "--overwrite" in message
    assert {name: (run_dir / name).read_bytes() for name in before} == before

    assert main(["train", str(spec_path), "--run-dir", str(run_dir), "--resume", "--quiet"]) == 1
    assert "holds a finished run (1 epochs); nothing to resume" in capsys.readouterr().err

    changed = small_spec(epochs=1)
    changed["solver"]["base_lr"] = 0.1
    changed["head"]["dropout"] = 0.5
    with pytest.raises(RunError, match=r"differs from its spec.json at \$.head.dropout, \$.stages\[0\].solver.base_lr"):
        train(write_spec(tmp_path, changed, "changed.json"), run_dir=run_dir, resume=True, verbose=0)

    result = train(write_spec(tmp_path, changed, "changed.json"), run_dir=run_dir, overwrite=True, verbose=0)
    assert result.best_epoch == 0
    assert json.loads((run_dir / "spec.json").read_text())["head"]["dropout"] == 0.5


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path):
    spec_path = write_spec(tmp_path, small_spec(epochs=200))
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "zoo.cli", "train", str(spec_path), "--run-dir", str(run_dir), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not _finished_epochs(run_dir):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert f"continue with: zoo train {spec_path} --run-dir {run_dir} --resume --quiet" in err
    finished = _finished_epochs(run_dir)
    assert finished >= 1
    for name in ("history.csv", "lr_per_step.csv", "best.weights.h5", "curves.png", "lr.png",
                 "checkpoint/state.json"):
        assert (run_dir / name).exists(), name
    assert len(pd.read_csv(run_dir / "history.csv")) >= finished

    with pytest.raises(RunError, match=r"differs from its spec.json at \$.seed"):  # the same spec only
        train(write_spec(tmp_path, {**small_spec(epochs=200), "seed": 1}, "other_seed.json"), run_dir=run_dir,
              resume=True, verbose=0)


def _finished_epochs(run_dir):
    state = run_dir / "checkpoint" / "state.json"
    try:
        return json.loads(state.read_text())["epoch"] if state.exists() else 0
    except (json.JSONDecodeError, KeyError):
        return 0


def test_resume_continues_the_optimizer_and_callbacks_in_process(tmp_path):
    spec = small_spec(epochs=3)
    spec["solver"].update(lr_policy="exp", gamma=0.99, plateau={"patience": 0, "factor": 0.5, "min_delta": 10})
    spec["deterministic"] = True
    whole = train(spec, run_dir=tmp_path / "whole", verbose=0)

    with pytest.raises(KeyboardInterrupt):
        train(spec, run_dir=tmp_path / "part", callbacks=[stop_after_one_epoch()], verbose=0)
    part = pd.read_csv(tmp_path / "part" / "history.csv")
    assert len(part) == 1
    resumed = train(spec, run_dir=tmp_path / "part", resume=True, verbose=0)
    # The exp policy goes on at the step it stopped, under the plateau's cuts.
    pd.testing.assert_frame_equal(resumed.lr_per_step, whole.lr_per_step)
    pd.testing.assert_frame_equal(resumed.history, whole.history)
    assert resumed.lr_per_step["iteration"].tolist() == list(range(3 * 23))


def test_files_that_are_not_a_run_are_not_replaced_and_a_failing_spec_writes_nothing(tmp_path):
    user_spec = write_spec(tmp_path, small_spec(epochs=1))  # tmp_path/spec.json, the user's own
    before = user_spec.read_text()
    with pytest.raises(RunError, match="holds no zoo run, yet has spec.json"):
        train(user_spec, run_dir=tmp_path, verbose=0)
    assert user_spec.read_text() == before

    run_dir = tmp_path / "run"
    train(small_spec(epochs=1), run_dir=run_dir, verbose=0)
    saved = (run_dir / "spec.json").read_text()
    broken = small_spec(epochs=1)
    broken["frozen"] = [{"match": "nothing*"}]
    with pytest.raises(SpecError, match="matches no layer"):
        train(broken, run_dir=run_dir, overwrite=True, verbose=0)
    assert (run_dir / "spec.json").read_text() == saved and (run_dir / "model.keras").exists()

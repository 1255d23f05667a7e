"""Running a spec: `build_model(spec)` and `train(spec)`, with its run folder."""

import dataclasses
import json
import os
import shutil

import keras
import pandas as pd

from callbacks._files import leftovers, write_atomically
from zoo.checkpoint import Checkpoint
from zoo.runner import Runner
from zoo.sections import differences, to_dict
from zoo.spec import load_spec

# Every file `train` writes in a run folder; --overwrite removes these alone.
RUN_FILES = ("spec.json", "history.csv", "lr_per_step.csv", "best.weights.h5", "model.keras",
             "curves.png", "lr.png")
CHECKPOINT_DIR = "checkpoint"


class RunError(RuntimeError):
    """A run folder that cannot be used as asked (it holds a run, a
    different spec, or a finished run)."""


@dataclasses.dataclass
class TrainResult:
    """What `train` produced.

    Attributes:
        history: DataFrame, one row per epoch: epoch, stage, the logged
            metrics and `lr`.
        lr_per_step: DataFrame with `stage`, `iteration` and `lr` for every step.
        best_epoch: 0-based epoch (over all stages) with the best `monitor`.
        monitor: The metric that picked it; `best` its value.
        model: The trained Keras model, holding the best epoch's weights.
        run_dir: The run folder; `paths` names the files in it.
        diverged: Why `DivergenceGuard` stopped the run, or None.
    """

    history: pd.DataFrame
    lr_per_step: pd.DataFrame
    best_epoch: int
    monitor: str
    best: float
    model: keras.Model
    run_dir: str
    paths: dict
    diverged: str = None


def build_model(spec, stage=0):
    """The spec's model, compiled for `stage` (0-based), for users who call
    `model.fit` themselves (its optimizer follows the stage's LR schedule)."""
    runner = Runner(load_spec(spec))
    runner.build()
    runner.enter_stage(stage)
    return runner.model


def train(spec, run_dir=None, resume=False, overwrite=False, callbacks=(), verbose=1):
    """Run a spec: validate it, build the model, train every stage, and
    write the run folder. Returns a `TrainResult`.

    Args:
        spec: A spec file path, a dict or a `zoo.sections.Spec`.
        run_dir: The run folder. Defaults to `runs/<name>`.
        resume: Continue the interrupted run in `run_dir` from its last
            finished epoch (weights, optimizer, callbacks, history, stage,
            data order); start afresh when the folder holds no run. The
            spec must equal the run's `spec.json`.
        overwrite: Delete the run in `run_dir` and start again.
        callbacks: More Keras callbacks for every stage's `fit`.
        verbose: 0 or 1.

    A folder that holds a run is never trained into without `resume` or
    `overwrite` (`RunError`). Run folder: `spec.json` (the typed spec
    written out), `history.csv` and `lr_per_step.csv` (written at every
    epoch end), `best.weights.h5`, `checkpoint/` (the last finished epoch),
    and at the end `model.keras` (on the best weights), `curves.png` and
    `lr.png`. An interrupted run (Ctrl-C) still gets its plots.
    """
    spec = load_spec(spec)
    run_dir = os.path.abspath(run_dir or os.path.join("runs", spec.name))
    paths = {name: os.path.join(run_dir, name) for name in RUN_FILES}
    checkpoint = Checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))
    state = _prepare_folder(spec, run_dir, paths, checkpoint, resume, overwrite)
    log = _RunFiles(paths, lr_rows=state["lr_rows"] if state else 0)
    runner = Runner(spec, checkpoint=checkpoint, best_path=paths["best.weights.h5"], on_epoch_end=log.write)
    model = runner.build()  # a spec that cannot build fails here, before the folder is touched
    if state is None:
        # Files of the run replaced by --overwrite, or of one that never finished an epoch.
        for path in paths.values():
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(checkpoint.directory, ignore_errors=True)
        os.makedirs(checkpoint.directory)  # the folder now holds a run
        write_atomically(paths["spec.json"], lambda path: _write_json(path, to_dict(spec)))
    elif verbose:
        print(f"Resuming {run_dir} after epoch {state['epoch']}.")
    if verbose:
        model.summary(line_length=100)
    try:
        outcome = runner.run(resume=state, callbacks=callbacks, verbose=verbose)
    finally:
        log.plot()  # also after Ctrl-C or a crash: the plots of the finished epochs
    model.save(paths["model.keras"])
    checkpoint.update(finished=True)
    if verbose:
        if outcome.diverged:
            print(f"\nDivergenceGuard stopped the run: {outcome.diverged}.")
        if outcome.best_epoch is not None:
            print(f"\nBest epoch {outcome.best_epoch + 1}: {outcome.monitor}={outcome.best:.4f}.")
        print(f"Run folder: {run_dir}")
    return TrainResult(log.history(), log.lr_per_step(), outcome.best_epoch, outcome.monitor, outcome.best,
                       model, run_dir, paths, outcome.diverged)


def _prepare_folder(spec, run_dir, paths, checkpoint, resume, overwrite):
    """Check the run folder against `resume`/`overwrite`: the checkpoint
    state to resume from, or None to start afresh (nothing is removed yet).

    A folder holds a run when it has `checkpoint/`. Files named like ours in
    a folder without one are someone else's: only `overwrite` replaces them."""
    if overwrite:
        return None
    if not os.path.isdir(checkpoint.directory):
        ours = [name for name, path in paths.items() if os.path.exists(path)]
        if ours:
            raise RunError(f"{run_dir} holds no zoo run, yet has {', '.join(ours)}, which a run would "
                           "replace. Choose another run folder, or replace them with --overwrite.")
        return None
    state = checkpoint.load()
    if state is None and not os.path.exists(paths["spec.json"]):
        return None  # stopped before it wrote its spec: nothing to keep
    if not resume:
        raise RunError(f"{run_dir} already holds a run. Continue it with --resume "
                       "(resume=True), or start it again with --overwrite (overwrite=True).")
    changed = differences(to_dict(load_spec(paths["spec.json"])), to_dict(spec))
    if changed:
        raise RunError(f"Cannot resume {run_dir}: the spec differs from its spec.json at "
                       f"{', '.join(changed)}. Resume with the same spec, or start again with --overwrite.")
    for stale in leftovers(run_dir):
        os.remove(stale)
    if state and state.get("finished"):
        raise RunError(f"{run_dir} holds a finished run ({len(state.get('history', []))} epochs); "
                       "nothing to resume. Start it again with --overwrite.")
    return state


class _RunFiles:
    """history.csv and lr_per_step.csv, written at every epoch end, and the plots."""

    def __init__(self, paths, lr_rows):
        self.paths = paths
        if lr_rows:
            # Rows past the checkpoint belong to an epoch that did not finish.
            kept = pd.read_csv(paths["lr_per_step.csv"]).iloc[:lr_rows]
            write_atomically(paths["lr_per_step.csv"], lambda path: kept.to_csv(path, index=False))

    def write(self, history, lr_rows):
        write_atomically(self.paths["history.csv"], lambda path: pd.DataFrame(history).to_csv(path, index=False))
        lr_path = self.paths["lr_per_step.csv"]
        rows = pd.DataFrame(lr_rows, columns=["stage", "iteration", "lr"])
        rows.to_csv(lr_path, mode="a", header=not os.path.exists(lr_path), index=False)

    def history(self):
        return _read_csv(self.paths["history.csv"], ["epoch", "stage"])

    def lr_per_step(self):
        return _read_csv(self.paths["lr_per_step.csv"], ["stage", "iteration", "lr"])

    def plot(self):
        if os.path.exists(self.paths["history.csv"]):
            _plot_curves(self.history(), self.paths["curves.png"])
            _plot_lr(self.lr_per_step(), self.paths["lr.png"])


def _read_csv(path, columns):
    """The CSV's rows; none (with `columns`) before the first finished epoch."""
    return pd.read_csv(path) if os.path.exists(path) else pd.DataFrame(columns=columns)


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def _plot_curves(history, path):
    from matplotlib.figure import Figure

    metrics = [m for m in ("loss", "accuracy") if m in history]
    figure = Figure(figsize=(6 * len(metrics), 4))
    for position, metric in enumerate(metrics, start=1):
        axes = figure.add_subplot(1, len(metrics), position)
        epochs = history["epoch"] + 1
        axes.plot(epochs, history[metric], label=f"train {metric}")
        if f"val_{metric}" in history:
            axes.plot(epochs, history[f"val_{metric}"], label=f"validation {metric}")
        for boundary in history.groupby("stage", sort=False)["epoch"].min().iloc[1:]:
            axes.axvline(boundary + 0.5, color="gray", linestyle=":")
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _plot_lr(lr_per_step, path):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for stage, rows in lr_per_step.groupby("stage", sort=False):
        axes.plot(rows["iteration"], rows["lr"], label=str(stage))
    axes.set_xlabel("iteration")
    axes.set_ylabel("learning rate")
    axes.set_yscale("log")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)

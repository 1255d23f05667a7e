"""Running a spec: `validate(spec)`, `build_model(spec)` and `train(spec)`, with its run folder."""

import dataclasses
import fcntl
import json
import os
import shutil

import keras
import pandas as pd

from callbacks._files import leftovers, remove, write_atomically, write_folder_atomically
from zoo.checkpoint import Checkpoint
from zoo.data import scale_and_offset, summary_of_skipped
from zoo.model import portable
from zoo.runner import Runner, stage_path
from zoo.sections import differences, to_dict
from zoo.spec import json_path, load_spec, naming

# Every file `train` writes in a run folder; --overwrite removes these alone.
RUN_FILES = ("spec.json", "history.csv", "lr_per_step.csv", "best.weights.h5", "model.keras",
             "curves.png", "lr.png", "skipped_files.csv", "preset")
CHECKPOINT_DIR = "checkpoint"
# `zoo train` stops a run whose loss is NaN or this many times its first
# value (a solver's `divergence_factor` overrides it). Looser than a
# search's 3x: a search drops a bad trial early; a user's run stops only
# when it has clearly blown up.
DIVERGENCE_FACTOR = 10.0


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
        diverged: Why `DivergenceGuard` stopped the run (the stage, epoch
            and step, what to try, where the best weights are), or None.
        skipped: `[(file, problem)]` of the bad files that
            `data.on_bad_file: "skip"` left out (also `skipped_files.csv`).
        no_preset: For a KerasHub backbone, why the run wrote no `preset/`
            folder (its network has no KerasHub classifier form), or None.
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
    skipped: list = dataclasses.field(default_factory=list)
    no_preset: str = None


@dataclasses.dataclass
class Validation:
    """What `validate` checked.

    Attributes:
        spec: The typed `Spec`.
        deep: Whether the model was built and the data read (else only the
            schema and the rules between fields were checked).
        model: The built model (deep only).
        data: The checked `zoo.data.ImageData` (deep only).
        no_preset: Why a KerasHub backbone's run will write no preset
            folder, or None (deep only).
    """

    spec: object
    deep: bool
    model: keras.Model = None
    data: object = None
    no_preset: str = None

    def summary(self):
        if not self.deep:
            return "valid (quick: schema and rules; without --quick the model is built and the data read)"
        skipped = f"; {summary_of_skipped(self.data.skipped)}" if self.data.skipped else ""
        preset = f"; no KerasHub preset folder: {self.no_preset}" if self.no_preset else ""
        return (f"valid (deep: model built, {self.model.count_params():,} parameters; "
                f"{self.data.train_size} training images of {len(self.data.class_names)} classes read"
                f"{skipped}{preset})")


def validate(spec, deep=True, unsafe=False):
    """Check a spec as `train` does before its first step, without training.

    Quick (`deep=False`): the schema and the rules between fields. Deep
    (the default): also builds the model (backbone file, weights file and
    ImageNet download included), checks every frozen/slow selector, and
    reads the data: every image decoded, the classes against the head, the
    image size against the backbone. `train` runs the same checks, so
    `validate` and `train` agree. Raises `SpecError`; returns a `Validation`.
    """
    source, spec = spec, load_spec(spec)
    if not deep:
        return Validation(spec, deep=False)
    runner = Runner(spec, unsafe=unsafe)
    with naming(source):
        model = runner.build()
    return Validation(spec, deep=True, model=model, data=runner.data, no_preset=runner.no_preset)


def build_model(spec, stage=0, unsafe=False):
    """The spec's model, compiled for `stage` (0-based), for users who call
    `model.fit` themselves (its optimizer follows the stage's LR schedule)."""
    runner = Runner(load_spec(spec), unsafe=unsafe)
    with naming(spec):
        runner.build()
    runner.enter_stage(stage)
    return runner.model


def train(spec, run_dir=None, resume=False, overwrite=False, callbacks=(), verbose=1, unsafe=False):
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
        unsafe: Load a `.keras` backbone even if its Lambda layers would
            run Python code stored in the file (only for files you trust).

    Everything `validate` checks is checked before the first step. A
    folder that holds a run is never trained into without `resume` or
    `overwrite` (`RunError`), nor by two processes at once. A run whose
    loss becomes NaN or blows up (`DIVERGENCE_FACTOR`) stops, keeps its
    best weights and says so in `TrainResult.diverged`.

    Run folder: `spec.json` (the typed spec written out), `history.csv`
    and `lr_per_step.csv` (written at every epoch end), `best.weights.h5`,
    `checkpoint/` (the last finished epoch), `skipped_files.csv` (when
    bad files were skipped), and at the end `model.keras` (on the best
    weights; it loads without this package), `preset/` (a KerasHub preset
    folder, for a KerasHub backbone), `curves.png` and `lr.png`. An interrupted run (Ctrl-C) still
    gets its plots.
    """
    source, spec = spec, load_spec(spec)
    run_dir = os.path.abspath(run_dir or os.path.join("runs", spec.name))
    paths = {name: os.path.join(run_dir, name) for name in RUN_FILES}
    checkpoint = Checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))
    # Checked before the (slow) build, so that a refusal comes at once ...
    if os.path.isdir(run_dir):
        with _RunLock(run_dir):
            _prepare_folder(spec, run_dir, paths, checkpoint, resume, overwrite)
    log = _RunFiles(paths)
    runner = Runner(spec, checkpoint=checkpoint, best_path=paths["best.weights.h5"], on_epoch_end=log.write,
                    divergence_factor=DIVERGENCE_FACTOR, unsafe=unsafe)
    with naming(source):
        model = runner.build()  # a spec that cannot build fails here, before the folder is touched
    with _RunLock(run_dir):
        # ... and again: another process may have used the folder meanwhile.
        state = _prepare_folder(spec, run_dir, paths, checkpoint, resume, overwrite)
        for stale in leftovers(run_dir):  # of a write that a crash cut short
            remove(stale)
        log.keep_rows(state["lr_rows"] if state else 0)
        if state is None:
            # Files of the run replaced by --overwrite, or of one that never finished an epoch.
            for path in paths.values():
                if os.path.exists(path):
                    remove(path)
            shutil.rmtree(checkpoint.directory, ignore_errors=True)
            os.makedirs(checkpoint.directory)  # the folder now holds a run
            write_json(paths["spec.json"], to_dict(spec))
            if runner.data.skipped:
                skipped = pd.DataFrame(runner.data.skipped, columns=["file", "problem"])
                write_atomically(paths["skipped_files.csv"], lambda path: skipped.to_csv(path, index=False))
        elif verbose:
            print(f"Resuming {run_dir} after epoch {state['epoch']}.")
        if verbose and runner.data.skipped:
            print(f"{summary_of_skipped(runner.data.skipped)} (all in {paths['skipped_files.csv']})")
        if verbose:
            model.summary(line_length=100)
            if runner.no_preset:
                print(f"No KerasHub preset folder will be written: {runner.no_preset}; model.keras will hold "
                      "the network.")
        try:
            outcome = runner.run(resume=state, callbacks=callbacks, verbose=verbose)
        finally:
            log.plot()  # also after Ctrl-C or a crash: the plots of the finished epochs
        write_atomically(paths["model.keras"], portable(model).save)
        _write_preset(runner, paths["preset"])
        checkpoint.update(finished=True)
    diverged = outcome.diverged and _divergence_message(spec, outcome, paths)
    if verbose:
        if diverged:
            print(f"\n{diverged}")
        if outcome.best_epoch is not None:
            print(f"\nBest epoch {outcome.best_epoch + 1}: {outcome.monitor}={outcome.best:.4f}.")
        print(f"Run folder: {run_dir}")
    return TrainResult(log.history(), log.lr_per_step(), outcome.best_epoch, outcome.monitor, outcome.best,
                       model, run_dir, paths, diverged, runner.data.skipped, runner.no_preset)


def _write_preset(runner, folder):
    """The fine-tuned network as a KerasHub preset folder, for a KerasHub
    backbone whose network has the form of a KerasHub classifier."""
    writer = runner.trunk.preset_writer
    if writer is not None and runner.no_preset is None:
        write_folder_atomically(folder, lambda temporary: writer.write(
            runner.model, runner.spec.head, runner.data.class_names, runner.data.image_shape[:2],
            scale_and_offset(runner.spec.data.normalization), temporary))


def _divergence_message(spec, outcome, paths):
    """What went wrong, where, what to try, and what was kept."""
    index = outcome.diverged_stage
    stage = spec.stages[index]
    number = f" {index + 1} of {len(spec.stages)}" if len(spec.stages) > 1 else ""
    lr = stage.solver.base_lr
    kept = (f"The best weights (epoch {outcome.best_epoch + 1}, {outcome.monitor}={outcome.best:.4g}) are kept "
            f"in {paths['best.weights.h5']} and {paths['model.keras']}." if outcome.best_epoch is not None
            else "No epoch finished before it, so there are no best weights.")
    return (f"DivergenceGuard stopped stage{number} '{stage.name}': {outcome.diverged}. Lower "
            f"{json_path(stage_path(spec.stages, index) + ['solver', 'base_lr'])} (now {lr:g}; try {lr / 10:g}). "
            f"{kept}")


class _RunLock:
    """An exclusive lock on the run folder (created if needed) while a run
    trains in it: a second `train` of the same folder is refused."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def __enter__(self):
        os.makedirs(self.run_dir, exist_ok=True)
        self.fd = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RunError(f"Another process is training in {self.run_dir}; wait for it to finish, "
                           "or choose another run folder.") from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing the folder releases the lock


def _prepare_folder(spec, run_dir, paths, checkpoint, resume, overwrite):
    """Check the run folder against `resume`/`overwrite`: the checkpoint
    state to resume from, or None to start afresh (nothing is removed yet).

    A folder holds a run when it has `checkpoint/`. Files named like ours in
    a folder without one are someone else's: only `overwrite` replaces them.
    A symbolic link among our files is refused: writing through it would
    change a file outside the folder."""
    links = [name for name, path in {**paths, CHECKPOINT_DIR: checkpoint.directory}.items() if os.path.islink(path)]
    if links:
        raise RunError(f"{run_dir} has symbolic links where the run writes its files ({', '.join(links)}); "
                       "a run never writes through a link. Remove them, or choose another run folder.")
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
    if state and state.get("finished"):
        raise RunError(f"{run_dir} holds a finished run ({len(state.get('history', []))} epochs); "
                       "nothing to resume. Start it again with --overwrite.")
    return state


class _RunFiles:
    """history.csv and lr_per_step.csv, written at every epoch end, and the
    plots; never through a symbolic link."""

    def __init__(self, paths):
        self.paths = paths

    def keep_rows(self, lr_rows):
        """Keep the first `lr_rows` rows of lr_per_step.csv: rows past the
        checkpoint belong to an epoch that did not finish."""
        if lr_rows:
            kept = pd.read_csv(self.paths["lr_per_step.csv"]).iloc[:lr_rows]
            write_atomically(self.paths["lr_per_step.csv"], lambda path: kept.to_csv(path, index=False))

    def write(self, history, lr_rows):
        write_atomically(self.paths["history.csv"], lambda path: pd.DataFrame(history).to_csv(path, index=False))
        lr_path = self.paths["lr_per_step.csv"]
        rows = pd.DataFrame(lr_rows, columns=["stage", "iteration", "lr"])
        new = not os.path.exists(lr_path)
        # Appended, not rewritten, each epoch; O_NOFOLLOW refuses a planted link.
        fd = os.open(lr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a", newline="") as f:
            rows.to_csv(f, header=new, index=False)

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


def write_json(target, data):
    """`data` as indented JSON in `target`, written whole or not at all."""
    def write(path):
        with open(path, "w") as f:
            json.dump(data, f, indent=2)

    write_atomically(target, write)


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
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))


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
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))

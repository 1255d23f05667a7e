"""Running a spec: `validate(spec)`, `build_model(spec)`, `lr_find(spec)` and
`train(spec)`, with its run folder."""

import dataclasses
import fcntl
import json
import os
import shutil
import sys

import keras
import pandas as pd

from callbacks._files import leftovers, remove, write_atomically, write_folder_atomically
from zoo.batchnorm import own_momentum
from zoo.checkpoint import Checkpoint
from zoo.data import scale_and_offset, summary_of_skipped
from zoo.lr_policies import LR_FINDER_RULES
from zoo.model import portable
from zoo.reports import TENSORBOARD_DIR, MLflowLog, RunLog, TensorBoardLog, write_lr_find
from zoo.runner import Runner, lr_columns, stage_path
from zoo.sections import AUTO, differences, resolve_auto, to_dict
from zoo.spec import QUICK_VALID, SpecError, json_path, load_spec, naming

# Every file `train` writes in a run folder; --overwrite removes these alone.
RUN_FILES = ("spec.json", "history.csv", "lr_per_step.csv", "lr_find.csv", "lr_find.png", "best.weights.h5",
             "model.keras", "curves.png", "lr.png", "skipped_files.csv", "preset", TENSORBOARD_DIR)
CHECKPOINT_DIR = "checkpoint"
# `data.cache: "file"`'s files. Not among RUN_FILES: --overwrite keeps them,
# and a changed image gets a new file (its name hashes the files it holds).
CACHE_DIR = "cache"
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
        lr_per_step: DataFrame, one row per step: `stage`, `iteration`
            (counted across stages), `stage_iteration`, `lr` and the
            effective LR of every `lr_mult` group (`lr_x10`, ...).
        best_epoch: 0-based epoch (over all stages) with the best `monitor`.
        monitor: The metric that picked it; `best` its value.
        model: The trained Keras model, holding the best epoch's weights,
            its BatchNormalization layers as the last stage ran them
            (`batchnorm`); `model.keras` holds them as built.
        run_dir: The run folder; `paths` names the files in it.
        spec: The `Spec` that ran: `base_lr: "auto"` replaced by the LR found.
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
    spec: object
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
        warnings: `(json_path, message)` of what in a stage's schedule
            does not fit its length, known once the data is read (deep
            only; `Runner.schedule_warnings`).
    """

    spec: object
    deep: bool
    model: keras.Model = None
    data: object = None
    no_preset: str = None
    warnings: list = dataclasses.field(default_factory=list)

    def summary(self):
        if not self.deep:
            return QUICK_VALID
        skipped = f"; {summary_of_skipped(self.data.skipped)}" if self.data.skipped else ""
        preset = f"; no KerasHub preset folder: {self.no_preset}" if self.no_preset else ""
        return (f"valid (deep: model built, {self.model.count_params():,} parameters; "
                f"{self.data.train_size} training images of {len(self.data.class_names)} classes read"
                f"{skipped}{preset})")


def validate(spec, deep=True, unsafe=False):
    """Check a spec as `train` does before its first step, without training.

    Quick (`deep=False`): the schema and the rules between fields. Deep
    (the default): also builds the model (backbone file, weights file and
    ImageNet download included), checks every frozen, slow and
    `batchnorm.layers` selector, and reads the data: every image decoded,
    the classes against the head, the image size against the backbone. `train` runs the same checks, so
    `validate` and `train` agree. Raises `SpecError`; returns a `Validation`,
    whose `warnings` (deep only) say what in a schedule does not fit its
    stage's length.
    """
    source, spec = spec, load_spec(spec)
    if not deep:
        return Validation(spec, deep=False)
    runner = Runner(spec, unsafe=unsafe)
    with naming(source):
        model = runner.build()
    return Validation(spec, deep=True, model=model, data=runner.data, no_preset=runner.no_preset,
                      warnings=runner.schedule_warnings())


def print_warnings(warnings):
    """`warning: <json path>: <message>` on stderr for each of `warnings`."""
    for path, message in warnings:
        print(f"warning: {path}: {message}", file=sys.stderr)


def build_model(spec, stage=0, unsafe=False):
    """The spec's model, compiled for `stage` (0-based), for users who call
    `model.fit` themselves (its optimizer follows the stage's LR schedule;
    a `base_lr: "auto"` is found first, by the LR range test)."""
    runner = Runner(load_spec(spec), unsafe=unsafe)
    with naming(spec):
        runner.build()
        runner.enter_stage(stage)
        if runner.spec.stages[stage].solver.base_lr == AUTO:
            runner.find_base_lr(stage, verbose=0)
    return runner.model


def lr_find(spec, stage=0, out_dir=None, verbose=1, unsafe=False):
    """The LR range test of stage `stage` (0-based) without training: the
    stage's `solver.lr_finder` sweep on the model as built (pretrained
    weights and new head; earlier stages are not trained first), its frozen
    and slow layers and its data. Writes `lr_find.csv` and `lr_find.png` to
    `out_dir` (default `runs/<name>-lr-find`; a stage tested again replaces
    its rows) and returns the `LRFinderResult`, whose `suggestions` hold
    every rule's LR (empty when no LR lowered the loss). `data.cache` is
    left off: a sweep reads `num_steps` batches, mostly fewer than an epoch,
    and the batches are the same, bit for bit, without a cache."""
    source, spec = spec, load_spec(spec)
    if not 0 <= stage < len(spec.stages):
        raise ValueError(f"The spec has {len(spec.stages)} stage(s); there is no stage {stage + 1}.")
    runner = Runner(dataclasses.replace(spec, data=dataclasses.replace(spec.data, cache=False)), unsafe=unsafe)
    with naming(source):
        runner.build()
    result = runner.lr_range_test(stage)
    out_dir = os.path.abspath(out_dir or os.path.join("runs", f"{spec.name}-lr-find"))
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in ("lr_find.csv", "lr_find.png")}
    write_lr_find(paths["lr_find.csv"], paths["lr_find.png"], spec.stages[stage].name, result)
    if verbose:
        print(f"Stage {stage + 1}/{len(spec.stages)} '{spec.stages[stage].name}': {result.stop_reason}.")
        for rule, lr in result.suggestions.items():
            chosen = "  <- lr_finder.rule" if rule == result.rule else ""
            print(f"  {rule:<8} {lr:<10.3g} {LR_FINDER_RULES[rule]}{chosen}")
        print(f"Written: {paths['lr_find.csv']}, {paths['lr_find.png']}")
    return result


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

    Run folder: `spec.json` (the typed spec written out; an "auto"
    `base_lr` becomes the LR found), `history.csv` and `lr_per_step.csv`
    (written at every epoch end, with the effective LR of every `lr_mult`
    group), `lr_find.csv` and `lr_find.png` (the LR range tests of "auto"),
    `best.weights.h5`, `checkpoint/` (the last finished epoch), `cache/`
    (with `data.cache: "file"`: the decoded images, kept by `overwrite`),
    `skipped_files.csv` (when bad files were skipped), `tensorboard/`
    (with `tracking` "tensorboard", the default), and at the end
    `model.keras` (on the best weights; it loads without this package),
    `preset/` (a KerasHub preset folder, for a KerasHub backbone),
    `curves.png` and `lr.png`. An interrupted run (Ctrl-C) still gets its
    plots. With `tracking` "mlflow", the run is also logged to the MLflow
    store `mlflow.db` beside the run folder.
    """
    source, spec = spec, load_spec(spec)
    run_dir = os.path.abspath(run_dir or os.path.join("runs", spec.name))
    paths = {name: os.path.join(run_dir, name) for name in RUN_FILES}
    checkpoint = Checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))
    if "mlflow" in spec.tracking:
        with naming(source):
            _check_mlflow()
    # Checked before the (slow) build, so that a refusal comes at once ...
    if os.path.isdir(run_dir):
        with _RunLock(run_dir):
            _prepare_folder(spec, run_dir, paths, checkpoint, resume, overwrite)
    log = RunLog(paths, lr_columns(spec))

    def lr_found(index, result):
        log.lr_found(runner.spec.stages[index].name, result)
        write_json(paths["spec.json"], to_dict(runner.spec))  # the value found, for a resume and for people

    runner = Runner(spec, checkpoint=checkpoint, best_path=paths["best.weights.h5"], on_epoch_end=log.write,
                    on_lr_found=lr_found, divergence_factor=DIVERGENCE_FACTOR, unsafe=unsafe,
                    cache_dir=os.path.join(run_dir, CACHE_DIR))
    with naming(source):
        model = runner.build()  # a spec that cannot build fails here, before the folder is touched
    if verbose:
        print_warnings(runner.schedule_warnings())
    with _RunLock(run_dir):
        # ... and again: another process may have used the folder meanwhile.
        state = _prepare_folder(spec, run_dir, paths, checkpoint, resume, overwrite)
        for stale in leftovers(run_dir) + leftovers(os.path.join(run_dir, CACHE_DIR)):  # of writes a crash cut short
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
        else:
            # The LRs that "auto" found before the interruption: no second search.
            runner.spec = resolve_auto(runner.spec, load_spec(paths["spec.json"]))
            if verbose:
                print(f"Resuming {run_dir} after epoch {state['epoch']}.")
        if verbose and runner.data.skipped:
            print(f"{summary_of_skipped(runner.data.skipped)} (all in {paths['skipped_files.csv']})")
        if verbose:
            # The summary counts what trains in the stage that starts.
            runner.enter_stage(min(state["stage"] + state["stage_ended"], len(spec.stages) - 1) if state else 0)
            model.summary(line_length=100)
            if runner.no_preset:
                print(f"No KerasHub preset folder will be written: {runner.no_preset}; model.keras will hold "
                      "the network.")
        log.trackers = _trackers(spec, run_dir, resumed=state is not None)
        status = "FAILED"
        try:
            try:
                with naming(source):
                    outcome = runner.run(resume=state, callbacks=callbacks, verbose=verbose)
            except SpecError as error:  # a stage's "auto" base_lr that found no LR
                raise SpecError([(where, f"{message} Then continue with --resume (resume=True): the "
                                         "finished epochs are kept.") for where, message in error.errors],
                                error.source) from None
            finally:
                log.plot()  # also after Ctrl-C or a crash: the plots of the finished epochs
            with own_momentum(model):  # the network as built, not a stage's `batchnorm.momentum`
                write_atomically(paths["model.keras"], portable(model).save)
                _write_preset(runner, paths["preset"])
            checkpoint.update(finished=True)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            log.close(status)
    diverged = outcome.diverged and _divergence_message(runner.spec, outcome, paths)
    if verbose:
        if diverged:
            print(f"\n{diverged}")
        if outcome.best_epoch is not None:
            print(f"\nBest epoch {outcome.best_epoch + 1}: {outcome.monitor}={outcome.best:.4f}.")
        print(f"Run folder: {run_dir}")
    return TrainResult(log.history(), log.lr_per_step(), outcome.best_epoch, outcome.monitor, outcome.best,
                       model, run_dir, paths, runner.spec, diverged, runner.data.skipped, runner.no_preset)


def _trackers(spec, run_dir, resumed):
    """The spec's `tracking`, opened on the run folder."""
    trackers = []
    if "tensorboard" in spec.tracking:
        trackers.append(TensorBoardLog(run_dir, [stage.name for stage in spec.stages]))
    if "mlflow" in spec.tracking:
        trackers.append(MLflowLog(run_dir, to_dict(spec), resumed))
    return trackers


def _check_mlflow():
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise SpecError([("$.tracking", "\"mlflow\" needs MLflow: pip install \"keras-zoo[mlflow]\" "
                                        "(from a clone: pip install -e \".[mlflow]\")")]) from None


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


def _with_resumable_changes(recorded, given):
    """`recorded` (a run's spec.json) with what a resume may change taken
    from `given`: the `lr_finder` of each stage whose "auto" base_lr it has
    not found (a sweep that found nothing may be widened, and the run
    resumed), and `data.cache` (cached batches are the uncached ones, bit
    for bit)."""
    stages = [dataclasses.replace(done, solver=dataclasses.replace(done.solver, lr_finder=stage.solver.lr_finder))
              if done.solver.base_lr == AUTO else done for done, stage in zip(recorded.stages, given.stages)]
    return dataclasses.replace(recorded, stages=tuple(stages) + recorded.stages[len(stages):],
                               data=dataclasses.replace(recorded.data, cache=given.data.cache))


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
    recorded = load_spec(paths["spec.json"])
    given = resolve_auto(spec, recorded)
    changed = differences(to_dict(_with_resumable_changes(recorded, given)), to_dict(given))
    if changed:
        raise RunError(f"Cannot resume {run_dir}: the spec differs from its spec.json at "
                       f"{', '.join(changed)}. Resume with the same spec, or start again with --overwrite.")
    if state and state.get("finished"):
        raise RunError(f"{run_dir} holds a finished run ({len(state.get('history', []))} epochs); "
                       "nothing to resume. Start it again with --overwrite.")
    return state


def write_json(target, data):
    """`data` as indented JSON in `target`, written whole or not at all."""
    def write(path):
        with open(path, "w") as f:
            json.dump(data, f, indent=2)

    write_atomically(target, write)

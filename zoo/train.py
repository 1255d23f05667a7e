"""Running a spec: `build_model(spec)` and `train(spec)`."""

import dataclasses
import json
import math
import os

import keras
import pandas as pd
import tensorflow as tf

from callbacks import BestWeights, DivergenceGuard, PlateauDecay, lr_per_step
from zoo.data import image_shape, load_data
from zoo.model import build_network, compile_stage, configure_layers, selected_layers
from zoo.spec import SpecError, load_spec, lr_schedule, stages_of


@dataclasses.dataclass
class TrainResult:
    """What `train` produced.

    Attributes:
        history: DataFrame, one row per epoch: epoch, stage, the logged
            metrics and `lr`.
        lr_per_step: DataFrame with `iteration` and `lr` for every step.
        best_epoch: 0-based epoch (over all stages) with the best `monitor`.
        monitor: The metric that picked it; `best` its value.
        model: The trained Keras model, holding the best epoch's weights.
        run_dir: The run folder; `paths` names the files in it.
    """

    history: pd.DataFrame
    lr_per_step: pd.DataFrame
    best_epoch: int
    monitor: str
    best: float
    model: keras.Model
    run_dir: str
    paths: dict


def _stage_path(spec, index):
    return ["stages", index] if spec.get("stages") else []


def _check_layer_selectors(model, spec):
    """Every frozen/slow selector, top-level and per stage, must pick a layer:
    checked before any training, all such errors at once."""
    places = [([], spec)] + [(["stages", i], stage) for i, stage in enumerate(spec.get("stages", []))]
    errors = []
    for path, place in places:
        for key in ("frozen", "slow"):
            for index, group in enumerate(place.get(key, [])):
                try:
                    selected_layers(model, group, path + [key, index])
                except SpecError as error:
                    errors += error.errors
    if errors:
        raise SpecError(errors)


def build_model(spec, stage=0):
    """The spec's model, compiled for `stage` (0-based), for users who call
    `model.fit` themselves (with `lr_schedule(solver)` and zoo callbacks)."""
    spec = load_spec(spec)
    keras.utils.set_random_seed(spec["seed"])
    model = build_network(spec)
    _check_layer_selectors(model, spec)
    _, frozen, slow, solver = stages_of(spec)[stage]
    _, lr_mult, decay_mult = configure_layers(model, frozen, slow, _stage_path(spec, stage))
    return compile_stage(model, solver, lr_mult, decay_mult)


class _RunLog(keras.callbacks.Callback):
    """Writes history.csv after every epoch (a crash loses no finished epoch)
    and records the LR of every step. Put it before PlateauDecay, which may
    lower the LR at the same epoch end."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.rows, self.lr_rows = [], []
        self.stage = None

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self._first_step = self._iterations()

    def on_epoch_end(self, epoch, logs=None):
        last = self._iterations()
        rates = lr_per_step(self.model, self._first_step, last)
        self.lr_rows += [(self.stage, i, float(r)) for i, r in zip(range(self._first_step, last), rates)]
        self.rows.append({"epoch": epoch, "stage": self.stage, **(logs or {})})
        temporary = self.path + ".tmp"
        pd.DataFrame(self.rows).to_csv(temporary, index=False)
        os.replace(temporary, self.path)


def train(spec, run_dir=None, verbose=1):
    """Run a spec: validate it, build the model, train every stage, and
    write the run folder. Returns a `TrainResult`.

    Run folder: `spec.json` (the resolved spec), `history.csv`,
    `lr_per_step.csv`, `best.weights.h5`, `model.keras` (the final model, on
    the best weights), `curves.png` and `lr.png`.
    """
    spec = load_spec(spec)
    run_dir = os.path.abspath(run_dir or os.path.join("runs", spec["name"]))
    os.makedirs(run_dir, exist_ok=True)
    paths = {name: os.path.join(run_dir, name) for name in (
        "spec.json", "history.csv", "lr_per_step.csv", "best.weights.h5", "model.keras",
        "curves.png", "lr.png")}
    with open(paths["spec.json"], "w") as f:
        json.dump(spec, f, indent=2)

    keras.utils.set_random_seed(spec["seed"])
    strategy = _strategy(spec.get("distribute"))
    if spec["solver"]["mixed_precision"]:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        with strategy.scope():
            model = build_network(spec)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    _check_layer_selectors(model, spec)
    if verbose:
        model.summary(line_length=100)

    stages = stages_of(spec)
    first_solver = stages[0][3]
    early = first_solver.get("early_stopping", {})
    best = BestWeights(filepath=paths["best.weights.h5"], verbose=verbose, **early)
    run_log = _RunLog(paths["history.csv"])
    epoch = 0
    for index, (name, frozen, slow, solver) in enumerate(stages):
        table, lr_mult, decay_mult = configure_layers(model, frozen, slow, _stage_path(spec, index))
        with strategy.scope():
            compile_stage(model, solver, lr_mult, decay_mult)
        train_data, validation_data, _ = load_data(spec["data"], solver["batch_size"], spec["backbone"])
        if image_shape(train_data) != tuple(model.input_shape[1:]):
            raise SpecError([("$.data", f"images are {image_shape(train_data)} but the model takes "
                              f"{tuple(model.input_shape[1:])}: set data.image_size and data.channels "
                              "(or backbone.input_shape)")])
        steps = int(train_data.cardinality())
        epochs = solver.get("epochs") or math.ceil(solver["max_iter"] / steps)
        if verbose:
            print(f"\nStage {index + 1}/{len(stages)} '{name}': {epochs} epochs of {steps} steps "
                  f"on {strategy.num_replicas_in_sync} device(s), "
                  f"{solver['optimizer']} base_lr={solver['base_lr']} lr_policy={solver['lr_policy']}")
            print(table.to_string(index=False))
        run_log.stage = name
        callbacks = [lr_schedule(solver), run_log]
        if "plateau" in solver:
            callbacks.append(PlateauDecay(verbose=verbose, **solver["plateau"]))
        if "divergence_factor" in solver:
            callbacks.append(DivergenceGuard(solver["divergence_factor"], verbose=verbose))
        if index > 0:
            best.set_state({**best.get_state(), "wait": 0})  # one best over all stages
        callbacks.append(best)
        # shuffle=False: the tf.data pipeline reshuffles every epoch itself.
        model.fit(train_data, validation_data=validation_data, initial_epoch=epoch, shuffle=False,
                  epochs=epoch + epochs, callbacks=callbacks, verbose=verbose)
        epoch += epochs

    model.save(paths["model.keras"])
    history = pd.read_csv(paths["history.csv"])
    lr_per_step = pd.DataFrame(run_log.lr_rows, columns=["stage", "iteration", "lr"])
    lr_per_step.to_csv(paths["lr_per_step.csv"], index=False)
    _plot_curves(history, paths["curves.png"])
    _plot_lr(lr_per_step, paths["lr.png"])
    if verbose:
        print(f"\nBest epoch {best.best_epoch + 1}: {best.monitor}={best.best:.4f}. Run folder: {run_dir}")
    return TrainResult(history, lr_per_step, best.best_epoch, best.monitor, best.best, model, run_dir, paths)


def _strategy(name):
    """The spec's `distribute` strategy; the default one for none."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


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

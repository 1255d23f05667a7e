"""What a run writes for people to open: its CSV files and plots, TensorBoard
event files and an MLflow run; and `plot_runs`, which compares runs."""

import os
import time

import pandas as pd

from callbacks._files import write_atomically
from callbacks.lr_finder import LRFinderResult, suggest_lrs

LR_FIND_COLUMNS = ["stage", "rule", "lr", "loss", "smoothed_loss"]
TENSORBOARD_DIR = "tensorboard"
MLFLOW_STORE = "mlflow.db"  # beside the run folders: one store for every run
MLFLOW_ARTIFACTS = "mlartifacts"


def lr_column(lr_mult):
    """The column of the effective LR of the layers at `lr_mult` (`lr` for 1)."""
    return "lr" if lr_mult == 1 else f"lr_x{lr_mult:g}"


class RunLog:
    """A run folder's `history.csv`, `lr_per_step.csv` and `lr_find.csv`,
    written as the run goes (never through a symbolic link), its plots, and
    its `trackers` (`TensorBoardLog`, `MLflowLog`)."""

    def __init__(self, paths, lr_columns, trackers=()):
        self.paths = paths
        self.lr_columns = lr_columns
        self.trackers = list(trackers)

    def keep_rows(self, lr_rows):
        """Keep the first `lr_rows` rows of lr_per_step.csv: rows past the
        checkpoint belong to an epoch that did not finish."""
        if lr_rows:
            kept = pd.read_csv(self.paths["lr_per_step.csv"]).iloc[:lr_rows]
            write_atomically(self.paths["lr_per_step.csv"], lambda path: kept.to_csv(path, index=False))

    def write(self, history, lr_rows):
        """After every finished epoch: the whole history, the epoch's LR rows."""
        write_atomically(self.paths["history.csv"], lambda path: pd.DataFrame(history).to_csv(path, index=False))
        lr_path = self.paths["lr_per_step.csv"]
        rows = pd.DataFrame(lr_rows, columns=self.lr_columns)
        new = not os.path.exists(lr_path)
        # Appended, not rewritten, each epoch; O_NOFOLLOW refuses a planted link.
        fd = os.open(lr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a", newline="") as f:
            rows.to_csv(f, header=new, index=False)
        for tracker in self.trackers:
            tracker.epoch(history[-1], rows)

    def lr_found(self, stage, result):
        """A stage's LR range test, in lr_find.csv and lr_find.png."""
        write_lr_find(self.paths["lr_find.csv"], self.paths["lr_find.png"], stage, result)
        for tracker in self.trackers:
            tracker.lr_found(stage, result)

    def history(self):
        return _read_csv(self.paths["history.csv"], ["epoch", "stage"])

    def lr_per_step(self):
        return _read_csv(self.paths["lr_per_step.csv"], self.lr_columns)

    def plot(self):
        if os.path.exists(self.paths["history.csv"]):
            plot_curves(self.history(), self.paths["curves.png"])
            plot_lr(self.lr_per_step(), self.paths["lr.png"])

    def close(self, status):
        """The trackers' end of the run: `status` is MLflow's word for it
        (FINISHED, KILLED by Ctrl-C, or FAILED)."""
        for tracker in self.trackers:
            tracker.close(status)


def write_lr_find(csv_path, png_path, stage, result):
    """Stage `stage`'s LR range test `result` into the CSV `csv_path` (in
    place of that stage's earlier rows), and the PNG `png_path` drawn
    again with every stage's sweep in the CSV."""
    found = (pd.read_csv(csv_path, dtype={"stage": str, "rule": str}) if os.path.exists(csv_path)
             else pd.DataFrame(columns=LR_FIND_COLUMNS))
    rows = result.history.assign(stage=stage, rule=result.rule)[LR_FIND_COLUMNS]
    found = pd.concat([found[found["stage"] != stage], rows]) if len(found) else rows
    write_atomically(csv_path, lambda temporary: found.to_csv(temporary, index=False))
    plot_lr_find(found, png_path)


def _read_csv(path, columns):
    """The CSV's rows; none (with `columns`) before the first finished epoch."""
    return pd.read_csv(path) if os.path.exists(path) else pd.DataFrame(columns=columns)


def _is_lr(column):
    return column == "lr" or column.startswith("lr_x")


def _is_metric(column):
    """A history column that Keras logged (not epoch, stage, LR or the best so far)."""
    return column not in ("epoch", "stage") and not _is_lr(column) and not column.startswith("best_")


# --- trackers ---------------------------------------------------------------


class TensorBoardLog:
    """TensorBoard event files in `<run folder>/tensorboard/{train,validation}`,
    as Keras's `TensorBoard` callback lays them out: `epoch_<metric>` per
    epoch (epochs numbered across stages; train and validation on one
    chart), `epoch_stage` (the stage's number: its steps are the stage
    boundaries), and every LR column per step (iterations numbered across
    stages). A resumed run adds event files; TensorBoard reads them all."""

    def __init__(self, run_dir, stage_names):
        import tensorflow as tf

        self._tf = tf
        folder = os.path.join(run_dir, TENSORBOARD_DIR)
        self.train = tf.summary.create_file_writer(os.path.join(folder, "train"))
        self.validation = tf.summary.create_file_writer(os.path.join(folder, "validation"))
        self.stage_names = list(stage_names)

    def epoch(self, row, lr_rows):
        tf, epoch = self._tf, int(row["epoch"])
        with self.train.as_default():
            for key, value in row.items():
                if _is_metric(key) and not key.startswith("val_"):
                    tf.summary.scalar(f"epoch_{key}", value, step=epoch)
            tf.summary.scalar("epoch_stage", self.stage_names.index(row["stage"]) + 1, step=epoch)
            for column in (c for c in lr_rows.columns if _is_lr(c)):
                for iteration, value in zip(lr_rows["iteration"], lr_rows[column]):
                    if pd.notna(value):
                        tf.summary.scalar(column, value, step=int(iteration))
        with self.validation.as_default():
            for key, value in row.items():
                if _is_metric(key) and key.startswith("val_"):
                    tf.summary.scalar(f"epoch_{key[4:]}", value, step=epoch)
        self.train.flush()
        self.validation.flush()

    def lr_found(self, stage, result):
        lr = result.suggestions.get(result.rule)
        found = "no LR lowered the loss" if lr is None else f"base_lr {lr:.4g} ({result.rule})"
        with self.train.as_default():
            self._tf.summary.text("lr_finder", f"stage '{stage}': {found}; {result.stop_reason}",
                                  step=self.stage_names.index(stage))

    def close(self, status):
        self.train.close()
        self.validation.close()


def mlflow_store(run_dir):
    """The MLflow tracking URI of a run folder: a SQLite file beside it."""
    return "sqlite:///" + os.path.join(os.path.dirname(os.path.abspath(run_dir)), MLFLOW_STORE)


class MLflowLog:
    """An MLflow run in the SQLite store beside the run folder
    (`mlflow_store`): the spec as params, the epoch metrics and LRs as
    metrics, and at the end the run folder's files as artifacts (its
    `checkpoint/` left out). The experiment is the spec's name; the run is
    named after the run folder, and a resumed run goes on in the same
    MLflow run."""

    def __init__(self, run_dir, spec_json, resumed):
        from mlflow import MlflowClient

        self.run_dir = os.path.abspath(run_dir)
        self.client = MlflowClient(tracking_uri=mlflow_store(run_dir))
        experiment = self.client.get_experiment_by_name(spec_json["name"])
        if experiment is None:
            artifacts = os.path.join(os.path.dirname(self.run_dir), MLFLOW_ARTIFACTS, spec_json["name"])
            experiment_id = self.client.create_experiment(spec_json["name"], artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        quote = "'" if "'" not in self.run_dir else '"'
        previous = [run for run in self.client.search_runs(
                        [experiment_id], f"tags.run_dir = {quote}{self.run_dir}{quote}",
                        order_by=["attributes.start_time DESC"], max_results=1)
                    if run.data.tags.get("run_dir") == self.run_dir]  # (a path with both quotes matches none)
        if resumed and previous:
            self.run_id = previous[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=os.path.basename(self.run_dir),
                                         tags={"run_dir": self.run_dir})
            self.run_id = run.info.run_id
            self.client.log_batch(self.run_id, params=_params(spec_json))

    def epoch(self, row, lr_rows):
        from mlflow.entities import Metric

        now, epoch = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(key, float(value), now, epoch) for key, value in row.items()
                   if _is_metric(key) and pd.notna(value)]
        for column in (c for c in lr_rows.columns if _is_lr(c)):
            metrics += [Metric(column, float(value), now, int(iteration))
                        for iteration, value in zip(lr_rows["iteration"], lr_rows[column]) if pd.notna(value)]
        self.client.log_batch(self.run_id, metrics=metrics)  # split to MLflow's limit by its client

    def lr_found(self, stage, result):
        from mlflow.entities import Param

        if result.suggestions:  # a param cannot change: a sweep that found nothing may run again
            lr = f"{result.suggestions[result.rule]:.6g}"
            self.client.log_batch(self.run_id, params=[Param(f"{stage}.base_lr_found", lr)])

    def close(self, status):
        for name in sorted(os.listdir(self.run_dir)):
            path = os.path.join(self.run_dir, name)
            if name == "checkpoint" or name.startswith("."):
                continue
            if os.path.isdir(path):
                self.client.log_artifacts(self.run_id, path, artifact_path=name)
            else:
                self.client.log_artifact(self.run_id, path)
        self.client.set_terminated(self.run_id, status)


def _params(spec_json):
    """The spec as MLflow params, one per leaf keyed by its dotted path
    (`solver.base_lr`; `stages.1.solver.base_lr` with several stages)."""
    from mlflow.entities import Param

    spec_json = dict(spec_json)
    if len(spec_json["stages"]) == 1:  # as the user wrote it: no `stages`
        stage = spec_json.pop("stages")[0]
        spec_json.update({key: value for key, value in stage.items() if key != "name"})
    return [Param(key, str(value)[:6000]) for key, value in _leaves(spec_json)]


def _leaves(data, prefix=""):
    """`(dotted path, value)` of every leaf of JSON data; a list of plain
    values is one leaf."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list) and any(isinstance(item, (dict, list)) for item in data):
        items = enumerate(data)
    else:
        yield prefix, data
        return
    for key, value in items:
        yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))


# --- plots ------------------------------------------------------------------


def plot_curves(history, path):
    """Loss and accuracy per epoch, train and validation, stage boundaries dotted."""
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
    _save(figure, path)


def plot_lr(lr_per_step, path):
    """The effective LR of every `lr_mult` group per iteration, across stages."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for column in (c for c in lr_per_step.columns if _is_lr(c)):
        label = "base (lr_mult 1)" if column == "lr" else f"lr_mult {column[4:]}"
        axes.plot(lr_per_step["iteration"], lr_per_step[column], label=label)
    for boundary in lr_per_step.groupby("stage", sort=False)["iteration"].min().iloc[1:]:
        axes.axvline(boundary - 0.5, color="gray", linestyle=":")
    axes.set_xlabel("iteration")
    axes.set_ylabel("learning rate")
    axes.set_yscale("log")
    axes.legend()
    figure.tight_layout()
    _save(figure, path)


def plot_lr_find(found, path):
    """Every stage's LR range test in `found` (lr_find.csv's rows), one
    panel a stage, each rule's suggestion marked."""
    from matplotlib.figure import Figure

    stages = list(dict.fromkeys(found["stage"]))
    figure = Figure(figsize=(7 * len(stages), 4.5))
    for position, stage in enumerate(stages, start=1):
        rows = found[found["stage"] == stage]
        history = rows[["lr", "loss", "smoothed_loss"]].reset_index(drop=True)
        result = LRFinderResult(history, suggest_lrs(history), rows["rule"].iloc[0], "")
        result.draw(figure.add_subplot(1, len(stages), position), title=f"LR range test, stage '{stage}'")
    figure.tight_layout()
    _save(figure, path)


def plot_runs(run_dirs, path):
    """The curves of several run folders in one PNG `path`, to compare
    them: loss, accuracy (validation solid, train dashed) and the base LR,
    each run named by its folder as given."""
    from matplotlib.figure import Figure

    runs = {}
    for run_dir in run_dirs:
        csv = os.path.join(run_dir, "history.csv")
        if not os.path.isfile(csv):
            raise FileNotFoundError(f"{run_dir} has no history.csv: not a zoo run folder, or no epoch finished yet")
        runs[os.path.normpath(run_dir)] = (pd.read_csv(csv), _read_csv(
            os.path.join(run_dir, "lr_per_step.csv"), ["iteration", "lr"]))
    metrics = [m for m in ("loss", "accuracy") if any(m in history for history, _ in runs.values())]
    figure = Figure(figsize=(6 * (len(metrics) + 1), 4.5))
    for position, metric in enumerate(metrics, start=1):
        axes = figure.add_subplot(1, len(metrics) + 1, position)
        for color, (name, (history, _)) in zip(_colors(), runs.items()):
            epochs = history["epoch"] + 1
            if f"val_{metric}" in history:
                axes.plot(epochs, history[f"val_{metric}"], color=color, label=f"{name} (validation)")
            if metric in history:
                axes.plot(epochs, history[metric], color=color, linestyle="--", alpha=0.6, label=f"{name} (train)")
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend(fontsize="small")
    axes = figure.add_subplot(1, len(metrics) + 1, len(metrics) + 1)
    for color, (name, (_, lr)) in zip(_colors(), runs.items()):
        axes.plot(lr["iteration"], lr["lr"], color=color, label=name)
    axes.set_xlabel("iteration")
    axes.set_yscale("log")
    axes.set_title("base learning rate")
    axes.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, path)
    return path


def _colors():
    from matplotlib import rcParams

    while True:
        yield from rcParams["axes.prop_cycle"].by_key()["color"]


def _save(figure, path):
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))

"""Hyperparameter search over spec fields with keras-tuner: `zoo.tune(spec)`."""

import dataclasses
import json
import math
import os

import keras
import keras_tuner as kt
import pandas as pd

from callbacks._files import write_atomically
from zoo.runner import Runner
from zoo.search_space import declare, flat, refined_space, trial_spec, with_defaults
from zoo.sections import AUTO, spec_from_json, with_base_lr
from zoo.spec import SpecError, naming, validated_json
from zoo.train import CACHE_DIR, write_json

TUNERS = {
    "random": kt.RandomSearch,
    "hyperband": kt.Hyperband,
    "bayesian": kt.BayesianOptimization,
    "grid": kt.GridSearch,
}
DIVERGED = "diverged: "
# The metric (and trials.csv column) of the LR that a first stage's base_lr "auto" found.
FOUND_LR = "base_lr_found"


class TuneError(RuntimeError):
    """A search that produced no completed trial."""


@dataclasses.dataclass
class TuneResult:
    """What `tune` found.

    Attributes:
        trials: DataFrame, one row per trial: trial_id, status, score, epochs,
            one column per hyperparameter, and the message of a failed trial.
        best_spec: The best trial's complete spec, without `search`.
        best_score: Its objective value.
        directory: The search folder; `paths` names the files in it.
    """

    trials: pd.DataFrame
    best_spec: dict
    best_score: float
    directory: str
    paths: dict


class SpecHyperModel(kt.HyperModel):
    """Builds and trains a trial's spec with the same `Runner` as `zoo train`."""

    def __init__(self, spec_json, search, unsafe=False, cache_dir=None):
        super().__init__()
        self.spec_json = spec_json
        self.search = search
        self.unsafe = unsafe
        self.cache_dir = cache_dir  # `data.cache: "file"`'s, shared by every trial
        self.oracle = None  # the tuner's, set by `make_tuner`: a Hyperband trial reads its parent's LR
        self._builds = {}  # trial values -> builds so far, to number a trial's executions

    def build(self, hp):
        declare(hp, self.search.space)
        # The spec and its space were checked as a whole before any trial.
        spec = spec_from_json(trial_spec(self.spec_json, hp))
        # Each execution of a trial trains with its own seed (seed, seed + 1,
        # ...), so that `executions_per_trial` averages over something.
        values = json.dumps(hp.values, sort_keys=True, default=str)
        execution = self._builds.get(values, 0)
        self._builds[values] = execution + 1
        spec = dataclasses.replace(spec, seed=spec.seed + execution % self.search.executions_per_trial)
        self._auto = spec.stages[0].solver.base_lr == AUTO
        self._runner = Runner(spec, divergence_factor=self.search.divergence_factor, unsafe=self.unsafe,
                              cache_dir=self.cache_dir)
        return self._runner.build()

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        """Train every stage of the trial's spec; Hyperband's `epochs` budget
        (single-stage specs only) replaces the spec's epochs."""
        initial_epoch = kwargs.get("initial_epoch", 0)
        runner = self._runner
        # The classic rule compares with a fresh classifier's loss, ln(classes);
        # a Hyperband trial resuming from trained weights starts far below it.
        baseline = math.log(runner.spec.head.classes) if initial_epoch else None
        parent = hp.values.get("tuner/trial_id")
        if initial_epoch and parent is not None and self._auto:
            # It goes on from its parent's weights: at its parent's LR, not at one found anew.
            runner.spec = with_base_lr(runner.spec, 0, self.oracle.get_trial(parent).metrics.get_last_value(
                FOUND_LR))
            runner.enter_stage(0)
        outcome = runner.run(callbacks=list(callbacks), epochs=kwargs.get("epochs"), initial_epoch=initial_epoch,
                             baseline=baseline, verbose=kwargs.get("verbose", 1))
        if outcome.diverged:
            raise kt.errors.FailedTrialError(DIVERGED + outcome.diverged)
        history = keras.callbacks.History()
        for row in outcome.history:
            for key, value in row.items():
                if key not in ("epoch", "stage"):
                    history.history.setdefault(key, []).append(value)
        if self._auto:
            # The LR an "auto" first stage trained at, kept with the trial (trials.csv).
            history.history[FOUND_LR] = [runner.spec.stages[0].solver.base_lr] * len(outcome.history)
        return history


def make_tuner(spec_json, search, directory, project_name, unsafe=False):
    """The keras-tuner tuner of a `Search` section. A `data.cache: "file"`
    lives in `directory/cache`, for every trial of every search there: the
    first trial of a data set writes it, the others read it."""
    hypermodel = SpecHyperModel(spec_json, search, unsafe, cache_dir=os.path.join(directory, CACHE_DIR))
    common = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(search.objective, search.goal),
        executions_per_trial=search.executions_per_trial,
        # keras-tuner reads 0 as "no seed" (a fresh random one): shift by one.
        seed=search.seed + 1,
        directory=directory,
        project_name=project_name,
        overwrite=False,  # an interrupted search resumes where it stopped
        # Diverged trials are expected in a search; do not abort on a run of them.
        max_consecutive_failed_trials=search.max_trials + 1,
    )
    if search.tuner == "hyperband":
        tuner = kt.Hyperband(max_epochs=search.max_epochs, factor=search.factor, **common)
    else:
        tuner = TUNERS[search.tuner](max_trials=search.max_trials, **common)
    hypermodel.oracle = tuner.oracle
    return tuner


def trials_table(tuner, spec_json):
    """Every trial of `tuner` as a DataFrame; `epochs` is what the trial
    trained (Hyperband: its budget less the epochs it resumed from), and
    `base_lr_found` the LR a first stage's base_lr "auto" found."""
    rows = []
    for trial in tuner.oracle.trials.values():
        message = (trial.message or "").strip().splitlines()
        message = message[-1] if message else ""
        status = trial.status
        if DIVERGED in message:
            status, message = "DIVERGED", message[message.index(DIVERGED) + len(DIVERGED):]
        values = dict(trial.hyperparameters.values)
        if "tuner/epochs" in values:
            epochs = values["tuner/epochs"] - values.get("tuner/initial_epoch", 0)
        else:
            stages = spec_from_json(trial_spec(spec_json, trial.hyperparameters)).stages
            epochs = sum(stage.solver.epochs or 0 for stage in stages) or None
        values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        if trial.metrics.exists(FOUND_LR):
            values[FOUND_LR] = trial.metrics.get_last_value(FOUND_LR)
        rows.append({"trial_id": trial.trial_id, "status": status, "score": trial.score,
                     "epochs": epochs, **values, "message": message})
    table = pd.DataFrame(rows)
    return table.sort_values("trial_id", key=lambda ids: ids.astype(int), ignore_index=True)


def tune(spec, directory=None, refine=False, verbose=1, unsafe=False):
    """Run the spec's `search` with keras-tuner and write its results.

    Folder (default `runs/<name>-search`): keras-tuner's own trial files
    (the same call resumes an interrupted search), `trials.csv`,
    `best_spec.json` (the best trial's complete spec, `search` removed),
    `scores.png` (score against the most influential hyperparameters) and,
    with `data.cache: "file"`, `cache/`, shared by the trials.
    With `refine`, a second search narrowed around the first one's best
    values follows, and its best wins if it is better. Before any trial,
    the spec with every hyperparameter at its first value gets the checks
    of `zoo validate` (model, weights, data). `unsafe` is `train`'s.

    Distributed: run the same call in a chief and in workers with
    keras-tuner's variables (`KERASTUNER_TUNER_ID`: "chief" or a worker
    name; `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`). Workers run the
    trials and return `None`; the chief writes the results.
    """
    spec_json = validated_json(spec)
    if "search" not in spec_json:
        name = None if isinstance(spec, dict) else os.fspath(spec)
        raise SpecError([("$.search", "required by `zoo tune`: the space to search")], name)
    typed = spec_from_json(spec_json)
    search = typed.search
    with naming(spec):
        Runner(spec_from_json(with_defaults(spec_json, search.space)), unsafe=unsafe).build()
    directory = os.path.abspath(directory or os.path.join("runs", f"{typed.name}-search"))
    os.makedirs(directory, exist_ok=True)
    if refine and "KERASTUNER_ORACLE_IP" in os.environ:
        raise SpecError([("$.search", "--refine is not available in keras-tuner's chief/worker mode")])
    tuner = _search(spec_json, search, directory, "search", verbose, unsafe)
    if _is_worker():
        # The chief holds the oracle and writes the results.
        if verbose:
            print(f"Worker {os.environ['KERASTUNER_TUNER_ID']}: no trial left to run.")
        return None
    table = trials_table(tuner, spec_json)
    if refine:
        best = tuner.get_best_hyperparameters(1)[0].values
        narrowed = dataclasses.replace(search, space=refined_space(search.space, best))
        refined = _search(spec_json, narrowed, directory, "refine", verbose, unsafe)
        refined_table = trials_table(refined, spec_json).assign(search="refine")
        table = pd.concat([table.assign(search="coarse"), refined_table], ignore_index=True)
        if _better(refined, tuner):
            tuner = refined
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best_spec = trial_spec(spec_json, best_hp)
    best_score = tuner.oracle.get_best_trials(1)[0].score
    paths = {name: os.path.join(directory, name) for name in ("trials.csv", "best_spec.json", "scores.png")}
    write_atomically(paths["trials.csv"], lambda path: table.to_csv(path, index=False))
    write_json(paths["best_spec.json"], best_spec)
    _plot_scores(table, search.space, paths["scores.png"], tuner.oracle.objective.name)
    if verbose:
        print(table.drop(columns=["message"]).to_string(index=False))
        print(f"\nBest {tuner.oracle.objective.name}: {best_score:.4f}. Best spec: {paths['best_spec.json']}")
    return TuneResult(table, best_spec, best_score, directory, paths)


def _is_worker():
    """Whether this process is a keras-tuner worker (KERASTUNER_* variables)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")


def _search(spec_json, search, directory, project_name, verbose, unsafe):
    tuner = make_tuner(spec_json, search, directory, project_name, unsafe)
    if verbose:
        tuner.search_space_summary()
    tuner.search(verbose=1 if verbose else 0)
    if _is_worker():
        return tuner
    completed = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    if not completed:
        first = next(iter(tuner.oracle.trials.values()), None)
        detail = (first.message or "").strip() if first else "no trial ran"
        raise TuneError(f"Every trial of the search in {directory}/{project_name} failed. "
                        f"The first trial's error:\n{detail}")
    return tuner


def _better(candidate, incumbent):
    a = candidate.oracle.get_best_trials(1)[0].score
    b = incumbent.oracle.get_best_trials(1)[0].score
    return a > b if incumbent.oracle.objective.direction == "max" else a < b


def _plot_scores(table, space, path, objective):
    """Score against the (up to two) hyperparameters most rank-correlated with it."""
    from matplotlib.figure import Figure

    done = table[table["status"] == "COMPLETED"]
    space = flat(space)
    names = [n for n in done.columns if n in space]
    def numeric(name):
        values = done[name]
        if pd.api.types.is_numeric_dtype(values):
            return values.astype(float)
        return pd.Series(pd.factorize(values.astype(str), sort=True)[0], index=done.index, dtype=float)

    def influence(name):
        values = numeric(name)
        if len(done) < 3 or values.nunique() < 2:
            return 0.0
        return abs(values.corr(done["score"].astype(float), method="spearman"))

    chosen = sorted(names, key=influence, reverse=True)[:2] or ["trial_id"]
    figure = Figure(figsize=(5.5 * len(chosen), 4))
    for position, name in enumerate(chosen, start=1):
        axes = figure.add_subplot(1, len(chosen), position)
        values = done[name] if pd.api.types.is_numeric_dtype(done[name]) else done[name].astype(str)
        axes.scatter(values, done["score"])
        if name in space and space[name].get("sampling") == "log":
            axes.set_xscale("log")
        axes.set_xlabel(name)
        axes.set_ylabel(objective)
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))

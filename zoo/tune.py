"""Hyperparameter search over spec fields with keras-tuner: `zoo.tune(spec)`."""

import contextlib
import copy
import dataclasses
import json
import math
import os

import keras
import keras_tuner as kt
import pandas as pd

from callbacks import DivergenceGuard, PlateauDecay
from zoo.data import load_data
from zoo.model import build_network, compile_stage, configure_layers
from zoo.spec import (
    SpecError,
    load_spec,
    lr_schedule,
    read_spec,
    resolve,
    schema_errors,
    semantic_errors,
    stages_of,
)

TUNERS = {
    "random": kt.RandomSearch,
    "hyperband": kt.Hyperband,
    "bayesian": kt.BayesianOptimization,
    "grid": kt.GridSearch,
}
SEARCH_DEFAULTS = {
    "tuner": "random",
    "objective": "val_accuracy",
    "max_trials": 10,
    "executions_per_trial": 1,
    "max_epochs": 10,
    "factor": 3,
    "divergence_factor": 3.0,
    "seed": 0,
}
DIVERGED = "diverged: "


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


# --- the search space ---------------------------------------------------

def set_path(spec, path, value):
    """`spec` with the field at dotted `path` set to `value` (a copy).

    A number addresses a list item: `frozen.0.up_to`, `head.hidden.0`."""
    spec = copy.deepcopy(spec)
    node = spec
    keys = path.split(".")
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ValueError(f"{path!r}: {key!r} is not an item of a list of {len(node)}")
            key = int(key)
        elif not isinstance(node, dict):
            raise ValueError(f"{path!r}: {'.'.join(keys[:depth])!r} is not an object or a list")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict):
                node.setdefault(key, {})
            node = node[key]
    return spec


def _hyperparameter_errors(hp, where):
    kind = hp["type"]
    errors = []
    if kind in ("float", "int"):
        for key in ("min", "max"):
            if key not in hp:
                errors.append((f"{where}.{key}", f"required for a {kind} range"))
        if not errors and hp["min"] >= hp["max"]:
            errors.append((where, f"`min` must be < `max`; got {hp['min']} and {hp['max']}"))
        if hp.get("sampling", "linear") != "linear" and hp.get("min", 1) <= 0:
            errors.append((f"{where}.sampling", f"{hp['sampling']} sampling needs min > 0"))
        if kind == "int" and not all(float(hp.get(k, 0)).is_integer() for k in ("min", "max", "step")):
            errors.append((where, "an int range needs integer min, max and step"))
    if kind == "choice" and "values" not in hp:
        errors.append((f"{where}.values", "required for a choice"))
    if "branches" in hp:
        if kind != "choice":
            errors.append((f"{where}.branches", "only for a choice"))
        else:
            for value in hp["branches"]:
                if value not in [str(v) for v in hp.get("values", [])]:
                    errors.append((f"{where}.branches.{value}", f"{value!r} is not among the choice's values"))
    return errors


def _extremes(hp):
    """The values of a hyperparameter that the schema must accept."""
    if hp["type"] in ("float", "int"):
        return [hp["min"], hp["max"]]
    if hp["type"] == "boolean":
        return [False, True]
    return list(hp["values"])


def _default(hp):
    return _extremes(hp)[0]


def search_errors(spec, base_dir):
    """Every problem with the `search` section, found before any trial runs:
    paths the spec cannot have and values its schema or rules reject."""
    base = {k: v for k, v in spec.items() if k != "search"}
    errors = []

    def check(space, context, where):
        for name, hp in space.items():
            here = f"{where}[{json.dumps(name)}]"
            problems = _hyperparameter_errors(hp, here)
            errors.extend(problems)
            if problems:
                continue
            for value in _extremes(hp):
                try:
                    candidate = set_path(context, name, value)
                except ValueError as error:
                    errors.append((here, str(error)))
                    break
                candidate = _with_defaults(candidate, hp.get("branches", {}).get(str(value), {}))
                found = schema_errors(candidate)
                if not found:
                    found = semantic_errors(candidate, base_dir)
                errors.extend((here, f"{value!r} gives {path}: {message}") for path, message in found)
            for value, branch in hp.get("branches", {}).items():
                branch_context = _with_defaults(set_path(context, name, _typed(hp, value)), branch)
                check(branch, branch_context, f"{here}.branches.{value}")

    check(spec["search"]["space"], base, "$.search.space")
    if spec.get("stages") and spec["search"].get("tuner") == "hyperband":
        errors.append(("$.search.tuner", "hyperband budgets epochs of one stage; "
                                         "search a multi-stage spec with random, bayesian or grid"))
    return list(dict.fromkeys(errors))


def _with_defaults(spec, space):
    """`spec` with every well-formed hyperparameter of `space` at its first value."""
    for name, hp in space.items():
        if not _hyperparameter_errors(hp, ""):
            spec = set_path(spec, name, _default(hp))
    return spec


def _typed(hp, key):
    """The choice value whose string form is the branch key `key`."""
    return next(v for v in hp["values"] if str(v) == key)


def declare(hp, space, parent=None):
    """Declare `space` on keras-tuner's `hp`; branches as conditional scopes."""
    for name, config in space.items():
        scope = hp.conditional_scope(*parent) if parent else contextlib.nullcontext()
        with scope:
            kind = config["type"]
            if kind == "float":
                hp.Float(name, config["min"], config["max"], step=config.get("step"),
                         sampling=config.get("sampling", "linear"))
            elif kind == "int":
                hp.Int(name, int(config["min"]), int(config["max"]), step=int(config.get("step", 1)),
                       sampling=config.get("sampling", "linear"))
            elif kind == "boolean":
                hp.Boolean(name)
            else:
                hp.Choice(name, config["values"])
        for value, branch in config.get("branches", {}).items():
            declare(hp, branch, (name, [_typed(config, value)]))


def trial_spec(spec, hp):
    """The spec with a trial's active hyperparameter values, without `search`."""
    result = {k: v for k, v in spec.items() if k != "search"}
    for name, value in hp.values.items():
        if not name.startswith("tuner/") and hp.is_active(name):
            result = set_path(result, name, value)
    return result


# --- running ------------------------------------------------------------

class SpecHyperModel(kt.HyperModel):
    """Builds and trains the model of a spec with a trial's values."""

    def __init__(self, spec):
        super().__init__(name=spec.get("name", "zoo"))
        self.spec = spec
        self.search = {**SEARCH_DEFAULTS, **spec["search"]}

    def build(self, hp):
        declare(hp, self.spec["search"]["space"])
        spec = load_spec(trial_spec(self.spec, hp))
        keras.utils.set_random_seed(spec["seed"])
        model = build_network(spec)
        self._trial = spec
        return self._compile_stage(model, 0)

    def _compile_stage(self, model, index):
        _, frozen, slow, solver = stages_of(self._trial)[index]
        path = ["stages", index] if self._trial.get("stages") else []
        _, lr_mult, decay_mult = configure_layers(model, frozen, slow, path)
        return compile_stage(model, solver, lr_mult, decay_mult)

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        """Train every stage of the trial's spec; Hyperband's `epochs` budget
        (single-stage specs only) replaces the spec's epochs."""
        spec = self._trial
        # The classic rule compares with a fresh classifier's loss, ln(classes);
        # a Hyperband trial resuming from trained weights starts far below it.
        baseline = math.log(spec["head"]["classes"]) if kwargs.get("initial_epoch") else None
        guard = DivergenceGuard(self.search["divergence_factor"], baseline=baseline, verbose=0)
        combined = keras.callbacks.History()
        epoch = kwargs.get("initial_epoch", 0)
        for index, (_, _, _, solver) in enumerate(stages_of(spec)):
            if index > 0:
                self._compile_stage(model, index)
            train_data, validation_data, _ = load_data(spec["data"], solver["batch_size"], spec["backbone"])
            steps = int(train_data.cardinality())
            epochs = kwargs.get("epochs") or epoch + (
                solver.get("epochs") or math.ceil(solver["max_iter"] / steps))
            ours = [lr_schedule(solver), guard]
            if "plateau" in solver:
                ours.append(PlateauDecay(verbose=0, **solver["plateau"]))
            history = model.fit(train_data, validation_data=validation_data, epochs=epochs,
                                initial_epoch=epoch, shuffle=False,
                                callbacks=ours + list(callbacks), verbose=kwargs.get("verbose", 1))
            if guard.diverged:
                raise kt.errors.FailedTrialError(DIVERGED + guard.reason)
            for key, values in history.history.items():
                combined.history.setdefault(key, []).extend(values)
            epoch = epochs
        return combined


def make_tuner(spec, directory, project_name):
    """The keras-tuner tuner a spec's `search` section declares."""
    search = {**SEARCH_DEFAULTS, **spec["search"]}
    direction = search.get("direction") or ("min" if "loss" in search["objective"] else "max")
    common = dict(
        hypermodel=SpecHyperModel(spec),
        objective=kt.Objective(search["objective"], direction),
        executions_per_trial=search["executions_per_trial"],
        seed=search["seed"],
        directory=directory,
        project_name=project_name,
        overwrite=False,  # an interrupted search resumes where it stopped
        # Diverged trials are expected in a search; do not abort on a run of them.
        max_consecutive_failed_trials=search["max_trials"] + 1,
    )
    if search["tuner"] == "hyperband":
        return kt.Hyperband(max_epochs=search["max_epochs"], factor=search["factor"], **common)
    return TUNERS[search["tuner"]](max_trials=search["max_trials"], **common)


def trials_table(tuner, spec):
    """Every trial of `tuner` as a DataFrame; `epochs` is what the trial
    trained (Hyperband: its budget less the epochs it resumed from)."""
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
            stages = stages_of(trial_spec(spec, trial.hyperparameters))
            epochs = sum(solver.get("epochs") or 0 for *_, solver in stages) or None
        values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        rows.append({"trial_id": trial.trial_id, "status": status, "score": trial.score,
                     "epochs": epochs, **values, "message": message})
    table = pd.DataFrame(rows)
    return table.sort_values("trial_id", key=lambda ids: ids.astype(int), ignore_index=True)


def refined_space(space, best):
    """`space` narrowed around the best values: ranges shrink to a quarter of
    their width (log width under log sampling) centred on the best value."""
    narrowed = {}
    for name, config in space.items():
        config = copy.deepcopy(config)
        if name in best and config["type"] in ("float", "int"):
            low, high, value = config["min"], config["max"], best[name]
            if config.get("sampling", "linear") == "log":
                half = (math.log(high) - math.log(low)) / 8
                low, high = max(low, value * math.exp(-half)), min(high, value * math.exp(half))
            else:
                half = (high - low) / 8
                low, high = max(low, value - half), min(high, value + half)
            if config["type"] == "int":
                low, high = int(math.floor(low)), int(math.ceil(high))
            if low < high:
                config.update(min=low, max=high)
        if "branches" in config:
            config["branches"] = {k: refined_space(v, best) for k, v in config["branches"].items()}
        narrowed[name] = config
    return narrowed


def tune(spec, directory=None, refine=False, verbose=1):
    """Run the spec's `search` with keras-tuner and write its results.

    Folder (default `runs/<name>-search`): keras-tuner's own trial files
    (the same call resumes an interrupted search), `trials.csv`,
    `best_spec.json` (the best trial's complete spec, `search` removed) and
    `scores.png` (score against the most influential hyperparameters).
    With `refine`, a second search narrowed around the first one's best
    values follows, and its best wins if it is better.

    Distributed: run the same call in a chief and in workers with
    keras-tuner's variables (`KERASTUNER_TUNER_ID`: "chief" or a worker
    name; `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`). Workers run the
    trials and return `None`; the chief writes the results.
    """
    spec = _load_search_spec(spec)
    directory = os.path.abspath(directory or os.path.join("runs", f"{spec.get('name', 'zoo')}-search"))
    os.makedirs(directory, exist_ok=True)
    if refine and "KERASTUNER_ORACLE_IP" in os.environ:
        raise SpecError([("$.search", "--refine is not available in keras-tuner's chief/worker mode")])
    tuner = _search(spec, directory, "search", verbose)
    if _is_worker():
        # The chief holds the oracle and writes the results.
        if verbose:
            print(f"Worker {os.environ['KERASTUNER_TUNER_ID']}: no trial left to run.")
        return None
    table = trials_table(tuner, spec)
    if refine:
        best = tuner.get_best_hyperparameters(1)[0].values
        narrowed = copy.deepcopy(spec)
        narrowed["search"]["space"] = refined_space(spec["search"]["space"], best)
        refined = _search(narrowed, directory, "refine", verbose)
        refined_table = trials_table(refined, narrowed).assign(search="refine")
        table = pd.concat([table.assign(search="coarse"), refined_table], ignore_index=True)
        if _better(refined, tuner):
            tuner = refined
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best_spec = trial_spec(spec, best_hp)
    best_score = tuner.oracle.get_best_trials(1)[0].score
    paths = {name: os.path.join(directory, name) for name in ("trials.csv", "best_spec.json", "scores.png")}
    table.to_csv(paths["trials.csv"], index=False)
    with open(paths["best_spec.json"], "w") as f:
        json.dump(best_spec, f, indent=2)
    _plot_scores(table, spec["search"]["space"], paths["scores.png"], tuner.oracle.objective.name)
    if verbose:
        print(table.drop(columns=["message"]).to_string(index=False))
        print(f"\nBest {tuner.oracle.objective.name}: {best_score:.4f}. Best spec: {paths['best_spec.json']}")
    return TuneResult(table, best_spec, best_score, directory, paths)


def _load_search_spec(source):
    """The spec, validated, with its search section checked before any trial."""
    raw, base_dir, name = read_spec(source)
    if "search" not in raw:
        raise SpecError([("$.search", "required by `zoo tune`: the space to search")], name)
    errors = schema_errors(raw) or semantic_errors(raw, base_dir) or search_errors(raw, base_dir)
    if errors:
        raise SpecError(errors, name)
    search = raw["search"]
    resolved = resolve({k: v for k, v in raw.items() if k != "search"}, base_dir)
    resolved["search"] = search
    return resolved


def _is_worker():
    """Whether this process is a keras-tuner worker (KERASTUNER_* variables)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")


def _search(spec, directory, project_name, verbose):
    tuner = make_tuner(spec, directory, project_name)
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
    space = _flat(space)
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
    figure.savefig(path, dpi=100)


def _flat(space):
    """`{name: config}` of every hyperparameter, branches included."""
    flat = {}
    for name, config in space.items():
        flat[name] = config
        for branch in config.get("branches", {}).values():
            flat.update(_flat(branch))
    return flat

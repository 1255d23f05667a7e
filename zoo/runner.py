"""The one loop that trains a spec's stages, behind `zoo train` and every
`zoo tune` trial."""

import dataclasses
import math
import re

import keras
import tensorflow as tf

from callbacks import (BestWeights, DivergenceGuard, PlateauDecay, PreciseBN, find_lr, lr_per_step,
                       recompute_batchnorm)
from zoo.backbones import build_trunk
from zoo.batchnorm import describe_modes, layer_modes, set_modes
from zoo.data import load_data
from zoo.errors import SpecError, first_line, json_path
from zoo.model import HEAD_PREFIX, build_network, compile_stage, configure_layers, selected_layers
from zoo.reports import lr_column
from zoo.sections import AUTO, Stage, to_dict, with_base_lr
from zoo.solver import sized_solver, stage_iterations, stage_warnings
from zoo.spec import schedule_errors

# The Keras dtype policy of each `mixed_precision`: variables stay float32;
# Keras wraps the optimizer in a LossScaleOptimizer for mixed_float16 only
# (float16's narrow range underflows small gradients; bfloat16 has float32's).
DTYPE_POLICIES = {False: "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
# How TensorFlow's kernel errors name each precision's dtype (DT_HALF, DT_BFLOAT16).
_TF_DTYPE_NAMES = {"float16": "half", "bfloat16": "bfloat16"}


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """A stage's place in the run: global epochs `first_epoch ...
    first_epoch + epochs - 1`, of `steps` batches each."""

    index: int
    stage: Stage
    first_epoch: int
    epochs: int
    steps: int

    @property
    def end_epoch(self):
        return self.first_epoch + self.epochs

    @property
    def iterations(self):
        """The stage's length, of which its schedule's percentages are
        shares (`zoo.solver.stage_iterations`)."""
        return stage_iterations(self.stage.solver, self.steps)


@dataclasses.dataclass
class Outcome:
    """What a run did.

    Attributes:
        history: One dict per finished epoch: epoch, stage, the logged
            metrics, `lr` and the best so far.
        best_epoch: The 0-based epoch with the best `monitor`; `best` its value.
        diverged: The `DivergenceGuard`'s reason when it stopped the run,
            else None; `diverged_stage` the index of the stage it stopped.
    """

    history: list
    best_epoch: int
    monitor: str
    best: float
    diverged: str = None
    diverged_stage: int = None


class Runner:
    """Builds a `Spec`'s model and trains its stages, one `fit` a stage.

    Each stage configures its frozen and slow layers, compiles its optimizer
    (driven by the stage's LR schedule), and fits with its callbacks:
    `PlateauDecay` (`plateau`), `DivergenceGuard` (`divergence_factor`) and
    `BestWeights` (`early_stopping`), which keeps one best epoch over the
    whole run. Epochs are numbered across stages, and the data of epoch `e`
    is the same whether a run starts at 0 or resumes at `e`.

    Args:
        spec: A `zoo.sections.Spec`.
        checkpoint: A `zoo.checkpoint.Checkpoint` to write at every epoch
            end, or None.
        best_path: Where `BestWeights` writes the best weights, or None.
        on_epoch_end: Called with `(history, new_lr_rows)` after every
            finished epoch, before the checkpoint is written.
        on_lr_found: Called with `(stage_index, LRFinderResult)` after a
            stage's `base_lr: "auto"` LR range test (`self.spec` then
            holds the LR found), also when it found none.
        divergence_factor: The `DivergenceGuard` factor of stages whose
            solver sets none, or None.
        unsafe: Load a `.keras` backbone even if its Lambda layers would
            run code stored in the file.
        cache_dir: The folder of the `data.cache: "file"` cache (a run
            folder's `cache/`), or None when no batches are made.
    """

    def __init__(self, spec, checkpoint=None, best_path=None, on_epoch_end=None, on_lr_found=None,
                 divergence_factor=None, unsafe=False, cache_dir=None):
        self.spec = spec  # its "auto" base_lr values are replaced as they are found
        self.on_lr_found = on_lr_found
        self.unsafe = unsafe
        self.cache_dir = cache_dir
        self.checkpoint = checkpoint
        self.best_path = best_path
        self.on_epoch_end = on_epoch_end
        self.divergence_factor = divergence_factor
        self.strategy = _strategy(spec.distribute)
        self.model = None
        self.trunk = None  # the backbone's `zoo.backbones.Trunk`, built by `build`
        self.no_preset = None  # why a KerasHub backbone's network gets no preset folder
        self.data = None  # the spec's `ImageData`, loaded by `build`
        self.batchnorm_modes = None  # `{layer: (mode, momentum)}` of the stage the model is configured for
        self._stage = None  # (index, lr_mult table) of the stage the model is compiled for

    # --- building -------------------------------------------------------

    def build(self):
        """The spec's network, seeded, in its strategy and precision, with
        every frozen, slow and batchnorm selector checked against it; compiled
        for stage 0. Its data is read and checked against it (`self.data`).

        Everything knowable before training is checked here, and a problem
        is a `SpecError`: `zoo validate` runs this, too."""
        spec = self.spec
        keras.utils.set_random_seed(spec.seed)
        if spec.deterministic:
            # Process-wide, and TensorFlow has no public way back.
            tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_dtype_policy(DTYPE_POLICIES[spec.mixed_precision])
        try:
            with self.strategy.scope():
                self.trunk = build_trunk(spec.backbone, self.unsafe)
                model = build_network(self.trunk, spec.head, spec.name)
            if self.trunk.preset_writer is not None:
                self.no_preset = self.trunk.preset_writer.problem(spec.head)
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
        _check_selectors(model, spec.stages, self.trunk.pretrained)
        self.model = model
        self.data = self._load_data()  # before compiling: a schedule's percentages are shares of the stage
        self.enter_stage(0)
        if spec.mixed_precision and not all(stage.solver.jit_compile for stage in spec.stages):
            # (XLA, under jit_compile, brings kernels of its own.)
            errors = _kernel_errors(model, self.data.image_shape, spec.mixed_precision)
            if errors:
                raise SpecError(errors)
        return model

    def enter_stage(self, index):
        """Configure the model's layers for stage `index` (frozen, slow,
        BatchNormalization modes) and compile its optimizer; returns the
        `lr_mult` table. A `base_lr` still "auto" compiles at
        `lr_finder.min_lr` (the sweep sets its own LR)."""
        stage = self.spec.stages[index]
        path = stage_path(self.spec.stages, index)
        modes = layer_modes(self.model, stage.batchnorm, self.trunk.pretrained, path)
        table, lr_mult, decay_mult = configure_layers(
            self.model, stage.frozen, stage.slow, path,
            also_frozen=[name for name, (mode, _) in modes.items() if mode == "frozen"])
        set_modes(self.model, modes)
        self.batchnorm_modes = modes
        # The schedule's percentages become iterations of the stage (`plan` checks every stage's).
        solver = sized_solver(stage.solver, self.plan()[index].iterations)
        if solver.base_lr == AUTO:
            solver = dataclasses.replace(solver, base_lr=solver.lr_finder.min_lr)
        with self.strategy.scope():
            compile_stage(self.model, solver, lr_mult, decay_mult)
        self._stage = (index, table)
        return table

    def lr_range_test(self, index):
        """The LR range test of stage `index`'s `lr_finder` on the model as
        it is, compiled for the stage (its frozen and slow layers, its
        optimizer), on the data of the stage's first epochs. Weights and
        optimizer are left as they were. Returns the `LRFinderResult`."""
        plan = self.plan()[index]
        solver = plan.stage.solver
        if self._stage[0] != index:
            self.enter_stage(index)
        epochs = math.ceil(solver.lr_finder.num_steps / plan.steps)
        return find_lr(self.model, self.data.train(solver.batch_size, plan.first_epoch, epochs),
                       steps_per_epoch=plan.steps, verbose=0, **to_dict(solver.lr_finder))

    def find_base_lr(self, index, verbose=1):
        """Stage `index`'s `base_lr: "auto"`: the suggestion of its
        `lr_range_test` becomes the stage's `base_lr` in `self.spec`, and
        the model is compiled at it. A sweep where no LR lowered the loss
        is a `SpecError`. Returns the `LRFinderResult`."""
        stage = self.spec.stages[index]
        settings = stage.solver.lr_finder
        if verbose:
            print(f"\nStage {index + 1}/{len(self.spec.stages)} '{stage.name}': base_lr \"auto\": LR range test "
                  f"of {settings.num_steps} steps from {settings.min_lr:g} to {settings.max_lr:g}")
        result = self.lr_range_test(index)
        where = stage_path(self.spec.stages, index) + ["solver"]
        try:
            lr = result.suggested_lr
        except ValueError as error:
            if self.on_lr_found is not None:
                self.on_lr_found(index, result)  # the sweep, to look at
            raise SpecError([(json_path(where + ["base_lr"]), f"\"auto\": {error} The sweep's settings: "
                                                              f"{json_path(where + ['lr_finder'])}.")]) from None
        self.spec = with_base_lr(self.spec, index, lr)
        if self.on_lr_found is not None:
            self.on_lr_found(index, result)
        self.enter_stage(index)
        if verbose:
            others = ", ".join(f"{rule} {value:.3g}" for rule, value in result.suggestions.items()
                               if rule != settings.rule)
            print(f"base_lr = {lr:.4g} ({settings.rule}; {others}); {result.stop_reason}")
        return result

    def _load_data(self):
        """The spec's `ImageData`, checked against the model: its images fit
        the input, and its classes are the head's."""
        spec, trunk = self.spec, self.trunk
        if spec.data.normalization == "backbone" and trunk.preprocess is None:
            raise SpecError([("$.data.normalization", "\"backbone\": the backbone has no preprocessing of its own "
                                                      "(for a preset: it was saved without image_converter.json); "
                                                      "give {\"mean\", \"std\"}, {\"scale\", \"offset\"} "
                                                      "or \"none\"")])
        section = spec.data
        if section.image_size is None:
            # None still when the backbone's input size is not fixed: the files' own size (`load_data`).
            section = dataclasses.replace(section, image_size=trunk.image_size)
        preprocess = trunk.preprocess if spec.data.normalization == "backbone" else None
        data = load_data(section, spec.seed, channels=self.model.input_shape[-1], classes=spec.head.classes,
                         preprocess=preprocess, cache_dir=self.cache_dir)
        errors = _image_errors(self.model, data.image_shape)
        if len(data.class_names) != spec.head.classes:
            names = ", ".join(data.class_names[:10]) + (" ..." if len(data.class_names) > 10 else "")
            errors.append(("$.head.classes", f"{spec.head.classes}, but the data has {len(data.class_names)} "
                                             f"classes ({names})"))
        if errors:
            raise SpecError(errors)
        return data

    def plan(self):
        """The `StagePlan` of every stage (`max_iter` rounds up to whole
        epochs). Raises `SpecError` where a stage's length breaks its
        schedule (stepvalue percentages of a short stage that round to one
        iteration): before the first stage compiles."""
        plans, first, errors = [], 0, []
        for index, stage in enumerate(self.spec.stages):
            steps = self.data.steps(stage.solver.batch_size)
            epochs = stage.solver.epochs or math.ceil(stage.solver.max_iter / steps)
            plan = StagePlan(index, stage, first, epochs, steps)
            errors += schedule_errors(stage.solver, stage_path(self.spec.stages, index) + ["solver"],
                                      plan.iterations)
            plans.append(plan)
            first += epochs
        if errors:
            raise SpecError(errors)
        return plans

    def schedule_warnings(self):
        """`(json_path, message)` of what in each stage's schedule does not
        fit the stage's length (`zoo.solver.stage_warnings`: a policy that
        never steps or steps too often, an early-stopping patience too
        short). They do not stop a run."""
        return [(json_path(stage_path(self.spec.stages, plan.index) + ["solver"] + keys), message)
                for plan in self.plan()
                for keys, message in stage_warnings(plan.stage.solver, plan.iterations, plan.epochs)]

    # --- training -------------------------------------------------------

    def run(self, resume=None, callbacks=(), epochs=None, initial_epoch=0, baseline=None, verbose=1):
        """Train every stage.

        Args:
            resume: A checkpoint state (`Checkpoint.load()`) to go on from,
                or None to start at the first epoch.
            callbacks: More Keras callbacks for every stage's `fit`.
            epochs, initial_epoch: keras-tuner's Hyperband budget for a
                single-stage spec: train epochs `initial_epoch ... epochs - 1`.
            baseline: The `DivergenceGuard` baseline (None: the first loss).
            verbose: 0 or 1: Keras progress bars, the stage tables and messages.

        Returns an `Outcome`.
        """
        if self.model is None:
            self.build()
        plans = self.plan()
        if epochs is not None:
            plans = [dataclasses.replace(plans[0], epochs=epochs)]
        run = _RunState(history=[], lr_rows=[], start=plans[0].first_epoch + initial_epoch)
        start_stage = 0 if resume is None else self._restore(resume, plans, run, verbose)
        best = None
        for plan in plans[start_stage:]:
            run.start = max(run.start, plan.first_epoch)
            index, table = self._stage
            if index != plan.index:
                table = self.enter_stage(plan.index)
            if plan.stage.solver.base_lr == AUTO:
                self.find_base_lr(plan.index, verbose)
                plan = dataclasses.replace(plan, stage=self.spec.stages[plan.index])
            best = self._fit_stage(plan, run, best, callbacks, baseline, table, verbose)
            if run.diverged:
                break
        best_state = run.best_state or {}
        return Outcome(run.history, best_state.get("best_epoch"), plans[0].stage.solver.early_stopping.monitor,
                       best_state.get("best"), run.diverged, plan.index if run.diverged else None)

    def _restore(self, state, plans, run, verbose):
        """Put the model, optimizer and run state back as the checkpoint
        has them; returns the stage to go on with."""
        index = state["stage"]
        self.enter_stage(index)
        self.checkpoint.restore(self.model, state, self.best_path)
        run.history = state["history"]
        run.lr_rows_before_resume = state["lr_rows"]
        run.best_state = state["best"]
        run.reference_loss = state["reference_loss"]
        run.start = state["epoch"]
        if state["stage_ended"]:
            # As after an uninterrupted stage: the model goes on from the best
            # weights so far, their statistics recomputed if the stage asks.
            best = self._best_weights(plans[index], run, None, verbose)
            _restore_best(best, self.model)
            run.best_rewritten = self._recompute_at_stage_end(plans[index], best)
            return index + 1
        run.plateau_state = state["plateau"]
        return index

    def _best_weights(self, plan, run, previous, verbose):
        """The stage's `BestWeights`, carrying on the run's best so far."""
        best = BestWeights(filepath=self.best_path, verbose=verbose,
                           **to_dict(plan.stage.solver.early_stopping))
        if run.best_state is not None:
            stage_starts = run.start == plan.first_epoch  # its patience counts afresh
            best.set_state({**run.best_state, "wait": 0} if stage_starts else run.best_state,
                           weights=previous.best_weights if previous else None)
        return best

    def _fit_stage(self, plan, run, previous_best, extra, baseline, table, verbose):
        stage, solver = plan.stage, plan.stage.solver
        data = self.data
        first = run.start
        if verbose:
            print(f"\nStage {plan.index + 1}/{len(self.spec.stages)} '{stage.name}': epochs "
                  f"{first + 1}-{plan.end_epoch} of {plan.steps} steps on "
                  f"{self.strategy.num_replicas_in_sync} device(s) in {DTYPE_POLICIES[self.spec.mixed_precision]}, "
                  f"{solver.optimizer} base_lr={solver.base_lr} lr_policy={solver.lr_policy}")
            print(table.to_string(index=False))
            print(f"Trainable parameters: {table['trainable_params'].sum():,} of {self.model.count_params():,}")
            if self.batchnorm_modes:
                print(f"BatchNormalization layers: {describe_modes(self.batchnorm_modes)}"
                      + _recompute_note(stage.batchnorm, plan.steps))
        plateau = None
        if solver.plateau is not None:
            plateau = PlateauDecay(verbose=verbose, **to_dict(solver.plateau))
            if run.plateau_state is not None:
                plateau.set_state(run.plateau_state)
        factor = solver.divergence_factor or self.divergence_factor
        guard = None
        if factor:
            guard = DivergenceGuard(factor, baseline=baseline, verbose=verbose)
            if run.reference_loss is not None and baseline is None:
                guard.set_state({"reference_loss": run.reference_loss})
        best = self._best_weights(plan, run, previous_best, verbose)
        run.plateau_state = None
        epoch_end = _EpochEnd(self, run, plan, plateau, guard, best)
        # The guard goes before the callbacks that watch metrics: it blanks
        # the logs of an epoch it stopped, which no one should take as progress.
        callbacks = [_StepLR(run, stage.name, table["lr_mult"]), *filter(None, [guard, plateau]), best, *extra,
                     epoch_end, *filter(None, [self._precise_bn(plan, verbose)])]
        # shuffle=False: the pipeline orders every epoch itself.
        self.model.fit(data.train(solver.batch_size, first, plan.end_epoch - first, verbose=verbose),
                       steps_per_epoch=plan.steps, validation_data=data.validation(solver.batch_size, verbose),
                       initial_epoch=first, epochs=plan.end_epoch, shuffle=False,
                       callbacks=callbacks, verbose=verbose)
        run.best_rewritten = self._recompute_at_stage_end(plan, best)
        if guard is not None and guard.diverged:
            run.diverged = guard.reason
        run.best_state = best.get_state()
        run.reference_loss = guard.reference_loss if guard else run.reference_loss
        return best

    def _precise_bn(self, plan, verbose):
        """`PreciseBN` before every validation (`batchnorm.recompute:
        "epoch"`), or None."""
        if plan.stage.batchnorm.recompute != "epoch":
            return None
        return PreciseBN(*self._recompute_batches(plan), verbose=verbose)

    def _recompute_at_stage_end(self, plan, best):
        """`batchnorm.recompute: true`: the statistics of the best weights,
        which `best` (`BestWeights`) put back at the end of the stage,
        recomputed, and kept as the best weights (in memory and in
        `best.weights.h5`): a later stage or the run's end restores them so.
        Returns whether it rewrote the best weights."""
        if plan.stage.batchnorm.recompute is not True or best.best_epoch is None:
            return False
        recompute_batchnorm(self.model, *self._recompute_batches(plan))
        best.take_model_weights()
        return True

    def _recompute_batches(self, plan):
        """`(batches, num_batches)` that a stage recomputes its statistics
        over: the first batches of the stage's first epoch, the same whether
        the stage was resumed or not."""
        return (self.data.train(plan.stage.solver.batch_size, plan.first_epoch, 1),
                _recompute_count(plan.stage.batchnorm, plan.steps))


@dataclasses.dataclass
class _RunState:
    """What carries from epoch to epoch and stage to stage."""

    history: list
    lr_rows: list
    start: int
    lr_rows_before_resume: int = 0
    best_state: dict = None
    plateau_state: dict = None
    reference_loss: float = None
    diverged: str = None
    # The best weights were rewritten since the last checkpoint (`_recompute_at_stage_end`).
    best_rewritten: bool = False


def lr_columns(spec):
    """The columns of a run's LR rows: `stage`, `iteration` (counted across
    stages), `stage_iteration` (the stage's own, which its schedule reads),
    and the effective LR of every `lr_mult` of the spec's slow groups
    (`lr` is the base LR, `lr_x10` that of layers at `lr_mult` 10)."""
    multipliers = sorted({group.lr_mult for stage in spec.stages for group in stage.slow} - {0.0, 1.0})
    return ["stage", "iteration", "stage_iteration", "lr"] + [lr_column(m) for m in multipliers]


class _StepLR(keras.callbacks.Callback):
    """Records the LR of every step of an epoch, for the base LR and each
    `lr_mult` group of the stage (`multipliers`), and logs the last step's
    as `lr`, `lr_x10`, .... It goes first: a plateau cut at the same epoch
    end comes after."""

    def __init__(self, run, stage_name, multipliers):
        super().__init__()
        self.run, self.stage_name = run, stage_name
        self.multipliers = sorted(set(multipliers) - {0.0, 1.0})

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self._first = self._iterations()

    def on_epoch_end(self, epoch, logs=None):
        last = self._iterations()
        rates = lr_per_step(self.model, self._first, last)
        run_iteration = self.run.lr_rows_before_resume + len(self.run.lr_rows)
        for offset, rate in enumerate(rates):
            self.run.lr_rows.append({"stage": self.stage_name, "iteration": run_iteration + offset,
                                     "stage_iteration": self._first + offset, **self._effective(rate)})
        if logs is not None and len(rates):
            logs.update(self._effective(rates[-1]))

    def _effective(self, rate):
        return {"lr": float(rate), **{lr_column(m): float(rate) * m for m in self.multipliers}}


class _EpochEnd(keras.callbacks.Callback):
    """Goes last: adds the epoch to the history and writes the checkpoint."""

    def __init__(self, runner, run, plan, plateau, guard, best):
        super().__init__()
        self.runner, self.run, self.plan = runner, run, plan
        self.plateau, self.guard, self.best = plateau, guard, best
        self._lr_rows_seen = len(run.lr_rows)

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.diverged:
            return  # a partial epoch, rolled back at the end of the fit
        self.run.history.append({"epoch": epoch, "stage": self.plan.stage.name, **(logs or {})})
        new_rows = self.run.lr_rows[self._lr_rows_seen:]
        self._lr_rows_seen = len(self.run.lr_rows)
        if self.runner.on_epoch_end is not None:
            self.runner.on_epoch_end(self.run.history, new_rows)
        if self.runner.checkpoint is not None:
            ended = self.model.stop_training or epoch + 1 == self.plan.end_epoch
            # The best weights changed this epoch, or at the end of the stage before (`best_rewritten`).
            best_changed, self.run.best_rewritten = self.best.best_epoch == epoch or self.run.best_rewritten, False
            self.runner.checkpoint.save(self.model, best_path=self.runner.best_path,
                                        best_improved=best_changed, state={
                "stage": self.plan.index,
                "epoch": epoch + 1,
                "stage_ended": ended,
                "history": self.run.history,
                "lr_rows": self.run.lr_rows_before_resume + len(self.run.lr_rows),
                "best": self.best.get_state(),
                "plateau": self.plateau.get_state() if self.plateau else None,
                "reference_loss": self.guard.reference_loss if self.guard else self.run.reference_loss,
            })


def _recompute_note(settings, steps):
    """How the stage's `batchnorm.recompute` runs, for its header."""
    if not settings.recompute:
        return ""
    when = "before every validation" if settings.recompute == "epoch" else "at the end of the stage"
    return f"; statistics recomputed {when} over {_recompute_count(settings, steps)} batches"


def _recompute_count(settings, steps):
    """The batches a `batchnorm` section recomputes statistics over: at most an epoch's `steps`."""
    return min(settings.recompute_batches, steps)


def _restore_best(best, model):
    # BestWeights reads its best weights back at train begin and puts them
    # in the model at train end: its own protocol, without a fit.
    best.set_model(model)
    best.on_train_begin()
    best.on_train_end()


def _image_errors(model, image_shape):
    """Whether images of `image_shape` fit `model`'s input and still have
    pixels where the head pools its features."""
    expected = tuple(model.input_shape[1:])
    if any(e is not None and e != got for e, got in zip(expected, image_shape)):
        return [("$.data.image_size", f"images are {image_shape} but the model takes {expected}: set "
                                      "data.image_size and data.channels (or backbone.input_shape)")]
    pool = next((layer for layer in model.layers if layer.name == f"{HEAD_PREFIX}pool"), None)
    if pool is None or None not in expected:
        return []  # a fixed input size was checked when the backbone was built
    try:
        shape = keras.Model(model.input, pool.input).compute_output_shape((1, *image_shape))
    except ValueError as error:
        shape, reason = None, first_line(str(error))
    if shape is None or any(size is not None and size < 1 for size in shape[1:]):
        return [("$.data.image_size", f"images of {image_shape} are too small for the backbone: "
                                      f"{reason if shape is None else f'its features would be {shape[1:]}'}")]
    return []


def _kernel_errors(model, image_shape, precision):
    """A forward and backward pass of one blank image in the model's mixed
    precision: an op that has no kernel of that precision on this machine's
    device fails here, before training, instead of in the first step.
    Inference mode, so that no layer's state (BatchNormalization's moving
    statistics) changes."""
    images = tf.zeros((1, *image_shape))
    try:
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = model(images, training=False)
        tape.gradient(outputs, [images, *model.trainable_variables])
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:
        if _TF_DTYPE_NAMES[precision] not in str(error).lower():
            raise
        op = re.search(r"\{\{node (\w+)\}\}", str(error))
        device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
        return [("$.mixed_precision", f"\"{precision}\": TensorFlow has no {precision} kernel of "
                                      f"{op.group(1) if op else 'an op of the model'} on this machine's {device}; "
                                      "choose another precision (or false), or compile every stage with XLA "
                                      "(solver.jit_compile: true), which has kernels of its own")]
    return []


def _check_selectors(model, stages, pretrained):
    """Every frozen and slow selector of every stage must pick a layer, and
    every `batchnorm.layers` selector a BatchNormalization layer: checked
    before any training, all such errors at once. A `batchnorm` section
    that sets `momentum` or `recompute` needs BatchNormalization layers,
    and `recompute` one in train mode."""
    errors = []
    for index, stage in enumerate(stages):
        path = stage_path(stages, index)
        for key in ("frozen", "slow"):
            for position, group in enumerate(getattr(stage, key)):
                try:
                    selected_layers(model, group, path + [key, position])
                except SpecError as error:
                    errors += error.errors
        try:
            modes = layer_modes(model, stage.batchnorm, pretrained, path)
        except SpecError as error:
            errors += error.errors
            continue
        asked = [key for key, unset in (("momentum", None), ("recompute", False))
                 if getattr(stage.batchnorm, key) is not unset]
        if asked and not modes:
            errors.append((json_path(path + ["batchnorm", asked[0]]), "the model has no BatchNormalization "
                                                                     "layer: remove it"))
        elif stage.batchnorm.recompute and not any(mode == "train" for mode, _ in modes.values()):
            errors.append((json_path(path + ["batchnorm", "recompute"]), "recomputes the statistics of layers in "
                           "train mode, and this stage has none (inference and frozen layers keep theirs): "
                           "set batchnorm.mode (or a layers group's) to \"train\", or remove it"))
    if errors:
        raise SpecError(list(dict.fromkeys(errors)))


def stage_path(stages, index):
    """Where a stage's fields are in the JSON spec (top level for a single stage)."""
    return ["stages", index] if len(stages) > 1 else []


def _strategy(name):
    """The spec's `distribute` strategy; the default one for none."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()

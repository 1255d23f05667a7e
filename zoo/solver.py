"""A `Solver` section to Keras objects: its learning-rate schedule and its optimizer.

A solver may give its schedule's lengths as a share of its stage
(`"stepsize": "40%"`): `sized_solver` turns them into iterations once the
stage's length is known, and `stage_warnings` says what of a schedule
does not fit its stage. These, `schedule_arguments` and `check_schedule`
need no Keras (the spec loader's quick checks run them); `callbacks` and
Keras are imported when a schedule or an optimizer is built.
"""

import dataclasses
import math

from zoo.lr_policies import CYCLIC_MODES, caffe_arguments, cyclic_arguments, in_iterations, warmup_arguments
from zoo.sections import to_dict

# A `step` policy that cuts the LR more often than this within its stage gets a warning.
MAX_STEPS = 10
# So does an early-stopping `patience` under this share of its stage's epochs.
MIN_PATIENCE_SHARE = 0.1

# The `callbacks` schedule class of each kind of policy, by the pure check
# of its arguments (the one its `__init__` runs).
_CHECKS = {"CyclicLR": cyclic_arguments, "CaffeLR": caffe_arguments}


def stage_iterations(solver, steps_per_epoch):
    """A stage's length in iterations, of which its percentages are shares:
    `epochs` epochs of `steps_per_epoch` steps, or `max_iter` when the
    solver gives no `epochs`."""
    return solver.max_iter if solver.epochs is None else solver.epochs * steps_per_epoch


def sized_solver(solver, iterations):
    """`solver` with its schedule's lengths in iterations, for a stage of
    `iterations` iterations.

    Each of `stepsize`, `stepvalue`'s items, `max_iter`, `step_size` and
    `warmup.warmup_steps` given as a percentage becomes that share of
    `iterations`, rounded to the nearest integer and at least 1
    (`zoo.lr_policies.in_iterations`); integers stay as given. `max_iter`,
    where `poly` reaches 0, defaults to `iterations`.

    Example, a stage of 10 epochs of 30 steps (300 iterations):

    ```
    stepsize "40%" -> 120;  stepvalue ["50%", "75%"] -> [150, 225];  max_iter none -> 300
    ```

    Raises `ValueError` naming the argument of a malformed percentage.
    """
    def size(name, value):
        return None if value is None else in_iterations(name, value, iterations)

    warmup = solver.warmup
    if warmup is not None:
        warmup = dataclasses.replace(warmup, warmup_steps=size("warmup_steps", warmup.warmup_steps))
    return dataclasses.replace(
        solver, stepsize=size("stepsize", solver.stepsize), step_size=size("step_size", solver.step_size),
        stepvalue=None if solver.stepvalue is None else tuple(size("stepvalue", v) for v in solver.stepvalue),
        max_iter=iterations if solver.max_iter is None else size("max_iter", solver.max_iter), warmup=warmup)


def stage_warnings(solver, iterations, epochs):
    """What of a stage's schedule does not fit the stage, a stage of
    `iterations` iterations in `epochs` epochs: `(keys, message)` pairs,
    `keys` the field's path inside the solver (`["stepsize"]`).

    A `step`, `multistep` or `sigmoid` policy that never steps within the
    stage (for `sigmoid`: never reaches its midpoint), a `step` policy that
    steps more than `MAX_STEPS` times, stepvalues at or after the stage's
    end, a warmup or a cyclical half-cycle that lasts the whole stage, and
    an early-stopping `patience` under `MIN_PATIENCE_SHARE` of its epochs.
    Each message says the numbers and what to give instead.
    """
    sized = sized_solver(solver, iterations)
    policy, stage = solver.lr_policy, f"the stage's {iterations} iterations"
    found = []
    if policy in ("step", "sigmoid") and sized.stepsize >= iterations:
        never = "the LR never steps" if policy == "step" else "the LR never reaches the sigmoid's midpoint"
        found.append((["stepsize"], f"{never}: stepsize {sized.stepsize} >= {stage}; give it as a share of the "
                                    f"stage, such as \"40%\""))
    elif policy == "step" and (iterations - 1) // sized.stepsize > MAX_STEPS:
        steps = (iterations - 1) // sized.stepsize
        found.append((["stepsize"], f"the LR steps {steps} times in {stage} (every {sized.stepsize}), down to "
                                    f"gamma^{steps} = {sized.gamma ** steps:.2g} x base_lr; give a larger "
                                    f"stepsize, such as \"25%\""))
    if policy == "multistep":
        late = [value for value in sized.stepvalue if value >= iterations]
        if len(late) == len(sized.stepvalue):
            found.append((["stepvalue"], f"the LR never steps: the first stepvalue, {sized.stepvalue[0]}, is "
                                         f">= {stage}; give them as shares of the stage, such as [\"50%\", \"75%\"]"))
        elif late:
            found.append((["stepvalue"], f"{len(late)} of the {len(sized.stepvalue)} stepvalues ({late}) come at "
                                         f"or after the end of {stage} and never apply"))
    if policy in CYCLIC_MODES and sized.step_size >= iterations:
        found.append((["step_size"], f"the LR never reaches max_lr: half a cycle, step_size {sized.step_size}, is "
                                     f">= {stage}; give it as a share of the stage, such as \"25%\" (2 cycles)"))
    if sized.warmup is not None and sized.warmup.warmup_steps >= iterations:
        found.append((["warmup", "warmup_steps"], f"the warmup lasts the whole stage and the policy never starts: "
                                                  f"warmup_steps {sized.warmup.warmup_steps} >= {stage}; give it "
                                                  f"as a share of the stage, such as \"5%\""))
    patience = solver.early_stopping.patience
    if patience is not None and patience < MIN_PATIENCE_SHARE * epochs:
        found.append((["early_stopping", "patience"], f"{patience} is under {MIN_PATIENCE_SHARE:.0%} of the stage's "
                                                      f"{epochs} epochs: a short stall stops the stage early; try "
                                                      f"{math.ceil(MIN_PATIENCE_SHARE * epochs)} or more"))
    return found


def schedule_arguments(solver):
    """The schedule a solver declares, before its warmup: `("CyclicLR",
    keyword arguments)` for a cyclical `lr_policy`, else `("CaffeLR", ...)`."""
    if solver.lr_policy in CYCLIC_MODES:
        return "CyclicLR", {"base_lr": solver.base_lr, "max_lr": solver.max_lr, "step_size": solver.step_size,
                            "mode": solver.lr_policy, "gamma": 1.0 if solver.gamma is None else solver.gamma}
    return "CaffeLR", {"policy": solver.lr_policy, "base_lr": solver.base_lr, "gamma": solver.gamma,
                       "power": solver.power, "stepsize": solver.stepsize, "stepvalue": solver.stepvalue,
                       "max_iter": solver.max_iter}


def check_schedule(solver):
    """Raise the `ValueError` (naming the argument) that `lr_schedule`
    would raise for this solver, without building anything."""
    name, arguments = schedule_arguments(solver)
    _CHECKS[name](**arguments)
    if solver.warmup is not None:
        warmup_arguments(**to_dict(solver.warmup))


def lr_schedule(solver):
    """The schedule a solver declares (`CaffeLR` or `CyclicLR`, wrapped in
    `Warmup` when it has one); it raises `ValueError` naming the argument
    when the policy's parameters are wrong."""
    import callbacks

    name, arguments = schedule_arguments(solver)
    schedule = getattr(callbacks, name)(**arguments)
    if solver.warmup is not None:
        schedule = callbacks.Warmup(schedule, **to_dict(solver.warmup))
    return schedule


def optimizer(solver, lr_mult, decay_mult):
    """The solver's optimizer, driven by its schedule from construction on.

    `lr_mult` and `decay_mult` map variable paths to Caffe's multipliers."""
    from zoo.optimizers import make_optimizer

    options = {key: getattr(solver, key) for key in ("clipnorm", "clipvalue")
               if getattr(solver, key) is not None}
    if solver.optimizer in ("sgd", "rmsprop"):
        options["momentum"] = solver.momentum
    if solver.optimizer == "sgd":
        options["nesterov"] = solver.nesterov
    return make_optimizer(
        solver.optimizer, lr_schedule(solver), lr_mult=lr_mult, decay_mult=decay_mult,
        weight_decay=solver.weight_decay, regularization_type=solver.regularization_type, **options,
    )

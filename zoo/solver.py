"""A `Solver` section to Keras objects: its learning-rate schedule and its optimizer.

`schedule_arguments` and `check_schedule` need no Keras (the spec loader's
quick checks run them); `callbacks` and Keras are imported when a schedule
or an optimizer is built.
"""

from zoo.lr_policies import CYCLIC_MODES, caffe_arguments, cyclic_arguments, warmup_arguments
from zoo.sections import to_dict

# The `callbacks` schedule class of each kind of policy, by the pure check
# of its arguments (the one its `__init__` runs).
_CHECKS = {"CyclicLR": cyclic_arguments, "CaffeLR": caffe_arguments}


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

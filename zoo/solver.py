"""A `Solver` section to Keras objects: its learning-rate schedule and its optimizer."""

from callbacks import CaffeLR, CyclicLR, Warmup
from callbacks.cyclic_lr import MODES as CYCLIC_MODES
from zoo.optimizers import make_optimizer
from zoo.sections import to_dict


def lr_schedule(solver):
    """The schedule a solver declares (`CaffeLR` or `CyclicLR`, wrapped in
    `Warmup` when it has one); it raises `ValueError` naming the argument
    when the policy's parameters are wrong."""
    if solver.lr_policy in CYCLIC_MODES:
        gamma = 1.0 if solver.gamma is None else solver.gamma
        schedule = CyclicLR(solver.base_lr, solver.max_lr, solver.step_size,
                            mode=solver.lr_policy, gamma=gamma)
    else:
        schedule = CaffeLR(solver.lr_policy, solver.base_lr, gamma=solver.gamma, power=solver.power,
                           stepsize=solver.stepsize,
                           stepvalue=None if solver.stepvalue is None else list(solver.stepvalue),
                           max_iter=solver.max_iter)
    if solver.warmup is not None:
        schedule = Warmup(schedule, **to_dict(solver.warmup))
    return schedule


def optimizer(solver, lr_mult, decay_mult):
    """The solver's optimizer, driven by its schedule from construction on.

    `lr_mult` and `decay_mult` map variable paths to Caffe's multipliers."""
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

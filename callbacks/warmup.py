"""Linear learning-rate warmup in front of any schedule."""

import json

from keras import ops
from keras.optimizers.schedules import LearningRateSchedule
from keras.saving import (
    deserialize_keras_object,
    register_keras_serializable,
    serialize_keras_object,
)

from callbacks._lr_control import evaluate_lr
from callbacks.base import LRScheduleCallback
from zoo.lr_policies import number, warmup_arguments


@register_keras_serializable(package="zoo")
class Warmup(LRScheduleCallback):
    """Linear warmup of `warmup_steps` iterations in front of another schedule.

    The LR climbs in a straight line from `start_lr` at iteration 0 to the
    wrapped schedule's value at iteration `warmup_steps`; from there on it is
    the wrapped schedule's, unshifted (Caffe's iteration count is global):

    ```
    it <  warmup_steps: start_lr + (schedule(warmup_steps) - start_lr) * it / warmup_steps
    it >= warmup_steps: schedule(it)
    ```

    Example:

    ```python
    lr = Warmup(CaffeLR("step", base_lr=0.1, gamma=0.1, stepsize=3000), warmup_steps=500)
    model.fit(x, y, epochs=30, callbacks=[lr])
    ```

    Args:
        schedule: The LR after warmup: a float, or any
            `keras.optimizers.schedules.LearningRateSchedule`, including
            `CaffeLR` and `CyclicLR` (used as a schedule: pass only the
            `Warmup` to `fit`).
        warmup_steps: Integer >= 1. Iterations of warmup.
        start_lr: Float >= 0. The LR at iteration 0. Defaults to `0.0`.
    """

    def __init__(self, schedule, warmup_steps, start_lr=0.0):
        super().__init__()
        if not isinstance(schedule, LearningRateSchedule):
            schedule = number("schedule", schedule, minimum=0)
        self.schedule = schedule
        # The checks the spec loader runs too, without Keras.
        for name, value in warmup_arguments(warmup_steps, start_lr=start_lr).items():
            setattr(self, name, value)

    def _level(self):
        # The wrapped schedule's level; a Keras schedule is taken whole (level 1).
        if isinstance(self.schedule, LRScheduleCallback):
            return self.schedule._level()
        return 1.0 if isinstance(self.schedule, LearningRateSchedule) else self.schedule

    def _after_warmup(self, iteration):
        """The wrapped schedule's LR relative to the level."""
        if isinstance(self.schedule, LRScheduleCallback):
            return self.schedule._relative_lr(iteration)
        if isinstance(self.schedule, LearningRateSchedule):
            return ops.cast(evaluate_lr(self.schedule, iteration), "float32")
        return 1.0

    def _relative_lr(self, iteration):
        start = self.start_lr / self._level()
        end = self._after_warmup(ops.convert_to_tensor(self.warmup_steps, "int32"))
        ramp = start + (end - start) * (
            ops.cast(iteration, "float32") / self.warmup_steps
        )
        return ops.where(iteration < self.warmup_steps, ramp, self._after_warmup(iteration))

    def _shape_key(self):
        if isinstance(self.schedule, LRScheduleCallback):
            after = self.schedule._shape_key()
        elif isinstance(self.schedule, LearningRateSchedule):
            after = json.dumps(serialize_keras_object(self.schedule), sort_keys=True, default=str)
        else:
            after = "constant"
        return ("Warmup", self.warmup_steps, self.start_lr / self._level(), after)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, LearningRateSchedule):
            schedule = serialize_keras_object(schedule)
        return {
            "schedule": schedule,
            "warmup_steps": self.warmup_steps,
            "start_lr": self.start_lr,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = deserialize_keras_object(config["schedule"])
        return cls(**config)

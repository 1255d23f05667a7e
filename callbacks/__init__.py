"""Keras callbacks for fine-tuning: Caffe LR policies, cyclical LR, warmup,
plateau decay, best-weight early stopping, an LR range test, a divergence guard
and precise BatchNorm statistics.

Every LR callback is also a `keras.optimizers.schedules.LearningRateSchedule`.
"""

from callbacks._lr_control import current_lr, lr_per_step
from callbacks.base import LRScheduleCallback
from callbacks.best_weights import BestWeights
from callbacks.caffe_lr import CaffeLR
from callbacks.cyclic_lr import CyclicLR
from callbacks.divergence_guard import DivergenceGuard
from callbacks.lr_finder import LRFinder, LRFinderResult, find_lr
from callbacks.plateau_decay import PlateauDecay
from callbacks.precise_bn import PreciseBN, recompute_batchnorm
from callbacks.warmup import Warmup

__all__ = [
    "BestWeights",
    "CaffeLR",
    "CyclicLR",
    "DivergenceGuard",
    "LRFinder",
    "LRFinderResult",
    "LRScheduleCallback",
    "PlateauDecay",
    "PreciseBN",
    "Warmup",
    "current_lr",
    "find_lr",
    "lr_per_step",
    "recompute_batchnorm",
]

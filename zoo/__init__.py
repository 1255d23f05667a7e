"""Declarative fine-tuning of Keras CNNs."""

import os

# TensorFlow's C++ info lines drown the progress output; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo.backbones import get_backbone, list_backbones
from zoo.datasets import load_digits
from zoo.small_cnn import small_cnn
from zoo.sections import Spec, to_dict
from zoo.spec import SpecError, load_spec
from zoo.train import RunError, TrainResult, Validation, build_model, train, validate
from zoo.tune import TuneError, TuneResult, tune

__all__ = [
    "RunError",
    "Spec",
    "SpecError",
    "TrainResult",
    "TuneError",
    "TuneResult",
    "Validation",
    "build_model",
    "get_backbone",
    "list_backbones",
    "load_digits",
    "load_spec",
    "small_cnn",
    "to_dict",
    "train",
    "tune",
    "validate",
]

"""Declarative fine-tuning of Keras CNNs."""

import os

# TensorFlow's C++ info lines drown the progress output; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo.datasets import load_digits
from zoo.small_cnn import small_cnn

__all__ = ["load_digits", "small_cnn"]

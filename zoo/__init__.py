"""Declarative fine-tuning of Keras CNNs."""

from zoo.datasets import load_digits
from zoo.small_cnn import small_cnn

__all__ = ["load_digits", "small_cnn"]

"""Datasets that ship inside a package, for demos, tests and benchmarks."""

import numpy as np

DIGITS_SIZE = (8, 8)  # scikit-learn's digits: 8x8 gray images


def load_digits(validation_split=0.2, seed=0):
    """scikit-learn's bundled 8x8 digits as `((x_train, y_train), (x_val, y_val))`.

    Images are `float32` of shape `(8, 8, 1)` scaled to [0, 1]; labels are
    integers 0-9. Images and labels are shuffled together with `seed` before
    the last `validation_split` of them is held out.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if not 0.0 <= validation_split < 1.0:
        raise ValueError(
            f"Argument `validation_split` must be in [0, 1). Received: {validation_split!r}"
        )
    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    return shuffle_split(x, y, validation_split, seed)


def shuffle_split(x, y, validation_split, seed):
    """`((x_train, y_train), (x_val, y_val))`: `x` and `y` shuffled together
    with `seed`, the last `validation_split` of them held out."""
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = len(x) - int(round(len(x) * validation_split))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])

"""Datasets that ship inside a package, for demos, tests and benchmarks."""

import numpy as np

DIGITS_SIZE = (8, 8)  # scikit-learn's digits: 8x8 gray images
# Images of each digit 0-9 in scikit-learn's digits (1,797 in all): a
# subset is checked without loading them.
DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def load_digits(validation_split=0.2, seed=0, classes=None, per_class=None, limit=None, validation_count=None):
    """scikit-learn's bundled 8x8 digits as `((x_train, y_train), (x_val, y_val))`.

    Images are `float32` of shape `(8, 8, 1)` scaled to [0, 1]; labels are
    integers. Images and labels are shuffled together with `seed`.

    With none of `per_class`, `limit` and `validation_count`, the last
    `validation_split` of the shuffled digits is held out for validation,
    and `classes` then keeps its digits in both parts. Otherwise the digits
    of `classes` are taken in the shuffled order: training takes the first
    `per_class` images of each class, or the first `limit` images (with
    neither, all but the validation images), and validation takes the last
    `validation_count` (else `validation_split` of the digits of `classes`)
    of the images training did not take. Training and validation images
    never overlap, and the same `seed` picks the same images.

    Example:

    ```python
    # 20 training images of each digit, 500 others for validation.
    (x, y), (x_val, y_val) = load_digits(per_class=20, validation_count=500)
    ```

    Args:
        validation_split: Float in [0, 1). The part held out for
            validation, unless `validation_count` is given. Defaults to `0.2`.
        seed: Integer. The seed of the shuffle. Defaults to `0`.
        classes: The digits kept, relabelled `0 ... len(classes) - 1` in
            the order given, or None for all ten. Defaults to `None`.
        per_class: Integer or None. The training images of each class.
            Defaults to `None`.
        limit: Integer or None. The training images in all; not with
            `per_class`. Defaults to `None`.
        validation_count: Integer or None. The validation images, instead
            of `validation_split`. Defaults to `None`.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if not 0.0 <= validation_split < 1.0:
        raise ValueError(
            f"Argument `validation_split` must be in [0, 1). Received: {validation_split!r}"
        )
    errors = digits_subset_errors(classes, per_class, limit, validation_split, validation_count)
    if errors:
        raise ValueError(" ".join(f"Argument `{argument}`: {message}." for argument, message in errors))
    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    classes = list(range(10) if classes is None else classes)
    if per_class is None and limit is None and validation_count is None:
        train, validation = shuffle_split(x, y, validation_split, seed)
        return of_classes(*train, classes), of_classes(*validation, classes)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = of_classes(x[order], y[order], classes)
    n_validation = validation_count if validation_count is not None else int(round(len(x) * validation_split))
    if per_class is not None:
        # Each image's place among the images of its class, in the shuffled order.
        place = np.zeros(len(x), int)
        for label in range(len(classes)):
            place[y == label] = np.arange(np.sum(y == label))
        training = place < per_class
    else:
        training = np.arange(len(x)) < (len(x) - n_validation if limit is None else limit)
    others = np.flatnonzero(~training)
    validation = others[len(others) - n_validation:]
    return (x[training], y[training]), (x[validation], y[validation])


def digits_subset_errors(classes=None, per_class=None, limit=None, validation_split=0.2, validation_count=None):
    """`(argument, message)` for each reason why `load_digits` cannot take
    the subset these arguments ask for, read from `DIGITS_PER_CLASS`
    without loading the digits."""
    classes = list(range(10) if classes is None else classes)
    available = sum(DIGITS_PER_CLASS[digit] for digit in classes)
    digits = f"the {available:,} digits" + ("" if len(classes) == 10 else f" of classes {classes}")
    if per_class is not None and limit is not None:
        return [("limit", f"{limit}, but `per_class` ({per_class}) says how many training images to take "
                          "already; give one of them")]
    if per_class is not None:
        fewer = [f"digit {digit} has {DIGITS_PER_CLASS[digit]}" for digit in classes
                 if DIGITS_PER_CLASS[digit] < per_class]
        if fewer:
            return [("per_class", f"{per_class} training images of each class, but {', '.join(fewer)}")]
        training, how = per_class * len(classes), f" ({per_class} of each of {len(classes)} classes)"
    elif limit is not None:
        if limit > available:
            return [("limit", f"{limit:,} training images, but there are only {digits}")]
        training, how = limit, ""
    elif validation_count is not None and validation_count >= available:
        return [("validation_count", f"{validation_count:,} validation images leave no training images "
                                     f"among {digits}")]
    else:
        return []  # training takes the images validation leaves
    if validation_count is not None:
        argument, validation = "validation_count", validation_count
    else:
        argument, validation = "validation_split", int(round(available * validation_split))
    if training + validation > available:
        return [(argument, f"{validation:,} validation images and {training:,} training images{how} are more "
                           f"than {digits}: {available - training:,} are left for validation")]
    return []


def of_classes(x, y, classes):
    """The images of `x` whose label in `y` is one of `classes`, in their
    order, relabelled `0 ... len(classes) - 1` in the order of `classes`."""
    keep = np.isin(y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([relabel[label] for label in y[keep]], dtype="int32")


def shuffle_split(x, y, validation_split, seed):
    """`((x_train, y_train), (x_val, y_val))`: `x` and `y` shuffled together
    with `seed`, the last `validation_split` of them held out."""
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = len(x) - int(round(len(x) * validation_split))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])

import numpy as np
import pytest

from zoo.datasets import load_digits


def test_digits_are_shuffled_with_labels_and_split():
    (x, y), (x_val, y_val) = load_digits(validation_split=0.2, seed=3)
    assert x.shape == (1438, 8, 8, 1) and x_val.shape == (359, 8, 8, 1)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(set(y.tolist())) == list(range(10))
    # Shuffled (the bundled file is ordered 0,1,2,...), the same way for a seed.
    assert y[:10].tolist() != list(range(10))
    (x2, y2), _ = load_digits(validation_split=0.2, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    # Images and labels moved together: each image still matches its label.
    from sklearn.datasets import load_digits as raw

    digits = raw()
    index = {digits.images[i].tobytes(): digits.target[i] for i in range(len(digits.target))}
    restored = (x[:50, ..., 0] * 16).astype(digits.images.dtype)
    assert [index[img.tobytes()] for img in restored] == y[:50].tolist()


def test_bad_validation_split():
    with pytest.raises(ValueError, match=r"`validation_split` must be in \[0, 1\)"):
        load_digits(validation_split=1.0)

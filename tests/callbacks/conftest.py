import pytest


@pytest.fixture(scope="session")
def digits():
    from zoo.datasets import load_digits

    (x, y), (x_val, y_val) = load_digits(validation_split=0.25, seed=0)
    return x.reshape(len(x), -1), y, x_val.reshape(len(x_val), -1), y_val

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    # No full garbage collection after every test (Keras's default): with TensorFlow,
    # KerasHub and MLflow loaded it costs about 0.3 s a test; Python collects on its own.
    keras.backend.clear_session(free_memory=False)
    if keras.backend.backend() == "tensorflow":
        # A `deterministic` spec turns on op determinism for the process (and
        # with it XLA off); TensorFlow's only way back is private.
        from tensorflow.python.framework.config import disable_op_determinism

        disable_op_determinism()

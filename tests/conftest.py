import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from a clean Keras graph and a fixed seed; memory does not pile up."""
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()

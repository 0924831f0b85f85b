"""ImageNormalization against the keras.applications preprocessing functions."""

import keras
import numpy as np
import pytest

from kseg.layers import ImageNormalization
from kseg.testing import check_layer


@pytest.mark.parametrize(
    "mode,reference",
    [
        ("caffe", keras.applications.resnet.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
        ("unit", lambda x: x / 255.0),
        ("none", lambda x: x),
    ],
)
def test_modes_match_keras_applications(mode, reference):
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 5, 4, 3)).astype("float32")
    expected = np.asarray(reference(x.copy()))
    np.testing.assert_allclose(ImageNormalization(mode)(x).numpy(), expected, rtol=1e-5, atol=1e-4)


def test_errors_and_config():
    with pytest.raises(ValueError, match="'bgr'"):
        ImageNormalization("bgr")
    with pytest.raises(ValueError, match="Received: channels=1"):
        ImageNormalization("caffe")(np.zeros((1, 2, 2, 1), "float32"))
    layer = ImageNormalization("tf")
    assert ImageNormalization.from_config(layer.get_config()).mode == "tf"


@pytest.mark.parametrize(
    "mode,reference",
    [
        ("caffe", keras.applications.resnet.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
    ],
)
def test_layer_contract_with_the_shared_harness(mode, reference, tmp_path):
    x = np.random.default_rng(1).uniform(0, 255, size=(2, 4, 6, 3)).astype("float32")
    check_layer(
        ImageNormalization,
        {"mode": mode},
        x,
        expected_output=np.asarray(reference(x.copy())),
        atol=1e-4,
        input_shapes=(None, None, 3),
        tmp_dir=tmp_path,
    )

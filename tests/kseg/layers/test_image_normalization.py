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


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf", "unit"])
def test_full_integer_int8_tflite_keeps_the_values(mode, tmp_path):
    # "caffe" used to reverse RGB with REVERSE_V2, whose int8 output TFLite mis-scales (the
    # BGR image came out ~57 off on 0..255); the result must stay within a few int8 steps.
    from kseg import export

    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 255, size=(8, 8, 12, 3)).astype("float32")
    images = rng.uniform(0, 255, size=(2, 8, 12, 3)).astype("float32")
    inputs = keras.Input((8, 12, 3))
    # a following layer, as in a model: with REVERSE_V2 as the last op the bug does not show
    identity = keras.initializers.Constant(np.eye(3).reshape(1, 1, 3, 3))
    outputs = keras.layers.Conv2D(3, 1, kernel_initializer=identity)(
        ImageNormalization(mode)(inputs)
    )
    model = keras.Model(inputs, outputs)
    path = export.tflite(
        model,
        tmp_path / "norm.tflite",
        quantize="int8",
        representative_data=calibration,
        input_shape=(8, 12, 3),
    )
    expected = model.predict(images, verbose=0)
    step = (expected.max() - expected.min()) / 255
    np.testing.assert_allclose(export.run_tflite(path, images), expected, atol=2.5 * step)

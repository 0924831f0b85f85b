"""SavedModel and TFLite export compared with Keras predictions."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg import export
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

NUM_CLASSES = 4


def small_model(input_shape=(None, None, 3)):
    """Conv-BN-ReLU, index pooling/unpooling, a classifier; weights of useful scale and BN
    statistics far from the batch statistics, so a ``training=True`` call would differ."""
    images = keras.Input(input_shape, name="images")
    x = keras.layers.Rescaling(1 / 255.0)(images)
    x = keras.layers.Conv2D(16, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    pooled, indices = MaxPoolingWithArgmax2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(pooled)
    x = MaxUnpooling2D(2)([x, indices, images])
    logits = keras.layers.Conv2D(NUM_CLASSES, 3, padding="same")(x)
    model = keras.Model(images, logits)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta + 0.1, mean + 0.3, var * 2.0])
        elif layer.weights:
            layer.set_weights(
                [rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()]
            )
    return model


def images(shape=(2, 17, 23, 3), seed=1):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def test_saved_model_matches_predict_in_tf2_and_tf1_loaders(tmp_path):
    model = small_model()
    path = export.saved_model(model, tmp_path / "sm")
    for shape in ((2, 17, 23, 3), (1, 32, 20, 3)):  # dynamic height and width
        x = images(shape)
        expected = model.predict(x, verbose=0)
        np.testing.assert_allclose(export.run_saved_model(path, x), expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(export.run_tf1_session(path, x), expected, atol=1e-5, rtol=1e-5)
    x = images()
    result = export.verify(model, path, x)
    assert result["argmax_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4
    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert sorted(signature.structured_outputs) == ["labels", "logits", "probabilities"]
    # the endpoint runs in inference mode: a training-mode call gives something else
    # (and updates the BN statistics, hence last)
    assert np.abs(model(x, training=True).numpy() - export.run_saved_model(path, x)).max() > 1e-3


def test_saved_model_fixed_size(tmp_path):
    model = small_model((16, 16, 3))
    path = export.saved_model(model, tmp_path / "fixed")
    x = images((3, 16, 16, 3))
    np.testing.assert_allclose(
        export.run_tf1_session(path, x), model.predict(x, verbose=0), atol=1e-5, rtol=1e-5
    )


def test_tflite_float32_builtins_only_and_agreement(tmp_path):
    model = small_model()
    x = images((2, 24, 20, 3))
    path = export.tflite(model, tmp_path / "m.tflite", input_shape=(24, 20, 3))
    interpreter = export.tflite_interpreter(path)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    result = export.verify(model, path, x)
    assert result["argmax_agreement"] >= 0.999
    assert result["max_abs_diff"] < 1e-3
    # unknown height/width stay dynamic; the runner resizes the input per image
    dynamic = export.tflite(model, tmp_path / "dyn.tflite")
    assert export.verify(model, dynamic, images((2, 13, 18, 3)))["argmax_agreement"] >= 0.999


@pytest.mark.parametrize("quantize, minimum", [("float16", 0.99), ("dynamic", 0.97), ("int8", 0.9)])
def test_tflite_quantized(tmp_path, quantize, minimum):
    model = small_model((24, 24, 3))
    x = images((4, 24, 24, 3))
    calibration = tf.data.Dataset.from_tensor_slices((x, np.zeros((4, 24, 24), "int32"))).batch(2)
    path = export.tflite(
        model, tmp_path / f"{quantize}.tflite", quantize=quantize, representative_data=calibration
    )
    assert export.verify(model, path, x)["argmax_agreement"] >= minimum
    float_size = os.path.getsize(export.tflite(model, tmp_path / "f32.tflite"))
    assert os.path.getsize(path) < float_size


def test_non_builtin_op_is_refused(tmp_path):
    class ArgmaxPool(keras.layers.Layer):
        def call(self, x):
            return tf.nn.max_pool_with_argmax(x, 2, 2, "VALID")[0]

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, ArgmaxPool()(inputs))
    with pytest.raises(ValueError, match="MaxPoolWithArgmax"):
        export.tflite(model, tmp_path / "x.tflite")


def test_bad_arguments(tmp_path):
    model = small_model((8, 8, 3))
    with pytest.raises(ValueError, match="quantize"):
        export.tflite(model, tmp_path / "x.tflite", quantize="int4")
    with pytest.raises(ValueError, match="representative_data"):
        export.tflite(model, tmp_path / "x.tflite", quantize="int8")
    with pytest.raises(ValueError, match=r"input_shape \(9, 8, 3\)"):
        export.tflite(model, tmp_path / "x.tflite", input_shape=(9, 8, 3))
    with pytest.raises(FileNotFoundError, match="missing"):
        export.verify(model, tmp_path / "missing", images((1, 8, 8, 3)))
    with pytest.raises(TypeError, match="keras.Model"):
        export.saved_model("model", tmp_path / "sm")

"""The resolution multiplier: full-size output equal to the resized inner model's."""

import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg import export
from kseg.models import ResolutionScaled
from kseg.testing import assert_keras_round_trip

KWARGS = {"num_classes": 3, "backbone": "mobilenetv3_small", "alpha": 0.75, "filters": 8}


def _images(shape=(2, 64, 96, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


@pytest.mark.parametrize("input_shape", [(64, 96, 3), (None, None, 3)])
def test_output_is_the_inner_model_on_the_resized_image_resized_back(input_shape):
    model = kseg.models.create("lraspp", input_shape=input_shape, resolution=0.5, **KWARGS)
    assert isinstance(model, ResolutionScaled)
    images = _images((2, 66, 98, 3)) if input_shape[0] is None else _images()
    out = model.predict(images, verbose=0)
    assert out.shape == images.shape[:3] + (3,)  # the input's full size
    small = tf.image.resize(images, (images.shape[1] // 2, images.shape[2] // 2)).numpy()
    expected = tf.image.resize(model.inner.predict(small, verbose=0), images.shape[1:3]).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    if input_shape[0] is not None:
        assert tuple(model.inner.input_shape) == (None, 32, 48, 3)


def test_multiply_adds_scale_with_the_resolution_squared():
    full = kseg.bench.profile(kseg.models.create("lraspp", input_shape=(128, 256, 3), **KWARGS))
    half = kseg.bench.profile(
        kseg.models.create("lraspp", input_shape=(128, 256, 3), resolution=0.5, **KWARGS)
    )
    assert abs(half["madds"] / full["madds"] - 0.25) < 0.02
    assert half["params"] == full["params"]


def test_keras_round_trip_and_tflite_builtins(tmp_path):
    model = kseg.models.create("lraspp", input_shape=(64, 96, 3), resolution=0.75, **KWARGS)
    images = _images()
    assert_keras_round_trip(model, images, tmp_dir=tmp_path)
    config = model.get_config()
    assert config["model"] == "lraspp" and config["resolution"] == 0.75
    assert config["model_kwargs"] == KWARGS
    path = export.tflite(model, tmp_path / "half.tflite")
    ops = {d["op_name"] for d in export.tflite_interpreter(path)._get_ops_details()}
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops
    assert export.verify(model, path, images)["argmax_agreement"] >= 0.999
    assert model.preprocessing["mode"] == "tf"


def test_bad_arguments():
    with pytest.raises(ValueError, match="resolution=0"):
        kseg.models.create("lraspp", resolution=0, **KWARGS)
    with pytest.raises(ValueError, match="leaves no pixels"):
        kseg.models.create("lraspp", input_shape=(4, 4, 3), resolution=0.1, **KWARGS)
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        kseg.models.create("nope", resolution=0.5)
    assert not isinstance(kseg.models.create("lraspp", resolution=1, **KWARGS), ResolutionScaled)

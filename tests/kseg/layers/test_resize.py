"""Resize against a numpy bilinear reference written from the half-pixel-centre definition."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers import Resize
from kseg.testing import check_layer


def bilinear_reference(x, out_h, out_w):
    """Half-pixel-centre bilinear resize, as defined (no antialiasing), in float64."""
    b, in_h, in_w, c = x.shape

    def axis_weights(in_size, out_size):
        src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        low = np.floor(src)
        frac = src - low
        lo = np.clip(low, 0, in_size - 1).astype(int)
        hi = np.clip(np.ceil(src), 0, in_size - 1).astype(int)
        return lo, hi, frac

    y0, y1, fy = axis_weights(in_h, out_h)
    x0, x1, fx = axis_weights(in_w, out_w)
    out = np.zeros((b, out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            top = x[:, y0[i], x0[j]] * (1 - fx[j]) + x[:, y0[i], x1[j]] * fx[j]
            bottom = x[:, y1[i], x0[j]] * (1 - fx[j]) + x[:, y1[i], x1[j]] * fx[j]
            out[:, i, j] = top * (1 - fy[i]) + bottom * fy[i]
    return out


@pytest.mark.parametrize(
    "in_hw,scale,out_hw",
    [((5, 7), 4, (20, 28)), ((9, 6), 0.5, (4, 3)), ((3, 4), (2, 3), (6, 12))],
)
def test_scale_matches_reference(in_hw, scale, out_hw):
    x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype("float32")
    y = Resize(scale=scale)(x).numpy()
    assert y.shape == (2, *out_hw, 3)
    np.testing.assert_allclose(y, bilinear_reference(x.astype("float64"), *out_hw), atol=1e-5)


def test_like_reference_with_unknown_sizes():
    inputs = keras.Input((None, None, 4))
    reference = keras.Input((None, None, 1))
    model = keras.Model([inputs, reference], Resize()([inputs, reference]))
    x = np.random.default_rng(1).normal(size=(1, 6, 5, 4)).astype("float32")
    for hw in [(13, 11), (3, 2), (6, 5)]:
        y = model.predict([x, np.zeros((1, *hw, 1), "float32")], verbose=0)
        np.testing.assert_allclose(y, bilinear_reference(x.astype("float64"), *hw), atol=1e-5)


def test_nearest_keeps_values_and_dtype():
    x = tf.constant(np.arange(6, dtype="int32").reshape(1, 2, 3, 1))
    y = Resize(scale=2, interpolation="nearest")(x).numpy()
    assert y.dtype == np.int32
    np.testing.assert_array_equal(
        y[0, :, :, 0], np.repeat(np.repeat(x.numpy()[0, :, :, 0], 2, 0), 2, 1)
    )


def test_static_shapes_and_config_round_trip():
    inputs = keras.Input((7, 9, 2))
    layer = Resize(scale=0.5, name="half")
    assert tuple(layer(inputs).shape) == (None, 3, 4, 2)
    clone = Resize.from_config(layer.get_config())
    assert clone.scale == (0.5, 0.5) and clone.interpolation == "bilinear"
    assert tuple(Resize()([inputs, keras.Input((None, 5, 1))]).shape) == (None, None, 5, 2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"scale": 0}, "scale"),
        ({"scale": -2}, "scale"),
        ({"scale": "2"}, "scale"),
        ({"scale": (1, 2, 3)}, "scale"),
        ({"interpolation": "bicubic"}, "bicubic"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Resize(**kwargs)


def test_bad_calls():
    x = np.zeros((1, 4, 4, 1), "float32")
    with pytest.raises(ValueError, match="without scale"):
        Resize()(x)
    with pytest.raises(ValueError, match="not both"):
        Resize(scale=2)([x, x])


@pytest.mark.parametrize("input_shape", [(5, 7, 3), (None, None, 3)])
def test_scale_contract_with_the_shared_harness(input_shape, tmp_path):
    x = np.random.default_rng(5).normal(size=(2, 5, 7, 3)).astype("float32")
    check_layer(
        Resize,
        {"scale": (2, 0.5)},
        x,
        expected_output=bilinear_reference(x.astype("float64"), 10, 3),
        atol=1e-5,
        input_shapes=input_shape,
        tmp_dir=tmp_path,
    )


def test_reference_contract_with_the_shared_harness(tmp_path):
    x = np.random.default_rng(6).normal(size=(2, 6, 5, 4)).astype("float32")
    check_layer(
        Resize,
        {"interpolation": "bilinear"},
        [x, np.zeros((2, 9, 11, 1), "float32")],
        expected_output=bilinear_reference(x.astype("float64"), 9, 11),
        atol=1e-5,
        input_shapes=[(None, None, 4), (None, None, 1)],
        tmp_dir=tmp_path,
    )

"""ENet's blocks: zero channel padding, and the up-sampling bottleneck's unpooling."""

import keras
import numpy as np
import pytest

from kseg.layers.enet_blocks import (
    ChannelZeroPad,
    enet_bottleneck,
    enet_downsampling_bottleneck,
    enet_initial_block,
    enet_upsampling_bottleneck,
)
from kseg.testing import check_layer


def test_channel_zero_pad_appends_zero_channels():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype("float32")
    expected = np.concatenate([x, np.zeros((2, 3, 4, 3), "float32")], axis=-1)
    check_layer(
        ChannelZeroPad,
        {"extra": 3},
        x,
        expected_output=expected,
        input_shapes=(None, None, 5),
        check_training=False,
    )


def test_upsampling_bottleneck_unpools_to_the_argmax_positions():
    """The shortcut of the up-sampling bottleneck holds, in every 2×2 (ceil-mode) window of the
    down-sampling bottleneck's input, its own value at the first maximum and zeros elsewhere."""
    inputs = keras.Input((None, None, 16))
    down, indices = enet_downsampling_bottleneck(inputs, 64, "down")
    up = enet_upsampling_bottleneck(down, indices, inputs, 16, "up")
    model = keras.Model(inputs, up)
    probe = keras.Model(
        inputs,
        [
            model.get_layer("up_unpool").output,
            model.get_layer("up_shortcut_bn").output,
        ],
    )
    x = np.random.default_rng(1).normal(size=(2, 9, 13, 16)).astype("float32")
    unpooled, values = (np.asarray(t) for t in probe.predict(x, verbose=0))
    assert unpooled.shape == x.shape and values.shape == (2, 5, 7, 16)
    for b in range(2):
        for i in range(5):
            for j in range(7):
                for c in range(16):
                    window = x[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
                    out = unpooled[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
                    first = np.unravel_index(np.argmax(window), window.shape)
                    assert out[first] == values[b, i, j, c]
                    rest = np.ones(window.shape, bool)
                    rest[first] = False
                    assert not out[rest].any()
    assert model.predict(x, verbose=0).shape == x.shape


def test_downsampling_shortcut_is_the_pooled_input_padded_with_zeros():
    inputs = keras.Input((8, 6, 16))
    down, _ = enet_downsampling_bottleneck(inputs, 64, "d")
    shortcut = keras.Model(inputs, keras.Model(inputs, down).get_layer("d_pad").output)
    x = np.random.default_rng(2).normal(size=(1, 8, 6, 16)).astype("float32")
    y = shortcut.predict(x, verbose=0)
    pooled = x.reshape(1, 4, 2, 3, 2, 16).max(axis=(2, 4))
    np.testing.assert_allclose(y[..., :16], pooled)
    assert not y[..., 16:].any()


@pytest.mark.parametrize("kwargs", [{}, {"dilation_rate": 4}, {"asymmetric": 5}])
def test_bottleneck_variants_keep_the_shape(kwargs):
    inputs = keras.Input((None, None, 32))
    model = keras.Model(inputs, enet_bottleneck(inputs, 32, "b", **kwargs))
    x = np.random.default_rng(3).normal(size=(1, 7, 10, 32)).astype("float32")
    assert model.predict(x, verbose=0).shape == x.shape


def test_initial_block_and_bad_arguments():
    assert tuple(enet_initial_block(keras.Input((15, 9, 3))).shape) == (None, 8, 5, 16)
    with pytest.raises(ValueError, match="filters"):
        enet_initial_block(keras.Input((15, 9, 3)), filters=3)
    with pytest.raises(ValueError, match="keeps them"):
        enet_bottleneck(keras.Input((8, 8, 16)), 32, "b")
    with pytest.raises(ValueError, match="pooled channels"):
        inputs = keras.Input((8, 8, 16))
        y, idx = enet_downsampling_bottleneck(inputs, 64, "d")
        enet_upsampling_bottleneck(y, idx, inputs, 32, "u")
    with pytest.raises(ValueError, match="extra"):
        ChannelZeroPad(-1)

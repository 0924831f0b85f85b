"""ChannelShuffle against numpy's reshape-transpose; GroupedConv2D against per-group convolutions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers.channel_shuffle import ChannelShuffle, GroupedConv2D
from kseg.testing import check_layer


@pytest.mark.parametrize("groups, channels", [(2, 6), (5, 45), (3, 3), (1, 4)])
def test_channel_shuffle_equals_numpy_reshape_transpose(groups, channels):
    x = np.random.default_rng(0).normal(size=(2, 3, 5, channels)).astype("float32")
    expected = (
        x.reshape(2, 3, 5, groups, channels // groups)
        .transpose(0, 1, 2, 4, 3)
        .reshape(2, 3, 5, channels)
    )
    out = check_layer(
        ChannelShuffle,
        {"groups": groups},
        x,
        expected_output=expected,
        input_shapes=(None, None, channels),
        check_training=False,
    )
    np.testing.assert_array_equal(out, expected)


def test_channel_shuffle_twice_with_transposed_groups_is_the_identity():
    x = np.random.default_rng(1).normal(size=(1, 2, 2, 12)).astype("float32")
    y = ChannelShuffle(4)(ChannelShuffle(3)(x))
    np.testing.assert_array_equal(y, x)


def _reference_grouped_conv(x, kernel, groups, dilation):
    """Each group convolved on its own with tf.nn.conv2d (float64), outputs concatenated."""
    cin, cout = kernel.shape[2] * groups, kernel.shape[3]
    parts = []
    for g in range(groups):
        xs = x[..., g * cin // groups : (g + 1) * cin // groups]
        ks = kernel[..., g * cout // groups : (g + 1) * cout // groups]
        parts.append(
            tf.nn.conv2d(
                xs.astype("float64"), ks.astype("float64"), 1, "SAME", dilations=dilation
            ).numpy()
        )
    return np.concatenate(parts, axis=-1)


@pytest.mark.parametrize(
    "groups, cin, cout, kernel_size, dilation",
    [(4, 8, 12, 1, 1), (64, 256, 64, 3, 1), (9, 45, 9, 3, 1), (2, 4, 6, 3, 2), (1, 3, 5, 3, 1)],
)
def test_grouped_conv_matches_per_group_convolutions(groups, cin, cout, kernel_size, dilation):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 6, cin)).astype("float32")
    layer = GroupedConv2D(cout, kernel_size, groups=groups, dilation_rate=dilation)
    y = layer(x).numpy()
    kernel = layer.kernel.numpy()
    assert kernel.shape == (kernel_size, kernel_size, cin // groups, cout)
    np.testing.assert_allclose(
        y, _reference_grouped_conv(x, kernel, groups, dilation), atol=1e-4, rtol=1e-4
    )


def test_grouped_conv_equals_keras_grouped_conv2d():
    x = np.random.default_rng(3).normal(size=(1, 5, 5, 8)).astype("float32")
    layer = GroupedConv2D(8, 3, groups=4, use_bias=True, kernel_initializer="glorot_uniform")
    y = layer(x)
    ref = keras.layers.Conv2D(8, 3, groups=4, padding="same")
    ref.build(x.shape)
    ref.set_weights([layer.kernel.numpy(), np.zeros(8, "float32")])
    np.testing.assert_allclose(y, ref(x), atol=1e-5)


def test_grouped_conv_layer_contract():
    x = np.random.default_rng(4).normal(size=(2, 5, 4, 6)).astype("float32")
    check_layer(
        GroupedConv2D,
        {"filters": 4, "kernel_size": 3, "groups": 2, "use_bias": True},
        x,
        input_shapes=(None, None, 6),
        atol=1e-5,
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(0)
    with pytest.raises(ValueError, match="multiple of groups=4"):
        ChannelShuffle(4)(np.zeros((1, 2, 2, 6), "float32"))
    with pytest.raises(ValueError, match="filters"):
        GroupedConv2D(6, 1, groups=4)
    with pytest.raises(ValueError, match="multiple of groups=4"):
        GroupedConv2D(4, 1, groups=4)(np.zeros((1, 2, 2, 6), "float32"))
    with pytest.raises(ValueError, match="kernel_size"):
        GroupedConv2D(4, 0, groups=2)

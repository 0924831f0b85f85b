"""``conv_bn_relu``: values against numpy, the layer names each call site relies on, errors."""

import keras
import numpy as np
import pytest

from kseg.layers import conv_bn_relu
from kseg.layers.conv_block import conv_block_layers


def _model(x, y):
    return keras.Model(x, y)


def _set_bn(model, name, rng, channels):
    bn = model.get_layer(name)
    gamma, beta = rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.5, channels)
    mean, var = rng.normal(0, 0.5, channels), rng.uniform(0.5, 2.0, channels)
    bn.set_weights([gamma, beta, mean, var])
    return gamma, beta, mean, var, bn.epsilon


def _bn(x, gamma, beta, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _conv_same(x, kernel, bias=None):
    # brute-force "same" 2-D convolution, stride 1, odd kernel
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            patch = padded[:, i : i + kh, j : j + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out if bias is None else out + bias


def test_plain_block_equals_numpy():
    rng = np.random.default_rng(0)
    x = keras.Input((6, 7, 3))
    model = _model(x, conv_bn_relu(x, 4, 3, "blk", use_bias=True, epsilon=1e-5))
    assert [layer.name for layer in model.layers[1:]] == ["blk", "blk_bn", "blk_relu"]
    kernel, bias = rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4)
    model.get_layer("blk").set_weights([kernel, bias])
    stats = _set_bn(model, "blk_bn", rng, 4)
    assert stats[-1] == 1e-5
    images = rng.normal(size=(2, 6, 7, 3)).astype("float32")
    expected = np.maximum(_bn(_conv_same(images, kernel, bias), *stats), 0)
    assert (expected == 0).any() and (expected > 0).any()  # the ReLU matters
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_separable_block_equals_numpy_and_names():
    rng = np.random.default_rng(1)
    x = keras.Input((5, 5, 2))
    model = _model(x, conv_bn_relu(x, 3, 3, "sep", separable=True))
    assert [layer.name for layer in model.layers[1:]] == [
        "sep_depthwise",
        "sep_depthwise_bn",
        "sep_depthwise_relu",
        "sep_pointwise",
        "sep_pointwise_bn",
        "sep_pointwise_relu",
    ]
    depthwise = rng.normal(size=(3, 3, 2, 1))
    pointwise = rng.normal(size=(1, 1, 2, 3))
    model.get_layer("sep_depthwise").set_weights([depthwise])
    model.get_layer("sep_pointwise").set_weights([pointwise])
    first = _set_bn(model, "sep_depthwise_bn", rng, 2)
    second = _set_bn(model, "sep_pointwise_bn", rng, 3)
    images = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    per_channel = np.concatenate(
        [_conv_same(images[..., c : c + 1], depthwise[:, :, c : c + 1, :]) for c in range(2)], -1
    )
    y = np.maximum(_bn(per_channel, *first), 0)
    expected = np.maximum(_bn(_conv_same(y, pointwise), *second), 0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_naming_options_and_no_relu():
    x = keras.Input((8, 8, 3))
    y = conv_bn_relu(x, 4, 3, "block1_conv1", bn_name="block1_bn1", relu_name="block1_relu1")
    y = conv_bn_relu(y, 4, 3, "entry", strides=2, padding="symmetric")
    y = conv_bn_relu(y, 4, 3, "unit", separable=True, relu=False)
    y = conv_bn_relu(y, 2, 2, "up", transposed=True, strides=2, use_bias=True)
    model = _model(x, y)
    names = [layer.name for layer in model.layers[1:]]
    assert names == [
        "block1_conv1",
        "block1_bn1",
        "block1_relu1",
        "entry_pad",
        "entry",
        "entry_bn",
        "entry_relu",
        "unit_depthwise",
        "unit_depthwise_bn",
        "unit_pointwise",
        "unit_pointwise_bn",
        "up",
        "up_bn",
        "up_relu",
    ]
    assert type(model.get_layer("up")).__name__ == "Conv2DTranspose"
    assert model.get_layer("up").use_bias and not model.get_layer("entry").use_bias
    assert tuple(model.output_shape) == (None, 8, 8, 2)


def test_symmetric_padding_centres_strided_outputs():
    # a 3x3 box filter with stride 2 on an 8x8 ramp: output (i, j) is the mean around (2i, 2j)
    # ("same" padding would pad 0 before and 1 after, centring it on (2i + 1, 2j + 1))
    x = keras.Input((8, 8, 1))
    model = _model(x, conv_bn_relu(x, 1, 3, "s", strides=2, padding="symmetric", relu=False))
    model.get_layer("s").set_weights([np.full((3, 3, 1, 1), 1 / 9)])
    ramp = np.arange(64, dtype="float32").reshape(1, 8, 8, 1)
    out = model.predict(ramp, verbose=0)[0, :, :, 0]
    bn_scale = 1 / np.sqrt(1 + 1e-3)  # fresh BN: mean 0, variance 1
    padded = np.pad(ramp[0, :, :, 0], 1)
    expected = np.array(
        [[padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3].mean() for j in range(4)] for i in range(4)]
    )
    np.testing.assert_allclose(out, expected * bn_scale, rtol=1e-5, atol=1e-5)


def test_block_layers_for_layers_that_own_them():
    block = conv_block_layers(8, 3, "aspp1", dilation_rate=2)
    assert [type(layer).__name__ for layer in block] == ["Conv2D", "BatchNormalization"]
    assert block[0].dilation_rate == (2, 2) and block[0].padding == "same"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": 0}, r"Received: filters=0"),
        ({"name": ""}, r"Received: name=''"),
        ({"padding": "reflect"}, r"Received: padding='reflect'"),
        ({"separable": True, "transposed": True}, r"separable=True, transposed=True"),
    ],
)
def test_errors_name_the_argument(kwargs, match):
    arguments = {"filters": 4, "kernel_size": 3, "name": "c"}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        conv_bn_relu(keras.Input((8, 8, 3)), **arguments)

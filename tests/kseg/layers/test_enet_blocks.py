"""ENet's blocks: the layer contract, and values where they are knowable (zero padding, the
pooled shortcut, the unpooling to the argmax positions, the initial block's concatenation)."""

import keras
import numpy as np
import pytest

from kseg.layers import (
    ENetBottleneck,
    ENetDownsamplingBottleneck,
    ENetInitialBlock,
    ENetUpsamplingBottleneck,
)
from kseg.layers.enet_blocks import (
    ChannelZeroPad,
    enet_bottleneck,
    enet_downsampling_bottleneck,
    enet_initial_block,
    enet_upsampling_bottleneck,
)
from kseg.testing import check_layer

RNG = np.random.default_rng(0)


def _prelu(x):
    return np.where(x > 0, x, 0.25 * x)


def _pool_ceil(x):
    """2×2 max pooling in ceil mode and the first (row-major) argmax inside each window."""
    b, h, w, c = x.shape
    hp, wp = -(-h // 2), -(-w // 2)
    padded = np.full((b, 2 * hp, 2 * wp, c), -np.inf, x.dtype)
    padded[:, :h, :w] = x
    windows = (
        padded.reshape(b, hp, 2, wp, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, 4, c)
    )
    return windows.max(axis=3), windows.argmax(axis=3).astype("int32")


def _silence(bn):
    """Sets a BN's gamma and beta to 0: the branch it ends outputs zeros (inference)."""
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([0 * gamma, 0 * beta, mean, var])


def _identity_bn(bn):
    n = bn.gamma.shape[0]
    bn.set_weights([np.ones(n), np.zeros(n), np.zeros(n), np.full(n, 1 - bn.epsilon)])


def test_channel_zero_pad_appends_zero_channels():
    x = RNG.normal(size=(2, 3, 4, 5)).astype("float32")
    expected = np.concatenate([x, np.zeros((2, 3, 4, 3), "float32")], axis=-1)
    check_layer(
        ChannelZeroPad,
        {"extra": 3},
        x,
        expected_output=expected,
        input_shapes=(None, None, 5),
        check_training=False,
    )


def test_initial_block_contract_and_concatenation(tmp_path):
    x = RNG.uniform(-1, 1, size=(2, 9, 7, 3)).astype("float32")
    check_layer(
        ENetInitialBlock, {"filters": 16}, x, input_shapes=(None, None, 3), tmp_dir=tmp_path
    )
    block = ENetInitialBlock(16)
    block(x)
    bias = RNG.normal(size=13).astype("float32")
    block.conv.set_weights([np.zeros((3, 3, 3, 13), "float32"), bias])
    _identity_bn(block.bn)
    y = block(x).numpy()
    pooled, _ = _pool_ceil(x)
    np.testing.assert_allclose(y[..., :13], np.broadcast_to(_prelu(bias), (2, 5, 4, 13)), atol=1e-5)
    np.testing.assert_allclose(y[..., 13:], _prelu(pooled), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filters": 16},
        {"filters": 16, "kind": "dilated", "dilation_rate": 4},
        {"filters": 16, "kind": "asymmetric", "asymmetric_size": 5, "dropout": 0.0},
    ],
)
def test_bottleneck_contract(kwargs, tmp_path):
    x = RNG.normal(size=(2, 7, 10, 16)).astype("float32")
    check_layer(ENetBottleneck, kwargs, x, input_shapes=(None, None, 16), tmp_dir=tmp_path)


def test_bottleneck_kinds_and_residual():
    x = RNG.normal(size=(1, 6, 5, 8)).astype("float32")
    dilated = ENetBottleneck(8, kind="dilated", dilation_rate=4, projection_ratio=2)
    asymmetric = ENetBottleneck(8, kind="asymmetric", asymmetric_size=5)
    for block in (dilated, asymmetric):
        block(x)
    assert [c.dilation_rate for c in dilated.convs] == [(4, 4)]
    assert dilated.project.filters == 4
    assert [c.kernel_size for c in asymmetric.convs] == [(5, 1), (1, 5)]
    _silence(dilated.expand_bn)  # the branch gives zeros: the output is PReLU(x)
    np.testing.assert_allclose(dilated(x).numpy(), _prelu(x), atol=1e-6)


def test_downsampling_and_upsampling_contract(tmp_path):
    x = RNG.normal(size=(2, 9, 13, 16)).astype("float32")
    y, idx = check_layer(
        ENetDownsamplingBottleneck,
        {"filters": 32, "dropout": 0.0},
        x,
        input_shapes=(None, None, 16),
        tmp_dir=tmp_path,
    )
    assert y.shape == (2, 5, 7, 32) and idx.dtype == np.int32
    np.testing.assert_array_equal(idx, _pool_ceil(x)[1])
    (out,) = check_layer(
        ENetUpsamplingBottleneck,
        {"filters": 16},
        [y, idx, x],
        input_shapes=[(None, None, 32), (None, None, 16), (None, None, 16)],
        tmp_dir=tmp_path,
    )
    assert out.shape == x.shape


def test_down_up_pair_restores_values_at_the_argmax_positions():
    """With both branches silenced, the down-sampling bottleneck outputs PReLU of the padded
    pooled input, and the up-sampling bottleneck (its shortcut convolution selecting the first
    16 channels) writes PReLU of that back to the first maximum of every 2×2 window (ceil mode),
    zeros elsewhere."""
    x = RNG.normal(size=(2, 9, 13, 16)).astype("float32")
    down, up = ENetDownsamplingBottleneck(64), ENetUpsamplingBottleneck(16)
    y, idx = down(x)
    up([y, idx, x])
    _silence(down.expand_bn)
    _silence(up.expand_bn)
    up.shortcut.set_weights([np.eye(64, 16, dtype="float32")[None, None]])
    _identity_bn(up.shortcut_bn)
    y, idx = (t.numpy() for t in down(x))
    pooled, argmax = _pool_ceil(x)
    np.testing.assert_allclose(y[..., :16], _prelu(pooled), atol=1e-6)
    assert not y[..., 16:].any()
    out = up([y, idx, x]).numpy()
    expected = np.zeros((2, 10, 14, 16), "float32")
    for b, i, j, c in np.ndindex(*pooled.shape):
        dy, dx = divmod(argmax[b, i, j, c], 2)
        expected[b, 2 * i + dy, 2 * j + dx, c] = _prelu(_prelu(pooled[b, i, j, c]))
    np.testing.assert_allclose(out, expected[:, :9, :13], atol=1e-5)
    assert (out != 0).sum() == pooled.size  # one value per window, the rest zeros


def test_functions_apply_the_layers():
    inputs = keras.Input((None, None, 16))
    down, indices = enet_downsampling_bottleneck(inputs, 64, "down")
    y = enet_bottleneck(down, 64, "b", asymmetric=5)
    up = enet_upsampling_bottleneck(y, indices, inputs, 16, "up")
    model = keras.Model(inputs, up)
    assert isinstance(model.get_layer("down"), ENetDownsamplingBottleneck)
    assert model.get_layer("b").kind == "asymmetric"
    assert isinstance(model.get_layer("up"), ENetUpsamplingBottleneck)
    assert model.predict(np.zeros((1, 7, 10, 16), "float32"), verbose=0).shape == (1, 7, 10, 16)
    assert tuple(enet_initial_block(keras.Input((15, 9, 3))).shape) == (None, 8, 5, 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: filters=3"):
        enet_initial_block(keras.Input((15, 9, 3)), filters=3)
    with pytest.raises(ValueError, match="keeps them"):
        enet_bottleneck(keras.Input((8, 8, 16)), 32, "b")
    with pytest.raises(ValueError, match="pooled channels"):
        inputs = keras.Input((8, 8, 16))
        y, idx = enet_downsampling_bottleneck(inputs, 64, "d")
        enet_upsampling_bottleneck(y, idx, inputs, 32, "u")
    with pytest.raises(ValueError, match="Received: kind='wide'"):
        ENetBottleneck(16, kind="wide")
    with pytest.raises(ValueError, match="dilation_rate=1"):
        ENetBottleneck(16, kind="dilated")
    with pytest.raises(ValueError, match="Received: dropout=1.5"):
        ENetBottleneck(16, dropout=1.5)
    with pytest.raises(ValueError, match="Received: filters=2"):
        ENetDownsamplingBottleneck(2)
    with pytest.raises(ValueError, match="extra"):
        ChannelZeroPad(-1)

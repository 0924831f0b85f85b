"""Attention layers (DANet, PAN, Attention-to-Scale, ParseNet): harness and numpy references."""

import numpy as np
import pytest

from kseg.layers import (
    ChannelAttention,
    FeaturePyramidAttention,
    GlobalAttentionUpsample,
    L2Normalization,
    PositionAttention,
    ScaleAttention,
)
from kseg.testing import check_layer

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 4, 16)).astype("float32")


def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize(
    "cls, kwargs", [(PositionAttention, {"reduction": 4}), (ChannelAttention, {})]
)
def test_dual_attention_contract(cls, kwargs, tmp_path):
    # gamma starts at 0 (the authors' initialisation): the module is the identity at first
    check_layer(cls, kwargs, X, expected_output=X, input_shapes=(None, None, 16), tmp_dir=tmp_path)


def test_position_attention_equals_numpy():
    layer = PositionAttention(reduction=4)
    layer(X)
    layer.gamma.assign(0.7)
    rng = np.random.default_rng(1)
    for sub in (layer.query, layer.key, layer.value):
        sub.set_weights(
            [rng.normal(size=w.shape).astype("float32") * 0.3 for w in sub.get_weights()]
        )
    flat = X.reshape(2, 12, 16)

    def conv(sub):
        kernel, bias = sub.get_weights()
        return flat @ kernel[0, 0] + bias

    q, k, v = conv(layer.query), conv(layer.key), conv(layer.value)
    attention = _softmax(q @ k.transpose(0, 2, 1))
    expected = (0.7 * (attention @ v) + flat).reshape(X.shape)
    np.testing.assert_allclose(layer(X).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_channel_attention_equals_the_authors_formula():
    layer = ChannelAttention()
    x = X * 0.1
    layer(x)
    layer.gamma.assign(-1.5)
    flat = x.reshape(2, 12, 16)  # [B, N, C]
    energy = flat.transpose(0, 2, 1) @ flat  # [B, C, C]
    attention = _softmax(energy.max(axis=-1, keepdims=True) - energy)
    out = attention @ flat.transpose(0, 2, 1)  # the authors' bmm(attention, value): [B, C, N]
    expected = (-1.5 * out.transpose(0, 2, 1) + flat).reshape(x.shape)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_pan_blocks_contract(tmp_path):
    high = RNG.normal(size=(2, 8, 6, 12)).astype("float32")
    out = check_layer(
        FeaturePyramidAttention,
        {"filters": 5},
        high,
        input_shapes=(None, None, 12),
        tmp_dir=tmp_path,
        check_dtypes=("float64",),
    )
    assert out.shape == (2, 8, 6, 5)
    low = RNG.normal(size=(2, 16, 12, 3)).astype("float32")
    out = check_layer(
        GlobalAttentionUpsample,
        {"filters": 5},
        [low, out.astype("float32")],
        tmp_dir=tmp_path,
        check_dtypes=("float64",),
    )
    out = out[0] if isinstance(out, list) else out
    assert out.shape == (2, 16, 12, 5)


def test_global_attention_upsample_equals_numpy_at_equal_sizes():
    # Equal sizes: the bilinear upsampling is the identity; BN at its initial statistics.
    low = RNG.normal(size=(1, 4, 4, 3)).astype("float32")
    high = RNG.normal(size=(1, 4, 4, 5)).astype("float32")
    layer = GlobalAttentionUpsample(5)
    out = layer([low, high]).numpy()
    conv, bn = layer.low_conv
    gate_conv, gate_bn = layer.gate
    scale = 1 / np.sqrt(1 + bn.epsilon)
    k, b = conv.get_weights()
    padded = np.pad(low, ((0, 0), (1, 1), (1, 1), (0, 0)))
    local = np.zeros((1, 4, 4, 5), "float32")
    for i in range(4):
        for j in range(4):
            local[0, i, j] = np.einsum("hwc,hwco->o", padded[0, i : i + 3, j : j + 3], k) + b
    local = np.maximum(local * scale, 0)
    gk, gb = gate_conv.get_weights()
    gate = 1 / (1 + np.exp(-((high.mean(axis=(1, 2)) @ gk[0, 0] + gb) * scale)))
    np.testing.assert_allclose(out, high + local * gate[:, None, None], rtol=1e-4, atol=1e-4)


def test_fpa_pyramid_works_on_small_and_odd_maps():
    for shape in [(1, 1, 1, 4), (1, 3, 5, 4), (1, 9, 7, 4)]:
        out = FeaturePyramidAttention(3)(np.ones(shape, "float32"))
        assert out.shape == (*shape[:3], 3)


def test_scale_attention_is_a_softmax_weighted_sum(tmp_path):
    h = RNG.normal(size=(2, 3, 4, 3)).astype("float32")
    scores = [RNG.normal(size=(2, 3, 4, 5)).astype("float32") for _ in range(3)]
    w = _softmax(h)
    expected = sum(w[..., s : s + 1] * scores[s] for s in range(3))
    check_layer(
        ScaleAttention, {}, [h, *scores], expected_output=expected, atol=1e-5, tmp_dir=tmp_path
    )
    with pytest.raises(ValueError, match="2 scales"):
        ScaleAttention()([h, *scores[:2]])


def test_l2_normalization_equals_numpy(tmp_path):
    x = RNG.normal(size=(2, 3, 4, 6)).astype("float32")
    expected = 10.0 * x / np.sqrt((x**2).sum(-1, keepdims=True))
    check_layer(L2Normalization, {}, x, expected_output=expected, atol=1e-4, tmp_dir=tmp_path)
    with pytest.raises(ValueError, match="scale=0"):
        L2Normalization(scale=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction=0"):
        PositionAttention(reduction=0)
    with pytest.raises(ValueError, match="filters=-1"):
        FeaturePyramidAttention(-1)
    with pytest.raises(ValueError, match="high of 4 channels"):
        GlobalAttentionUpsample(4)(
            [np.ones((1, 4, 4, 2), "float32"), np.ones((1, 2, 2, 3), "float32")]
        )

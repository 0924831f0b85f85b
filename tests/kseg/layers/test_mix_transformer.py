"""Mix Transformer blocks (SegFormer): harness and numpy references."""

import numpy as np
import pytest

from kseg.layers import EfficientSelfAttention, MixFFN, MixTransformerBlock, OverlapPatchEmbedding
from kseg.testing import check_layer

RNG = np.random.default_rng(0)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _dense(sub, x):
    kernel, bias = sub.get_weights()
    return x @ kernel + bias


def _layer_norm(sub, x):
    gamma, beta = sub.get_weights()
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + sub.epsilon) * gamma + beta


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (EfficientSelfAttention, {"num_heads": 2, "sr_ratio": 2}),
        (MixFFN, {"mlp_ratio": 2}),
        (MixTransformerBlock, {"num_heads": 2, "sr_ratio": 2, "drop_path": 0.1, "seed": 1}),
    ],
)
def test_contract(cls, kwargs, tmp_path):
    x = RNG.normal(size=(2, 5, 6, 8)).astype("float32")
    out = check_layer(cls, kwargs, x, input_shapes=(None, None, 8), tmp_dir=tmp_path)
    assert out.shape == x.shape


def test_patch_embedding_sizes_and_contract(tmp_path):
    x = RNG.normal(size=(1, 30, 17, 3)).astype("float32")
    out = check_layer(OverlapPatchEmbedding, {"filters": 4}, x, tmp_dir=tmp_path)
    # the authors' Conv2d(k=7, stride=4, padding=3): floor((H + 6 - 7) / 4) + 1
    assert out.shape == (1, (30 - 1) // 4 + 1, (17 - 1) // 4 + 1, 4)


def test_efficient_self_attention_equals_numpy():
    # sr_ratio 2 on a 4x6 map: keys/values from a 2x3 map (2x2 stride-2 conv, layer norm)
    x = RNG.normal(size=(1, 4, 6, 4)).astype("float32")
    layer = EfficientSelfAttention(num_heads=2, sr_ratio=2)
    out = layer(x).numpy()
    kernel, bias = layer.sr.get_weights()
    reduced = np.zeros((1, 2, 3, 4), "float32")
    for i in range(2):
        for j in range(3):
            patch = x[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            reduced[0, i, j] = np.einsum("hwc,hwco->o", patch, kernel) + bias
    context = _layer_norm(layer.norm, reduced.reshape(1, 6, 4))
    flat = x.reshape(1, 24, 4)
    q = _dense(layer.query, flat).reshape(1, 24, 2, 2).transpose(0, 2, 1, 3)
    k = _dense(layer.key, context).reshape(1, 6, 2, 2).transpose(0, 2, 1, 3)
    v = _dense(layer.value, context).reshape(1, 6, 2, 2).transpose(0, 2, 1, 3)
    heads = _softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(2)) @ v
    expected = _dense(layer.proj, heads.transpose(0, 2, 1, 3).reshape(1, 24, 4))
    np.testing.assert_allclose(out, expected.reshape(x.shape), rtol=1e-4, atol=1e-5)


def test_block_is_deterministic_at_inference_and_drops_paths_in_training():
    x = RNG.normal(size=(8, 3, 3, 4)).astype("float32")
    block = MixTransformerBlock(1, 1, drop_path=0.5, seed=0)
    a, b = block(x).numpy(), block(x, training=False).numpy()
    np.testing.assert_array_equal(a, b)
    trained = block(x, training=True).numpy()
    # a sample whose two branches were both dropped is returned unchanged
    unchanged = [np.allclose(trained[i], x[i]) for i in range(8)]
    assert 0 < sum(unchanged) < 8, unchanged


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads=3 must divide the 8 channels"):
        EfficientSelfAttention(3)(np.ones((1, 2, 2, 8), "float32"))
    with pytest.raises(ValueError, match="drop_path=1"):
        MixTransformerBlock(1, drop_path=1)
    with pytest.raises(ValueError, match="stride=0"):
        OverlapPatchEmbedding(4, 3, 0)

"""LiteRASPP: the shared layer harness and a numpy reference of the head."""

import numpy as np
import pytest

from kseg.layers import LiteRASPP
from kseg.testing import check_layer


def _inputs(high_hw=(3, 5), low_hw=(6, 10), seed=0):
    rng = np.random.default_rng(seed)
    high = rng.normal(size=(2, *high_hw, 6)).astype("float32")
    low = rng.normal(size=(2, *low_hw, 4)).astype("float32")
    return [high, low]


@pytest.mark.parametrize("kwargs", [{}, {"pool_size": 2, "pool_strides": (1, 2)}])
def test_layer_contract_with_the_shared_harness(kwargs, tmp_path):
    out = check_layer(
        LiteRASPP,
        {"num_classes": 3, "filters": 5, **kwargs},
        _inputs(),
        input_shapes=[(None, None, 6), (None, None, 4)],
        tmp_dir=tmp_path,
    )
    out = out[0] if isinstance(out, list) else out
    assert out.shape == (2, 6, 10, 3)


def _reference(layer, high, low):
    """numpy: relu(bn(high @ W)) * sigmoid(mean(high) @ S), classified, plus low classified."""
    w = layer.high_conv.get_weights()[0][0, 0]
    gamma, beta, mean, var = layer.high_bn.get_weights()
    x = (high @ w - mean) / np.sqrt(var + layer.high_bn.epsilon) * gamma + beta
    x = np.maximum(x, 0)
    s = 1 / (
        1
        + np.exp(-(high.mean(axis=(1, 2), keepdims=True) @ layer.scale_conv.get_weights()[0][0, 0]))
    )
    hk, hb = layer.high_classifier.get_weights()
    lk, lb = layer.low_classifier.get_weights()
    return (x * s) @ hk[0, 0] + hb + low @ lk[0, 0] + lb


def test_values_equal_a_numpy_reference():
    # Equal high and low sizes: the bilinear resize is the identity, the rest is checked.
    high, low = _inputs(high_hw=(4, 5), low_hw=(4, 5), seed=1)
    layer = LiteRASPP(num_classes=3, filters=5)
    layer([high, low])
    rng = np.random.default_rng(2)
    for sub in (layer.high_conv, layer.scale_conv, layer.high_classifier, layer.low_classifier):
        sub.set_weights([rng.normal(size=w.shape).astype("float32") for w in sub.get_weights()])
    layer.high_bn.set_weights([rng.uniform(0.5, 2, size=(5,)).astype("float32") for _ in range(4)])
    np.testing.assert_allclose(
        layer([high, low]).numpy(), _reference(layer, high, low), rtol=1e-4, atol=1e-4
    )
    # A pooling window the size of the features is global pooling.
    windowed = LiteRASPP(num_classes=3, filters=5, pool_size=(4, 5))
    windowed([high, low])
    windowed.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        windowed([high, low]).numpy(), layer([high, low]).numpy(), rtol=1e-5, atol=1e-5
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes=0"):
        LiteRASPP(num_classes=0)
    with pytest.raises(ValueError, match="pool_size=-1"):
        LiteRASPP(num_classes=2, pool_size=-1)
    with pytest.raises(ValueError, match="pool_strides"):
        LiteRASPP(num_classes=2, pool_strides=2)
    with pytest.raises(ValueError, match="smaller than pool_size"):
        import keras

        LiteRASPP(num_classes=2, pool_size=8)([keras.Input((4, 4, 3)), keras.Input((8, 8, 3))])

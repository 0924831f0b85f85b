"""BiSeNet, BiSeNet V2, Fast-SCNN and ICNet blocks against numpy references."""

import keras
import numpy as np
import pytest

from kseg.layers import (
    attention_refinement,
    bilateral_guided_aggregation,
    cascade_feature_fusion,
    context_embedding,
    feature_fusion,
    gather_expand,
    pyramid_pooling_module,
    stem_block,
)
from kseg.layers.fast_scnn import linear_bottleneck

RNG = np.random.default_rng(0)


def _randomise_batch_norms(model):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    RNG.uniform(0.5, 1.5, n),
                    RNG.normal(0, 0.2, n),
                    RNG.normal(0, 0.2, n),
                    RNG.uniform(0.5, 2.0, n),
                ]
            )


def _bn(model, name, x):
    layer = model.get_layer(name)
    gamma, beta, mean, var = layer.get_weights()
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _probe(model, names, x):
    outputs = [model.get_layer(n).output for n in names]
    return keras.Model(model.inputs, outputs).predict(x, verbose=0)


def test_attention_refinement_reweights_channels_by_a_sigmoid_of_their_mean():
    inputs = keras.Input((6, 7, 5))
    model = keras.Model(inputs, attention_refinement(inputs, 4, "arm"))
    _randomise_batch_norms(model)
    x = RNG.normal(size=(2, 6, 7, 5)).astype("float32")
    y, out = _probe(model, ["arm_conv_relu", "arm_scale"], x)
    kernel = model.get_layer("arm_attention").get_weights()[0][0, 0]
    attention = _sigmoid(_bn(model, "arm_attention_bn", y.mean(axis=(1, 2)) @ kernel))
    np.testing.assert_allclose(out, y * attention[:, None, None], rtol=1e-4, atol=1e-5)


def test_feature_fusion_adds_the_attention_weighted_features():
    spatial, context = keras.Input((5, 4, 3)), keras.Input((5, 4, 2))
    model = keras.Model([spatial, context], feature_fusion(spatial, context, 6, "ffm", 2))
    _randomise_batch_norms(model)
    xs = [RNG.normal(size=(2, 5, 4, c)).astype("float32") for c in (3, 2)]
    y, out = _probe(model, ["ffm_conv_relu", "ffm_add"], xs)
    w1 = model.get_layer("ffm_attention1").get_weights()[0][0, 0]
    w2 = model.get_layer("ffm_attention2").get_weights()[0][0, 0]
    assert w1.shape == (6, 3)  # reduction 2
    attention = _sigmoid(np.maximum(y.mean(axis=(1, 2)) @ w1, 0) @ w2)
    np.testing.assert_allclose(out, y + y * attention[:, None, None], rtol=1e-4, atol=1e-5)
    # the 1x1 convolution sees the concatenation [spatial, context]
    kernel = model.get_layer("ffm_conv").get_weights()[0][0, 0]
    concat = np.concatenate(xs, axis=-1)
    expected = np.maximum(_bn(model, "ffm_conv_bn", concat @ kernel), 0)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_context_embedding_broadcasts_the_pooled_context():
    inputs = keras.Input((4, 6, 8))
    model = keras.Model(inputs, context_embedding(inputs, 5, "ce"))
    _randomise_batch_norms(model)
    x = RNG.normal(size=(2, 4, 6, 8)).astype("float32")
    (added,) = [_probe(model, ["ce_add"], x)]
    kernel = model.get_layer("ce_gap").get_weights()[0][0, 0]
    pooled = _bn(model, "ce_pool_bn", x.mean(axis=(1, 2)))
    gap = np.maximum(_bn(model, "ce_gap_bn", pooled @ kernel), 0)
    np.testing.assert_allclose(added, x + gap[:, None, None], rtol=1e-4, atol=1e-5)
    assert model.output.shape[-1] == 5


@pytest.mark.parametrize("stride", [1, 2])
def test_gather_expand_is_a_residual_of_the_projection(stride):
    inputs = keras.Input((8, 10, 4))
    filters = 4 if stride == 1 else 6
    model = keras.Model(inputs, gather_expand(inputs, filters, "ge", stride=stride, expansion=3))
    _randomise_batch_norms(model)
    x = RNG.normal(size=(1, 8, 10, 4)).astype("float32")
    names = ["ge_project_bn", "ge_out"]
    if stride == 2:
        names.append("ge_shortcut_conv_bn")
    probed = _probe(model, names, x)
    shortcut = x if stride == 1 else probed[2]
    np.testing.assert_allclose(probed[1], np.maximum(probed[0] + shortcut, 0), atol=1e-5)
    first = "ge_dw" if stride == 1 else "ge_dw1"
    assert model.get_layer(first).depth_multiplier == 3
    assert model.output.shape[1:] == (8 // stride, 10 // stride, filters)
    with pytest.raises(ValueError, match="Received: filters=5"):
        gather_expand(inputs, 5, "bad")


def test_stem_block_and_aggregation_shapes_for_odd_sizes():
    images = keras.Input((33, 47, 3))
    stem = stem_block(images, 16, "stem")
    assert tuple(stem.shape[1:]) == (9, 12, 16)
    detail, semantic = keras.Input((17, 23, 8)), keras.Input((5, 6, 8))
    fused = bilateral_guided_aggregation(detail, semantic, "bga")
    assert tuple(fused.shape[1:]) == (17, 23, 8)
    with pytest.raises(ValueError, match="same channels"):
        bilateral_guided_aggregation(detail, keras.Input((5, 6, 4)), "bad")


def test_bilateral_guided_aggregation_values():
    detail, semantic = keras.Input((8, 8, 3)), keras.Input((2, 2, 3))
    model = keras.Model([detail, semantic], bilateral_guided_aggregation(detail, semantic, "bga"))
    _randomise_batch_norms(model)
    xd = RNG.normal(size=(1, 8, 8, 3)).astype("float32")
    xs = RNG.normal(size=(1, 2, 2, 3)).astype("float32")
    names = ["bga_detail_pw", "bga_semantic_up", "bga_detail_pool", "bga_semantic_pw", "bga_add"]
    keep, up, down, semantic_keep, added = _probe(model, names, [xd, xs])
    right = down * _sigmoid(semantic_keep)
    # bilinear upsampling x4 with half-pixel centres, as tf.image.resize
    import tensorflow as tf

    right_up = tf.image.resize(right, (8, 8)).numpy()
    np.testing.assert_allclose(added, keep * _sigmoid(up) + right_up, rtol=1e-4, atol=1e-5)


def test_linear_bottleneck_residual_only_when_shape_is_kept():
    inputs = keras.Input((6, 6, 8))
    kept = keras.Model(inputs, linear_bottleneck(inputs, 8, 1, 2, "b"))
    assert "b_add" in [layer.name for layer in kept.layers]
    _randomise_batch_norms(kept)
    x = RNG.normal(size=(1, 6, 6, 8)).astype("float32")
    (project,) = [_probe(kept, ["b_project_bn"], x)]
    np.testing.assert_allclose(kept.predict(x, verbose=0), x + project, atol=1e-5)
    strided = keras.Model(inputs, linear_bottleneck(inputs, 8, 2, 2, "c"))
    assert "c_add" not in [layer.name for layer in strided.layers]


def test_pyramid_pooling_module_sum_adds_the_pooled_means():
    inputs = keras.Input((6, 9, 4))
    model = keras.Model(inputs, pyramid_pooling_module(inputs, (1, 3), "ppm", merge="sum"))
    x = RNG.normal(size=(2, 6, 9, 4)).astype("float32")
    # bin 3 on a 6x9 map is an exact 2x3 block average; bilinear upsampling of a 3x3 grid by
    # (2, 3) with half-pixel centres, from tf.image.resize
    import tensorflow as tf

    blocks = x.reshape(2, 3, 2, 3, 3, 4).mean(axis=(2, 4))
    expected = x + x.mean(axis=(1, 2), keepdims=True) + tf.image.resize(blocks, (6, 9)).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="merge='max'"):
        pyramid_pooling_module(inputs, (1,), "bad", merge="max")


def test_cascade_feature_fusion_values():
    small, large = keras.Input((3, 4, 5)), keras.Input((6, 8, 2))
    fused, logits = cascade_feature_fusion(small, large, 4, "cff", num_classes=3)
    model = keras.Model([small, large], [fused, logits])
    _randomise_batch_norms(model)
    assert model.get_layer("cff_small_conv").dilation_rate == (2, 2)
    xs = RNG.normal(size=(1, 3, 4, 5)).astype("float32")
    xl = RNG.normal(size=(1, 6, 8, 2)).astype("float32")
    up, small_bn = _probe(model, ["cff_upsample", "cff_small_conv_bn"], [xs, xl])
    out, cls = model.predict([xs, xl], verbose=0)
    kernel = model.get_layer("cff_large_conv").get_weights()[0][0, 0]
    large_bn = _bn(model, "cff_large_conv_bn", xl @ kernel)
    np.testing.assert_allclose(out, np.maximum(small_bn + large_bn, 0), rtol=1e-4, atol=1e-5)
    w, b = model.get_layer("cff_classifier").get_weights()
    np.testing.assert_allclose(cls, up @ w[0, 0] + b, rtol=1e-4, atol=1e-5)

"""BiSeNet, BiSeNet V2, ERFNet, ESPNet, Fast-SCNN and ICNet blocks: the layer contract, and
their values against numpy references built from their own sublayers' weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers import (
    AttentionRefinementModule,
    BilateralGuidedAggregation,
    CascadeFeatureFusion,
    ContextEmbedding,
    EESPDownsampler,
    EESPUnit,
    EfficientPWConv,
    EfficientPyramidPooling,
    ERFNetDownsampler,
    ERFNetUpsampler,
    ESPModule,
    FastSCNNFeatureFusion,
    FeatureFusionModule,
    GatherExpand,
    GlobalFeatureExtractor,
    LearningToDownsample,
    LinearBottleneck,
    NonBottleneck1D,
    StemBlock,
    bilateral_guided_aggregation,
    cascade_feature_fusion,
    gather_expand,
    pyramid_pooling_module,
)
from kseg.testing import check_layer

RNG = np.random.default_rng(0)


def _randomise_batch_norms(layer):
    for sub in layer._flatten_layers():
        if isinstance(sub, keras.layers.BatchNormalization):
            n = sub.gamma.shape[0]
            sub.set_weights(
                [
                    RNG.uniform(0.5, 1.5, n),
                    RNG.normal(0, 0.2, n),
                    RNG.normal(0, 0.2, n),
                    RNG.uniform(0.5, 2.0, n),
                ]
            )


def _bn(layer, x):
    gamma, beta, mean, var = layer.get_weights()
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _np(x):
    return np.asarray(x)


def _x(*shape):
    return RNG.normal(size=shape).astype("float32")


CONTRACTS = [
    (AttentionRefinementModule, {"filters": 4}, [(6, 7, 5)]),
    (FeatureFusionModule, {"filters": 6, "reduction": 2}, [(5, 4, 3), (5, 4, 2)]),
    (StemBlock, {"filters": 8}, [(17, 23, 3)]),
    (GatherExpand, {"filters": 4, "expansion": 3}, [(8, 10, 4)]),
    (GatherExpand, {"filters": 6, "stride": 2, "expansion": 2}, [(9, 10, 4)]),
    (ContextEmbedding, {"filters": 5}, [(4, 6, 8)]),
    (BilateralGuidedAggregation, {}, [(16, 20, 8), (4, 5, 8)]),
    (LearningToDownsample, {"filters": [8, 12, 16]}, [(33, 40, 3)]),
    (LinearBottleneck, {"filters": 8, "strides": 1, "expansion": 2}, [(6, 6, 8)]),
    (
        GlobalFeatureExtractor,
        {"filters": [8, 8, 16], "out_filters": 8, "expansion": 2},
        [(16, 12, 8)],
    ),
    (FastSCNNFeatureFusion, {"filters": 8}, [(16, 12, 8), (4, 3, 16)]),
    (CascadeFeatureFusion, {"filters": 4, "num_classes": 3}, [(3, 4, 5), (6, 8, 2)]),
    (CascadeFeatureFusion, {"filters": 4}, [(3, 4, 5), (6, 8, 2)]),
    (ERFNetDownsampler, {"filters": 8}, [(15, 20, 3)]),
    (NonBottleneck1D, {"dilation_rate": 2, "dropout": 0.1}, [(8, 8, 8)]),
    (ERFNetUpsampler, {"filters": 4}, [(4, 5, 8)]),
    (ESPModule, {"filters": 10, "downsample": True}, [(15, 9, 6)]),
    (ESPModule, {"filters": 10}, [(8, 9, 10)]),
    (EESPUnit, {"filters": 16, "receptive_limit": 9}, [(12, 10, 16)]),
    (EESPDownsampler, {"filters": 32}, [(12, 10, 16), (6, 5, 3)]),
    (EfficientPyramidPooling, {"projection": 4, "filters": 8}, [(8, 6, 16)]),
    (EfficientPyramidPooling, {"projection": 4, "filters": 3, "last_bn_act": False}, [(8, 6, 16)]),
    (EfficientPWConv, {"filters": 12}, [(8, 6, 16)]),
]


@pytest.mark.parametrize(
    "layer_cls, kwargs, shapes",
    CONTRACTS,
    ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CONTRACTS)],
)
def test_layer_contract(layer_cls, kwargs, shapes, tmp_path):
    data = [_x(2, *shape) for shape in shapes]
    unknown = [(None, None, shape[-1]) for shape in shapes]
    check_layer(
        layer_cls,
        kwargs,
        data if len(data) > 1 else data[0],
        input_shapes=unknown if len(data) > 1 else unknown[0],
        tmp_dir=tmp_path,
        atol=1e-5,
    )


def test_attention_refinement_reweights_channels_by_a_sigmoid_of_their_mean():
    arm = AttentionRefinementModule(4)
    x = _x(2, 6, 7, 5)
    arm(x)
    _randomise_batch_norms(arm)
    conv, bn = arm.conv
    y = np.maximum(_np(bn(conv(x))), 0)
    kernel = arm.attention[0].get_weights()[0][0, 0]
    attention = _sigmoid(_bn(arm.attention[1], y.mean(axis=(1, 2)) @ kernel))
    np.testing.assert_allclose(_np(arm(x)), y * attention[:, None, None], rtol=1e-4, atol=1e-5)


def test_feature_fusion_adds_the_attention_weighted_features():
    ffm = FeatureFusionModule(6, reduction=2)
    xs = [_x(2, 5, 4, c) for c in (3, 2)]
    ffm(xs)
    _randomise_batch_norms(ffm)
    kernel = ffm.conv[0].get_weights()[0][0, 0]
    y = np.maximum(_bn(ffm.conv[1], np.concatenate(xs, axis=-1) @ kernel), 0)
    w1 = ffm.attention1.get_weights()[0][0, 0]
    w2 = ffm.attention2.get_weights()[0][0, 0]
    assert w1.shape == (6, 3)  # reduction 2
    attention = _sigmoid(np.maximum(y.mean(axis=(1, 2)) @ w1, 0) @ w2)
    np.testing.assert_allclose(_np(ffm(xs)), y + y * attention[:, None, None], rtol=1e-4, atol=1e-5)


def test_context_embedding_broadcasts_the_pooled_context():
    ce = ContextEmbedding(5)
    x = _x(2, 4, 6, 8)
    ce(x)
    _randomise_batch_norms(ce)
    kernel = ce.gap[0].get_weights()[0][0, 0]
    pooled = _bn(ce.pool_bn, x.mean(axis=(1, 2)))
    added = x + np.maximum(_bn(ce.gap[1], pooled @ kernel), 0)[:, None, None]
    conv, bn = ce.last
    np.testing.assert_allclose(
        _np(ce(x)), np.maximum(_np(bn(conv(added))), 0), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("stride", [1, 2])
def test_gather_expand_is_a_residual_of_the_projection(stride):
    filters = 4 if stride == 1 else 6
    ge = GatherExpand(filters, stride=stride, expansion=3)
    x = _x(1, 8, 10, 4)
    ge(x)
    _randomise_batch_norms(ge)
    y = np.maximum(_np(ge.conv[1](ge.conv[0](x))), 0)
    for dw, bn in zip(ge.dws, ge.dw_bns):
        y = _np(bn(dw(y)))
    y = _np(ge.project[1](ge.project[0](np.maximum(y, 0))))
    if stride == 1:
        shortcut = x
    else:
        shortcut = _np(ge.shortcut_dw_bn(ge.shortcut_dw(x)))
        shortcut = _np(ge.shortcut_conv[1](ge.shortcut_conv[0](shortcut)))
    np.testing.assert_allclose(_np(ge(x)), np.maximum(y + shortcut, 0), atol=1e-5)
    assert ge.dws[0].depth_multiplier == 3
    with pytest.raises(ValueError, match="Received: filters=5"):
        gather_expand(keras.Input((8, 10, 4)), 5, "bad")


def test_stem_block_and_aggregation_shapes_for_odd_sizes():
    assert tuple(StemBlock(16)(keras.Input((33, 47, 3))).shape[1:]) == (9, 12, 16)
    detail, semantic = keras.Input((17, 23, 8)), keras.Input((5, 6, 8))
    assert tuple(bilateral_guided_aggregation(detail, semantic, "bga").shape[1:]) == (17, 23, 8)
    with pytest.raises(ValueError, match="same channels"):
        bilateral_guided_aggregation(detail, keras.Input((5, 6, 4)), "bad")


def test_bilateral_guided_aggregation_values():
    bga = BilateralGuidedAggregation()
    xd, xs = _x(1, 8, 8, 3), _x(1, 2, 2, 3)
    bga([xd, xs])
    _randomise_batch_norms(bga)

    def dw_pw(block, x):
        dw, bn, pw = block
        return _np(pw(bn(dw(x))))

    keep = dw_pw(bga.detail_keep, xd)
    down = _np(bga.detail_pool(bga.detail_down[1](bga.detail_down[0](xd))))
    up = tf.image.resize(_np(bga.semantic_conv[1](bga.semantic_conv[0](xs))), (8, 8)).numpy()
    right = tf.image.resize(down * _sigmoid(dw_pw(bga.semantic_keep, xs)), (8, 8)).numpy()
    conv, bn = bga.out
    expected = np.maximum(_np(bn(conv(keep * _sigmoid(up) + right))), 0)
    np.testing.assert_allclose(_np(bga([xd, xs])), expected, rtol=1e-4, atol=1e-5)


def test_linear_bottleneck_residual_only_when_shape_is_kept():
    kept = LinearBottleneck(8, strides=1, expansion=2)
    x = _x(1, 6, 6, 8)
    kept(x)
    _randomise_batch_norms(kept)
    y = np.maximum(_np(kept.expand[1](kept.expand[0](x))), 0)
    y = np.maximum(_np(kept.dw_bn(kept.dw(y))), 0)
    project = _np(kept.project[1](kept.project[0](y)))
    np.testing.assert_allclose(_np(kept(x)), x + project, atol=1e-5)
    strided = LinearBottleneck(8, strides=2, expansion=2)
    assert strided(x).shape == (1, 3, 3, 8)


def test_global_feature_extractor_structure():
    gfe = GlobalFeatureExtractor()
    gfe.build((None, 16, 24, 64))
    assert [b.filters for b in gfe.bottlenecks] == [64] * 3 + [96] * 3 + [128] * 3
    assert [b.strides for b in gfe.bottlenecks] == [2, 1, 1, 2, 1, 1, 1, 1, 1]
    assert gfe.bottlenecks[0].expand[0].filters == 64 * 6
    assert [p.bins for p in gfe.pools] == [1, 2, 3, 6]
    assert [b[0].filters for b in gfe.branches] == [32] * 4  # a quarter of 128


def test_fast_scnn_feature_fusion_values():
    ffm = FastSCNNFeatureFusion(4)
    high, low = _x(1, 8, 8, 3), _x(1, 2, 2, 5)
    ffm([high, low])
    _randomise_batch_norms(ffm)
    assert ffm.low_dw.dilation_rate == (4, 4)
    up = tf.image.resize(low, (8, 8)).numpy()
    low_y = np.maximum(_np(ffm.low_dw_bn(ffm.low_dw(up))), 0)
    w, b = ffm.low_conv[0].get_weights()
    low_y = _bn(ffm.low_conv[1], low_y @ w[0, 0] + b)
    w, b = ffm.high_conv[0].get_weights()
    high_y = _bn(ffm.high_conv[1], high @ w[0, 0] + b)
    np.testing.assert_allclose(
        _np(ffm([high, low])), np.maximum(high_y + low_y, 0), rtol=1e-4, atol=1e-5
    )


def test_pyramid_pooling_module_sum_adds_the_pooled_means():
    inputs = keras.Input((6, 9, 4))
    model = keras.Model(inputs, pyramid_pooling_module(inputs, (1, 3), "ppm", merge="sum"))
    x = _x(2, 6, 9, 4)
    # bin 3 on a 6x9 map is an exact 2x3 block average; bilinear upsampling of a 3x3 grid by
    # (2, 3) with half-pixel centres, from tf.image.resize
    blocks = x.reshape(2, 3, 2, 3, 3, 4).mean(axis=(2, 4))
    expected = x + x.mean(axis=(1, 2), keepdims=True) + tf.image.resize(blocks, (6, 9)).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="merge='max'"):
        pyramid_pooling_module(inputs, (1,), "bad", merge="max")


def test_cascade_feature_fusion_values():
    cff = CascadeFeatureFusion(4, num_classes=3)
    xs, xl = _x(1, 3, 4, 5), _x(1, 6, 8, 2)
    cff([xs, xl])
    _randomise_batch_norms(cff)
    assert cff.small_conv.dilation_rate == (2, 2)
    up = tf.image.resize(xs, (6, 8)).numpy()
    small = _np(cff.small_bn(cff.small_conv(up)))
    large = _bn(cff.large_bn, xl @ cff.large_conv.get_weights()[0][0, 0])
    out, cls = (_np(t) for t in cff([xs, xl]))
    np.testing.assert_allclose(out, np.maximum(small + large, 0), rtol=1e-4, atol=1e-5)
    w, b = cff.classifier.get_weights()
    np.testing.assert_allclose(cls, up @ w[0, 0] + b, rtol=1e-4, atol=1e-5)
    fused, logits = cascade_feature_fusion(
        keras.Input((3, 4, 5)), keras.Input((6, 8, 2)), 4, "c", 3
    )
    assert tuple(fused.shape) == (None, 6, 8, 4) and tuple(logits.shape) == (None, 6, 8, 3)


def test_erfnet_blocks_values():
    down = ERFNetDownsampler(8)
    x = _x(1, 5, 7, 3)
    down(x)
    down.conv.set_weights([np.zeros((3, 3, 3, 5), "float32"), np.arange(5, dtype="float32") - 2])
    pooled = np.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)], constant_values=-np.inf)
    pooled = pooled.reshape(1, 3, 2, 4, 2, 3).max(axis=(2, 4))
    expected = np.concatenate([np.broadcast_to(np.arange(5.0) - 2, (1, 3, 4, 5)), pooled], -1)
    np.testing.assert_allclose(_np(down(x)), np.maximum(_bn(down.bn, expected), 0), atol=1e-5)
    nb = NonBottleneck1D(dilation_rate=2)
    y = _x(1, 6, 6, 4)
    nb(y)
    assert [c.kernel_size for c in nb.convs] == [(3, 1), (1, 3)] * 2
    assert [c.dilation_rate for c in nb.convs] == [(1, 1), (1, 1), (2, 1), (1, 2)]
    nb.bns[1].set_weights([np.zeros(4)] * 2 + nb.bns[1].get_weights()[2:])
    np.testing.assert_allclose(_np(nb(y)), np.maximum(y, 0), atol=1e-6)  # silenced branch


def test_esp_module_hierarchical_fusion_by_hand():
    """Ones kernels on an input of ones: the 1×1 reduction gives 4 on each of its n = 2
    channels, every 3×3 branch 9·2·4 = 72 at the centre, and the hierarchical fusion stacks
    them: the dilated branch k (k = 1..4) holds 72·k."""
    esp = ESPModule(10, residual=False)
    x = np.ones((1, 40, 40, 4), "float32")
    esp(x)
    reduce = esp.reduce[0]
    reduce.set_weights([np.ones((1, 1, 4, 2), "float32")])
    for conv in esp.branches:
        conv.set_weights([np.ones(conv.kernel.shape, "float32")])
    reduced = _np(reduce(x))
    outputs = [_np(esp.branches[0](reduced))]
    total = 0
    for conv in esp.branches[1:]:
        total = total + _np(conv(reduced))
        outputs.append(total)
    centre = [o[0, 20, 20] for o in outputs]
    np.testing.assert_allclose(centre[0], np.full(2, 72.0))
    for k in range(1, 5):
        np.testing.assert_allclose(centre[k], np.full(2, 72.0 * k))
    expected = _bn(esp.out[0], np.concatenate(outputs, -1))
    expected = np.where(expected > 0, expected, 0.25 * expected)
    np.testing.assert_allclose(_np(esp(x)), expected, rtol=1e-5, atol=1e-4)


def test_eesp_unit_dilations_and_strided_subsampling():
    unit = EESPUnit(16, receptive_limit=7)
    unit.build((None, 8, 8, 16))
    assert [dw.dilation_rate for dw in unit.dws] == [(1, 1), (1, 1), (2, 2), (3, 3)]
    strided = EESPUnit(16, strides=2)
    x = _x(1, 9, 7, 16)
    assert strided(x).shape == (1, 5, 4, 16)
    with pytest.raises(ValueError, match="Received: filters=10"):
        EESPUnit(10)(x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: filters=0"):
        AttentionRefinementModule(0)
    with pytest.raises(ValueError, match="Received: reduction=9"):
        FeatureFusionModule(8, reduction=9)
    with pytest.raises(ValueError, match="Received: stride=3"):
        GatherExpand(8, stride=3)
    with pytest.raises(ValueError, match="Received: filters=3"):
        ERFNetDownsampler(3)(_x(1, 4, 4, 3))
    with pytest.raises(ValueError, match="Received: filters=4"):
        ESPModule(4)
    with pytest.raises(ValueError, match=r"Received: filters=\[8, 8\]"):
        LearningToDownsample([8, 8])
    with pytest.raises(ValueError, match="expects \\[high, low\\]"):
        FastSCNNFeatureFusion(8)([_x(1, 4, 4, 2)] * 3)
    with pytest.raises(ValueError, match="Received: dropout=1"):
        NonBottleneck1D(dropout=1)

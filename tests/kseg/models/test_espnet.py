"""ESPNet and ESPNetV2: published parameter counts and multiply-adds, the model contract."""

import keras
import numpy as np
import pytest

import kseg
from kseg.layers.esp_blocks import ScaleResize, esp_module
from kseg.models.deeplab import trainable_parameter_count
from kseg.models.espnet import ESPNet, ESPNetV2
from kseg.testing import check_layer, check_model


def test_espnet_paper_parameter_count():
    model = ESPNet(num_classes=19)  # p = 2, q = 8
    assert trainable_parameter_count(model) == 363_462
    assert abs(trainable_parameter_count(model) - 0.364e6) / 0.364e6 < 0.03


def test_espnetv2_paper_parameter_count():
    model = ESPNetV2(num_classes=19, s=2.0)
    assert trainable_parameter_count(model) == 787_488
    assert abs(trainable_parameter_count(model) - 0.79e6) / 0.79e6 < 0.03


@pytest.mark.slow
def test_espnetv2_multiply_adds_at_1024x512():
    # EdgeNets' "2699 MFLOPs" are multiply-adds of the convolutions (compute_flops halves 2/MAdd)
    model = ESPNetV2(num_classes=19, s=2.0, input_shape=(512, 1024, 3))
    madds = kseg.bench.profile(model, (512, 1024, 3))["madds"]
    assert abs(madds - 2.699e9) / 2.699e9 < 0.10, madds


def test_espnet_contract_at_several_sizes(tmp_path):
    results = check_model(
        lambda shape: ESPNet(num_classes=4, input_shape=shape, p=1, q=1),
        input_shapes=[(48, 80, 3), (37, 23, 3)],
        num_classes=4,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_espnetv2_contract_at_several_sizes(tmp_path):
    results = check_model(
        lambda shape: ESPNetV2(num_classes=4, input_shape=shape, s=0.5, decoder_channels=8),
        input_shapes=[(48, 80, 3), (37, 23, 3)],
        num_classes=4,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


@pytest.mark.parametrize("height, width", [(8, 12), (7, 9)])
def test_strided_eesp_unit_subsamples_its_stride_1_branches(height, width):
    # The strided unit = the stride-1 unit's map before the merge, at rows/columns 0, 2, 4...
    # (written as pad + space_to_depth + channel slice, which XNNPACK runs, not a 1x1 max pool)
    from kseg.layers.esp_blocks import EESPUnit

    x = np.random.default_rng(3).normal(size=(2, height, width, 16)).astype("float32")
    strided, dense = EESPUnit(32, strides=2), EESPUnit(32, strides=1)
    strided(x)
    dense(x)
    # same weights; the stride-1 unit's extra final PReLU made the identity (slope 1)
    alpha = dense.prelu.get_weights()[0]
    dense.set_weights(strided.get_weights() + [np.ones_like(alpha)])
    # the expand 1x1 is point-wise, so subsampling before or after it is the same
    expected = dense(x).numpy()[:, ::2, ::2]
    got = strided(x).numpy()
    assert got.shape == (2, -(-height // 2), -(-width // 2), 32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_espnetv2_float32_tflite_runs_entirely_in_xnnpack(tmp_path):
    # the strided EESP units' subsampling was a 1x1 MAX_POOL_2D of stride 2, which XNNPACK
    # does not take (3 ops outside it, 4 partitions)
    model = ESPNetV2(num_classes=4, input_shape=(65, 97, 3), s=0.5, decoder_channels=8)
    path = kseg.export.tflite(model, tmp_path / "espnetv2.tflite")
    assert kseg.bench.tflite_undelegated_ops(path) == ({}, 1)
    images = np.random.default_rng(0).uniform(0, 255, size=(1, 65, 97, 3)).astype("float32")
    np.testing.assert_allclose(
        kseg.export.run_tflite(path, images), model.predict(images, verbose=0), atol=1e-4
    )


@pytest.mark.parametrize("projection", [9, 1])
def test_pyramid_pooling_fuse_equals_the_authors_shuffle_and_grouped_convolution(projection):
    # EfficientPyramidPooling runs "channel shuffle (5) + 3x3 conv in `projection` groups" as
    # a depth-wise convolution summed over the scales; same weights, same values.
    import tensorflow as tf

    from kseg.layers import ChannelShuffle
    from kseg.layers.esp_blocks import EfficientPyramidPooling, _run

    layer = EfficientPyramidPooling(projection, 16)
    x = np.random.default_rng(0).normal(size=(2, 13, 17, 24)).astype("float32")
    got = layer(x).numpy()
    y = _run(layer.project, x, False)
    scaled = [
        dw(y) if resize is None else restore([dw(resize(y)), y])
        for dw, resize, restore in zip(layer.dws, layer.resizes, layer.restores)
    ]
    y = ChannelShuffle(5)(_run(layer.merge, tf.concat(scaled, axis=-1), False))
    expected = _run(layer.out, _run(layer.fuse, y, False), False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_esp_module_hierarchical_fusion_by_hand():
    """With an identity reduction and centre-only (identity) kernels every branch equals the
    reduced map; hierarchical fusion sums them: dilation 2, 4, 8, 16 give 1, 2, 3, 4 copies."""
    inputs = keras.Input((None, None, 10))
    model = keras.Model(inputs, esp_module(inputs, 10, "esp"))
    esp = model.get_layer("esp")
    n = 2  # 10 // 5, and the first branch also 10 - 4 * 2 = 2
    reduce = np.zeros((1, 1, 10, n), "float32")
    reduce[0, 0, 0, 0] = reduce[0, 0, 1, 1] = 1.0
    esp.reduce[0].set_weights([reduce])
    assert [conv.name for conv in esp.branches] == ["d1", "d2", "d4", "d8", "d16"]
    for conv in esp.branches:
        kernel = np.zeros((3, 3, n, n), "float32")
        kernel[1, 1] = np.eye(n)
        conv.set_weights([kernel])
    x = np.random.default_rng(0).normal(size=(1, 5, 6, 10)).astype("float32")
    concat = np.concatenate([x[..., :2] * k for k in (1, 1, 2, 3, 4)], axis=-1)
    # the residual input is added to the concatenation, then BN (fresh: x / sqrt(1 + eps))
    # and PReLU (slope 0.25)
    y = (x + concat) / np.sqrt(1 + 1e-3)
    expected = np.where(y > 0, y, 0.25 * y)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)


def test_scale_resize_sizes():
    x = np.ones((1, 13, 40, 2), "float32")
    assert ScaleResize(1.5)(x).shape == (1, 20, 60, 2)
    assert ScaleResize(0.1)(x).shape == (1, 5, 5, 2)
    check_layer(
        ScaleResize,
        {"scale": 0.5},
        x,
        expected_output=np.ones((1, 7, 20, 2), "float32"),
        input_shapes=(None, None, 2),
        check_training=False,
    )


def test_create_and_bad_arguments():
    assert isinstance(kseg.models.create("espnet", num_classes=3, p=1, q=1), ESPNet)
    assert isinstance(kseg.models.create("espnetv2", num_classes=3, s=0.5), ESPNetV2)
    with pytest.raises(ValueError, match="q"):
        ESPNet(q=0)
    with pytest.raises(ValueError, match="s must be one of"):
        ESPNetV2(s=0.75)
    with pytest.raises(ValueError, match="decoder_channels"):
        ESPNetV2(decoder_channels=0)
    with pytest.raises(ValueError, match="scale"):
        ScaleResize(0)

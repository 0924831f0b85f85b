"""VGG16 backbone: equal to keras.applications.VGG16 given its weights; dilated variant."""

import keras
import numpy as np
import pytest

import kseg


def backbone_model(output_stride=32, weights=None, shape=(None, None, 3), **kwargs):
    inputs = keras.Input(shape)
    return keras.Model(
        inputs,
        kseg.backbones.build(
            "vgg16", inputs, output_stride=output_stride, weights=weights, **kwargs
        ),
    )


def test_weights_file_loads_and_matches_keras_applications(tmp_path):
    reference = keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    path = str(tmp_path / "vgg16.weights.h5")
    reference.save_weights(path)
    model = backbone_model(weights=path)
    assert model.count_params() == reference.count_params() == 14_714_688
    for layer in model.layers:
        for ours, theirs in zip(
            layer.get_weights(),
            reference.get_layer(layer.name).get_weights() if layer.weights else [],
        ):
            np.testing.assert_array_equal(ours, theirs)
    # Sizes divisible by 32: keras' "valid" pools and our "same" pools agree there.
    x = np.random.default_rng(0).uniform(-100, 100, size=(2, 64, 96, 3)).astype("float32")
    np.testing.assert_allclose(
        model.predict(x, verbose=0)["P5"], reference.predict(x, verbose=0), rtol=1e-4, atol=1e-3
    )


def test_levels_at_odd_sizes_round_up():
    model = backbone_model(shape=(100, 45, 3))
    shapes = {k: tuple(v.shape[1:3]) for k, v in model.output.items()}
    assert shapes == {"P1": (50, 23), "P2": (25, 12), "P3": (13, 6), "P4": (7, 3), "P5": (4, 2)}


def test_output_stride_8_dilates_block5():
    model = backbone_model(output_stride=8, shape=(64, 48, 3))
    assert tuple(model.output["P5"].shape[1:3]) == (8, 6)
    assert model.get_layer("block5_conv1").dilation_rate == (2, 2)
    assert model.get_layer("block4_conv3").dilation_rate == (1, 1)
    assert model.get_layer("block4_pool").strides == (1, 1)
    assert model.get_layer("block4_pool").pool_size == (3, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="pool_size"):
        backbone_model(pool_size=4)
    with pytest.raises(ValueError, match="output_stride.*64"):
        backbone_model(output_stride=64)


def test_bn_encoder_names_shapes_and_pool_indices():
    from kseg.backbones.vgg import VGG16_CONVS, VGG16_FILTERS, vgg16_bn_encoder

    assert VGG16_FILTERS == (64, 128, 256, 512, 512) and VGG16_CONVS == (2, 2, 3, 3, 3)
    # the encoder moved from kseg.models.segnet; the old import path still works
    from kseg.models.segnet import vgg16_bn_encoder as old_path

    assert old_path is vgg16_bn_encoder is kseg.backbones.vgg16_bn_encoder
    inputs = keras.Input((None, None, 3))
    pooled, skips = vgg16_bn_encoder(inputs, (4, 4, 8, 8, 8), None, "test")
    model = keras.Model(inputs, [pooled, skips[0][0]])
    names = [layer.name for layer in model.layers]
    assert names[1:5] == ["block1_conv1", "block1_bn1", "block1_relu1", "block1_conv2"]
    assert "block5_relu3" in names and "block5_pool" in names
    probe = keras.Model(inputs, [skips[0][0], model.get_layer("block1_pool").output[0]])
    images = np.random.default_rng(0).uniform(-1, 1, (1, 37, 21, 3)).astype("float32")
    out = np.asarray(model.predict(images, verbose=0)[0])
    assert out.shape == (1, 2, 1, 8)  # ceil mode: 37 -> 19 -> 10 -> 5 -> 3 -> 2
    pre_pool, pooled1 = (np.asarray(t) for t in probe.predict(images, verbose=0))
    # ceil-mode 2x2 max pooling of the stage's last ReLU
    padded = np.pad(pre_pool, ((0, 0), (0, 1), (0, 1), (0, 0)), constant_values=-np.inf)
    expected = padded.reshape(1, 19, 2, 11, 2, 4).max(axis=(2, 4))
    np.testing.assert_array_equal(pooled1, expected)
    with pytest.raises(ValueError, match=r"Received: stage_filters=\(4, 4, 8, 8, 8\)"):
        vgg16_bn_encoder(keras.Input((32, 32, 3)), (4, 4, 8, 8, 8), "imagenet", "test")

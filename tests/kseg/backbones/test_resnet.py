"""ResNet backbones: equal to keras.applications given the same weights; dilation is exact."""

import keras
import numpy as np
import pytest

import kseg

# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("resnet")


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory):
    """A randomly initialised keras.applications ResNet50, saved as a weights file."""
    keras.utils.set_random_seed(3)
    reference = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    path = str(tmp_path_factory.mktemp("weights") / "resnet50.weights.h5")
    reference.save_weights(path)
    return reference, path


def backbone_model(name, output_stride=32, weights=None, shape=(None, None, 3), **kwargs):
    inputs = keras.Input(shape)
    features = kseg.backbones.build(
        name, inputs, output_stride=output_stride, weights=weights, **kwargs
    )
    return keras.Model(inputs, features)


def test_weights_file_loads_and_matches_keras_applications(resnet50_weights):
    reference, path = resnet50_weights
    model = backbone_model("resnet50", weights=path)
    for layer in model.layers:
        if layer.weights:
            for ours, theirs in zip(
                layer.get_weights(), reference.get_layer(layer.name).get_weights()
            ):
                np.testing.assert_array_equal(ours, theirs)
    x = np.random.default_rng(0).normal(size=(2, 70, 45, 3)).astype("float32") * 50
    expected = reference.predict(x, verbose=0)
    features = model.predict(x, verbose=0)
    np.testing.assert_allclose(features["P5"], expected, rtol=1e-4, atol=1e-4)
    assert features["P5"].shape == (2, 3, 2, 2048)


@pytest.mark.parametrize("output_stride,step", [(16, 2), (8, 4)])
def test_dilation_equals_strided_network_on_the_subgrid(resnet50_weights, output_stride, step):
    # Removing a stride and dilating everything after it by the same factor computes the
    # strided network's outputs at every step-th position, exactly.
    _, path = resnet50_weights
    strided = backbone_model("resnet50", 32, path)
    dilated = backbone_model("resnet50", output_stride, path)
    x = np.random.default_rng(1).normal(size=(1, 83, 61, 3)).astype("float32") * 50
    coarse = strided.predict(x, verbose=0)
    fine = dilated.predict(x, verbose=0)
    assert fine["P5"].shape[1:3] == (-(-83 // output_stride), -(-61 // output_stride))
    np.testing.assert_allclose(fine["P5"][:, ::step, ::step], coarse["P5"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(fine["P2"], coarse["P2"], rtol=1e-5, atol=1e-4)


def test_feature_strides_and_channels():
    model = backbone_model("resnet50", shape=(64, 96, 3))
    expected = {
        "P1": (32, 48, 64),
        "P2": (16, 24, 256),
        "P3": (8, 12, 512),
        "P4": (4, 6, 1024),
        "P5": (2, 3, 2048),
    }
    assert {k: tuple(v.shape[1:]) for k, v in model.output.items()} == expected


def test_multi_grid_rates():
    model = backbone_model("resnet50", output_stride=16, multi_grid=(1, 2, 4), shape=(64, 64, 3))
    rates = [model.get_layer(f"conv5_block{i}_2_conv").dilation_rate for i in (1, 2, 3)]
    assert rates == [(2, 2), (4, 4), (8, 8)]
    model = backbone_model("resnet50", output_stride=8, shape=(64, 64, 3))
    assert model.get_layer("conv4_block6_2_conv").dilation_rate == (2, 2)
    assert model.get_layer("conv5_block1_1_conv").strides == (1, 1)
    assert model.get_layer("conv5_block3_2_conv").dilation_rate == (4, 4)


def test_parameter_counts_equal_keras_applications():
    assert backbone_model("resnet50").count_params() == 23_587_712


@pytest.mark.slow
def test_resnet101_matches_keras_applications(tmp_path):
    reference = keras.applications.ResNet101(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    path = str(tmp_path / "resnet101.weights.h5")
    reference.save_weights(path)
    model = backbone_model("resnet101", weights=path)
    assert model.count_params() == reference.count_params() == 42_658_176
    x = np.random.default_rng(2).normal(size=(1, 64, 80, 3)).astype("float32") * 50
    np.testing.assert_allclose(
        model.predict(x, verbose=0)["P5"], reference.predict(x, verbose=0), rtol=1e-4, atol=1e-4
    )


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="output_stride.*Received: output_stride=4"):
        backbone_model("resnet50", output_stride=4)
    with pytest.raises(ValueError, match="multi_grid"):
        backbone_model("resnet50", multi_grid=(1, 2))
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        backbone_model("resnet50", weights=str(tmp_path / "nope.h5"))
    with pytest.raises(ValueError, match="3 input channels"):
        backbone_model("resnet50", weights="imagenet", shape=(32, 32, 1))
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="corrupt.weights.h5"):
        backbone_model("resnet50", weights=str(corrupt))
    with pytest.raises(ValueError, match="Unknown backbone 'resnet19'"):
        backbone_model("resnet19")


def test_deep_stem():
    model = backbone_model("resnet50", shape=(64, 64, 3), stem="deep")
    assert [model.get_layer(f"conv1_{i}_conv").filters for i in (1, 2, 3)] == [64, 64, 128]
    assert tuple(model.output["P1"].shape[1:]) == (32, 32, 128)
    # Three 3x3 convolutions (no bias) + BN replace the 7x7 conv; block 1 takes 128 channels.
    extra = (27 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 4 * (64 + 64 + 128)) - (
        49 * 3 * 64 + 64 + 4 * 64
    )
    extra += 64 * 64 + 64 * 256  # conv2_block1 1x1 and shortcut see 128 instead of 64 channels
    assert model.count_params() == 23_587_712 + extra
    with pytest.raises(ValueError, match="no weights for the deep stem"):
        backbone_model("resnet50", weights="imagenet", stem="deep")
    with pytest.raises(ValueError, match="stem.*'wide'"):
        backbone_model("resnet50", stem="wide")

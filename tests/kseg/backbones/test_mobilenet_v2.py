"""MobileNetV2 backbone: equal to keras.applications given its weights; exact dilation."""

import keras
import numpy as np
import pytest

import kseg
from kseg.backbones.mobilenet_v2 import make_divisible

# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("mobilenet_v2")


def backbone_model(output_stride=32, weights=None, shape=(None, None, 3), **kwargs):
    inputs = keras.Input(shape)
    return keras.Model(
        inputs,
        kseg.backbones.build(
            "mobilenetv2", inputs, output_stride=output_stride, weights=weights, **kwargs
        ),
    )


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    keras.utils.set_random_seed(5)
    reference = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(None, None, 3), alpha=0.5
    )
    path = str(tmp_path_factory.mktemp("weights") / "mobilenet_v2_0.5.weights.h5")
    reference.save_weights(path)
    return reference, path


def test_weights_file_loads_and_matches_keras_applications(saved_weights):
    reference, path = saved_weights
    model = backbone_model(weights=path, alpha=0.5)
    for layer in model.layers:
        if layer.weights:
            for ours, theirs in zip(
                layer.get_weights(), reference.get_layer(layer.name).get_weights()
            ):
                np.testing.assert_array_equal(ours, theirs)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 64, 96, 3)).astype("float32")
    probe = keras.Model(reference.input, reference.get_layer("block_16_project_BN").output)
    np.testing.assert_allclose(
        model.predict(x, verbose=0)["P5"], probe(x).numpy(), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("output_stride,start,step", [(16, 1, 2), (8, 3, 4)])
def test_dilation_equals_strided_network_on_a_subgrid(saved_weights, output_stride, start, step):
    # A "same" stride-2 convolution of an even-sized map is centred on odd positions, so the
    # dilated network reproduces the strided one on the grid start::step.
    _, path = saved_weights
    coarse = backbone_model(32, path, alpha=0.5)
    fine = backbone_model(output_stride, path, alpha=0.5)
    x = np.random.default_rng(1).uniform(-1, 1, size=(1, 128, 64, 3)).astype("float32")
    a = coarse.predict(x, verbose=0)["P5"]
    b = fine.predict(x, verbose=0)["P5"]
    assert b.shape[1:3] == (128 // output_stride, 64 // output_stride)
    np.testing.assert_allclose(b[:, start::step, start::step], a, rtol=1e-3, atol=1e-3)


def test_levels_widths_and_parameter_count():
    model = backbone_model(shape=(64, 96, 3))
    shapes = {k: tuple(v.shape[1:]) for k, v in model.output.items()}
    assert shapes == {
        "P1": (32, 48, 16),
        "P2": (16, 24, 24),
        "P3": (8, 12, 32),
        "P4": (4, 6, 96),
        "P5": (2, 3, 320),
    }
    # keras.applications' MobileNetV2 minus its classification-only Conv_1 (320 -> 1280) + BN.
    assert model.count_params() == 2_257_984 - (320 * 1280 + 4 * 1280)
    assert [make_divisible(c * 0.35) for c in (16, 24, 32, 64, 96, 160, 320)] == [
        8,
        8,
        16,
        24,
        32,
        56,
        112,
    ]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="alpha.*0"):
        backbone_model(alpha=0)
    with pytest.raises(ValueError, match="alpha=0.6"):
        backbone_model(alpha=0.6, weights="imagenet")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        backbone_model(weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="Received: bn_momentum=1"):
        backbone_model(bn_momentum=1)


def test_bn_momentum_sets_how_far_one_training_step_moves_the_statistics():
    # Moving mean starts at 0: after one training call it is (1 - momentum) * the batch mean.
    model = backbone_model(shape=(16, 16, 3), alpha=0.35, bn_momentum=0.9)
    assert {
        layer.momentum for layer in model.layers if "BN" in layer.name or "bn" in layer.name
    } == {0.9}
    x = np.random.default_rng(2).uniform(-1, 1, size=(2, 16, 16, 3)).astype("float32")
    conv = keras.Model(model.input, model.get_layer("Conv1").output)(x).numpy()
    model(x, training=True)
    moving_mean = model.get_layer("bn_Conv1").moving_mean.numpy()
    np.testing.assert_allclose(moving_mean, 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    default = backbone_model(shape=(16, 16, 3), alpha=0.35)
    assert default.get_layer("bn_Conv1").momentum == 0.999  # keras.applications' value

"""MobileNetV3 backbones: equal to keras.applications given its weights; exact dilation."""

import keras
import numpy as np
import pytest

import kseg

# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("mobilenet_v3")


def backbone_model(name="mobilenetv3_small", output_stride=32, weights=None, **kwargs):
    inputs = keras.Input((None, None, 3))
    features = kseg.backbones.build(
        name, inputs, output_stride=output_stride, weights=weights, **kwargs
    )
    return keras.Model(inputs, features)


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    keras.utils.set_random_seed(5)
    reference = keras.applications.MobileNetV3Small(
        weights=None, include_top=False, input_shape=(None, None, 3), alpha=0.75
    )
    path = str(tmp_path_factory.mktemp("weights") / "mobilenet_v3_small.weights.h5")
    reference.save_weights(path)
    return reference, path


def test_weights_file_loads_and_matches_keras_applications(saved_weights):
    reference, path = saved_weights
    model = backbone_model(weights=path, alpha=0.75)
    for layer in model.layers:
        if not layer.weights:
            continue
        for ours, theirs in zip(layer.get_weights(), reference.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    # keras rescales inside (include_preprocessing); kseg feeds [-1, 1] ("tf" mode).
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 96, 3)).astype("float32")
    expected = reference(images).numpy()  # conv_1 after hard-swish, the last layer
    np.testing.assert_allclose(
        model.predict(images / 127.5 - 1, verbose=0)["P5"], expected, rtol=1e-4, atol=1e-4
    )


def test_reduced_tail_loads_all_but_the_halved_stage(saved_weights):
    reference, path = saved_weights
    model = backbone_model(weights=path, alpha=0.75, reduced_tail=True)
    np.testing.assert_array_equal(
        model.get_layer("expanded_conv_7_project").get_weights()[0],
        reference.get_layer("expanded_conv_7_project").get_weights()[0],
    )
    assert model.get_layer("expanded_conv_8_expand").get_weights()[0].shape[-1] == 120  # 40 x 6 / 2
    assert model.output["P5"].shape[-1] == 240  # conv_1: 6 x 40 instead of 6 x 72


@pytest.mark.parametrize("output_stride,start,step", [(16, 1, 2), (8, 3, 4)])
def test_dilation_equals_strided_network_on_a_subgrid(saved_weights, output_stride, start, step):
    # A "same" stride-2 convolution of an even-sized map is centred on odd positions, so the
    # dilated network reproduces the strided one on the grid start::step -- once the
    # squeeze-excite gates, global averages over different grids, are made constant.
    _, path = saved_weights
    models = [
        backbone_model(output_stride=os, weights=path, alpha=0.75) for os in (32, output_stride)
    ]
    for model in models:
        for layer in model.layers:
            if layer.name.endswith("squeeze_excite_conv_1"):
                kernel, bias = layer.get_weights()
                layer.set_weights([np.zeros_like(kernel), bias])
    x = np.random.default_rng(1).uniform(-1, 1, size=(1, 128, 64, 3)).astype("float32")
    coarse, fine = (m.predict(x, verbose=0)["P5"] for m in models)
    assert fine.shape[1:3] == (128 // output_stride, 64 // output_stride)
    np.testing.assert_allclose(fine[:, start::step, start::step], coarse, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "mobilenetv3_large",
            {
                "P1": (32, 48, 16),
                "P2": (16, 24, 24),
                "P3": (8, 12, 40),
                "P4": (4, 6, 112),
                "P5": (2, 3, 960),
            },
        ),
        (
            "mobilenetv3_small",
            {
                "P1": (32, 48, 16),
                "P2": (16, 24, 16),
                "P3": (8, 12, 24),
                "P4": (4, 6, 48),
                "P5": (2, 3, 576),
            },
        ),
    ],
)
def test_levels_widths_and_parameter_count(name, expected):
    inputs = keras.Input((64, 96, 3))
    model = keras.Model(inputs, kseg.backbones.build(name, inputs))
    assert {k: tuple(v.shape[1:]) for k, v in model.output.items()} == expected
    # keras.applications with include_top=False ends at the same conv_1
    application = {
        "mobilenetv3_large": keras.applications.MobileNetV3Large,
        "mobilenetv3_small": keras.applications.MobileNetV3Small,
    }[name]
    reference = application(weights=None, include_top=False, input_shape=(224, 224, 3))
    assert (
        model.count_params()
        == reference.count_params()
        == {
            "mobilenetv3_large": 2_996_352,
            "mobilenetv3_small": 939_120,
        }[name]
    )


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="alpha=0"):
        backbone_model(alpha=0)
    with pytest.raises(ValueError, match="alpha=0.5"):
        backbone_model(alpha=0.5, weights="imagenet")
    with pytest.raises(ValueError, match="output_stride=4"):
        backbone_model(output_stride=4)
    with pytest.raises(ValueError, match="reduced_tail=1"):
        backbone_model(reduced_tail=1)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        backbone_model(weights=str(tmp_path / "missing.h5"))


@pytest.mark.parametrize(
    "name, application, params, p5",
    [
        ("mobilenetv3_large_minimalistic", keras.applications.MobileNetV3Large, 1_437_608, 960),
        ("mobilenetv3_small_minimalistic", keras.applications.MobileNetV3Small, 441_000, 576),
    ],
)
def test_minimalistic_variants_equal_keras_applications(name, application, params, p5, tmp_path):
    # keras.applications' minimalistic=True: ReLU, no squeeze-excite, 3x3 kernels, same widths
    keras.utils.set_random_seed(7)
    reference = application(
        weights=None, include_top=False, input_shape=(None, None, 3), minimalistic=True
    )
    assert reference.count_params() == params
    path = str(tmp_path / f"{name}.weights.h5")
    reference.save_weights(path)
    model = backbone_model(name, weights=path)
    assert model.count_params() == params
    assert model.output["P5"].shape[-1] == p5
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Multiply" not in kinds  # no squeeze-excite gates
    assert all(
        layer.activation.__name__ != "hard_swish"
        for layer in model.layers
        if isinstance(layer, keras.layers.Activation)
    )
    assert {
        layer.kernel_size
        for layer in model.layers
        if isinstance(layer, keras.layers.DepthwiseConv2D)
    } == {(3, 3)}
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 96, 3)).astype("float32")
    expected = reference(images).numpy()
    scale = np.abs(expected).max()  # random weights: tiny activations, compare relatively
    np.testing.assert_allclose(
        model.predict(images / 127.5 - 1, verbose=0)["P5"] / scale, expected / scale, atol=1e-4
    )
    with pytest.raises(ValueError, match="alpha=0.75"):
        backbone_model(name, weights="imagenet", alpha=0.75)

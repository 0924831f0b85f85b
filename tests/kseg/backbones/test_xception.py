"""Xception-65 (DeepLab's aligned variant): structure, exact dilation, weight files."""

import keras
import numpy as np
import pytest

import kseg

# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("xception")


def backbone_model(output_stride=32, weights=None, shape=(None, None, 3), **kwargs):
    inputs = keras.Input(shape)
    return keras.Model(
        inputs,
        kseg.backbones.build(
            "xception65", inputs, output_stride=output_stride, weights=weights, **kwargs
        ),
    )


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    model = backbone_model()
    path = str(tmp_path_factory.mktemp("weights") / "xception65.weights.h5")
    model.save_weights(path)
    return path


def test_structure():
    model = backbone_model(shape=(64, 96, 3))
    shapes = {k: tuple(v.shape[1:]) for k, v in model.output.items()}
    assert shapes == {
        "P1": (32, 48, 64),
        "P2": (16, 24, 256),
        "P3": (8, 12, 728),
        "P4": (4, 6, 1024),
        "P5": (2, 3, 2048),
    }
    assert (
        len(
            [
                layer
                for layer in model.layers
                if layer.name.startswith("middle_block") and layer.name.endswith("_add")
            ]
        )
        == 16
    )
    assert model.count_params() == 38_052_512
    assert model.get_layer("exit_block2_sepconv1_depthwise").dilation_rate == (1, 1)


@pytest.mark.slow
def test_weights_file_round_trip_and_dilation(saved_weights):
    # Symmetric padding before every strided layer keeps outputs on the even subgrid, so the
    # dilated network reproduces the strided one at every second (fourth) position.
    coarse = backbone_model(32, saved_weights)
    for output_stride, step in ((16, 2), (8, 4)):
        fine = backbone_model(output_stride, saved_weights)
        for a, b in zip(coarse.weights, fine.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        x = np.random.default_rng(1).uniform(-1, 1, size=(1, 97, 65, 3)).astype("float32")
        expected = coarse.predict(x, verbose=0)["P5"]
        got = fine.predict(x, verbose=0)["P5"]
        np.testing.assert_allclose(got[:, ::step, ::step], expected, rtol=1e-3, atol=1e-3)
        keras.backend.clear_session()


def test_output_stride_16_and_multi_grid_rates():
    model = backbone_model(16, multi_grid=(1, 2, 4), shape=(64, 64, 3))
    assert tuple(model.output["P5"].shape[1:3]) == (4, 4)
    assert model.get_layer("exit_block1_sepconv3_depthwise").strides == (1, 1)
    rates = [model.get_layer(f"exit_block2_sepconv{i}_depthwise").dilation_rate for i in (1, 2, 3)]
    assert rates == [(2, 2), (4, 4), (8, 8)]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no weights"):
        backbone_model(weights="imagenet")
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        backbone_model(weights=str(tmp_path / "nothing.h5"))
    with pytest.raises(ValueError, match="multi_grid"):
        backbone_model(multi_grid=(1, 2))

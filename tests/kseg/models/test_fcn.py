"""FCN-32s/16s/8s: paper parameter count, alignment of the bilinear upsampling, training, saving."""

import keras
import numpy as np
import pytest

import kseg
from kseg.layers.resize import bilinear_kernel_1d
from kseg.models import FCN
from kseg.testing import (
    assert_inference_paths_agree,
    assert_keras_round_trip,
    assert_training_reduces_loss,
    synthetic_batch,
)


def expected_fcn_params(num_classes, variant):
    """Count written out layer by layer from the paper's Caffe definition."""
    vgg = 14_714_688
    fc6 = 7 * 7 * 512 * 4096 + 4096
    fc7 = 4096 * 4096 + 4096
    score_fr = 4096 * num_classes + num_classes
    skips = {"32s": [], "16s": [512], "8s": [512, 256]}[variant]
    scores = sum(c * num_classes + num_classes for c in skips)
    ups = len(skips) * 4 * 4 * num_classes**2
    final = {"32s": 64, "16s": 32, "8s": 16}[variant] ** 2 * num_classes**2
    return vgg + fc6 + fc7 + score_fr + scores + ups + final


@pytest.mark.slow
def test_paper_parameter_counts():
    for variant in ("32s", "16s", "8s"):
        model = FCN(num_classes=21, variant=variant)
        assert model.count_params() == expected_fcn_params(21, variant)
        keras.backend.clear_session()
    assert abs(expected_fcn_params(21, "8s") / 134e6 - 1) < 0.01


def small_fcn(variant="8s", num_classes=4, input_shape=(None, None, 3)):
    """The paper's FCN with 256-wide fc6/fc7 (the full 4096 is checked in the slow test)."""
    return FCN(
        num_classes=num_classes,
        input_shape=input_shape,
        variant=variant,
        dropout=0.0,
        fc_channels=256,
    )


def bilinear_upsample(maps, factor):
    """Half-pixel-centred bilinear upsampling of ``[H, W, C]`` by an integer factor (numpy)."""
    h, w, _ = maps.shape

    def axis(size):
        centres = (np.arange(size * factor) + 0.5) / factor - 0.5
        low = np.floor(centres)
        return (
            np.clip(low, 0, size - 1).astype(int),
            np.clip(low + 1, 0, size - 1).astype(int),
            centres - low,
        )

    r0, r1, fy = axis(h)
    c0, c1, fx = axis(w)
    top = maps[r0][:, c0] * (1 - fx)[None, :, None] + maps[r0][:, c1] * fx[None, :, None]
    bottom = maps[r1][:, c0] * (1 - fx)[None, :, None] + maps[r1][:, c1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_initial_output_is_bilinear_upsampling_of_the_scores(variant):
    # With zero-initialised skip scorers the network starts as a chain of bilinear
    # upsamplings (x2, x2, x8 for 8s) of score_fr's stride-32 map. Compared away from the
    # border, where the transposed convolutions see zeros and the reference clamps.
    model = small_fcn(variant)
    score_fr = model.get_layer("score_fr")
    kernel, bias = score_fr.get_weights()
    rng = np.random.default_rng(0)
    score_fr.set_weights(
        [
            rng.normal(size=kernel.shape).astype("float32") * 0.01,
            rng.normal(size=bias.shape).astype("float32"),
        ]
    )
    x = rng.uniform(0, 255, size=(1, 256, 192, 3)).astype("float32")
    coarse = keras.Model(model.input, score_fr.output).predict(x, verbose=0)[0]
    assert coarse.shape == (8, 6, 4)
    expected = coarse
    for factor in {"32s": [32], "16s": [2, 16], "8s": [2, 2, 8]}[variant]:
        expected = bilinear_upsample(expected, factor)
    out = model.predict(x, verbose=0)
    assert out.shape == (1, 256, 192, 4)
    np.testing.assert_allclose(
        out[0, 64:-64, 64:-64], expected[64:-64, 64:-64], rtol=1e-4, atol=1e-4
    )


def test_final_upsampling_fixed_unless_asked():
    model = small_fcn("8s")
    assert not model.get_layer("upscore8").trainable
    assert model.get_layer("upscore_to_pool4").trainable
    np.testing.assert_allclose(
        model.get_layer("upscore8").get_weights()[0][:, :, 2, 2],
        np.outer(bilinear_kernel_1d(8), bilinear_kernel_1d(8)),
    )
    assert (
        FCN(num_classes=2, variant="32s", learn_final_upsampling=True)
        .get_layer("upscore32")
        .trainable
    )


@pytest.mark.parametrize("hw", [(64, 64), (70, 45), (33, 97)])
def test_builds_at_sizes_not_divisible_by_32(hw):
    model = small_fcn("8s", input_shape=(*hw, 3))
    assert tuple(model.output_shape) == (None, *hw, 4)


def randomise(model, seed=0):
    """Replaces zero-initialised scorers by random weights, so outputs depend on every layer."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.startswith("score"):
            layer.set_weights(
                [rng.normal(size=w.shape).astype("float32") * 0.01 for w in layer.get_weights()]
            )


def test_save_and_inference_paths(tmp_path):
    model = small_fcn("8s", num_classes=6)
    randomise(model)
    images, _ = synthetic_batch(2, 72, 56, num_classes=6, kind="scenes")
    logits = assert_inference_paths_agree(model, images)
    assert logits.shape == (2, 72, 56, 6) and np.abs(logits).max() > 0
    assert_keras_round_trip(model, images, str(tmp_path / "fcn.keras"))


@pytest.mark.slow
def test_training_reduces_loss():
    model = small_fcn("8s", num_classes=6)
    images, labels = synthetic_batch(2, 72, 56, num_classes=6, kind="scenes")
    assert_training_reduces_loss(model, images, labels, steps=6, learning_rate=1e-4)


def test_create_and_bad_arguments():
    model = kseg.models.create(
        "fcn", num_classes=3, variant="16s", input_shape=(40, 40, 3), fc_channels=64
    )
    assert isinstance(model, FCN) and model.variant == "16s"
    with pytest.raises(ValueError, match="variant.*'4s'"):
        FCN(variant="4s")
    with pytest.raises(ValueError, match="num_classes.*0"):
        FCN(num_classes=0)
    with pytest.raises(ValueError, match="3 channels"):
        FCN(input_shape=(64, 64, 1))
    with pytest.raises(ValueError, match="dropout"):
        FCN(dropout=1.5)
    with pytest.raises(ValueError, match="fc_channels.*0"):
        FCN(fc_channels=0)


@pytest.mark.slow
def test_fc6_fc7_start_from_vgg16_fc1_fc2_convolutionalised(tmp_path):
    # A random VGG16 with its classifier (138 M parameters, ~550 MB file), as a user's file.
    source = keras.applications.VGG16(weights=None, include_top=True)
    rng = np.random.default_rng(0)
    for name in ("fc1", "fc2", "block5_conv3"):
        layer = source.get_layer(name)
        layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    path = str(tmp_path / "vgg16_full.weights.h5")
    source.save_weights(path)
    fc1, fc1_bias = source.get_layer("fc1").get_weights()
    fc2, fc2_bias = source.get_layer("fc2").get_weights()
    conv = source.get_layer("block5_conv3").get_weights()
    del source
    keras.backend.clear_session()
    model = FCN(num_classes=3, variant="32s", input_shape=(64, 64, 3), weights=path)
    fc6, bias6 = model.get_layer("fc6").get_weights()
    assert fc6.shape == (7, 7, 512, 4096)
    np.testing.assert_array_equal(fc6, fc1.reshape(7, 7, 512, 4096))
    np.testing.assert_array_equal(bias6, fc1_bias)
    # fc1 row (i*7 + j)*512 + k holds pool5 position (i, j), channel k
    np.testing.assert_array_equal(fc6[2, 5, 100], fc1[(2 * 7 + 5) * 512 + 100])
    fc7, bias7 = model.get_layer("fc7").get_weights()
    np.testing.assert_array_equal(fc7, fc2.reshape(1, 1, 4096, 4096))
    np.testing.assert_array_equal(bias7, fc2_bias)
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0], conv[0])

"""U-Net: the paper's exact network and the same-padding variant at any size."""

import keras
import numpy as np
import pytest

import kseg
from kseg.models import UNet
from kseg.models.unet import nearest_paper_sizes, paper_output_size
from kseg.testing import (
    assert_inference_paths_agree,
    assert_keras_round_trip,
    assert_training_reduces_loss,
    synthetic_batch,
)


def paper_parameter_count(in_channels=1, num_classes=2, base=64, depth=4):
    """Written out from the paper's figure: 3x3 convs with bias, 2x2 up-convs, 1x1 classifier."""
    conv = lambda cin, cout, k=3: k * k * cin * cout + cout  # noqa: E731
    total, channels = 0, in_channels
    for level in range(depth + 1):
        width = base * 2**level
        total += conv(channels, width) + conv(width, width)
        channels = width
    for level in reversed(range(depth)):
        width = base * 2**level
        total += conv(channels, width, 2) + conv(2 * width, width) + conv(width, width)
        channels = width
    return total + conv(channels, num_classes, 1)


def test_paper_network_has_the_published_size():
    model = UNet(num_classes=2, input_shape=(572, 572, 1), variant="paper")
    assert paper_parameter_count() == 31_030_658
    assert model.count_params() == 31_030_658
    assert tuple(model.output_shape) == (None, 388, 388, 2)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert [tuple(model.get_layer(f"up{i}_crop").output.shape[1:3]) for i in (4, 3, 2, 1)] == [
        (56, 56),
        (104, 104),
        (200, 200),
        (392, 392),
    ]


def brute_force_valid_sizes(limit, depth=4):
    """Valid sizes found by walking the paper's arithmetic directly."""
    valid = []
    for size in range(1, limit):
        s, ok, skips = size, True, []
        for _ in range(depth):
            s -= 4
            ok &= s > 0 and s % 2 == 0
            skips.append(s)
            s //= 2
        s -= 4
        ok &= s > 0
        for skip in reversed(skips):
            s = 2 * s
            ok &= skip >= s and (skip - s) % 2 == 0
            s -= 4
            ok &= s > 0
        if ok:
            valid.append(size)
    return valid


def test_paper_valid_sizes():
    valid = brute_force_valid_sizes(700)
    assert [s for s in range(1, 700) if paper_output_size(s)] == valid
    assert 572 in valid and valid[0] == 188 and all((b - a) == 16 for a, b in zip(valid, valid[1:]))
    assert paper_output_size(572) == 388 and paper_output_size(188) == 4
    assert nearest_paper_sizes(570) == [556, 572]
    assert nearest_paper_sizes(100) == [188]


def test_paper_rejects_invalid_sizes_with_the_nearest_valid_ones():
    with pytest.raises(ValueError, match=r"width 570.*\[556, 572\]"):
        UNet(num_classes=2, input_shape=(572, 570, 1), variant="paper")
    with pytest.raises(ValueError, match=r"height 100.*\[188\]"):
        UNet(num_classes=2, input_shape=(100, 572, 1), variant="paper")


def small_paper_unet(num_classes=3):
    return UNet(
        num_classes=num_classes,
        input_shape=(204, 188, 3),
        variant="paper",
        base_filters=4,
        dropout=0.0,
    )


def test_paper_variant_small_trains_and_round_trips(tmp_path):
    model = small_paper_unet()
    assert tuple(model.output_shape) == (None, 20, 4, 3)
    images, labels = synthetic_batch(2, 204, 188, num_classes=3, kind="scenes")
    # The paper's output covers the centre of the input: 92 pixels are lost on each side.
    assert_training_reduces_loss(
        model, images, labels[:, 92:-92, 92:-92], steps=10, learning_rate=3e-3
    )
    assert_inference_paths_agree(model, images)
    assert_keras_round_trip(model, images, str(tmp_path / "unet_paper.keras"))


@pytest.mark.parametrize("hw", [(64, 64), (70, 45), (33, 97), (16, 16), (5, 3)])
def test_same_variant_any_size(hw):
    model = UNet(num_classes=4, input_shape=(*hw, 3), base_filters=4)
    assert tuple(model.output_shape) == (None, *hw, 4)
    out = model.predict(
        np.random.default_rng(0).uniform(0, 255, size=(1, *hw, 3)).astype("float32"), verbose=0
    )
    assert out.shape == (1, *hw, 4)


def test_same_variant_padding_does_not_leak_into_the_image_area():
    # The model pads to a multiple of 16 and crops back: for an input that is already a
    # multiple of 16, the logits equal those of the same network cut out of a larger canvas
    # only where no convolution reaches the padding, but padding never changes the size.
    model = UNet(num_classes=2, input_shape=(None, None, 3), base_filters=4)
    x = np.random.default_rng(1).uniform(0, 255, size=(1, 40, 29, 3)).astype("float32")
    padded = np.zeros((1, 48, 32, 3), "float32")
    padded[:, :40, :29] = x
    # Zero image pixels normalise to 0, the value the model pads with, so both give equal logits.
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        model.predict(padded, verbose=0)[:, :40, :29],
        rtol=1e-4,
        atol=1e-4,
    )


def test_same_variant_trains_and_round_trips(tmp_path):
    model = kseg.models.create("unet", num_classes=6, input_shape=(None, None, 3), base_filters=4)
    images, labels = synthetic_batch(2, 48, 40, num_classes=6, kind="scenes")
    assert_training_reduces_loss(model, images, labels, steps=8, learning_rate=3e-3)
    assert_inference_paths_agree(model, images)
    assert_keras_round_trip(model, images, str(tmp_path / "unet.keras"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant.*'valid'"):
        UNet(variant="valid")
    with pytest.raises(ValueError, match="input_shape.*\\(64, 64\\)"):
        UNet(input_shape=(64, 64))
    with pytest.raises(ValueError, match="base_filters.*0"):
        UNet(base_filters=0)
    with pytest.raises(ValueError, match="depth.*-1"):
        UNet(depth=-1)
    with pytest.raises(ValueError, match="dropout"):
        UNet(dropout=1.0)


@pytest.mark.parametrize("hw", [(48, 40), (37, 21)])
def test_space_to_depth_keeps_the_output_at_the_input_size(hw, tmp_path):
    model = UNet(
        num_classes=5, input_shape=(None, None, 3), base_filters=4, depth=2, space_to_depth=2
    )
    layer_names = [layer.name for layer in model.layers]
    assert "space_to_depth" in layer_names and "subpixel_logits" in layer_names
    # The first convolution already runs at half resolution.
    fixed = UNet(num_classes=5, input_shape=(48, 40, 3), base_filters=4, depth=2, space_to_depth=2)
    assert tuple(fixed.get_layer("down1_conv1").output.shape) == (None, 24, 20, 4)
    assert tuple(fixed.output_shape) == (None, 48, 40, 5)
    images, labels = synthetic_batch(2, *hw, num_classes=5, kind="scenes")
    out = model.predict(images, verbose=0)
    assert out.shape == (2, *hw, 5)
    assert_training_reduces_loss(model, images, labels, steps=12, learning_rate=1e-2)
    assert_keras_round_trip(model, images, str(tmp_path / "unet_s2d.keras"))


def test_space_to_depth_needs_the_same_variant():
    with pytest.raises(ValueError, match="space_to_depth.*variant='same'.*space_to_depth=2"):
        UNet(num_classes=2, input_shape=(572, 572, 1), variant="paper", space_to_depth=2)
    with pytest.raises(ValueError, match="space_to_depth.*0"):
        UNet(space_to_depth=0)

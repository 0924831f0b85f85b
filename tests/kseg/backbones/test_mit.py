"""MiT backbones: levels, strides, widths, drop-path schedule and argument errors."""

import keras
import pytest

import kseg
from kseg.backbones.mit import MIT_CONFIGS


def test_levels_strides_and_widths():
    feats = kseg.backbones.build("mit_b0", keras.Input((64, 96, 3)))
    assert sorted(feats) == ["P2", "P3", "P4", "P5"]
    assert [tuple(feats[k].shape[1:]) for k in sorted(feats)] == [
        (16, 24, 32),
        (8, 12, 64),
        (4, 6, 160),
        (2, 3, 256),
    ]
    assert kseg.backbones.BACKBONES.get("mit_b3").preprocessing == "torch"
    assert sum(MIT_CONFIGS["mit_b5"][1]) == 52


def test_drop_path_rises_linearly_to_the_rate():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, kseg.backbones.build("mit_b0", inputs, drop_path_rate=0.14)["P5"])
    rates = [layer.drop_path for layer in model.layers if "mit_block" in layer.name]
    assert rates == pytest.approx([0.02 * i for i in range(8)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride=16"):
        kseg.backbones.build("mit_b1", keras.Input((64, 64, 3)), output_stride=16)
    with pytest.raises(ValueError, match="weights='imagenet'"):
        kseg.backbones.build("mit_b0", keras.Input((64, 64, 3)), weights="imagenet")

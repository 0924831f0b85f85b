"""ResNet-18 and Xception39 backbones: published sizes, feature strides, dilation, errors."""

import keras
import numpy as np
import pytest

import kseg
from kseg.models.deeplab import trainable_parameter_count


def backbone_model(name, output_stride=32, shape=(None, None, 3)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, kseg.backbones.build(name, inputs, output_stride=output_stride))


def test_resnet18_has_torchvisions_parameter_count():
    # torchvision resnet18: 11,689,512 parameters, of which the classifier is 512·1000 + 1000.
    model = backbone_model("resnet18")
    assert trainable_parameter_count(model) == 11_689_512 - 513_000


def test_xception39_has_the_released_parameter_count():
    # TorchSeg xception39: stem 8, blocks [4, 8, 4] of widths 16, 32, 64 (x4 out)
    model = backbone_model("xception39")
    # (hand count: stem 232 + stages 13,424 + 100,096 + 192,512)
    assert trainable_parameter_count(model) == 306_264


@pytest.mark.parametrize(
    "name, channels", [("resnet18", (64, 64, 128, 256, 512)), ("xception39", (8, 8, 64, 128, 256))]
)
def test_feature_levels_strides_and_channels(name, channels):
    model = backbone_model(name)
    x = np.random.default_rng(0).normal(size=(1, 70, 100, 3)).astype("float32")
    outputs = model.predict(x, verbose=0)
    for level, expected_channels in zip(("P1", "P2", "P3", "P4", "P5"), channels):
        stride = 2 ** int(level[1])
        assert outputs[level].shape == (1, -(-70 // stride), -(-100 // stride), expected_channels)
        assert np.isfinite(outputs[level]).all()


@pytest.mark.parametrize("name", ["resnet18", "xception39"])
def test_output_stride_dilates_instead_of_striding(name):
    model = backbone_model(name, output_stride=8, shape=(64, 64, 3))
    assert tuple(model.output["P5"].shape[1:3]) == (8, 8)
    rates = {layer.dilation_rate for layer in model.layers if hasattr(layer, "dilation_rate")}
    assert (4, 4) in rates and (2, 2) in rates
    # same weights count as at output stride 32
    assert model.count_params() == backbone_model(name).count_params()


@pytest.mark.parametrize("name", ["resnet18", "xception39"])
def test_no_pretrained_weights_and_bad_output_stride(name):
    with pytest.raises(ValueError, match="weights=None.*Received: weights='imagenet'"):
        kseg.backbones.build(name, keras.Input((32, 32, 3)), weights="imagenet")
    with pytest.raises(ValueError, match="output_stride=4"):
        kseg.backbones.build(name, keras.Input((32, 32, 3)), output_stride=4)
    assert kseg.backbones.BACKBONES.get(name).preprocessing == "torch"

"""ParseNet: parameter counts against DeepLab-LargeFOV, the global-context fusion in numpy."""

import keras
import numpy as np
import pytest

from kseg.models import DeepLabV1, ParseNet
from kseg.models.deeplab import trainable_parameter_count


@pytest.mark.slow
def test_parsenet_parameter_counts():
    model = ParseNet(num_classes=21)
    largefov = DeepLabV1(num_classes=21, variant="largefov")
    # two 1024-channel normalisation scales and a classifier over 2048 channels instead of 1024
    extra = 2 * 1024 + 1024 * 21
    assert trainable_parameter_count(model) == trainable_parameter_count(largefov) + extra
    assert trainable_parameter_count(model) == 20_528_981
    keras.backend.clear_session()
    fcn = ParseNet(num_classes=21, variant="fcn32s")
    vgg_convs = 14_714_688
    fc = (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096)
    assert trainable_parameter_count(fcn) == vgg_convs + fc + 2 * 4096 + 8192 * 21 + 21


def test_global_context_fusion_equals_numpy():
    model = ParseNet(num_classes=3, input_shape=(40, 48, 3), fc_channels=8, scale=10.0)
    model.get_layer("pool6_norm").gamma.assign(np.arange(1, 9, dtype="float32"))
    images = np.random.default_rng(0).uniform(0, 255, (2, 40, 48, 3)).astype("float32")
    probe = keras.Model(
        model.input, [model.get_layer("fc7").output, model.get_layer("fuse").output]
    )
    fc7, fused = probe.predict(images, verbose=0)
    local = 10.0 * fc7 / np.sqrt((fc7**2).sum(-1, keepdims=True) + 1e-10)
    pooled = fc7.mean(axis=(1, 2), keepdims=True)
    context = np.arange(1, 9) * pooled / np.sqrt((pooled**2).sum(-1, keepdims=True) + 1e-10)
    expected = np.concatenate([local, np.broadcast_to(context, fc7.shape)], axis=-1)
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-4)
    assert fc7.shape[1:3] == (5, 6)  # output stride 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant='fcn8s'"):
        ParseNet(variant="fcn8s")
    with pytest.raises(ValueError, match="scale=0"):
        ParseNet(scale=0)

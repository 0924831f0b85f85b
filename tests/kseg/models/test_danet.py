"""DANet: the authors' head counted layer by layer, three outputs, arguments."""

import keras
import numpy as np
import pytest

from kseg.models import DANet
from kseg.models.deeplab import trainable_parameter_count
from kseg.testing import synthetic_batch


def _authors_head(in_channels=2048, classes=19):
    """DANetHead of junfu1115/DANet, summed layer by layer (BN: weight and bias)."""
    inter = in_channels // 4
    conv5 = 9 * in_channels * inter + 2 * inter  # conv5a / conv5c: 3x3, no bias, BN
    pam = 2 * (inter * (inter // 8) + inter // 8) + inter * inter + inter + 1  # q, k, v, gamma
    cam = 1  # gamma
    conv51 = 9 * inter * inter + 2 * inter  # conv51 / conv52
    classifiers = 3 * (inter * classes + classes)  # conv6, conv7, conv8
    return 2 * conv5 + pam + cam + 2 * conv51 + classifiers


@pytest.mark.slow
def test_danet_parameter_count_resnet101_19_classes():
    model = DANet(num_classes=19, backbone="resnet101")
    assert trainable_parameter_count(model) == 66_507_451
    backbone = keras.applications.ResNet101(include_top=False, weights=None)
    head = trainable_parameter_count(model) - trainable_parameter_count(backbone)
    assert head == _authors_head() == 23_954_619


def test_three_outputs_and_inference_model():
    model = DANet(num_classes=4, backbone="resnet18", inter_channels=16, input_shape=(48, 40, 3))
    images, _ = synthetic_batch(2, 48, 40, num_classes=4, kind="scenes")
    fused, pam, cam = model.predict(images, verbose=0)
    assert fused.shape == pam.shape == cam.shape == (2, 48, 40, 4)
    assert model.loss_weights_for_outputs == [1.0, 1.0, 1.0]
    # the fused classifier sees the sum of the two branches: with its weights equal to the
    # branch classifiers', its logits are pam + cam minus one bias
    for name in ("pam_logits", "cam_logits"):
        model.get_layer(name).set_weights(model.get_layer("fused_logits").get_weights())
    fused, pam, cam = model.predict(images, verbose=0)
    bias = model.get_layer("fused_logits").get_weights()[1]
    np.testing.assert_allclose(fused, pam + cam - bias, rtol=1e-4, atol=1e-4)
    single = model.inference_model()
    np.testing.assert_allclose(single.predict(images, verbose=0), fused, rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone='vgg16'"):
        DANet(backbone="vgg16")
    with pytest.raises(ValueError, match="output_stride=32"):
        DANet(output_stride=32)
    with pytest.raises(ValueError, match="inter_channels=0"):
        DANet(inter_channels=0)

"""PAN: segmentation_models_pytorch's PAN head counted layer by layer, arguments."""

import keras
import numpy as np
import pytest

from kseg.models import PAN
from kseg.models.deeplab import trainable_parameter_count


def _smp_head(channels=(256, 512, 1024, 2048), filters=32, classes=21):
    """segmentation_models_pytorch PANDecoder + SegmentationHead, layer by layer."""

    def cbr(cin, cout, k):  # ConvBnRelu: conv with bias, BN weight and bias
        return k * k * cin * cout + cout + 2 * cout

    fpa = 2 * cbr(channels[-1], filters, 1)  # global branch, middle branch
    fpa += cbr(channels[-1], 1, 7) + cbr(1, 1, 5) + 2 * cbr(1, 1, 3) + cbr(1, 1, 5) + cbr(1, 1, 7)
    gau = sum(cbr(c, filters, 3) + cbr(filters, filters, 1) for c in channels[:3])
    return fpa + gau + 9 * filters * classes + classes


@pytest.mark.slow
def test_pan_parameter_count_resnet101():
    model = PAN(num_classes=21, backbone="resnet101")
    backbone = keras.applications.ResNet101(include_top=False, weights=None)
    head = trainable_parameter_count(model) - trainable_parameter_count(backbone)
    assert head == _smp_head() == 757_564
    assert trainable_parameter_count(model) == 43_310_396


def test_decoder_resolution_and_odd_sizes():
    model = PAN(num_classes=3, backbone="resnet18", filters=8, input_shape=(None, None, 3))
    assert model.get_layer("fpa").output.shape[-1] == 8
    images = np.random.default_rng(0).uniform(0, 255, (1, 50, 70, 3)).astype("float32")
    probe = keras.Model(model.input, [model.get_layer("gau_P2").output, model.output])
    stride4, logits = probe.predict(images, verbose=0)
    assert stride4.shape[1:3] == (13, 18)  # the decoder ends at stride 4 (res2's size)
    assert logits.shape == (1, 50, 70, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride=8"):
        PAN(output_stride=8)
    with pytest.raises(ValueError, match="filters=0"):
        PAN(filters=0)

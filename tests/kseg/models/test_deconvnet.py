"""DeconvNet: the paper's parameter count, size rules, the model contract."""

import keras
import numpy as np
import pytest

from kseg.models.deconvnet import DeconvNet
from kseg.testing import check_model

LIGHT = {"stage_filters": (8, 8, 16, 16, 16), "fc_units": 32, "fc_kernel_size": 2}


def hand_count(num_classes=21):
    """Weights + biases of every layer, written out from the paper's table."""
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    vgg = [
        (3, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 256),
        (256, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
    ]
    decoder = [
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 256),
        (256, 256),
        (256, 256),
        (256, 128),
        (128, 128),
        (128, 64),
        (64, 64),
        (64, 64),
    ]
    total = sum(conv(3, a, b) + 4 * b for a, b in vgg)  # conv + BN
    total += conv(7, 512, 4096) + 4 * 4096  # fc6
    total += conv(1, 4096, 4096) + 4 * 4096  # fc7
    total += conv(7, 4096, 512) + 4 * 512  # fc6 deconvolution
    total += sum(conv(3, a, b) + 4 * b for a, b in decoder)  # deconv + BN
    return total + conv(1, 64, num_classes)


@pytest.mark.slow
def test_paper_parameter_count():
    model = DeconvNet(num_classes=21, input_shape=(224, 224, 3))
    assert model.count_params() == hand_count(21) == 251_839_061
    assert abs(model.count_params() - 252e6) / 252e6 < 0.01
    assert tuple(model.get_layer("fc6").output.shape) == (None, 1, 1, 4096)


def test_light_parameter_count_matches_hand_count():
    model = DeconvNet(num_classes=4, input_shape=(64, 64, 3), **LIGHT)
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    widths = [
        (3, 8),
        (8, 8),
        (8, 8),
        (8, 8),
        (8, 16),
        (16, 16),
        (16, 16),
        (16, 16),
        (16, 16),
        (16, 16),
        (16, 16),
        (16, 16),
        (16, 16),
    ]
    decoder = [(16, 16)] * 6 + [(16, 16), (16, 16), (16, 8), (8, 8), (8, 8), (8, 8), (8, 8)]
    total = sum(conv(3, a, b) + 4 * b for a, b in widths + decoder)
    total += conv(2, 16, 32) + 4 * 32 + conv(1, 32, 32) + 4 * 32 + conv(2, 32, 16) + 4 * 16
    total += conv(1, 8, 4)
    assert model.count_params() == total


def test_contract_at_several_sizes(tmp_path):
    check_model(
        lambda shape: DeconvNet(num_classes=3, input_shape=shape, **LIGHT),
        input_shapes=[(64, 96, 3), (45, 77, 3)],
        num_classes=3,
        tmp_dir=tmp_path,
    )


def test_unpooling_returns_to_each_encoder_size():
    model = DeconvNet(num_classes=2, input_shape=(None, None, 3), **LIGHT)
    x = np.zeros((1, 45, 77, 3), "float32")
    sizes = keras.Model(model.inputs, [model.get_layer(f"unpool{i}").output for i in range(1, 6)])
    shapes = [tuple(np.asarray(t).shape[1:3]) for t in sizes.predict(x, verbose=0)]
    # ceil-mode pooling of 45x77: 23x39, 12x20, 6x10, 3x5 — unpooling goes back up exactly
    assert shapes == [(45, 77), (23, 39), (12, 20), (6, 10), (3, 5)]


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match=r"height 160 gives a pool5 grid of 5.*fc_kernel_size 7"):
        DeconvNet(input_shape=(160, 256, 3))
    with pytest.raises(ValueError, match="fc_units"):
        DeconvNet(fc_units=0)
    with pytest.raises(ValueError, match="fc_kernel_size"):
        DeconvNet(fc_kernel_size=1.5)

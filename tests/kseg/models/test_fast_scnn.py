"""Fast-SCNN: published size, width multiplier, auxiliary losses, the shared harness."""

import numpy as np
import pytest

import kseg
from kseg.models import FastSCNN
from kseg.models.deeplab import trainable_parameter_count
from kseg.testing import check_model, synthetic_batch


def test_parameter_count_matches_the_paper():
    model = FastSCNN(num_classes=19)
    count = trainable_parameter_count(model.inference_model())
    assert count == 1_138_051
    assert abs(count / 1.11e6 - 1) < 0.10  # paper 1.11 M [?]
    assert trainable_parameter_count(model) - count == 56_678  # the two auxiliary heads


def test_structure_follows_table_1():
    model = FastSCNN(num_classes=19, auxiliary_heads=False)
    downsample, extractor = model.get_layer("downsample"), model.get_layer("global")
    assert downsample.conv[0].strides == (2, 2)
    assert downsample.dsconv2[2].filters == 64  # the pointwise part
    assert extractor.bottlenecks[0].expand[0].filters == 64 * 6
    assert extractor.bottlenecks[-1].project[0].filters == 128
    assert [pool.bins for pool in extractor.pools] == [1, 2, 3, 6]
    assert model.get_layer("fusion").low_dw.dilation_rate == (4, 4)
    assert model.get_layer("classifier_logits").filters == 19


def test_alpha_scales_the_widths():
    model = FastSCNN(num_classes=19, alpha=0.5, auxiliary_heads=False)
    assert model.get_layer("downsample").dsconv2[2].filters == 32
    assert model.get_layer("fusion").high_conv[0].filters == 64
    assert trainable_parameter_count(model) < 0.35 * 1_138_051


def test_passes_the_model_checks(tmp_path):
    results = check_model(
        lambda shape: kseg.models.create("fast_scnn", num_classes=3, input_shape=shape, alpha=0.25),
        input_shapes=[(64, 48, 3), (35, 70, 3)],
        num_classes=3,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_auxiliary_heads_and_inference_model():
    model = FastSCNN(num_classes=4, alpha=0.25)
    assert model.loss_weights_for_outputs == [1.0, 0.4, 0.4]
    images, _ = synthetic_batch(1, 40, 56, num_classes=4, kind="scenes")
    outputs = model.predict(images, verbose=0)
    assert [o.shape for o in outputs] == [(1, 40, 56, 4)] * 3
    np.testing.assert_allclose(
        model.inference_model().predict(images, verbose=0), outputs[0], rtol=1e-5, atol=1e-5
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: alpha=-1"):
        FastSCNN(alpha=-1)
    with pytest.raises(ValueError, match="Received: bins"):
        FastSCNN(bins=(1, 0))
    with pytest.raises(ValueError, match="Received: dropout=1"):
        FastSCNN(dropout=1)

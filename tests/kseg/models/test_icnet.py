"""ICNet: published size and multiply-adds, cascade outputs and weights, the shared harness."""

import keras
import numpy as np
import pytest

from kseg.bench import profile
from kseg.models import ICNet
from kseg.models.deeplab import trainable_parameter_count
from kseg.testing import check_model, synthetic_batch


def test_full_width_parameter_count_matches_the_published_figure():
    model = ICNet(num_classes=19, alpha=1.0)
    count = trainable_parameter_count(model)
    assert count == 26_775_609
    assert abs(count / 26.5e6 - 1) < 0.10  # 26.5 M [?]
    keras.backend.clear_session()
    assert trainable_parameter_count(ICNet(num_classes=19)) == 6_720_569  # released, alpha 0.5


@pytest.mark.slow
def test_released_model_multiply_adds_match_the_published_figure():
    model = ICNet(num_classes=19, cascade_outputs=False)
    madds = profile(model, (1024, 2048, 3))["madds"]
    assert abs(madds / 28.3e9 - 1) < 0.10  # 28.3 "GFLOPs" [?]: multiply-adds


def test_cascade_structure():
    model = ICNet(num_classes=5, alpha=0.125, input_shape=(64, 128, 3))
    shapes = {
        name: tuple(model.get_layer(name).output.shape[1:3])
        for name in ("sub1_conv3_relu", "conv3_block1_out", "conv5_block3_out", "classifier")
    }
    assert shapes == {
        "sub1_conv3_relu": (8, 16),  # 1/8 of the full image
        "conv3_block1_out": (4, 8),  # 1/16 (conv3_1 of the half image)
        "conv5_block3_out": (2, 4),  # 1/32 (the quarter image, dilated)
        "classifier": (16, 32),  # 1/4
    }
    assert model.get_layer("conv5_block1_2_conv").dilation_rate == (4, 4)
    for name, size in (("cff_sub24", (4, 8)), ("cff_sub12", (8, 16))):
        fused, logits = model.get_layer(name).output
        assert tuple(fused.shape[1:3]) == tuple(logits.shape[1:3]) == size
        assert model.get_layer(name).small_conv.dilation_rate == (2, 2)


def test_passes_the_model_checks(tmp_path):
    results = check_model(
        lambda shape: ICNet(num_classes=3, input_shape=shape, alpha=0.125),
        input_shapes=[(64, 48, 3), (45, 71, 3)],
        num_classes=3,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_cascade_losses_are_weighted_as_in_the_paper():
    model = ICNet(num_classes=3, alpha=0.125)
    assert model.loss_weights_for_outputs == [1.0, 0.4, 0.4]
    images, labels = synthetic_batch(1, 48, 64, num_classes=3, kind="scenes")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=[ce] * 3, loss_weights=model.loss_weights_for_outputs)
    main, out8, out16 = model(images, training=False)
    expected = (
        float(ce(labels, main)) + 0.4 * float(ce(labels, out8)) + 0.4 * float(ce(labels, out16))
    )
    np.testing.assert_allclose(
        model.evaluate(images, (labels,) * 3, verbose=0, return_dict=True)["loss"],
        expected,
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        model.inference_model().predict(images, verbose=0), main.numpy(), rtol=1e-5, atol=1e-5
    )
    single = ICNet(num_classes=3, alpha=0.125, cascade_outputs=False)
    assert single.loss_weights_for_outputs == [1.0] and len(single.outputs) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 32.*Received: input_shape=\\(16, 64, 3\\)"):
        ICNet(input_shape=(16, 64, 3))
    with pytest.raises(ValueError, match="Received: cascade_loss_weights"):
        ICNet(cascade_loss_weights=(0.4,))
    with pytest.raises(ValueError, match="Received: alpha=0"):
        ICNet(alpha=0)

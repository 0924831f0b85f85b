"""Attention-to-Scale: the merge over scales in numpy, extra supervision, arguments."""

import keras
import numpy as np
import pytest

import kseg
from kseg.models import AttentionToScale
from kseg.models.deeplab import trainable_parameter_count

SMALL = dict(
    backbone="mobilenetv2",
    backbone_options={"alpha": 0.35},
    fc_channels=8,
    attention_channels=4,
    dropout=0.0,
)


@pytest.mark.slow
def test_attention_to_scale_parameter_count():
    model = AttentionToScale(num_classes=21)
    largefov = kseg.models.DeepLabV1(num_classes=21)
    attention = (3 * 3 * 3 * 1024 * 512 + 512) + (512 * 3 + 3)
    assert trainable_parameter_count(model) == trainable_parameter_count(largefov) + attention
    assert trainable_parameter_count(model) == 34_663_256


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_merge_is_the_softmax_weighted_sum_of_the_scales():
    model = AttentionToScale(num_classes=3, input_shape=(64, 64, 3), **SMALL)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    names = ["attention_conv2", "scale_attention", "scale1_score_resize", "scale2_score_resize"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    h, merged, score75, score50 = probe.predict(images, verbose=0)
    trunk = model.get_layer("trunk")
    score1 = trunk.predict(images, verbose=0)[1]  # the shared trunk on the scale-1 image
    w = _softmax(h)
    expected = w[..., :1] * score1 + w[..., 1:2] * score75 + w[..., 2:] * score50
    np.testing.assert_allclose(merged, expected, rtol=1e-4, atol=1e-4)
    # the scaled images share the trunk: scale 0.5 is the trunk on the half-size image
    half = keras.layers.Resizing(32, 32)(images).numpy()
    small = trunk.predict(half, verbose=0)[1]
    resized = kseg.layers.Resize()([small, score1]).numpy()
    np.testing.assert_allclose(score50, resized, rtol=1e-4, atol=1e-4)
    outputs = model.predict(images, verbose=0)
    assert len(outputs) == 4 and model.loss_weights_for_outputs == [1.0] * 4
    assert all(o.shape == (2, 64, 64, 3) for o in outputs)


def test_average_merge_and_single_scale():
    model = AttentionToScale(
        num_classes=3, input_shape=(48, 48, 3), merge="average", extra_supervision=True, **SMALL
    )
    images = np.random.default_rng(1).uniform(0, 255, (1, 48, 48, 3)).astype("float32")
    merged, *per_scale = model.predict(images, verbose=0)
    # bilinear upsampling is linear: the upsampled average is the average of the upsampled
    np.testing.assert_allclose(merged, np.mean(per_scale, axis=0), rtol=1e-4, atol=1e-4)
    single = AttentionToScale(num_classes=3, scales=(1.0,), **SMALL)
    assert len(single.outputs) == 1
    assert not any("attention" in layer.name for layer in single.layers)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"scales=\(0.5, 1.0\)"):
        AttentionToScale(scales=(0.5, 1.0))
    with pytest.raises(ValueError, match="merge='sum'"):
        AttentionToScale(merge="sum")
    with pytest.raises(ValueError, match="backbone_options"):
        AttentionToScale(backbone="vgg16", backbone_options={"alpha": 0.5})

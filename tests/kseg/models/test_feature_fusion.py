"""The feature-fusion network: every stage reaches the classifier, parameter count."""

import keras
import numpy as np
import pytest

from kseg.models import FeatureFusionNet
from kseg.models.deeplab import trainable_parameter_count


@pytest.mark.slow
def test_feature_fusion_parameter_count():
    model = FeatureFusionNet(num_classes=21)
    backbone = keras.applications.ResNet50(include_top=False, weights=None)
    head = (256 + 512 + 1024 + 2048) * 128 + 4 * 2 * 128  # 1x1 reductions + BN
    head += 9 * 512 * 256 + 2 * 256 + 256 * 21 + 21  # fusion conv + BN, classifier
    assert trainable_parameter_count(model) == trainable_parameter_count(backbone) + head
    assert trainable_parameter_count(model) == 25_212_693


def test_every_stage_is_fused_at_stride_4():
    model = FeatureFusionNet(
        num_classes=3, backbone="resnet18", filters=4, fuse_filters=8, input_shape=(64, 96, 3)
    )
    concat = model.get_layer("fuse_concat").output
    assert tuple(concat.shape[1:]) == (16, 24, 16)
    # zeroing one stage's reduction changes the logits: each stage reaches the output
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    before = model.predict(images, verbose=0)
    layer = model.get_layer("reduce_P5_bn")
    gamma, beta, *stats = layer.get_weights()
    layer.set_weights([np.zeros_like(gamma), np.zeros_like(beta), *stats])
    assert not np.allclose(model.predict(images, verbose=0), before)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fuse_filters=0"):
        FeatureFusionNet(fuse_filters=0)
    with pytest.raises(ValueError, match="backbone='vgg16'"):
        FeatureFusionNet(backbone="vgg16")

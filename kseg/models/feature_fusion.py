"""A feature-fusion network: every residual stage upsampled and concatenated before the
classifier (the survey's "enhanced semantic segmentation network" style of fusion, as in
hypercolumns).

The outputs of the four residual stages of a ResNet (strides 4, 8, 16, 32) are each reduced
by a 1×1 convolution (BN, ReLU) to ``filters`` channels, upsampled bilinearly to stride 4 and
concatenated; a 3×3 convolution (BN, ReLU) fuses them and a 1×1 classifier, upsampled to the
input size, gives the logits. Fine detail comes from the shallow stages, context from the deep
ones, in one step (no gradual decoder).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_rate,
    check_weights,
)
from kseg.models.deeplab import _backbone_features
from kseg.registry import MODELS

_BACKBONES = ("resnet18", "resnet50", "resnet101", "mobilenetv2")
_LEVELS = ("P2", "P3", "P4", "P5")


@MODELS.register("feature_fusion", "featurefusion")
@keras.saving.register_keras_serializable(package="kseg")
class FeatureFusionNet(SegmentationModel):
    """All residual stages, upsampled to stride 4 and concatenated, then classified.

    Parameters (trainable, ResNet-50, 21 classes, 128 filters, fused 256): 25,212,693 =
    ResNet-50's 23,534,592 + the fusion head's 1,678,101.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``.
        backbone: "resnet50" (default), "resnet18", "resnet101" or "mobilenetv2".
        output_stride: 32 (default), 16 or 8 (dilated deep stages).
        filters: channels of each stage after its 1×1 reduction.
        fuse_filters: channels of the 3×3 fusion convolution.
        dropout: before the classifier.
        weights: None, "imagenet" or a backbone weights file.
        backbone_options: extra backbone arguments.

    Example:
        >>> model = FeatureFusionNet(num_classes=3, backbone="resnet18", filters=8,
        ...                          fuse_filters=16, input_shape=(64, 64, 3))
        >>> tuple(model.output_shape)
        (None, 64, 64, 3)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        backbone="resnet50",
        output_stride=32,
        filters=128,
        fuse_filters=256,
        dropout=0.1,
        weights=None,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("FeatureFusionNet", num_classes)
        input_shape = check_input_shape("FeatureFusionNet", input_shape, channels=(3,))
        check_choice("FeatureFusionNet", "output_stride", output_stride, (8, 16, 32))
        check_positive_int("FeatureFusionNet", "filters", filters)
        check_positive_int("FeatureFusionNet", "fuse_filters", fuse_filters)
        check_rate("FeatureFusionNet", "dropout", dropout)
        weights = check_weights("FeatureFusionNet", weights)

        images = keras.Input(input_shape, name="images")
        features = _backbone_features(
            images,
            "FeatureFusionNet",
            backbone,
            _BACKBONES,
            output_stride,
            weights,
            backbone_options,
        )
        reference = features["P2"]
        stages = []
        for level in _LEVELS:
            y = conv_bn_relu(features[level], filters, 1, f"reduce_{level}")
            if level != "P2":
                y = Resize(name=f"upsample_{level}")([y, reference])
            stages.append(y)
        x = layers.Concatenate(name="fuse_concat")(stages)
        x = conv_bn_relu(x, fuse_filters, 3, "fuse_conv")
        x = layers.Dropout(dropout, name="fuse_dropout")(x)
        x = layers.Conv2D(num_classes, 1, name="classifier")(x)
        logits = Resize(name="upsample")([x, images])
        super().__init__(images, logits, name=name or "feature_fusion", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            output_stride=output_stride,
            filters=filters,
            fuse_filters=fuse_filters,
            dropout=dropout,
            weights=weights,
            backbone_options=backbone_options,
        )

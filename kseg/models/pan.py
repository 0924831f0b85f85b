"""PAN: Pyramid Attention Network (Li, Xiong, An, Wang, "Pyramid Attention Network for
Semantic Segmentation", BMVC 2018).

A ResNet at output stride 16 (the paper dilates res5), a Feature Pyramid Attention module on
its last features and three Global Attention Upsample modules that go back to stride 4 through
the res4, res3 and res2 features; a 3×3 classifier and a bilinear upsampling give the logits.
The authors released no code; the block structure follows the paper's figures and
segmentation_models_pytorch's ``PAN`` (which fixes what the paper leaves open: a one-channel
pyramid after 2×2 max pools, a sigmoid gate in the GAU, 32 decoder channels by default).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.attention import FeaturePyramidAttention, GlobalAttentionUpsample
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_weights,
)
from kseg.models.deeplab import _backbone_features
from kseg.registry import MODELS

_BACKBONES = ("resnet50", "resnet101", "resnet18", "mobilenetv2")


@MODELS.register("pan")
@keras.saving.register_keras_serializable(package="kseg")
class PAN(SegmentationModel):
    """PAN: Feature Pyramid Attention + Global Attention Upsample on a ResNet.

    Parameters (trainable, ResNet-101 at output stride 16, 21 classes, 32 decoder channels):
    43,310,396 = keras.applications ResNet-101's 42,552,832 + the head's 757,564, which is
    segmentation_models_pytorch's ``PAN(encoder_name="resnet101")`` decoder and head summed
    layer by layer (see the test; its torchvision ResNet-101 has no convolution biases,
    42,500,160, so its total is 43,257,724). The paper gives no count.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size.
        backbone: "resnet101" (paper), "resnet50"; "resnet18" or "mobilenetv2" for small
            models.
        output_stride: 16 (paper) or 32.
        filters: decoder channels.
        weights: None, "imagenet" or a backbone weights file.
        backbone_options: extra backbone arguments.

    Example:
        >>> model = PAN(num_classes=3, backbone="resnet18", input_shape=(128, 128, 3), filters=8)
        >>> tuple(model.output_shape)
        (None, 128, 128, 3)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        backbone="resnet101",
        output_stride=16,
        filters=32,
        weights=None,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("PAN", num_classes)
        input_shape = check_input_shape("PAN", input_shape, channels=(3,))
        check_choice("PAN", "output_stride", output_stride, (16, 32))
        check_positive_int("PAN", "filters", filters)
        weights = check_weights("PAN", weights)

        images = keras.Input(input_shape, name="images")
        features = _backbone_features(
            images, "PAN", backbone, _BACKBONES, output_stride, weights, backbone_options
        )
        x = FeaturePyramidAttention(filters, name="fpa")(features["P5"])
        for level in ("P4", "P3", "P2"):
            x = GlobalAttentionUpsample(filters, name=f"gau_{level}")([features[level], x])
        x = layers.Conv2D(num_classes, 3, padding="same", name="classifier")(x)
        logits = Resize(name="upsample")([x, images])
        super().__init__(images, logits, name=name or "pan", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            output_stride=output_stride,
            filters=filters,
            weights=weights,
            backbone_options=backbone_options,
        )

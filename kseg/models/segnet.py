"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017).

An encoder of VGG16's 13 convolutions, each followed by batch normalisation and ReLU, whose
five 2×2 max pools remember the argmax positions; a mirrored decoder that upsamples with
max-unpooling to exactly those positions (``kseg.layers.MaxUnpooling2D``) and densifies the
sparse maps with 3×3 convolutions + BN + ReLU. The last decoder convolution outputs the class
logits (no BN), as ``conv1_1_D`` in the authors' Caffe model.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.backbones.vgg import (  # noqa: F401 - moved names, re-exported
    VGG16_CONVS,
    VGG16_FILTERS,
    check_stage_filters,
    vgg16_bn_encoder,
    vgg_bn_names,
)
from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.unpooling import MaxUnpooling2D
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_weights,
)
from kseg.registry import MODELS


@MODELS.register("segnet")
@keras.saving.register_keras_serializable(package="kseg")
class SegNet(SegmentationModel):
    """SegNet: VGG16-BN encoder, mirrored decoder upsampling with the encoder's pooling indices.

    Parameter count with 11 classes (CamVid, the paper's setting): 29,465,227 including the
    31,744 BN weights (15,872 of them the non-trainable moving statistics), i.e. the paper's
    29.5 M. Differences from the Caffe model: pooling is in ceil mode and each unpooling
    returns to its encoder stage's exact size, so every input size ≥ 1 works (the paper used
    360×480, whose stride-32 stage is already fractional: 360/32 = 11.25). The paper's
    median-frequency class balancing belongs to the loss (``kseg.losses``), not the model.

    Args:
        num_classes: number of classes (logits channels).
        input_shape: ``(H, W, 3)``; H/W may be None.
        weights: None, "imagenet" (VGG16 convolutions through keras.applications) or a path to a
            keras.applications VGG16 weights file. Needs the default ``stage_filters``.
        stage_filters: widths of the five encoder stages (the decoder mirrors them); smaller
            values give a light SegNet for tests and small data.

    Example:
        >>> model = SegNet(num_classes=11, input_shape=(45, 60, 3))
        >>> tuple(model.output_shape)
        (None, 45, 60, 11)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        weights=None,
        stage_filters=VGG16_FILTERS,
        name=None,
        **kwargs,
    ):
        check_num_classes("SegNet", num_classes)
        input_shape = check_input_shape("SegNet", input_shape, channels=(3,))
        stage_filters = check_stage_filters("SegNet", stage_filters)
        weights = check_weights("SegNet", weights)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        x, skips = vgg16_bn_encoder(x, stage_filters, weights, "SegNet")
        for stage in range(5, 0, -1):
            pre_pool, indices = skips[stage - 1]
            x = MaxUnpooling2D(2, name=f"decoder{stage}_unpool")([x, indices, pre_pool])
            convs = VGG16_CONVS[stage - 1]
            for index in range(convs, 0, -1):
                conv_name = f"decoder{stage}_conv{index}"
                if index > 1 or stage > 1:
                    filters = stage_filters[stage - 1] if index > 1 else stage_filters[stage - 2]
                    x = conv_bn_relu(
                        x, filters, 3, conv_name, use_bias=True, **vgg_bn_names(conv_name)
                    )
                else:
                    x = layers.Conv2D(num_classes, 3, padding="same", name="logits")(x)
        super().__init__(images, x, name=name or "segnet", **kwargs)

        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            weights=weights,
            stage_filters=stage_filters,
        )

"""ParseNet (Liu, Rabinovich, Berg, "ParseNet: Looking Wider to See Better", 2015).

Global context for an FCN: the fc7 features are average-pooled over the whole image, both the
pooled (global) and the per-position (local) features are L2-normalised with a learned
per-channel scale (``L2Normalization``), the global vector is "unpooled" (repeated over the
map) and concatenated with the local features before the classifier ("early fusion"). As the
authors' released VOC model, the trunk is DeepLab-LargeFOV (VGG16 at output stride 8, fc6 3×3
dilated 12 and fc7 1024 wide); ``variant="fcn32s"`` gives the paper's FCN-32s trunk (fc6 7×7
and fc7 4096 wide, output stride 32) used for SiftFlow and PASCAL-Context.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg import backbones
from kseg.layers.attention import L2Normalization
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_positive_number,
    check_rate,
    check_weights,
)
from kseg.registry import MODELS


@MODELS.register("parsenet")
@keras.saving.register_keras_serializable(package="kseg")
class ParseNet(SegmentationModel):
    """ParseNet: local fc7 features fused with L2-normalised global context.

    Parameters (trainable, 21 classes): "largefov" 20,528,981 = DeepLab-LargeFOV's 20,505,429
    + 2 × 1024 normalisation scales + 1024 × 21 more classifier weights (the classifier sees
    2048 channels); "fcn32s" with 4096-wide fc6/fc7 134,440,789. The paper gives no count; the
    structure follows the paper's description (pool6 global average, L2 normalisation with a
    learned per-channel scale, unpooling back to the feature size, concat, fc8), and the
    count is asserted as DeepLab-LargeFOV's plus those additions.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``.
        variant: "largefov" (VOC model) or "fcn32s".
        fc_channels: width of fc6/fc7 (default 1024 for largefov, 4096 for fcn32s).
        scale: initial value of the normalisation scales (authors: 10).
        dropout: after fc6 and fc7 (0.5).
        weights: None, "imagenet" or a keras.applications VGG16 weights file (encoder).

    Example:
        >>> model = ParseNet(num_classes=3, input_shape=(64, 64, 3), fc_channels=16)
        >>> tuple(model.output_shape)
        (None, 64, 64, 3)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        variant="largefov",
        fc_channels=None,
        scale=10.0,
        dropout=0.5,
        weights=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("ParseNet", num_classes)
        input_shape = check_input_shape("ParseNet", input_shape, channels=(3,))
        check_choice("ParseNet", "variant", variant, ("largefov", "fcn32s"))
        if fc_channels is not None:
            check_positive_int("ParseNet", "fc_channels", fc_channels)
        check_positive_number("ParseNet", "scale", scale)
        check_rate("ParseNet", "dropout", dropout)
        weights = check_weights("ParseNet", weights)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        if variant == "largefov":
            x = backbones.build("vgg16", x, output_stride=8, weights=weights, pool_size=3)["P5"]
            x = layers.AveragePooling2D(3, strides=1, padding="same", name="pool5a")(x)
            width, kernel, rate = fc_channels or 1024, 3, 12
        else:
            x = backbones.build("vgg16", x, output_stride=32, weights=weights)["P5"]
            width, kernel, rate = fc_channels or 4096, 7, 1
        x = layers.Conv2D(
            width, kernel, padding="same", dilation_rate=rate, activation="relu", name="fc6"
        )(x)
        x = layers.Dropout(dropout, name="drop6")(x)
        x = layers.Conv2D(width, 1, activation="relu", name="fc7")(x)
        x = layers.Dropout(dropout, name="drop7")(x)
        context = layers.GlobalAveragePooling2D(keepdims=True, name="pool6")(x)
        context = L2Normalization(scale, name="pool6_norm")(context)
        context = Resize(name="unpool6")([context, x])
        local = L2Normalization(scale, name="fc7_norm")(x)
        x = layers.Concatenate(name="fuse")([local, context])
        x = layers.Conv2D(num_classes, 1, name="fc8")(x)
        logits = Resize(name="upsample")([x, images])
        super().__init__(images, logits, name=name or "parsenet", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            variant=variant,
            fc_channels=fc_channels,
            scale=scale,
            dropout=dropout,
            weights=weights,
        )

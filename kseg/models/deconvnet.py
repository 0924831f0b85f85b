"""DeconvNet (Noh, Hong, Han: "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015).

VGG16's 13 convolutions, fc6/fc7 as a 7×7 (valid) and a 1×1 convolution, then a mirrored
network: a 7×7 transposed convolution back to the pool5 grid, and per stage an unpooling to the
encoder's argmax positions followed by 3×3 transposed convolutions. Every convolution and
transposed convolution is followed by batch normalisation and ReLU, as in the paper; a 1×1
convolution gives the class logits.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.backbones.vgg import (
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
    check_positive_int,
    check_weights,
)
from kseg.registry import MODELS


@MODELS.register("deconvnet")
@keras.saving.register_keras_serializable(package="kseg")
class DeconvNet(SegmentationModel):
    """DeconvNet: VGG16-BN encoder, fc6/fc7 as convolutions, mirrored deconvolution network.

    Parameter count with 21 classes (VOC): 251,839,061 including 66,816 BN weights (33,408 of
    them moving statistics), the paper's ≈252 M (as listed in the SegNet paper's comparison), most of
    it in fc6 and its mirror (102.8 M each).

    fc6 is a *valid* ``fc_kernel_size`` convolution on the pool5 grid (1×1 output for the
    paper's 224×224 input), so ``ceil(H / 32)`` and ``ceil(W / 32)`` must be at least
    ``fc_kernel_size``: at least 193×193 for the paper's 7. Pools are in ceil mode and each
    unpooling returns to its encoder stage's exact size, so other sizes work too. The paper's
    two-stage training and its ensemble with FCN are training procedures, not part of the model.

    Args:
        num_classes: number of classes (logits channels).
        input_shape: ``(H, W, 3)``; H/W may be None.
        weights: None, "imagenet" (VGG16 convolutions through keras.applications) or a path to a
            keras.applications VGG16 weights file; fc6/fc7 start random.
        stage_filters: widths of the five VGG16 stages (mirrored by the decoder).
        fc_units: width of fc6 and fc7 (paper: 4096).
        fc_kernel_size: fc6's kernel and its mirror's (paper: 7).

    Example:
        >>> model = DeconvNet(num_classes=21, input_shape=(64, 96, 3),
        ...                   stage_filters=(8, 16, 32, 32, 32), fc_units=64, fc_kernel_size=2)
        >>> tuple(model.output_shape)
        (None, 64, 96, 21)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        weights=None,
        stage_filters=VGG16_FILTERS,
        fc_units=4096,
        fc_kernel_size=7,
        name=None,
        **kwargs,
    ):
        check_num_classes("DeconvNet", num_classes)
        input_shape = check_input_shape("DeconvNet", input_shape, channels=(3,))
        stage_filters = check_stage_filters("DeconvNet", stage_filters)
        weights = check_weights("DeconvNet", weights)
        check_positive_int("DeconvNet", "fc_units", fc_units)
        check_positive_int("DeconvNet", "fc_kernel_size", fc_kernel_size)
        for axis, size in zip(("height", "width"), input_shape[:2]):
            if size is not None and -(-size // 32) < fc_kernel_size:
                raise ValueError(
                    f"DeconvNet: input {axis} {size} gives a pool5 grid of {-(-size // 32)}, "
                    f"smaller than fc_kernel_size {fc_kernel_size}; use an input of at least "
                    f"{32 * (fc_kernel_size - 1) + 1} or a smaller fc_kernel_size"
                )

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        x, skips = vgg16_bn_encoder(x, stage_filters, weights, "DeconvNet")
        x = conv_bn_relu(x, fc_units, fc_kernel_size, "fc6", padding="valid", use_bias=True)
        x = conv_bn_relu(x, fc_units, 1, "fc7", use_bias=True)
        x = conv_bn_relu(
            x,
            stage_filters[4],
            fc_kernel_size,
            "fc6_deconv",
            padding="valid",
            transposed=True,
            use_bias=True,
        )
        for stage in range(5, 0, -1):
            pre_pool, indices = skips[stage - 1]
            x = MaxUnpooling2D(2, name=f"unpool{stage}")([x, indices, pre_pool])
            convs = VGG16_CONVS[stage - 1]
            for index in range(1, convs + 1):
                last = index == convs and stage > 1
                filters = stage_filters[stage - 2] if last else stage_filters[stage - 1]
                name = f"deconv{stage}_conv{index}"  # its BN: "debn{stage}_bn{index}"
                x = conv_bn_relu(
                    x, filters, 3, name, transposed=True, use_bias=True, **vgg_bn_names(name)
                )
        logits = layers.Conv2D(num_classes, 1, name="logits")(x)
        super().__init__(images, logits, name=name or "deconvnet", **kwargs)

        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            weights=weights,
            stage_filters=stage_filters,
            fc_units=fc_units,
            fc_kernel_size=fc_kernel_size,
        )

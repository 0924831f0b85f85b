"""PSPNet: Pyramid Scene Parsing Network (Zhao, Shi, Qi, Wang, Jia, CVPR 2017).

A dilated ResNet (output stride 8) followed by the pyramid pooling module: the conv5 features
are average-pooled to 1×1, 2×2, 3×3 and 6×6 bins, each reduced by a 1×1 convolution to a
quarter of the channels, upsampled bilinearly and concatenated with the features; a 3×3
convolution, dropout 0.1 and a 1×1 classifier follow. During training an auxiliary
classifier on conv4 adds deep supervision with loss weight 0.4.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg import backbones
from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.pyramid_pooling import AdaptiveAveragePooling2D
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_options,
    check_positive_ints,
    check_rate,
    check_weights,
)
from kseg.registry import MODELS

_BACKBONES = ("resnet50", "resnet101")


@MODELS.register("pspnet")
@keras.saving.register_keras_serializable(package="kseg")
class PSPNet(SegmentationModel):
    """PSPNet with a dilated ResNet and an optional auxiliary head.

    With ``auxiliary_head=True`` (default) the model has two outputs, ``[logits,
    aux_logits]``, both ``[B, H, W, num_classes]`` at input size; train it with one loss per
    output and the paper's weights::

        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile("adam", loss=[ce, ce], loss_weights=model.loss_weights_for_outputs)
        model.fit(images, (labels, labels))          # the same labels for both outputs

    For inference, ``model.inference_model()`` returns a single-output ``keras.Model``
    sharing the weights (no auxiliary computation); ``PSPNet(..., auxiliary_head=False)``
    builds the single-output network directly.

    Parameters (21 classes, ResNet-101, 4 bins, auxiliary head): 68,002,602 trainable with the
    keras.applications stem (published ≈68.1 M, [?]); ``backbone_options={"stem": "deep"}``
    gives PSPNet's own three-convolution stem: 68,126,314.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size.
        backbone: "resnet101" (paper) or "resnet50".
        output_stride: 8 (paper) or 16.
        weights: None, "imagenet" or a keras.applications ResNet weights file.
        bins: pyramid bin counts (paper: 1, 2, 3, 6).
        auxiliary_head: add the conv4 auxiliary classifier as a second output.
        aux_loss_weight: weight of the auxiliary loss (paper: 0.4).
        dropout: dropout before both classifiers (paper: 0.1).
        backbone_options: extra backbone arguments, e.g. ``{"stem": "deep"}``.

    Example:
        >>> model = PSPNet(num_classes=4, backbone="resnet50", input_shape=(72, 60, 3))
        >>> [tuple(shape) for shape in model.output_shape]
        [(None, 72, 60, 4), (None, 72, 60, 4)]
        >>> tuple(model.inference_model().output_shape)
        (None, 72, 60, 4)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        backbone="resnet101",
        output_stride=8,
        weights=None,
        bins=(1, 2, 3, 6),
        auxiliary_head=True,
        aux_loss_weight=0.4,
        dropout=0.1,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("PSPNet", num_classes)
        input_shape = check_input_shape("PSPNet", input_shape, channels=(3,))
        check_choice("PSPNet", "backbone", backbone, _BACKBONES)
        check_choice("PSPNet", "output_stride", output_stride, (8, 16))
        bins = check_positive_ints("PSPNet", "bins", bins)
        check_rate("PSPNet", "dropout", dropout)
        if not aux_loss_weight >= 0:
            raise ValueError(
                f"PSPNet: aux_loss_weight must be >= 0. Received: aux_loss_weight={aux_loss_weight!r}"
            )
        check_options("PSPNet", "backbone_options", backbone_options)
        weights = check_weights("PSPNet", weights)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        features = backbones.build(
            backbone, x, output_stride=output_stride, weights=weights, **(backbone_options or {})
        )
        x = features["P5"]
        channels = x.shape[-1]
        pyramid = [x]
        for b in bins:
            y = AdaptiveAveragePooling2D(b, name=f"ppm_pool{b}")(x)
            y = conv_bn_relu(y, channels // len(bins), 1, f"ppm_conv{b}")
            pyramid.append(Resize(name=f"ppm_upsample{b}")([y, x]))
        x = layers.Concatenate(name="ppm_concat")(pyramid)
        x = conv_bn_relu(x, 512, 3, "head_conv")
        x = layers.Dropout(dropout, name="head_dropout")(x)
        x = layers.Conv2D(num_classes, 1, name="logits")(x)
        outputs = [Resize(name="upsample")([x, images])]
        if auxiliary_head:
            y = conv_bn_relu(features["P4"], 256, 3, "aux_conv")
            y = layers.Dropout(dropout, name="aux_dropout")(y)
            y = layers.Conv2D(num_classes, 1, name="aux_logits")(y)
            outputs.append(Resize(name="aux_upsample")([y, images]))
        super().__init__(
            images, outputs if auxiliary_head else outputs[0], name=name or "pspnet", **kwargs
        )

        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            output_stride=output_stride,
            weights=weights,
            bins=bins,
            auxiliary_head=auxiliary_head,
            aux_loss_weight=aux_loss_weight,
            dropout=dropout,
            backbone_options=backbone_options,
        )

    @property
    def loss_weights_for_outputs(self):
        """``[1.0, aux_loss_weight]`` with the auxiliary head, else ``[1.0]``: for ``compile``."""
        return [1.0, self.aux_loss_weight] if self.auxiliary_head else [1.0]

    def inference_model(self):
        """A single-output ``keras.Model`` (main logits) sharing this model's layers and weights.

        Example:
            >>> model = PSPNet(num_classes=2, backbone="resnet50", input_shape=(48, 48, 3))
            >>> single = model.inference_model()
            >>> len(single.outputs)
            1
        """
        return keras.Model(self.input, self.outputs[0], name=f"{self.name}_inference")

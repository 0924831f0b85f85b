"""DANet: Dual Attention Network (Fu, Liu, Tian, Li, Bao, Fang, Lu, CVPR 2019).

A dilated ResNet (output stride 8) and two parallel attention branches on its last features,
as the authors' ``DANetHead``: each reduces the 2048 channels to 512 by a 3×3 convolution
(BN, ReLU), applies its module (``PositionAttention`` over positions, ``ChannelAttention``
over channels), then another 3×3 convolution; the two are summed and classified by a 1×1
convolution after spatial dropout 0.1. Each branch also has its own classifier: the authors
train on all three outputs with equal weights.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.attention import ChannelAttention, PositionAttention
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

_BACKBONES = ("resnet50", "resnet101", "resnet18", "mobilenetv2")


@MODELS.register("danet")
@keras.saving.register_keras_serializable(package="kseg")
class DANet(SegmentationModel):
    """DANet: position and channel attention on a dilated ResNet.

    With ``auxiliary_heads=True`` (default) the outputs are ``[fused, position, channel]``
    logits, all at input size, trained with equal weights (``loss_weights_for_outputs``, as
    the authors' ``SegmentationMultiLosses``); ``inference_model()`` returns the fused logits
    only. Parameters (trainable, ResNet-101, 19 classes): 66,507,451 with the keras.applications
    stem (66,631,163 with the authors' deep stem) = ResNet-101's 42,552,832 + the head's
    23,954,619. The paper gives no count; the head's count is the authors' ``DANetHead``
    (``PAM_Module``, ``CAM_Module``, conv5a/c, conv51/52, conv6/7/8) summed layer by layer
    (see the test).

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``.
        backbone: "resnet101" (paper), "resnet50"; "resnet18" and "mobilenetv2" for small
            models.
        output_stride: 8 (paper) or 16.
        inter_channels: width of the attention branches (authors: input channels / 4 = 512).
        reduction: query/key channel reduction of the position attention (authors: 8).
        dropout: spatial dropout before the classifiers (authors: 0.1).
        auxiliary_heads: add the two per-branch classifiers as outputs.
        weights: None, "imagenet" or a backbone weights file.
        backbone_options: extra backbone arguments, e.g. ``{"stem": "deep"}`` (the authors'
            ResNet has the three-convolution stem).

    Example:
        >>> model = DANet(num_classes=3, backbone="resnet18", input_shape=(64, 64, 3),
        ...               inter_channels=16, auxiliary_heads=False)
        >>> tuple(model.output_shape)
        (None, 64, 64, 3)
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        backbone="resnet101",
        output_stride=8,
        inter_channels=512,
        reduction=8,
        dropout=0.1,
        auxiliary_heads=True,
        weights=None,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("DANet", num_classes)
        input_shape = check_input_shape("DANet", input_shape, channels=(3,))
        check_choice("DANet", "output_stride", output_stride, (8, 16))
        check_positive_int("DANet", "inter_channels", inter_channels)
        check_positive_int("DANet", "reduction", reduction)
        check_rate("DANet", "dropout", dropout)
        weights = check_weights("DANet", weights)

        images = keras.Input(input_shape, name="images")
        features = _backbone_features(
            images, "DANet", backbone, _BACKBONES, output_stride, weights, backbone_options
        )
        x = features["P5"]
        pam = conv_bn_relu(x, inter_channels, 3, "pam_in")
        pam = PositionAttention(reduction, name="position_attention")(pam)
        pam = conv_bn_relu(pam, inter_channels, 3, "pam_out")
        cam = conv_bn_relu(x, inter_channels, 3, "cam_in")
        cam = ChannelAttention(name="channel_attention")(cam)
        cam = conv_bn_relu(cam, inter_channels, 3, "cam_out")
        fused = layers.Add(name="fuse")([pam, cam])

        def classify(y, prefix):
            y = layers.SpatialDropout2D(dropout, name=f"{prefix}_dropout")(y)
            y = layers.Conv2D(num_classes, 1, name=f"{prefix}_logits")(y)
            return Resize(name=f"{prefix}_upsample")([y, images])

        outputs = [classify(fused, "fused")]
        if auxiliary_heads:
            outputs += [classify(pam, "pam"), classify(cam, "cam")]
        super().__init__(
            images, outputs if auxiliary_heads else outputs[0], name=name or "danet", **kwargs
        )
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            output_stride=output_stride,
            inter_channels=inter_channels,
            reduction=reduction,
            dropout=dropout,
            auxiliary_heads=auxiliary_heads,
            weights=weights,
            backbone_options=backbone_options,
        )

    @property
    def loss_weights_for_outputs(self):
        """``[1.0, 1.0, 1.0]`` with the auxiliary heads (the authors' equal weights), else
        ``[1.0]``: for ``compile``."""
        return [1.0, 1.0, 1.0] if self.auxiliary_heads else [1.0]

    def inference_model(self):
        """A single-output ``keras.Model`` (fused logits) sharing this model's weights.

        Example:
            >>> model = DANet(num_classes=2, backbone="resnet18", inter_channels=8,
            ...               input_shape=(32, 32, 3))
            >>> len(model.inference_model().outputs)
            1
        """
        outputs = self.outputs[0] if self.auxiliary_heads else self.outputs
        return keras.Model(self.input, outputs, name=f"{self.name}_inference")

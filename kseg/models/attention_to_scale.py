"""Attention to Scale (Chen, Yang, Wang, Xu, Yuille, "Attention to Scale: Scale-aware Semantic
Image Segmentation", CVPR 2016).

One DeepLab trunk, its weights shared, runs on the image at several scales (paper: 1, 0.75,
0.5). Each scale's score map is resized to the scale-1 score size; an attention model (a 3×3
convolution with 512 filters and ReLU, then a 1×1 convolution with one output per scale) on
the scales' concatenated fc7 features gives, at every pixel, a softmax over the scales that
weights their score maps. Extra supervision: every scale's own score map is also an output
(trained on the same labels; the paper downsamples the labels instead). ``merge="average"``
or ``"max"`` gives the paper's baselines (average- and max-pooling over scales).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg import backbones
from kseg.layers.attention import ScaleAttention
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_options,
    check_positive_int,
    check_rate,
    check_weights,
)
from kseg.registry import MODELS

_BACKBONES = ("vgg16", "resnet18", "resnet50", "resnet101", "mobilenetv2")
_MERGES = ("attention", "average", "max")


def _check_scales(scales):
    try:
        result = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        result = ()
    if (
        not result
        or any(isinstance(s, bool) for s in scales)
        or not all(0 < s <= 4 for s in result)
        or result[0] != 1.0
        or len(set(result)) != len(result)
    ):
        raise ValueError(
            "AttentionToScale: scales must be distinct numbers in (0, 4], the first 1.0. "
            f"Received: scales={scales!r}"
        )
    return result


def deeplab_trunk(num_classes, backbone, fc_channels, fc6_dilation, dropout, weights, options):
    """The shared DeepLab trunk: a ``keras.Model`` from 0..255 RGB to ``[fc7, scores]``.

    With "vgg16" it is DeepLab-LargeFOV (DeepLab's 3×3 pools, output stride 8, ``pool5a``,
    fc6 3×3 dilated ``fc6_dilation``); other backbones give their "P5" at output stride 8.

    Example:
        >>> trunk = deeplab_trunk(3, "resnet18", 16, 12, 0.5, None, None)
        >>> [tuple(t.shape) for t in trunk.outputs]
        [(None, None, None, 16), (None, None, None, 3)]
    """
    images = keras.Input((None, None, 3), name="trunk_images")
    builder = backbones.BACKBONES.get(backbone)
    x = ImageNormalization(builder.preprocessing, name="normalize")(images)
    if backbone == "vgg16":
        x = backbones.build("vgg16", x, output_stride=8, weights=weights, pool_size=3)["P5"]
        x = layers.AveragePooling2D(3, strides=1, padding="same", name="pool5a")(x)
    else:
        x = backbones.build(backbone, x, output_stride=8, weights=weights, **(options or {}))
        x = x["P5"]
    x = layers.Conv2D(
        fc_channels, 3, padding="same", dilation_rate=fc6_dilation, activation="relu", name="fc6"
    )(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    fc7 = layers.Conv2D(fc_channels, 1, activation="relu", name="fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(fc7)
    scores = layers.Conv2D(num_classes, 1, name="fc8")(x)
    return keras.Model(images, [fc7, scores], name="trunk")


@MODELS.register("attention_to_scale", "attentiontoscale")
@keras.saving.register_keras_serializable(package="kseg")
class AttentionToScale(SegmentationModel):
    """A shared DeepLab trunk on several scales merged by a learned per-pixel attention.

    With ``extra_supervision=True`` (default) the outputs are ``[merged, score at scale 1,
    score at scales[1], ...]``, all at input size, trained with weight 1 each
    (``loss_weights_for_outputs``); ``inference_model()`` returns the merged logits.
    Parameters (trainable, VGG16 LargeFOV trunk, 21 classes, 3 scales): 20,505,429 (the
    trunk, shared) + 14,157,827 (attention: 3×3×3072×512 + 512, 1×1×512×3 + 3) = 34,663,256;
    the paper gives none.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``.
        backbone: "vgg16" (paper: DeepLab-LargeFOV) or "resnet18", "resnet50", "resnet101",
            "mobilenetv2" (their stride-8 "P5").
        scales: input scales, the first 1.0 (paper: 1, 0.75, 0.5).
        merge: "attention" (paper), "average" or "max" (the paper's baselines).
        extra_supervision: add each scale's scores as outputs.
        fc_channels: width of fc6/fc7 (LargeFOV: 1024).
        fc6_dilation: dilation of the 3×3 fc6 (LargeFOV: 12).
        attention_channels: width of the attention model's 3×3 layer (paper: 512).
        dropout: after fc6 and fc7.
        weights: None, "imagenet" or a backbone weights file.
        backbone_options: extra backbone arguments (not for vgg16).

    Example:
        >>> model = AttentionToScale(num_classes=3, backbone="resnet18", input_shape=(64, 64, 3),
        ...                          fc_channels=16, attention_channels=8)
        >>> [tuple(s) for s in model.output_shape]
        [(None, 64, 64, 3), (None, 64, 64, 3), (None, 64, 64, 3), (None, 64, 64, 3)]
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        backbone="vgg16",
        scales=(1.0, 0.75, 0.5),
        merge="attention",
        extra_supervision=True,
        fc_channels=1024,
        fc6_dilation=12,
        attention_channels=512,
        dropout=0.5,
        weights=None,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("AttentionToScale", num_classes)
        input_shape = check_input_shape("AttentionToScale", input_shape, channels=(3,))
        check_choice("AttentionToScale", "backbone", backbone, _BACKBONES)
        scales = _check_scales(scales)
        check_choice("AttentionToScale", "merge", merge, _MERGES)
        for argument, value in (
            ("fc_channels", fc_channels),
            ("fc6_dilation", fc6_dilation),
            ("attention_channels", attention_channels),
        ):
            check_positive_int("AttentionToScale", argument, value)
        check_rate("AttentionToScale", "dropout", dropout)
        check_options("AttentionToScale", "backbone_options", backbone_options)
        if backbone == "vgg16" and backbone_options:
            raise ValueError(
                "AttentionToScale: the vgg16 trunk takes no backbone_options. "
                f"Received: backbone_options={backbone_options!r}"
            )
        weights = check_weights("AttentionToScale", weights)

        images = keras.Input(input_shape, name="images")
        trunk = deeplab_trunk(
            num_classes, backbone, fc_channels, fc6_dilation, dropout, weights, backbone_options
        )
        features, scores = [], []
        for index, scale in enumerate(scales):
            scaled = images if scale == 1.0 else Resize(scale, name=f"scale{index}")(images)
            fc7, score = trunk(scaled)
            if index:  # to the scale-1 score size
                fc7 = Resize(name=f"scale{index}_fc7_resize")([fc7, scores[0]])
                score = Resize(name=f"scale{index}_score_resize")([score, scores[0]])
            features.append(fc7)
            scores.append(score)
        if len(scales) == 1:
            merged = scores[0]
        elif merge == "attention":
            x = layers.Concatenate(name="attention_concat")(features)
            x = layers.Conv2D(
                attention_channels, 3, padding="same", activation="relu", name="attention_conv1"
            )(x)
            x = layers.Conv2D(len(scales), 1, name="attention_conv2")(x)
            merged = ScaleAttention(name="scale_attention")([x, *scores])
        elif merge == "average":
            merged = layers.Average(name="scale_average")(scores)
        else:
            merged = layers.Maximum(name="scale_max")(scores)
        outputs = [Resize(name="upsample")([merged, images])]
        multiple = extra_supervision and len(scales) > 1
        if multiple:
            outputs += [
                Resize(name=f"scale{i}_upsample")([s, images]) for i, s in enumerate(scores)
            ]
        super().__init__(
            images, outputs if multiple else outputs[0], name=name or "attention_to_scale", **kwargs
        )
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            scales=scales,
            merge=merge,
            extra_supervision=extra_supervision,
            fc_channels=fc_channels,
            fc6_dilation=fc6_dilation,
            attention_channels=attention_channels,
            dropout=dropout,
            weights=weights,
            backbone_options=backbone_options,
        )

    @property
    def loss_weights_for_outputs(self):
        """One weight 1.0 per output (merged and, with extra supervision, each scale)."""
        return [1.0] * len(self.outputs)

    def inference_model(self):
        """A single-output ``keras.Model`` (the merged logits) sharing this model's weights.

        Example:
            >>> model = AttentionToScale(num_classes=2, backbone="resnet18", fc_channels=8,
            ...                          attention_channels=4, input_shape=(32, 32, 3))
            >>> len(model.inference_model().outputs)
            1
        """
        return keras.Model(self.input, self.outputs[0], name=f"{self.name}_inference")

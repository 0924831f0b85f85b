"""Fast-SCNN (Poudel, Liwicki, Cipolla, "Fast-SCNN: Fast Semantic Segmentation Network",
BMVC 2019): a two-branch network whose branches share their first layers.

The learning-to-downsample module (stride 8) feeds both the global feature extractor
(MobileNetV2 bottlenecks to stride 32 and a pyramid pooling module) and, as a skip, the
feature fusion module that adds the two resolutions; a classifier of two depthwise-separable
convolutions and a 1×1 convolution follows at stride 8, then bilinear upsampling.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.fast_scnn import (
    FastSCNNFeatureFusion,
    GlobalFeatureExtractor,
    LearningToDownsample,
    scaled_channels,
)
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_positive_ints,
    check_rate,
)
from kseg.models.bisenet import _AuxiliaryOutputs, _check_positive, _check_weight, segmentation_head
from kseg.registry import MODELS


def _widths(channels, alpha):
    return tuple(scaled_channels(c, alpha) for c in channels)


@MODELS.register("fastscnn", "fast_scnn")
@keras.saving.register_keras_serializable(package="kseg")
class FastSCNN(_AuxiliaryOutputs, SegmentationModel):
    """Fast-SCNN, with a width multiplier and its two auxiliary losses for training.

    Layers as the paper's Table 1: conv 3×3/2 (32), DSConv 3×3/2 (48), DSConv 3×3/2 (64);
    bottlenecks (t = 6) 3 × 64/2, 3 × 96/2, 3 × 128; pyramid pooling (bins 1, 2, 3, 6) to 128;
    feature fusion to 128 (the low-resolution path upsampled ×4, depthwise 3×3 with dilation
    4); classifier DSConv 128, DSConv 128, dropout, conv 1×1 to the classes. With
    ``auxiliary_heads`` the outputs of the learning-to-downsample module and of the global
    feature extractor get a head each (3×3 convolution to 32 channels, dropout, 1×1
    classifier), loss weight 0.4 as in the paper, as outputs 2 and 3.

    Parameters at 19 classes (trainable, ``inference_model()``): 1,138,051 (paper 1.11 M, [?];
    +2.5 %: the paper does not list the pyramid pooling branch widths, taken here as a
    quarter of the channels, as PSPNet); the auxiliary heads add 56,678 for training.
    Multiply-adds at 1024×2048: 6.71 B.

    ``alpha`` scales every channel count (rounded to multiples of 8), MobileNet-style; the
    paper itself studies smaller inputs rather than widths, which a resized input gives.

    Good for: full-resolution street scenes on embedded GPUs and CPUs (Cityscapes test 68.0
    at 123.5 fps on a Titan Xp at 1024×2048), few parameters, TFLite-friendly operations.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size (H and W may be None).
        alpha: width multiplier (paper: 1.0).
        bins: pyramid pooling bins (paper: 1, 2, 3, 6).
        auxiliary_heads: add the two auxiliary heads as outputs 2 and 3 (training).
        aux_loss_weight: loss weight of each auxiliary head (paper: 0.4).
        dropout: dropout before the classifiers (0.1).

    Example:
        >>> model = FastSCNN(num_classes=3, input_shape=(64, 96, 3), alpha=0.25)
        >>> [tuple(s) for s in model.output_shape]
        [(None, 64, 96, 3), (None, 64, 96, 3), (None, 64, 96, 3)]
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        alpha=1.0,
        bins=(1, 2, 3, 6),
        auxiliary_heads=True,
        aux_loss_weight=0.4,
        dropout=0.1,
        name=None,
        **kwargs,
    ):
        check_num_classes("FastSCNN", num_classes)
        input_shape = check_input_shape("FastSCNN", input_shape, channels=(3,))
        _check_positive("FastSCNN", "alpha", alpha)
        bins = check_positive_ints("FastSCNN", "bins", bins)
        _check_weight("FastSCNN", "aux_loss_weight", aux_loss_weight)
        check_rate("FastSCNN", "dropout", dropout)
        width = scaled_channels(128, alpha)

        # 1. layers
        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("torch", name="normalize")(images)
        shared = LearningToDownsample(_widths((32, 48, 64), alpha), name="downsample")(x)
        context = GlobalFeatureExtractor(
            _widths((64, 96, 128), alpha), out_filters=width, bins=bins, name="global"
        )(shared)
        y = FastSCNNFeatureFusion(width, name="fusion")([shared, context])
        y = conv_bn_relu(y, width, 3, "classifier_dsconv1", separable=True)
        y = conv_bn_relu(y, width, 3, "classifier_dsconv2", separable=True)
        if dropout:
            y = layers.Dropout(dropout, name="classifier_dropout")(y)
        y = layers.Conv2D(num_classes, 1, name="classifier_logits")(y)
        outputs = [Resize(name="upsample")([y, images])]
        if auxiliary_heads:
            for key, tap in (("downsample", shared), ("global", context)):
                outputs.append(
                    segmentation_head(
                        tap, scaled_channels(32, alpha), num_classes, images, f"aux_{key}", dropout
                    )
                )
        # 2. wiring
        super().__init__(
            images, outputs if auxiliary_heads else outputs[0], name=name or "fastscnn", **kwargs
        )
        # 3. config
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            alpha=alpha,
            bins=bins,
            auxiliary_heads=auxiliary_heads,
            aux_loss_weight=aux_loss_weight,
            dropout=dropout,
        )

"""Xception39, the light context path of BiSeNet (Yu et al., "BiSeNet: Bilateral Segmentation
Network for Real-time Semantic Segmentation", ECCV 2018).

The paper names the backbone without drawing it; this follows the authors' released code
(TorchSeg, ``furnace/base_model/xception.py``): a 3×3/2 convolution to 8 channels, 3×3/2 max
pooling, then three stages of [4, 8, 4] blocks. A block is three separable convolutions
(depthwise 3×3 + BN, pointwise 1×1 + BN + ReLU; the last without ReLU) from ``c`` to ``c``
to ``4c`` channels (``c`` = 16, 32, 64), added to the input (or, in the first, strided block
of a stage, to a separable-convolution projection) and passed through a ReLU. Outputs have 64,
128 and 256 channels at strides 8, 16 and 32; 306,264 parameters. No pretrained weights here.
Inputs are normalised in "torch" mode.
"""

from __future__ import annotations

from keras import layers

from kseg.backbones._pretrained import check_output_stride, stage_strides_and_rates
from kseg.registry import BACKBONES

PREPROCESSING = "torch"
_BN_EPSILON = 1e-5
_BLOCKS = (4, 8, 4)
_WIDTHS = (16, 32, 64)
_EXPANSION = 4


def separable_conv_bn(x, filters, name, *, stride=1, rate=1, relu=True):
    """Depthwise 3×3 convolution + BN, then pointwise 1×1 convolution + BN (+ ReLU).

    Example:
        >>> import keras
        >>> tuple(separable_conv_bn(keras.Input((8, 8, 4)), 6, "sep", stride=2).shape)
        (None, 4, 4, 6)
    """
    x = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_dw"
    )(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_pw_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _block(x, width, stride, rate, project, name):
    shortcut = x
    if project:
        shortcut = separable_conv_bn(
            x, width * _EXPANSION, f"{name}_proj", stride=stride, rate=rate, relu=False
        )
    y = separable_conv_bn(x, width, f"{name}_sep1", stride=stride, rate=rate)
    y = separable_conv_bn(y, width, f"{name}_sep2", rate=rate)
    y = separable_conv_bn(y, width * _EXPANSION, f"{name}_sep3", rate=rate, relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


@BACKBONES.register("xception39")
def xception39(inputs, output_stride=32, weights=None):
    """Builds Xception39 on ``inputs`` and returns ``{"P1".."P5"}``.

    Args:
        inputs: Keras tensor ``[B, H, W, C]`` normalised in "torch" mode.
        output_stride: 8, 16 or 32; stages past it keep stride 1 and dilate instead.
        weights: must be None (no published Keras weights).

    Returns:
        dict: P1 = stem (stride 2, 8 channels), P2 = max pooling (4, 8), P3..P5 = the three
        stages (8, 16, 32; 64, 128, 256 channels).

    Example:
        >>> import keras
        >>> feats = xception39(keras.Input((64, 96, 3)))
        >>> tuple(feats["P5"].shape[1:])
        (2, 3, 256)
    """
    check_output_stride("xception39", output_stride)
    if weights is not None:
        raise ValueError(
            f"xception39: no pretrained weights are available; use weights=None. "
            f"Received: weights={weights!r}"
        )
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="stem_bn")(x)
    features = {"P1": layers.ReLU(name="stem_relu")(x)}
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(features["P1"])
    features["P2"] = x
    schedule = stage_strides_and_rates(output_stride, [4, 2, 2, 2])[1:]
    for index, (blocks, width) in enumerate(zip(_BLOCKS, _WIDTHS)):
        stride, rate = schedule[index]
        stage = index + 3
        for block in range(blocks):
            x = _block(
                x,
                width,
                stride=stride if block == 0 else 1,
                rate=rate,
                project=block == 0,
                name=f"stage{stage}_block{block + 1}",
            )
        features[f"P{stage}"] = x
    return features


xception39.preprocessing = PREPROCESSING

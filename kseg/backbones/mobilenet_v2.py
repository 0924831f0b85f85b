"""MobileNetV2 (Sandler et al., CVPR 2018) with a width multiplier and dilation.

Layer names equal ``keras.applications.MobileNetV2`` (``Conv1``, ``expanded_conv_*``,
``block_{i}_*``), so its ImageNet weights load by name. The backbone ends at the 320-channel
``block_16`` projection, as DeepLab's MobileNetV2 feature extractor: the final 1×1 convolution
to 1280 channels (``Conv_1``, classification only) is left out. Strided depthwise
convolutions use "same" padding instead of keras' explicit ``ZeroPadding2D`` (identical for
even sizes and correct for odd ones). Inputs must be normalised in "tf" mode ([-1, 1]).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.backbones._pretrained import LayerRecorder, check_output_stride, load_application_weights
from kseg.registry import BACKBONES

PREPROCESSING = "tf"
# (expansion, output channels, stride) of blocks 0..16, from the paper's Table 2.
_BLOCKS = (
    (1, 16, 1),
    (6, 24, 2),
    (6, 24, 1),
    (6, 32, 2),
    (6, 32, 1),
    (6, 32, 1),
    (6, 64, 2),
    (6, 64, 1),
    (6, 64, 1),
    (6, 64, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 160, 2),
    (6, 160, 1),
    (6, 160, 1),
    (6, 320, 1),
)
# The block whose output is each feature level.
_LEVEL_BLOCKS = {"P2": 2, "P3": 5, "P4": 12, "P5": 16}
_ALPHAS_WITH_WEIGHTS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def make_divisible(value, divisor=8):
    """Rounds a channel count to the nearest multiple of ``divisor``, never 10 % below it.

    Example:
        >>> make_divisible(32 * 0.35), make_divisible(16 * 0.5)
        (16, 8)
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _bn(name, track, momentum):
    return track(layers.BatchNormalization(epsilon=1e-3, momentum=momentum, name=name))


@BACKBONES.register("mobilenetv2", "mobilenet_v2")
def mobilenet_v2(inputs, output_stride=32, weights=None, alpha=1.0, bn_momentum=0.999):
    """Builds MobileNetV2 on ``inputs`` and returns ``{"P1".."P5"}``.

    Args:
        inputs: Keras tensor ``[B, H, W, C]`` normalised in "tf" mode.
        output_stride: 8, 16 or 32. A block whose stride would pass it keeps stride 1 and
            the blocks after it use depthwise dilation (OS 16: blocks 14–16 rate 2).
        weights: None, "imagenet" or a path to a keras.applications MobileNetV2 weights file
            of the same ``alpha`` (ImageNet weights exist for 0.35, 0.5, 0.75, 1.0, 1.3, 1.4).
        alpha: width multiplier applied to every layer (channels rounded to multiples of 8).
        bn_momentum: momentum of every batch-norm layer's moving statistics. 0.999 is
            keras.applications' value, right for fine-tuning ImageNet weights over long
            schedules; from scratch over a few hundred steps the moving statistics stay near
            their initial 0/1 and inference collapses, so use 0.9 or 0.99 there.

    Returns:
        dict: P1 = ``expanded_conv_project_BN`` (stride 2, 16·alpha channels), P2 =
        ``block_2_add`` (4), P3 = ``block_5_add`` (8), P4 = ``block_12_add`` (16, 96·alpha),
        P5 = ``block_16_project_BN`` (32, 320·alpha).

    Example:
        >>> import keras
        >>> feats = mobilenet_v2(keras.Input((65, 65, 3)), output_stride=16, alpha=0.5)
        >>> tuple(feats["P5"].shape[1:])
        (5, 5, 160)
    """
    check_output_stride("mobilenet_v2", output_stride)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(
            f"mobilenet_v2: alpha must be a positive number. Received: alpha={alpha!r}"
        )
    if (
        not isinstance(bn_momentum, (int, float))
        or isinstance(bn_momentum, bool)
        or not 0 <= bn_momentum < 1
    ):
        raise ValueError(
            "mobilenet_v2: bn_momentum must be a number in [0, 1). "
            f"Received: bn_momentum={bn_momentum!r}"
        )
    if weights is not None and alpha not in _ALPHAS_WITH_WEIGHTS:
        raise ValueError(
            f"mobilenet_v2: keras.applications has weights for alpha in {_ALPHAS_WITH_WEIGHTS}. "
            f"Received: alpha={alpha!r}"
        )
    track = LayerRecorder()
    x = track(
        layers.Conv2D(
            make_divisible(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="Conv1"
        )
    )(inputs)
    x = _bn("bn_Conv1", track, bn_momentum)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)

    features = {}
    current_stride, rate = 2, 1
    for block_id, (expansion, filters, stride) in enumerate(_BLOCKS):
        # The block that would pass output_stride keeps stride 1 and its own rate; the rate
        # of every later depthwise convolution grows by the stride it dropped.
        block_rate = rate
        if current_stride * stride > output_stride:
            rate *= stride
            stride = 1
        else:
            current_stride *= stride
        prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
        in_channels = x.shape[-1]
        out_channels = make_divisible(int(filters * alpha))
        y = x
        if block_id:
            y = track(
                layers.Conv2D(expansion * in_channels, 1, use_bias=False, name=f"{prefix}expand")
            )(y)
            y = _bn(f"{prefix}expand_BN", track, bn_momentum)(y)
            y = layers.ReLU(6.0, name=f"{prefix}expand_relu")(y)
        y = track(
            layers.DepthwiseConv2D(
                3,
                strides=stride,
                padding="same",
                dilation_rate=block_rate,
                use_bias=False,
                name=f"{prefix}depthwise",
            )
        )(y)
        y = _bn(f"{prefix}depthwise_BN", track, bn_momentum)(y)
        y = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(y)
        y = track(layers.Conv2D(out_channels, 1, use_bias=False, name=f"{prefix}project"))(y)
        y = _bn(f"{prefix}project_BN", track, bn_momentum)(y)
        if in_channels == out_channels and stride == 1 and _BLOCKS[block_id][2] == 1:
            y = layers.Add(name=f"{prefix}add")([x, y])
        x = y
        if block_id == 0:
            features["P1"] = x
        for level, level_block in _LEVEL_BLOCKS.items():
            if block_id == level_block:
                features[level] = x

    load_application_weights(
        "mobilenet_v2",
        track.layers,
        keras.applications.MobileNetV2,
        weights,
        inputs.shape[-1],
        unused=("Conv_1", "Conv_1_bn"),
        alpha=alpha,
        input_shape=(224, 224, 3),
    )
    return features


mobilenet_v2.preprocessing = PREPROCESSING

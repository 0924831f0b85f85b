"""The blocks of Fast-SCNN (Poudel, Liwicki, Cipolla, "Fast-SCNN: Fast Semantic Segmentation
Network", BMVC 2019), as builder functions on Keras tensors.

``learning_to_downsample`` (a convolution and two depthwise-separable convolutions, stride 8),
``global_feature_extractor`` (MobileNetV2 inverted-residual bottlenecks to stride 32 and a
pyramid pooling module) and ``feature_fusion`` (the two resolutions added), following the
paper's Table 1 and Section 3.2; channel counts scale with a width multiplier ``alpha``.
"""

from __future__ import annotations

from keras import layers

from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.pyramid_pooling import pyramid_pooling_module
from kseg.layers.resize import Resize


def scaled_channels(channels, alpha):
    """``channels · alpha`` rounded to a multiple of 8 (MobileNet's rule), at least 8.

    Example:
        >>> scaled_channels(64, 1.0), scaled_channels(48, 0.5), scaled_channels(96, 0.25)
        (64, 24, 24)
    """
    if alpha == 1:
        return channels
    value = channels * alpha
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


def learning_to_downsample(x, name, alpha=1.0):
    """Fast-SCNN's learning-to-downsample module: conv 3×3/2 (32), then depthwise-separable
    convolutions 3×3/2 to 48 and 3×3/2 to 64 channels (each with BN and ReLU); stride 8.

    Example:
        >>> import keras
        >>> tuple(learning_to_downsample(keras.Input((64, 96, 3)), "lds").shape)
        (None, 8, 12, 64)
    """
    x = conv_bn_relu(x, scaled_channels(32, alpha), 3, f"{name}_conv", strides=2)
    x = conv_bn_relu(x, scaled_channels(48, alpha), 3, f"{name}_dsconv1", strides=2, separable=True)
    return conv_bn_relu(
        x, scaled_channels(64, alpha), 3, f"{name}_dsconv2", strides=2, separable=True
    )


def linear_bottleneck(x, filters, stride, expansion, name):
    """MobileNetV2's inverted residual (Sandler et al. 2018) as Fast-SCNN uses it: 1×1
    expansion by ``expansion`` + BN + ReLU, depthwise 3×3 (stride) + BN + ReLU, linear 1×1
    projection + BN, plus the input when the shape is unchanged.

    Example:
        >>> import keras
        >>> tuple(linear_bottleneck(keras.Input((8, 8, 16)), 24, 2, 6, "b").shape)
        (None, 4, 4, 24)
    """
    channels = x.shape[-1]
    y = conv_bn_relu(x, channels * expansion, 1, f"{name}_expand")
    y = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw"
    )(y)
    y = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_dw_bn")(y)
    y = layers.ReLU(name=f"{name}_dw_relu")(y)
    y = conv_bn_relu(y, filters, 1, f"{name}_project", relu=False)
    if stride == 1 and channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def global_feature_extractor(x, name, alpha=1.0, expansion=6, bins=(1, 2, 3, 6)):
    """Fast-SCNN's global feature extractor: bottleneck stages (t=6) of 3 × 64 (stride 2),
    3 × 96 (stride 2) and 3 × 128 (stride 1) channels, then the pyramid pooling module (bins
    1, 2, 3, 6, each branch a 1×1 convolution to a quarter of the channels, concatenated with
    the input) and a 1×1 convolution to 128 channels; stride 32 from the image.

    Example:
        >>> import keras
        >>> tuple(global_feature_extractor(keras.Input((8, 12, 64)), "gfe").shape)
        (None, 2, 3, 128)
    """
    for stage, (filters, stride) in enumerate(((64, 2), (96, 2), (128, 1)), 1):
        for block in range(3):
            x = linear_bottleneck(
                x,
                scaled_channels(filters, alpha),
                stride if block == 0 else 1,
                expansion,
                f"{name}_bottleneck{stage}_{block + 1}",
            )
    x = pyramid_pooling_module(x, bins, f"{name}_ppm")
    return conv_bn_relu(x, scaled_channels(128, alpha), 1, f"{name}_ppm_out")


def feature_fusion(high, low, filters, name):
    """Fast-SCNN's feature fusion module: the low-resolution features are upsampled to the
    high-resolution ones, passed through a depthwise 3×3 convolution with dilation 4 (+ BN,
    ReLU) and a 1×1 convolution (+ BN); the high-resolution features through a 1×1
    convolution (+ BN); the sum goes through a ReLU.

    Example:
        >>> import keras
        >>> h, l = keras.Input((16, 24, 64)), keras.Input((4, 6, 128))
        >>> tuple(feature_fusion(h, l, 128, "ffm").shape)
        (None, 16, 24, 128)
    """
    low = Resize(name=f"{name}_upsample")([low, high])
    low = layers.DepthwiseConv2D(
        3, padding="same", dilation_rate=4, use_bias=False, name=f"{name}_low_dw"
    )(low)
    low = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_low_dw_bn")(low)
    low = layers.ReLU(name=f"{name}_low_dw_relu")(low)
    low = conv_bn_relu(low, filters, 1, f"{name}_low_conv", relu=False, use_bias=True)
    high = conv_bn_relu(high, filters, 1, f"{name}_high_conv", relu=False, use_bias=True)
    fused = layers.Add(name=f"{name}_add")([high, low])
    return layers.ReLU(name=f"{name}_relu")(fused)

"""ESPNet's and ESPNetV2's blocks.

* **ESP module** (Mehta, Rastegari, Caspi, Shapiro, Hajishirzi, "ESPNet: Efficient Spatial
  Pyramid of Dilated Convolutions for Semantic Segmentation", ECCV 2018): *reduce* the input
  with a 1×1 convolution (3×3 stride 2 when down-sampling) to ``n = C/5`` channels, *split*
  into 5 parallel 3×3 convolutions dilated 1, 2, 4, 8, 16, fuse them *hierarchically*
  (each branch adds the sum of the less dilated ones: no gridding artefacts) and concatenate;
  a residual connection when the shapes allow; BN + PReLU.
* **EESP unit** (Mehta, Rastegari, Shapiro, Hajishirzi, "ESPNetv2: A Light-weight, Power
  Efficient, and General Purpose Convolutional Neural Network", CVPR 2019): the reduction is a
  group point-wise convolution (``K = 4`` groups), the branches are *depth-wise* dilated 3×3
  convolutions (dilations chosen up to a receptive-field limit), the merge a group point-wise
  convolution; the strided variant (``eesp_downsampler``) concatenates it with an average
  pooling and adds a projection of the (pooled) input image.
* ESPNetV2's segmentation decoder blocks from the authors' EdgeNets code: the efficient
  pyramid pooling (projection, depth-wise convolutions at 5 scales, channel shuffle, grouped
  merge) and the efficient point-wise convolution (grouped 3×3 gated by a global context).

Strided convolutions and poolings are zero-padded by ``k // 2`` on every side, as in the
authors' PyTorch code, so every branch samples the same grid. TensorFlow has no depth-wise
convolution that is both strided and dilated: the strided EESP unit computes its branches at
stride 1 and subsamples once (the same values; its depth-wise multiply-adds count 4 times).
Functions on Keras tensors; the layers they add are Keras layers, ``GroupedConv2D``,
``ChannelShuffle`` and ``ScaleResize``.
"""

from __future__ import annotations

import math
import numbers

import keras
import tensorflow as tf
from keras import layers

from kseg.layers.channel_shuffle import ChannelShuffle, GroupedConv2D
from kseg.layers.enet_blocks import prelu
from kseg.layers.resize import Resize


@keras.saving.register_keras_serializable(package="kseg")
class ScaleResize(keras.layers.Layer):
    """Bilinear resize to ``max(ceil(H * scale), min_size) × max(ceil(W * scale), min_size)``.

    The sizes of ESPNetV2's efficient pyramid pooling (EdgeNets: ``ceil(h * s)``, at least 5).

    Args:
        scale: positive factor.
        min_size: the smallest output height/width.

    Example:
        >>> import numpy as np
        >>> ScaleResize(0.1)(np.ones((1, 20, 64, 2), "float32")).shape
        TensorShape([1, 5, 7, 2])
    """

    def __init__(self, scale, min_size=5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or scale <= 0:
            raise ValueError(f"ScaleResize: scale must be > 0. Received: scale={scale!r}")
        if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1:
            raise ValueError(
                f"ScaleResize: min_size must be a positive int. Received: min_size={min_size!r}"
            )
        self.scale = float(scale)
        self.min_size = min_size

    def _size(self, n):
        return None if n is None else max(math.ceil(n * self.scale), self.min_size)

    def call(self, x):
        hw = tf.cast(tf.shape(x)[1:3], tf.float64)
        size = tf.cast(tf.math.ceil(hw * self.scale), tf.int32)
        size = tf.maximum(size, self.min_size)
        return tf.cast(tf.image.resize(x, size), x.dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, self._size(h), self._size(w), c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_size": self.min_size}


def _conv(x, filters, kernel_size, name, *, strides=1, dilation_rate=1, groups=1, use_bias=False):
    """A convolution as PyTorch's ``Conv2d(padding=k // 2 * d, groups=groups)``."""
    channels = x.shape[-1]
    if strides != 1:
        pad = (kernel_size // 2) * dilation_rate
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    padding = "same" if strides == 1 else "valid"
    if groups == 1:
        return layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            name=name,
        )(x)
    if groups == channels == filters:
        return layers.DepthwiseConv2D(
            kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            name=name,
        )(x)
    if strides != 1:
        raise ValueError(f"{name}: strided grouped convolutions are not used here")
    return GroupedConv2D(
        filters,
        kernel_size,
        groups=groups,
        dilation_rate=dilation_rate,
        use_bias=use_bias,
        name=name,
    )(x)


def _bn(name):
    return layers.BatchNormalization(epsilon=1e-3, name=name)


def bn_prelu(x, name):
    """BN → PReLU (the authors' ``BR``)."""
    return prelu(f"{name}_prelu")(_bn(f"{name}_bn")(x))


def conv_bn_prelu(x, filters, kernel_size, name, *, strides=1, groups=1, act=True):
    """Convolution (no bias) → BN → PReLU (the authors' ``CBR``; ``act=False``: ``CB``).

    Example:
        >>> tuple(conv_bn_prelu(keras.Input((15, 9, 3)), 16, 3, "level1", strides=2).shape)
        (None, 8, 5, 16)
    """
    y = _bn(f"{name}_bn")(_conv(x, filters, kernel_size, name, strides=strides, groups=groups))
    return prelu(f"{name}_prelu")(y) if act else y


def avg_pool_3x3_s2(x, name):
    """PyTorch's ``AvgPool2d(3, stride=2, padding=1)`` (zeros counted): ``ceil(H/2)``.

    Example:
        >>> tuple(avg_pool_3x3_s2(keras.Input((15, 8, 3)), "pool").shape)
        (None, 8, 4, 3)
    """
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.AveragePooling2D(3, strides=2, name=name)(x)


def _split_widths(filters, branches):
    n = filters // branches
    return n, filters - (branches - 1) * n


def esp_module(x, filters, name, *, downsample=False, residual=True):
    """ESPNet's efficient spatial pyramid: reduce → split → dilated 1..16 → HFF → concat.

    Args:
        x: input ``[B, H, W, C]``.
        filters: output channels; the branches have ``n = filters // 5`` channels, the first
            (dilation 1) the rest ``filters - 4n``.
        name: prefix of the layer names.
        downsample: reduce with a 3×3 stride-2 convolution (the module halves the size), and no
            residual connection.
        residual: add the input when the shapes agree (ESPNet's decoder uses one without).

    Returns:
        ``BN → PReLU`` of the concatenation (plus the input when residual).

    Example:
        >>> tuple(esp_module(keras.Input((15, 9, 19)), 64, "esp", downsample=True).shape)
        (None, 8, 5, 64)
    """
    if not isinstance(filters, int) or isinstance(filters, bool) or filters < 5:
        raise ValueError(f"esp_module: filters must be an int >= 5. Received: filters={filters!r}")
    n, n1 = _split_widths(filters, 5)
    if downsample:
        reduced = _conv(x, n, 3, f"{name}_reduce", strides=2)
    else:
        reduced = _conv(x, n, 1, f"{name}_reduce")
    branches = [_conv(reduced, n1, 3, f"{name}_d1")]
    total = None
    for rate in (2, 4, 8, 16):
        y = _conv(reduced, n, 3, f"{name}_d{rate}", dilation_rate=rate)
        total = y if total is None else layers.Add(name=f"{name}_hff{rate}")([total, y])
        branches.append(total)
    y = layers.Concatenate(name=f"{name}_concat")(branches)
    if residual and not downsample and x.shape[-1] == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return bn_prelu(y, name)


def _eesp_dilations(branches, receptive_limit):
    sizes = sorted(3 + 2 * i if 3 + 2 * i <= receptive_limit else 3 for i in range(branches))
    return [(k - 1) // 2 for k in sizes]


def eesp_unit(x, filters, name, *, strides=1, branches=4, receptive_limit=7):
    """ESPNetV2's EESP unit: group 1×1 reduce → depth-wise dilated 3×3 → HFF → group 1×1.

    ``n = filters / branches`` channels per branch; branch ``i`` is a depth-wise 3×3 convolution
    dilated to a receptive field ``3 + 2i`` (falling back to 3 past ``receptive_limit``; sorted),
    each adding the previous branch's output (hierarchical feature fusion). The concatenation is
    BN + PReLU-ed and merged by a group point-wise convolution + BN. With ``strides=1`` the input
    is added when the shapes agree and a PReLU follows; with ``strides=2`` the merged map is
    returned as it is (``eesp_downsampler`` adds and activates it).

    Example:
        >>> tuple(eesp_unit(keras.Input((16, 12, 64)), 64, "eesp").shape)
        (None, 16, 12, 64)
    """
    if strides not in (1, 2):
        raise ValueError(f"eesp_unit: strides must be 1 or 2. Received: strides={strides!r}")
    n, n1 = _split_widths(filters, branches)
    if n != n1 or n % branches or x.shape[-1] % branches:
        raise ValueError(
            f"eesp_unit: filters ({filters}) must divide into {branches} branches whose width, "
            f"like the input channels ({x.shape[-1]}), is a multiple of {branches}. "
            f"Received: filters={filters!r}"
        )
    reduced = conv_bn_prelu(x, n, 1, f"{name}_reduce", groups=branches)
    outputs = []
    for i, rate in enumerate(_eesp_dilations(branches, receptive_limit)):
        y = layers.DepthwiseConv2D(
            3, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_dw{i}_d{rate}"
        )(reduced)
        if outputs:
            y = layers.Add(name=f"{name}_hff{i}")([outputs[-1], y])
        outputs.append(y)
    y = layers.Concatenate(name=f"{name}_concat")(outputs)
    if strides == 2:
        # branches at stride 1, one subsampling (rows/columns 0, 2, 4, ...)
        y = layers.MaxPooling2D(1, strides=2, name=f"{name}_subsample")(y)
    y = bn_prelu(y, f"{name}_concat")
    y = conv_bn_prelu(y, filters, 1, f"{name}_expand", groups=branches, act=False)
    if strides == 2:
        return y
    if x.shape[-1] == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return prelu(f"{name}_prelu")(y)


def eesp_downsampler(x, filters, name, *, image=None, branches=4, receptive_limit=9):
    """ESPNetV2's strided EESP: ``concat(avgpool(x), EESP/2(x))`` (+ image projection) → PReLU.

    Args:
        x: input ``[B, H, W, C]``.
        filters: output channels (``filters - C`` from the strided EESP unit).
        name: prefix of the layer names.
        image: the input image already average-pooled to the output size (input
            reinforcement: ``CBR 3×3 → CB 1×1`` to ``filters`` channels, added), or None.
        branches, receptive_limit: of the EESP unit.

    Example:
        >>> tuple(eesp_downsampler(keras.Input((16, 12, 32)), 128, "down").shape)
        (None, 8, 6, 128)
    """
    channels = x.shape[-1]
    if channels is None or not isinstance(filters, int) or filters <= channels:
        raise ValueError(
            f"eesp_downsampler: filters must be an int > the input channels ({channels}). "
            f"Received: filters={filters!r}"
        )
    pooled = avg_pool_3x3_s2(x, f"{name}_avg")
    y = eesp_unit(
        x,
        filters - channels,
        f"{name}_eesp",
        strides=2,
        branches=branches,
        receptive_limit=receptive_limit,
    )
    y = layers.Concatenate(name=f"{name}_concat")([pooled, y])
    if image is not None:
        r = conv_bn_prelu(image, image.shape[-1], 3, f"{name}_reinf1")
        r = conv_bn_prelu(r, filters, 1, f"{name}_reinf2", act=False)
        y = layers.Add(name=f"{name}_add")([y, r])
    return prelu(f"{name}_prelu")(y)


PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)


def efficient_pyramid_pooling(x, projection, filters, name, *, last_bn_act=True):
    """ESPNetV2's efficient pyramid pooling (EdgeNets ``EfficientPyrPool``).

    ``CBR 1×1`` to ``projection`` channels; at each scale of 2.0, 1.5, 1.0, 0.5, 0.1 (sizes
    ``ceil(h·s)``, at least 5) a depth-wise 3×3 convolution, brought back to the input size;
    concatenation → BN → PReLU → channel shuffle (5 groups) → grouped 3×3 CBR back to
    ``projection`` channels → 1×1 convolution to ``filters`` (→ BN → PReLU unless last).
    The authors resample with adaptive average pooling where a map shrinks and bilinearly
    where it grows; here every resampling is bilinear (``tf.image.resize``: any size, one TFLite
    built-in op), with the same weights and multiply-adds.

    Example:
        >>> tuple(efficient_pyramid_pooling(keras.Input((8, 6, 64)), 9, 32, "epp").shape)
        (None, 8, 6, 32)
    """
    x = conv_bn_prelu(x, projection, 1, f"{name}_project")
    scaled = []
    for i, scale in enumerate(PYRAMID_SCALES):
        dw = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw{i}")
        if scale == 1.0:
            scaled.append(dw(x))
        else:
            y = dw(ScaleResize(scale, name=f"{name}_resize{i}")(x))
            scaled.append(Resize(name=f"{name}_restore{i}")([y, x]))
    y = layers.Concatenate(name=f"{name}_concat")(scaled)
    y = bn_prelu(y, f"{name}_merge")
    y = ChannelShuffle(len(PYRAMID_SCALES), name=f"{name}_shuffle")(y)
    y = conv_bn_prelu(y, projection, 3, f"{name}_fuse", groups=projection)
    y = layers.Conv2D(filters, 1, use_bias=not last_bn_act, name=f"{name}_out")(y)
    return bn_prelu(y, f"{name}_out") if last_bn_act else y


def efficient_pw_conv(x, filters, name):
    """ESPNetV2's efficient point-wise convolution (EdgeNets ``EfficientPWConv``).

    A grouped 3×3 CBR (``gcd(C, filters)`` groups) multiplied by a per-channel gate
    ``sigmoid(1×1 conv(global average))``.

    Example:
        >>> tuple(efficient_pw_conv(keras.Input((8, 6, 256)), 64, "pw").shape)
        (None, 8, 6, 64)
    """
    groups = math.gcd(int(x.shape[-1]), filters)
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    gate = layers.Conv2D(filters, 1, use_bias=False, activation="sigmoid", name=f"{name}_gate")(
        gate
    )
    y = conv_bn_prelu(x, filters, 3, f"{name}_expand", groups=groups)
    return layers.Multiply(name=f"{name}_gated")([y, gate])

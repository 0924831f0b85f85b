"""The blocks of Fast-SCNN (Poudel, Liwicki, Cipolla, "Fast-SCNN: Fast Semantic Segmentation
Network", BMVC 2019), as serializable layers.

``LearningToDownsample`` (a convolution and two depthwise-separable convolutions, stride 8),
``GlobalFeatureExtractor`` (MobileNetV2 inverted-residual bottlenecks, ``LinearBottleneck``, to
stride 32 and a pyramid pooling module) and ``FastSCNNFeatureFusion`` (the two resolutions
added), following the paper's Table 1 and Section 3.2. The lower-case functions apply them,
their channel counts scaled by a width multiplier ``alpha``.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers._composite import CompositeLayer, check_int
from kseg.layers.conv_block import conv_block_layers
from kseg.layers.pyramid_pooling import AdaptiveAveragePooling2D
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


def _check_widths(layer, argument, value, count):
    widths = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(widths) != count or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in widths
    ):
        raise ValueError(
            f"{layer}: {argument} must be {count} positive ints. Received: {argument}={value!r}"
        )
    return widths


def _ceil(n, stride):
    return None if n is None else -(-n // stride)


def _apply(block, x, training, relu=True):
    """Runs ``[conv, bn, (conv, bn)]`` from ``conv_block_layers``, ReLU after each BN."""
    for conv, bn in zip(block[::2], block[1::2]):
        x = bn(conv(x), training=training)
        if relu:
            x = tf.nn.relu(x)
    return x


@keras.saving.register_keras_serializable(package="kseg")
class LearningToDownsample(CompositeLayer):
    """Fast-SCNN's learning-to-downsample module (Poudel et al. 2019, Table 1): conv 3×3/2,
    then two depthwise-separable convolutions 3×3/2 (BN and ReLU after every part); stride 8.

    Args:
        filters: the three output widths (paper: 32, 48, 64).

    Example:
        >>> import numpy as np
        >>> LearningToDownsample()(np.zeros((1, 64, 96, 3), "float32")).shape
        TensorShape([1, 8, 12, 64])
    """

    def __init__(self, filters=(32, 48, 64), **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_widths("LearningToDownsample", "filters", filters, 3)
        policy = self.dtype_policy
        c1, c2, c3 = self.filters
        self.conv = conv_block_layers(c1, 3, "conv", strides=2, dtype=policy)
        self.dsconv1 = conv_block_layers(c2, 3, "dsconv1", strides=2, separable=True, dtype=policy)
        self.dsconv2 = conv_block_layers(c3, 3, "dsconv2", strides=2, separable=True, dtype=policy)

    def call(self, x, training=None):
        for block in (self.conv, self.dsconv1, self.dsconv2):
            x = _apply(block, x, training)
        return x

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, _ceil(h, 8), _ceil(w, 8), self.filters[-1])

    def get_config(self):
        return {**super().get_config(), "filters": list(self.filters)}


@keras.saving.register_keras_serializable(package="kseg")
class LinearBottleneck(CompositeLayer):
    """MobileNetV2's inverted residual (Sandler et al. 2018) as Fast-SCNN uses it: 1×1
    expansion by ``expansion`` + BN + ReLU, depthwise 3×3 (``strides``) + BN + ReLU, linear
    1×1 projection + BN, plus the input when the shape is unchanged.

    Args:
        filters: output channels.
        strides: 1 or 2.
        expansion: expansion ratio ``t`` (paper: 6).

    Example:
        >>> import numpy as np
        >>> LinearBottleneck(24, strides=2)(np.zeros((1, 8, 8, 16), "float32")).shape
        TensorShape([1, 4, 4, 24])
    """

    def __init__(self, filters, strides=1, expansion=6, **kwargs):
        super().__init__(**kwargs)
        check_int("LinearBottleneck", "filters", filters)
        if strides not in (1, 2):
            raise ValueError(
                f"LinearBottleneck: strides must be 1 or 2. Received: strides={strides!r}"
            )
        check_int("LinearBottleneck", "expansion", expansion)
        self.filters = filters
        self.strides = strides
        self.expansion = expansion

    def _create(self, shapes):
        channels, policy = shapes[0][-1], self.dtype_policy
        self.expand = conv_block_layers(channels * self.expansion, 1, "expand", dtype=policy)
        self.dw = layers.DepthwiseConv2D(
            3, strides=self.strides, padding="same", use_bias=False, name="dw", dtype=policy
        )
        self.dw_bn = layers.BatchNormalization(epsilon=1e-3, name="dw_bn", dtype=policy)
        self.project = conv_block_layers(self.filters, 1, "project", dtype=policy)

    def call(self, x, training=None):
        y = _apply(self.expand, x, training)
        y = tf.nn.relu(self.dw_bn(self.dw(y), training=training))
        y = _apply(self.project, y, training, relu=False)
        if self.strides == 1 and x.shape[-1] == self.filters:
            y = x + y
        return y

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, _ceil(h, self.strides), _ceil(w, self.strides), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "expansion": self.expansion,
        }


@keras.saving.register_keras_serializable(package="kseg")
class GlobalFeatureExtractor(CompositeLayer):
    """Fast-SCNN's global feature extractor (Poudel et al. 2019, Table 1): three stages of
    three ``LinearBottleneck`` (``t`` = ``expansion``) of ``filters`` channels, strides 2, 2, 1;
    then a pyramid pooling module (bins 1, 2, 3, 6: each branch average-pooled, a 1×1
    convolution + BN + ReLU to a quarter of the channels, upsampled bilinearly, concatenated with
    the input) and a 1×1 convolution + BN + ReLU to ``out_filters``; stride 4 from its input.

    Args:
        filters: channels of the three stages (paper: 64, 96, 128).
        out_filters: output channels (paper: 128).
        expansion: the bottlenecks' expansion ratio (6).
        bins: the pyramid pooling bins (1, 2, 3, 6).

    Example:
        >>> import numpy as np
        >>> GlobalFeatureExtractor()(np.zeros((1, 8, 12, 64), "float32")).shape
        TensorShape([1, 2, 3, 128])
    """

    def __init__(
        self, filters=(64, 96, 128), out_filters=128, expansion=6, bins=(1, 2, 3, 6), **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = _check_widths("GlobalFeatureExtractor", "filters", filters, 3)
        check_int("GlobalFeatureExtractor", "out_filters", out_filters)
        check_int("GlobalFeatureExtractor", "expansion", expansion)
        bins = tuple(bins) if isinstance(bins, (list, tuple)) else ()
        self.bins = _check_widths("GlobalFeatureExtractor", "bins", bins, max(1, len(bins)))
        self.out_filters = out_filters
        self.expansion = expansion
        policy = self.dtype_policy
        self.bottlenecks = [
            LinearBottleneck(
                width,
                strides=stride if block == 0 else 1,
                expansion=expansion,
                name=f"bottleneck{stage}_{block + 1}",
                dtype=policy,
            )
            for stage, (width, stride) in enumerate(zip(self.filters, (2, 2, 1)), 1)
            for block in range(3)
        ]

    def _create(self, shapes):
        # the bottlenecks create their convolutions when built: build them first, in order, so
        # the layers are created (and seeded) in the order of the computation
        shape = shapes[0]
        for bottleneck in self.bottlenecks:
            bottleneck.build(shape)
            shape = bottleneck.compute_output_shape(shape)
        policy = self.dtype_policy
        branch = self.filters[-1] // len(self.bins)
        self.pools, self.branches, self.upsamples = [], [], []
        for b in self.bins:
            self.pools.append(AdaptiveAveragePooling2D(b, name=f"ppm_pool{b}", dtype=policy))
            self.branches.append(conv_block_layers(branch, 1, f"ppm_conv{b}", dtype=policy))
            self.upsamples.append(Resize(name=f"ppm_upsample{b}", dtype=policy))
        self.out = conv_block_layers(self.out_filters, 1, "ppm_out", dtype=policy)

    def call(self, x, training=None):
        for bottleneck in self.bottlenecks:
            x = bottleneck(x, training=training)
        pyramid = [x]
        for pool, branch, upsample in zip(self.pools, self.branches, self.upsamples):
            pyramid.append(upsample([_apply(branch, pool(x), training), x]))
        return _apply(self.out, tf.concat(pyramid, axis=-1), training)

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, _ceil(h, 4), _ceil(w, 4), self.out_filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": list(self.filters),
            "out_filters": self.out_filters,
            "expansion": self.expansion,
            "bins": list(self.bins),
        }


@keras.saving.register_keras_serializable(package="kseg")
class FastSCNNFeatureFusion(CompositeLayer):
    """Fast-SCNN's feature fusion module (Poudel et al. 2019, Table 2), called on
    ``[high, low]``.

    The low-resolution features are upsampled to the high-resolution ones, passed through a
    depthwise 3×3 convolution with dilation 4 (+ BN, ReLU) and a 1×1 convolution (+ BN); the
    high-resolution features through a 1×1 convolution (+ BN); the sum goes through a ReLU.

    Args:
        filters: output channels (paper: 128).

    Example:
        >>> import numpy as np
        >>> ffm = FastSCNNFeatureFusion(128)
        >>> ffm([np.zeros((1, 16, 24, 64), "float32"), np.zeros((1, 4, 6, 128), "float32")]).shape
        TensorShape([1, 16, 24, 128])
    """

    def __init__(self, filters=128, **kwargs):
        super().__init__(**kwargs)
        check_int("FastSCNNFeatureFusion", "filters", filters)
        self.filters = filters
        policy = self.dtype_policy
        self.upsample = Resize(name="upsample", dtype=policy)
        self.low_dw = layers.DepthwiseConv2D(
            3, padding="same", dilation_rate=4, use_bias=False, name="low_dw", dtype=policy
        )
        self.low_dw_bn = layers.BatchNormalization(epsilon=1e-3, name="low_dw_bn", dtype=policy)
        self.low_conv = conv_block_layers(filters, 1, "low_conv", use_bias=True, dtype=policy)
        self.high_conv = conv_block_layers(filters, 1, "high_conv", use_bias=True, dtype=policy)

    def _check_shapes(self, shapes):
        if len(shapes) != 2:
            raise ValueError(
                "FastSCNNFeatureFusion: expects [high, low]. "
                f"Received: input_shape={self._shape_repr(shapes)}"
            )
        super()._check_shapes(shapes)

    def call(self, inputs, training=None):
        high, low = inputs
        low = self.upsample([low, high])
        low = tf.nn.relu(self.low_dw_bn(self.low_dw(low), training=training))
        low = _apply(self.low_conv, low, training, relu=False)
        high = _apply(self.high_conv, high, training, relu=False)
        return tf.nn.relu(high + low)

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, h, w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def _widths(channels, alpha):
    return tuple(scaled_channels(c, alpha) for c in channels)


def learning_to_downsample(x, name, alpha=1.0):
    """Applies ``LearningToDownsample`` with the paper's widths (32, 48, 64) scaled by
    ``alpha`` to ``x``.

    Example:
        >>> tuple(learning_to_downsample(keras.Input((64, 96, 3)), "lds").shape)
        (None, 8, 12, 64)
    """
    return LearningToDownsample(_widths((32, 48, 64), alpha), name=name)(x)


def linear_bottleneck(x, filters, stride, expansion, name):
    """Applies ``LinearBottleneck(filters, stride, expansion, name=name)`` to ``x``.

    Example:
        >>> tuple(linear_bottleneck(keras.Input((8, 8, 16)), 24, 2, 6, "b").shape)
        (None, 4, 4, 24)
    """
    return LinearBottleneck(filters, strides=stride, expansion=expansion, name=name)(x)


def global_feature_extractor(x, name, alpha=1.0, expansion=6, bins=(1, 2, 3, 6)):
    """Applies ``GlobalFeatureExtractor`` with the paper's widths (64, 96, 128; 128 out)
    scaled by ``alpha`` to ``x``.

    Example:
        >>> tuple(global_feature_extractor(keras.Input((8, 12, 64)), "gfe").shape)
        (None, 2, 3, 128)
    """
    return GlobalFeatureExtractor(
        _widths((64, 96, 128), alpha),
        out_filters=scaled_channels(128, alpha),
        expansion=expansion,
        bins=bins,
        name=name,
    )(x)


def feature_fusion(high, low, filters, name):
    """Applies ``FastSCNNFeatureFusion(filters, name=name)`` to ``[high, low]``.

    Example:
        >>> h, l = keras.Input((16, 24, 64)), keras.Input((4, 6, 128))
        >>> tuple(feature_fusion(h, l, 128, "ffm").shape)
        (None, 16, 24, 128)
    """
    return FastSCNNFeatureFusion(filters, name=name)([high, low])

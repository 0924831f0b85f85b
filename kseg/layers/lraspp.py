"""Lite Reduced ASPP, the segmentation head of MobileNetV3 (Howard et al., ICCV 2019, §6.4)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers.conv_block import conv_block_layers


def _positive_int(argument, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"LiteRASPP: {argument} must be a positive int. Received: {argument}={value!r}"
        )


def _pair_or_none(argument, value):
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(
            f"LiteRASPP: {argument} must be None, a positive int or a pair of them. "
            f"Received: {argument}={value!r}"
        )
    return pair


@keras.saving.register_keras_serializable(package="kseg")
class LiteRASPP(keras.layers.Layer):
    """LR-ASPP: ``classify(up(relu(bn(conv1x1(high))) · σ(conv1x1(pool(high))))) + classify(low)``.

    Called on ``[high, low]``: ``high`` are the last (stride-16) features, ``low`` the
    stride-8 features. The high branch is a 1×1 convolution + BN + ReLU to ``filters``
    channels, gated (a squeeze-and-excitation-like product) by the sigmoid of a 1×1
    convolution of average-pooled ``high``; it is upsampled bilinearly to ``low``'s size and
    classified by a 1×1 convolution, and added to a 1×1 classification of ``low``. The output
    is logits at ``low``'s resolution. As torchvision's ``LRASPPHead``; the paper's pooling
    is "a large pooling kernel with a large stride" (49×49, stride (16, 20), on 769×769
    training crops at output stride 16 that is global pooling): ``pool_size=None`` is global
    average pooling (any input size); a ``pool_size`` gives that sliding average pooling, its
    output resized bilinearly back to the feature size (the features must be at least
    ``pool_size``).

    Args:
        num_classes: output channels.
        filters: width of the high branch (paper: 128).
        pool_size: None (global average pooling) or the pooling window in feature pixels.
        pool_strides: strides of the pooling window (default: ``pool_size``).

    Example:
        >>> import numpy as np
        >>> head = LiteRASPP(num_classes=5, filters=8)
        >>> head([np.zeros((1, 4, 6, 16), "float32"), np.zeros((1, 8, 12, 4), "float32")]).shape
        TensorShape([1, 8, 12, 5])
    """

    def __init__(self, num_classes, filters=128, pool_size=None, pool_strides=None, **kwargs):
        super().__init__(**kwargs)
        _positive_int("num_classes", num_classes)
        _positive_int("filters", filters)
        self.num_classes = num_classes
        self.filters = filters
        self.pool_size = _pair_or_none("pool_size", pool_size)
        self.pool_strides = _pair_or_none("pool_strides", pool_strides)
        if self.pool_strides is not None and self.pool_size is None:
            raise ValueError(
                "LiteRASPP: pool_strides needs a pool_size (global pooling has no stride). "
                f"Received: pool_strides={pool_strides!r}"
            )
        policy = self.dtype_policy
        self.high_conv, self.high_bn = conv_block_layers(filters, 1, "cbr", dtype=policy)
        self.scale_conv = layers.Conv2D(filters, 1, use_bias=False, name="scale", dtype=policy)
        self.low_classifier = layers.Conv2D(num_classes, 1, name="low_classifier", dtype=policy)
        self.high_classifier = layers.Conv2D(num_classes, 1, name="high_classifier", dtype=policy)

    def build(self, input_shape):
        high_shape, low_shape = input_shape
        if high_shape[-1] is None or low_shape[-1] is None:
            raise ValueError(
                f"LiteRASPP: the channel dimensions must be known. Received: input_shape={input_shape}"
            )
        if self.pool_size is not None:
            for size, window in zip(high_shape[1:3], self.pool_size):
                if size is not None and size < window:
                    raise ValueError(
                        f"LiteRASPP: the high-level features ({high_shape[1]}x{high_shape[2]}) "
                        f"are smaller than pool_size {self.pool_size}; use a larger input or "
                        f"pool_size=None (global pooling). Received: input_shape={input_shape}"
                    )
        high = (None, None, None, high_shape[-1])
        self.high_conv.build(high)
        self.high_bn.build((None, None, None, self.filters))
        self.scale_conv.build(high)
        self.low_classifier.build((None, None, None, low_shape[-1]))
        self.high_classifier.build((None, None, None, self.filters))
        self.built = True

    def call(self, inputs, training=None):
        high, low = inputs
        x = tf.nn.relu(self.high_bn(self.high_conv(high), training=training))
        if self.pool_size is None:
            pooled = tf.reduce_mean(high, axis=[1, 2], keepdims=True)
        else:
            pooled = tf.nn.avg_pool2d(
                high, self.pool_size, self.pool_strides or self.pool_size, "VALID"
            )
        scale = tf.sigmoid(self.scale_conv(pooled))
        if self.pool_size is not None:
            scale = tf.cast(tf.image.resize(scale, tf.shape(high)[1:3]), x.dtype)
        x = x * scale
        x = tf.cast(tf.image.resize(x, tf.shape(low)[1:3]), x.dtype)
        return self.low_classifier(low) + self.high_classifier(x)

    def compute_output_shape(self, input_shape):
        low_shape = input_shape[1]
        return tuple(low_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            filters=self.filters,
            pool_size=None if self.pool_size is None else list(self.pool_size),
            pool_strides=None if self.pool_strides is None else list(self.pool_strides),
        )
        return config

"""Atrous Spatial Pyramid Pooling with image-level features (DeepLab v3, Chen et al. 2017)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers.conv_block import conv_block_layers


def _check_positive_int(argument, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"ASPP: {argument} must be a positive int. Received: {argument}={value!r}")


@keras.saving.register_keras_serializable(package="kseg")
class ASPP(keras.layers.Layer):
    """Parallel 1×1 and dilated 3×3 convolutions plus global pooling, concatenated and projected.

    Branches (each followed by BatchNorm and ReLU): a 1×1 convolution; one 3×3 convolution per
    rate in ``rates`` (depthwise-separable with BN + ReLU after both parts when
    ``separable=True``, as DeepLab v3+ with Xception); and, with ``image_pooling``, global
    average pooling → 1×1 convolution → bilinear resize back to the input size. The
    concatenation is projected by a 1×1 convolution + BN + ReLU, then dropout.

    ``rates=()`` with ``image_pooling=True`` is the "no ASPP" head of Mobile DeepLab v3
    (MobileNetV2 paper). For DeepLab v3 at output stride 16 the paper uses rates (6, 12, 18);
    at output stride 8 they double to (12, 24, 36).

    Args:
        filters: channels of every branch and of the output (paper: 256).
        rates: dilation rates of the 3×3 branches.
        image_pooling: add the image-level feature branch.
        separable: use depthwise-separable 3×3 convolutions.
        dropout: dropout rate after the projection (DeepLab v3+ code: 0.1).

    Example:
        >>> import numpy as np
        >>> aspp = ASPP(filters=32, rates=(2, 4))
        >>> aspp(np.zeros((1, 9, 11, 16), "float32")).shape
        TensorShape([1, 9, 11, 32])
    """

    def __init__(
        self,
        filters=256,
        rates=(6, 12, 18),
        image_pooling=True,
        separable=False,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("filters", filters)
        try:
            rates = tuple(rates)
        except TypeError:
            raise ValueError(
                f"ASPP: rates must be a sequence of positive ints. Received: rates={rates!r}"
            ) from None
        for rate in rates:
            if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
                raise ValueError(f"ASPP: rates must be positive ints. Received: rates={rates!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"ASPP: dropout must be in [0, 1). Received: dropout={dropout!r}")
        self.filters = filters
        self.rates = rates
        self.image_pooling = bool(image_pooling)
        self.separable = bool(separable)
        self.dropout = dropout

        def block(name, kernel_size=1, rate=1, separable=False):
            # BN after every convolution; call() applies the ReLUs.
            return conv_block_layers(
                filters,
                kernel_size,
                name,
                dilation_rate=rate,
                separable=separable,
                dtype=self.dtype_policy,
            )

        self.branches = [block("aspp0")]
        for index, rate in enumerate(rates, 1):
            self.branches.append(block(f"aspp{index}", 3, rate, separable=separable))
        self.pooling_branch = block("image_pooling") if image_pooling else None
        self.projection = block("projection")
        self.dropout_layer = layers.Dropout(dropout, dtype=self.dtype_policy) if dropout else None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"ASPP: the channel dimension must be known. Received: input_shape={input_shape}"
            )
        feature_shape = (None, None, None, self.filters)
        chains = list(self.branches) + ([self.pooling_branch] if self.pooling_branch else [])
        for chain in chains:
            shape = (None, None, None, channels)
            for layer in chain:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.projection[0].build((None, None, None, self.filters * self._num_branches()))
        self.projection[1].build(feature_shape)
        self.built = True

    def _num_branches(self):
        return 1 + len(self.rates) + int(self.image_pooling)

    @staticmethod
    def _run(chain, x, training):
        # BN + ReLU after every convolution (depthwise included).
        for layer in chain:
            if isinstance(layer, layers.BatchNormalization):
                x = tf.nn.relu(layer(x, training=training))
            else:
                x = layer(x)
        return x

    def call(self, inputs, training=None):
        outputs = [self._run(chain, inputs, training) for chain in self.branches]
        if self.pooling_branch:
            pooled = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
            pooled = self._run(self.pooling_branch, pooled, training)
            outputs.append(tf.cast(tf.image.resize(pooled, tf.shape(inputs)[1:3]), inputs.dtype))
        x = tf.concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        x = self._run(self.projection, x, training)
        if self.dropout_layer is not None:
            x = self.dropout_layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            rates=list(self.rates),
            image_pooling=self.image_pooling,
            separable=self.separable,
            dropout=self.dropout,
        )
        return config

"""ERFNet's blocks (Romera, Álvarez, Bergasa, Arroyo, "ERFNet: Efficient Residual Factorized
ConvNet for Real-time Semantic Segmentation", IEEE T-ITS 2017).

* the **down-sampler** (from ENet's initial block): ``concat(conv3×3/2, maxpool2×2) → BN → ReLU``;
* **non-bottleneck-1D**: a residual block whose two 3×3 convolutions are each factorised into a
  3×1 and a 1×3 convolution (ReLU between, BN after each pair); the second pair is dilated.
  With 33 % fewer weights than a 3×3 pair it keeps the full width (no bottleneck);
* the **up-sampler**: a 3×3 stride-2 transposed convolution → BN → ReLU.

Serializable layers (``ERFNetDownsampler``, ``NonBottleneck1D``, ``ERFNetUpsampler``; biases on
every convolution, as the authors' PyTorch code); the lower-case functions apply them.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers._composite import CompositeLayer, check_int, check_rate
from kseg.layers.enet_blocks import ConvPoolDownsampler


@keras.saving.register_keras_serializable(package="kseg")
class ERFNetDownsampler(ConvPoolDownsampler):
    """ERFNet's down-sampler block (Romera et al. 2017, from ENet's initial block):
    ``concat(conv3×3/2 (filters - C), maxpool2×2(x)) → BN → ReLU``, ceil mode.

    Args:
        filters: output channels, more than the input's.

    Example:
        >>> import numpy as np
        >>> ERFNetDownsampler(16)(np.zeros((1, 15, 20, 3), "float32")).shape
        TensorShape([1, 8, 10, 16])
    """

    def __init__(self, filters, **kwargs):
        super().__init__(filters, **kwargs)

    def _activate(self, y):
        return tf.nn.relu(y)


@keras.saving.register_keras_serializable(package="kseg")
class NonBottleneck1D(CompositeLayer):
    """ERFNet's non-bottleneck-1D residual block (Romera et al. 2017, Fig. 2c); channels kept.

    ``3×1 → ReLU → 1×3 → BN → ReLU → 3×1 (dilated) → ReLU → 1×3 (dilated) → BN → dropout``,
    added to the input, then ReLU. The convolutions have as many filters as the input channels.

    Args:
        dilation_rate: dilation of the second pair (paper: 1, or 2, 4, 8, 16 at 1/8).
        dropout: spatial dropout rate (paper: 0.03 at 1/4, 0.3 at 1/8, 0 in the decoder).

    Example:
        >>> import numpy as np
        >>> NonBottleneck1D(dilation_rate=2)(np.zeros((1, 8, 8, 16), "float32")).shape
        TensorShape([1, 8, 8, 16])
    """

    def __init__(self, dilation_rate=1, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_int("NonBottleneck1D", "dilation_rate", dilation_rate)
        check_rate("NonBottleneck1D", "dropout", dropout)
        self.dilation_rate = dilation_rate
        self.dropout = dropout

    def _create(self, shapes):
        channels, policy = shapes[0][-1], self.dtype_policy
        self.convs, self.bns = [], []
        for part, rate in ((1, 1), (2, self.dilation_rate)):
            for kernel, dilation, label in (((3, 1), (rate, 1), "3x1"), ((1, 3), (1, rate), "1x3")):
                self.convs.append(
                    layers.Conv2D(
                        channels,
                        kernel,
                        padding="same",
                        dilation_rate=dilation,
                        name=f"conv{label}_{part}",
                        dtype=policy,
                    )
                )
            self.bns.append(layers.BatchNormalization(epsilon=1e-3, name=f"bn{part}", dtype=policy))
        self.dropout_layer = (
            layers.SpatialDropout2D(self.dropout, name="dropout", dtype=policy)
            if self.dropout
            else None
        )

    def call(self, x, training=None):
        y = x
        for part in range(2):
            y = tf.nn.relu(self.convs[2 * part](y))
            y = self.bns[part](self.convs[2 * part + 1](y), training=training)
            if part == 0:
                y = tf.nn.relu(y)
        if self.dropout_layer is not None:
            y = self.dropout_layer(y, training=training)
        return tf.nn.relu(x + y)

    def _output_shape(self, shapes):
        return shapes[0]

    def get_config(self):
        return {
            **super().get_config(),
            "dilation_rate": self.dilation_rate,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="kseg")
class ERFNetUpsampler(CompositeLayer):
    """ERFNet's up-sampler block (Romera et al. 2017): a 3×3 stride-2 transposed convolution
    → BN → ReLU (output ``2H × 2W``).

    Args:
        filters: output channels.

    Example:
        >>> import numpy as np
        >>> ERFNetUpsampler(8)(np.zeros((1, 4, 5, 16), "float32")).shape
        TensorShape([1, 8, 10, 8])
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        check_int("ERFNetUpsampler", "filters", filters)
        self.filters = filters
        policy = self.dtype_policy
        self.conv = layers.Conv2DTranspose(
            filters, 3, strides=2, padding="same", name="conv", dtype=policy
        )
        self.bn = layers.BatchNormalization(epsilon=1e-3, name="bn", dtype=policy)

    def call(self, x, training=None):
        return tf.nn.relu(self.bn(self.conv(x), training=training))

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def erfnet_downsampler(x, filters, name):
    """Applies ``ERFNetDownsampler(filters, name=name)`` to ``x``.

    Example:
        >>> tuple(erfnet_downsampler(keras.Input((15, 20, 3)), 16, "down").shape)
        (None, 8, 10, 16)
    """
    return ERFNetDownsampler(filters, name=name)(x)


def non_bottleneck_1d(x, name, *, dilation_rate=1, dropout=0.0):
    """Applies ``NonBottleneck1D(dilation_rate, dropout, name=name)`` to ``x``.

    Example:
        >>> tuple(non_bottleneck_1d(keras.Input((8, 8, 16)), "nb", dilation_rate=2).shape)
        (None, 8, 8, 16)
    """
    return NonBottleneck1D(dilation_rate=dilation_rate, dropout=dropout, name=name)(x)


def erfnet_upsampler(x, filters, name):
    """Applies ``ERFNetUpsampler(filters, name=name)`` to ``x``.

    Example:
        >>> tuple(erfnet_upsampler(keras.Input((4, 5, 16)), 8, "up").shape)
        (None, 8, 10, 8)
    """
    return ERFNetUpsampler(filters, name=name)(x)

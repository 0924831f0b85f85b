"""Adaptive average pooling to a fixed grid of bins (PSPNet's pyramid pooling module)."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kseg")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Averages ``[B, H, W, C]`` over a ``bins × bins`` grid of regions, whatever H and W are.

    Bin ``i`` along an axis of size ``n`` covers ``[floor(i·n/bins), ceil((i+1)·n/bins))``,
    the rule of PyTorch's ``AdaptiveAvgPool2d`` used by PSPNet: bins may overlap by a pixel
    when ``n`` is not a multiple of ``bins``, and every pixel belongs to some bin. Built from
    slices and means only, so it works with unknown sizes and converts to built-in TFLite ops.
    Sizes smaller than ``bins`` repeat pixels.

    Args:
        bins: number of bins along each axis (PSPNet: 1, 2, 3, 6).

    Example:
        >>> import numpy as np
        >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
        >>> AdaptiveAveragePooling2D(2)(x).numpy()[0, :, :, 0]
        array([[ 2.5,  4.5],
               [10.5, 12.5]], dtype=float32)
    """

    def __init__(self, bins, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            raise ValueError(
                f"AdaptiveAveragePooling2D: bins must be a positive int. Received: bins={bins!r}"
            )
        self.bins = bins

    def _pool_axis(self, x, axis):
        size = tf.shape(x)[axis]
        pieces = []
        for i in range(self.bins):
            start = (i * size) // self.bins
            stop = -((-(i + 1) * size) // self.bins)  # ceil((i+1)·size/bins)
            region = x[:, start:stop] if axis == 1 else x[:, :, start:stop]
            pieces.append(tf.reduce_mean(region, axis=axis, keepdims=True))
        return tf.concat(pieces, axis=axis) if self.bins > 1 else pieces[0]

    def call(self, inputs):
        # A rectangle's mean is the mean over columns of its row means.
        return self._pool_axis(self._pool_axis(inputs, 1), 2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(bins=self.bins)
        return config


def pyramid_pooling_module(x, bins, name, branch_filters=None, merge="concat"):
    """PSPNet's pyramid pooling module on a Keras tensor, in the two forms the cascade and
    real-time networks use.

    Each bin count ``b`` average-pools ``x`` to ``b × b`` (``AdaptiveAveragePooling2D``), and
    the result is upsampled bilinearly to ``x``'s size. ``merge="concat"`` (PSPNet, Fast-SCNN)
    reduces each pooled map with a 1×1 convolution + BN + ReLU to ``branch_filters`` channels
    (default ``channels // len(bins)``) and concatenates ``[x, branches...]``;
    ``merge="sum"`` (ICNet) adds the pooled maps to ``x`` without convolutions.

    Example:
        >>> import keras
        >>> x = keras.Input((12, 16, 32))
        >>> tuple(pyramid_pooling_module(x, (1, 2, 3, 6), "ppm").shape)
        (None, 12, 16, 64)
        >>> tuple(pyramid_pooling_module(x, (1, 2), "ppm_sum", merge="sum").shape)
        (None, 12, 16, 32)
    """
    from keras import layers

    from kseg.layers.conv_block import conv_bn_relu
    from kseg.layers.resize import Resize

    if merge not in ("concat", "sum"):
        raise ValueError(
            f"pyramid_pooling_module: merge must be 'concat' or 'sum'. Received: merge={merge!r}"
        )
    bins = tuple(bins)
    branches = [x]
    for b in bins:
        y = AdaptiveAveragePooling2D(b, name=f"{name}_pool{b}")(x)
        if merge == "concat":
            y = conv_bn_relu(y, branch_filters or x.shape[-1] // len(bins), 1, f"{name}_conv{b}")
        branches.append(Resize(name=f"{name}_upsample{b}")([y, x]))
    if merge == "sum":
        return layers.Add(name=f"{name}_sum")(branches)
    return layers.Concatenate(name=f"{name}_concat")(branches)

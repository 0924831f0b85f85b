"""Cropping and padding by sizes known only at run time (skip connections, size alignment)."""

from __future__ import annotations

import keras
import tensorflow as tf

_ANCHORS = ("top_left", "center")


@keras.saving.register_keras_serializable(package="kseg")
class CropLike(keras.layers.Layer):
    """Crops ``x`` to the height and width of ``reference``: ``CropLike()([x, reference])``.

    ``anchor="top_left"`` keeps ``x[:, :h, :w]`` (FCN's alignment of same-padded maps);
    ``"center"`` removes ``(H - h) // 2`` rows on top and the rest at the bottom, and the same
    for columns (U-Net's crop of the contracting path). ``x`` must be at least as large as
    ``reference`` (not checked at run time, to keep the graph free of assertions for TFLite;
    a smaller ``x`` gives a smaller output).

    Args:
        anchor: "top_left" or "center".

    Example:
        >>> import numpy as np
        >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
        >>> CropLike("center")([x, np.zeros((1, 2, 2, 3))]).numpy()[0, :, :, 0]
        array([[ 5.,  6.],
               [ 9., 10.]], dtype=float32)
    """

    def __init__(self, anchor="top_left", **kwargs):
        super().__init__(**kwargs)
        if anchor not in _ANCHORS:
            raise ValueError(
                f"CropLike: anchor must be one of {_ANCHORS}. Received: anchor={anchor!r}"
            )
        self.anchor = anchor

    def call(self, inputs):
        x, reference = inputs
        x_hw = tf.shape(x)[1:3]
        target = tf.shape(reference)[1:3]
        offset = (x_hw - target) // 2 if self.anchor == "center" else tf.zeros_like(target)
        return x[:, offset[0] : offset[0] + target[0], offset[1] : offset[1] + target[1]]

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(anchor=self.anchor)
        return config


@keras.saving.register_keras_serializable(package="kseg")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads height and width at the bottom/right up to the next multiple of ``multiple``.

    Lets an encoder-decoder that needs sizes divisible by ``multiple`` take any size; crop the
    result back with ``CropLike("top_left")([y, original])``.

    Args:
        multiple: positive int.

    Example:
        >>> import numpy as np
        >>> PadToMultiple(16)(np.ones((1, 20, 33, 2), "float32")).shape
        TensorShape([1, 32, 48, 2])
    """

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
            raise ValueError(
                f"PadToMultiple: multiple must be a positive int. Received: multiple={multiple!r}"
            )
        self.multiple = multiple

    def call(self, x):
        hw = tf.shape(x)[1:3]
        extra = (-hw) % self.multiple
        paddings = tf.stack([[0, 0], [0, extra[0]], [0, extra[1]], [0, 0]])
        return tf.pad(x, paddings)

    def _padded(self, size):
        return None if size is None else -(-size // self.multiple) * self.multiple

    def compute_output_shape(self, input_shape):
        return (
            input_shape[0],
            self._padded(input_shape[1]),
            self._padded(input_shape[2]),
            input_shape[3],
        )

    def get_config(self):
        config = super().get_config()
        config.update(multiple=self.multiple)
        return config

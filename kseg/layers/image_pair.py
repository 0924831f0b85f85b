"""Layers for bi-temporal (change detection) inputs: split an image pair, compare features."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="kseg")
class SplitImagePair(keras.layers.Layer):
    """Splits ``[B, H, W, 2C]`` (image A's channels, then image B's) into ``[A, B]``.

    Change-detection models take one tensor holding both images, so export, serving and the
    data pipelines see a single image input; the Siamese models split it with this layer.

    Example:
        >>> import numpy as np
        >>> pair = np.concatenate([np.zeros((1, 2, 2, 3)), np.ones((1, 2, 2, 3))], -1)
        >>> a, b = SplitImagePair()(pair)
        >>> float(a.numpy().max()), float(b.numpy().min())
        (0.0, 1.0)
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % 2:
            raise ValueError(
                "SplitImagePair: the input must hold two images of the same channel count "
                f"(an even number of channels). Received: channels={channels}"
            )

    def call(self, pair):
        half = pair.shape[-1] // 2
        return [pair[..., :half], pair[..., half:]]

    def compute_output_shape(self, input_shape):
        shape = (*input_shape[:-1], input_shape[-1] // 2)
        return [shape, shape]


@keras.saving.register_keras_serializable(package="kseg")
class AbsoluteDifference(keras.layers.Layer):
    """``|a - b|`` of two tensors of one shape (FC-Siam-diff's skip connections).

    Example:
        >>> import numpy as np
        >>> AbsoluteDifference()([np.array([1.0, 5.0]), np.array([3.0, 2.0])]).numpy().tolist()
        [2.0, 3.0]
    """

    def call(self, inputs):
        a, b = inputs
        return keras.ops.abs(a - b)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

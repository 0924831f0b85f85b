"""Space-to-depth and depth-to-space (the sub-pixel "pixel shuffle" of Shi et al., CVPR 2016).

``SpaceToDepth(b)`` folds each ``b × b`` block of pixels into the channels, ``[B, H, W, C]`` →
``[B, H/b, W/b, C·b²]``, losing nothing; ``DepthToSpace(b)`` is its inverse. A network that
starts with ``SpaceToDepth`` and ends with ``DepthToSpace`` on its logits works at ``1/b`` of
the resolution all the way through yet still predicts every pixel from learned sub-pixel
channels (ESPCN's efficient sub-pixel layer); on a CPU this removes the full-resolution stage,
which with few channels costs more per multiply-add than any other. Both convert to the
TFLite built-in ``SPACE_TO_DEPTH`` / ``DEPTH_TO_SPACE`` ops.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _check_block_size(layer, block_size):
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 2:
        raise ValueError(
            f"{layer}: block_size must be an int >= 2. Received: block_size={block_size!r}"
        )


@keras.saving.register_keras_serializable(package="kseg")
class SpaceToDepth(keras.layers.Layer):
    """Moves each ``block_size × block_size`` block of pixels into the channels.

    Output channel ``(i * block_size + j) * C + c`` at ``(y, x)`` is input channel ``c`` at
    ``(y * block_size + i, x * block_size + j)``, as ``tf.nn.space_to_depth``.

    Args:
        block_size: the block side, ≥ 2; height and width must be multiples of it.

    Example:
        >>> import numpy as np
        >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
        >>> SpaceToDepth(2)(x).numpy().ravel().tolist()
        [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        _check_block_size("SpaceToDepth", block_size)
        self.block_size = block_size

    def _check(self, shape):
        if len(shape) != 4 or any(
            size is not None and size % self.block_size for size in shape[1:3]
        ):
            raise ValueError(
                f"{self.name}: expects [batch, height, width, channels] with height and width "
                f"multiples of block_size={self.block_size}. Received: shape={tuple(shape)}"
            )

    def call(self, x):
        self._check(tuple(x.shape))
        return tf.nn.space_to_depth(x, self.block_size)

    def compute_output_shape(self, input_shape):
        self._check(tuple(input_shape))
        b, h, w, c = input_shape
        k = self.block_size
        return (
            b,
            None if h is None else h // k,
            None if w is None else w // k,
            None if c is None else c * k * k,
        )

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="kseg")
class DepthToSpace(keras.layers.Layer):
    """Spreads ``block_size²`` groups of channels over ``block_size × block_size`` pixels.

    The inverse of ``SpaceToDepth``: ``[B, H, W, C·b²]`` → ``[B, H·b, W·b, C]``, as
    ``tf.nn.depth_to_space``.

    Args:
        block_size: the block side, ≥ 2; the channel count must be a multiple of its square.

    Example:
        >>> import numpy as np
        >>> x = np.arange(4, dtype="float32").reshape(1, 1, 1, 4)
        >>> DepthToSpace(2)(x).numpy()[0, :, :, 0].tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        _check_block_size("DepthToSpace", block_size)
        self.block_size = block_size

    def _check(self, shape):
        blocks = self.block_size**2
        if len(shape) != 4 or shape[-1] is None or shape[-1] % blocks:
            raise ValueError(
                f"{self.name}: expects [batch, height, width, channels] with a known channel "
                f"count that is a multiple of block_size**2={blocks}. "
                f"Received: shape={tuple(shape)}"
            )

    def call(self, x):
        self._check(tuple(x.shape))
        return tf.nn.depth_to_space(x, self.block_size)

    def compute_output_shape(self, input_shape):
        self._check(tuple(input_shape))
        b, h, w, c = input_shape
        k = self.block_size
        return (b, None if h is None else h * k, None if w is None else w * k, c // (k * k))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}

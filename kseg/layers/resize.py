"""Spatial resizing that works when height and width are unknown until run time."""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf

_INTERPOLATIONS = ("bilinear", "nearest")


@keras.saving.register_keras_serializable(package="kseg")
class Resize(keras.layers.Layer):
    """Resizes a ``[B, H, W, C]`` tensor by a factor or to the size of a reference tensor.

    Called on one tensor, the output is ``floor(H * scale) × floor(W * scale)``. Called on a
    pair ``[x, reference]``, ``x`` is resized to the height and width of ``reference`` (its
    channels do not matter). Sizes may be unknown when the model is built (``None``), which
    ``keras.ops.image.resize`` does not support; ``tf.image.resize`` (half-pixel centres)
    does, and TFLite converts it to the built-in ``RESIZE_BILINEAR`` /
    ``RESIZE_NEAREST_NEIGHBOR`` ops.

    Args:
        scale: positive factor for the single-tensor call (e.g. 2 or 0.5); a pair
            ``(scale_h, scale_w)`` is accepted. Leave ``None`` to resize like a reference.
        interpolation: "bilinear" (default) or "nearest".

    Example:
        >>> import numpy as np
        >>> x = np.ones((1, 5, 7, 3), "float32")
        >>> Resize(scale=4)(x).shape
        TensorShape([1, 20, 28, 3])
        >>> Resize()([x, np.zeros((1, 9, 4, 1), "float32")]).shape
        TensorShape([1, 9, 4, 3])
    """

    def __init__(self, scale=None, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if scale is not None:
            pair = tuple(scale) if isinstance(scale, (list, tuple)) else (scale, scale)
            if len(pair) != 2 or not all(
                isinstance(s, numbers.Real) and not isinstance(s, bool) and s > 0 for s in pair
            ):
                raise ValueError(
                    f"Resize: scale must be a positive number or a pair of them. Received: scale={scale!r}"
                )
            scale = tuple(float(s) for s in pair)
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"Resize: interpolation must be one of {_INTERPOLATIONS}. Received: interpolation={interpolation!r}"
            )
        self.scale = scale
        self.interpolation = interpolation

    def _split(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    f"Resize: expected [x, reference]. Received: a list of {len(inputs)} tensors"
                )
            if self.scale is not None:
                raise ValueError(
                    "Resize: pass either scale= or a reference tensor, not both "
                    f"(scale={self.scale})"
                )
            return inputs[0], inputs[1]
        if self.scale is None:
            raise ValueError(
                "Resize: called on a single tensor without scale=; pass scale= or call on [x, reference]"
            )
        return inputs, None

    def _scaled(self, size, factor):
        if size is None:
            return None
        return int(size * factor)

    def call(self, inputs):
        x, reference = self._split(inputs)
        if reference is not None:
            size = tf.shape(reference)[1:3]
        else:
            hw = tf.cast(tf.shape(x)[1:3], tf.float64)
            size = tf.cast(tf.floor(hw * tf.constant(self.scale, tf.float64)), tf.int32)
        method = (
            tf.image.ResizeMethod.BILINEAR
            if self.interpolation == "bilinear"
            else tf.image.ResizeMethod.NEAREST_NEIGHBOR
        )
        resized = tf.image.resize(x, size, method=method)
        return tf.cast(resized, x.dtype)

    def compute_output_shape(self, input_shape):
        if (
            isinstance(input_shape, (list, tuple))
            and input_shape
            and isinstance(input_shape[0], (list, tuple))
        ):
            x_shape, ref_shape = input_shape
            return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])
        x_shape = input_shape
        return (
            x_shape[0],
            self._scaled(x_shape[1], self.scale[0]),
            self._scaled(x_shape[2], self.scale[1]),
            x_shape[3],
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            scale=list(self.scale) if self.scale is not None else None,
            interpolation=self.interpolation,
        )
        return config


def bilinear_kernel_1d(factor):
    """The 1-D bilinear interpolation kernel of FCN for upsampling by an integer ``factor``.

    Its length is ``2 * factor - factor % 2``; used as a transposed convolution kernel with
    stride ``factor`` and "same" padding it reproduces half-pixel-centre bilinear upsampling.

    Example:
        >>> bilinear_kernel_1d(2)
        array([0.25, 0.75, 0.75, 0.25])
    """
    import numpy as np

    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(
            f"bilinear kernel: factor must be a positive int. Received: factor={factor!r}"
        )
    size = 2 * factor - factor % 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1.0 - np.abs(np.arange(size) - center) / factor


@keras.saving.register_keras_serializable(package="kseg")
class BilinearKernel(keras.initializers.Initializer):
    """Initialises a ``Conv2DTranspose`` kernel to per-channel bilinear upsampling (FCN).

    The kernel ``[k, k, out, in]`` gets the 2-D bilinear filter on the diagonal (output
    channel ``c`` from input channel ``c``) and zeros elsewhere. With ``strides=factor``,
    ``kernel_size=2 * factor - factor % 2`` and ``padding="same"`` the layer starts as an
    exact bilinear upsampler, which it may then learn to improve.

    Example:
        >>> import keras
        >>> up = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", use_bias=False,
        ...                                   kernel_initializer=BilinearKernel())
    """

    def __call__(self, shape, dtype=None):
        import numpy as np

        kh, kw, out_channels, in_channels = shape
        if kh != kw:
            raise ValueError(
                f"BilinearKernel: kernel must be square. Received: shape={tuple(shape)}"
            )
        factor = (kh + 1) // 2
        if 2 * factor - factor % 2 != kh:
            raise ValueError(
                f"BilinearKernel: kernel size {kh} is not 2*factor - factor%2 for any factor"
            )
        k1 = bilinear_kernel_1d(factor)
        kernel = np.zeros(shape, "float32")
        for c in range(min(out_channels, in_channels)):
            kernel[:, :, c, c] = np.outer(k1, k1)
        return tf.constant(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}

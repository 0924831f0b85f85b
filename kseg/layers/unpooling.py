"""Max pooling that remembers where each maximum was, and the unpooling that puts it back.

SegNet and DeconvNet upsample by writing every pooled value back to the exact position its
maximum came from, and zeros elsewhere. ``tf.nn.max_pool_with_argmax`` is not a TFLite built-in
op, so both layers use an equivalent formulation built from reshapes, comparisons and
selections that converts to built-in ops and is exact:

* the input is cut into non-overlapping ``pool_size`` windows (4-D reshape + transpose), one
  channel block per window position;
* the window position of the maximum is the *first* position (row-major inside the window)
  whose value equals the window maximum, i.e. ties go to the top-left-most element, as in
  Caffe's SegNet and ``tf.nn.max_pool_with_argmax``;
* unpooling selects the pooled value into the block of that position (zeros elsewhere) and
  puts the windows back together.

Only same-shape element-wise ops, 4-D reshapes/transposes and slices are used, so the layers
also survive full int8 quantization (TFLite's int8 converter mishandles a broadcast equality).

**Index representation.** Indices are int32 of the pooled shape ``[B, Hp, Wp, C]`` and hold the
position inside the window, ``dy * pool_width + dx`` (``0 <= index < pool_height * pool_width``).
``window_to_flat_index`` converts them to the flat ``((b*H + y)*W + x)*C + c`` convention of
``tf.nn.max_pool_with_argmax(include_batch_in_index=True)``.

**Odd sizes.** Pooling works in "ceil" mode (as Caffe's SegNet): a height of 7 with a pool of 2
gives 4 rows, the last window holding one real row (the missing row is padded with the tensor's
minimum, which never wins: a window's first element is always real and ties go to the first). Unpooling then needs the size to return to: pass the pre-pool tensor as
a third input (``unpool([values, indices, pre_pool])``), and its height and width (static or
dynamic) are used; without it the output is ``Hp * pool_height`` by ``Wp * pool_width``.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _normalize_pool_size(pool_size):
    if isinstance(pool_size, int) and not isinstance(pool_size, bool):
        pool_size = (pool_size, pool_size)
    if (
        not isinstance(pool_size, (tuple, list))
        or len(pool_size) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in pool_size)
        or pool_size[0] * pool_size[1] < 2
    ):
        raise ValueError(
            f"pool_size must be a positive int or a pair of positive ints (not both 1). "
            f"Received: pool_size={pool_size!r}"
        )
    return tuple(int(p) for p in pool_size)


def _ceil_div(a, b):
    return None if a is None else -(-a // b)


def _static_channels(x, what):
    channels = x.shape[-1]
    if channels is None:
        raise ValueError(f"{what} needs a known number of channels. Received: shape={x.shape}")
    return int(channels)


def _to_windows(x, pool_size):
    """[B, H, W, C] (H, W multiples of the pool) -> [B, Hp, Wp, kh*kw*C], channels ordered
    (dy, dx, c). Only 4-D reshapes/transposes, which every TFLite kernel supports."""
    kh, kw = pool_size
    c = _static_channels(x, "max pooling")
    shape = tf.shape(x)
    b, hp, wp = shape[0], shape[1] // kh, shape[2] // kw
    x = tf.reshape(x, tf.stack([b * hp, kh, wp, kw * c]))
    x = tf.transpose(x, [0, 2, 1, 3])  # [B*Hp, Wp, kh, kw*C]
    return tf.reshape(x, tf.stack([b, hp, wp, kh * kw * c]))


def _from_windows(x, pool_size, channels):
    """[B, Hp, Wp, kh*kw*C] -> [B, Hp*kh, Wp*kw, C] (inverse of ``_to_windows``)."""
    kh, kw = pool_size
    shape = tf.shape(x)
    b, hp, wp = shape[0], shape[1], shape[2]
    x = tf.reshape(x, tf.stack([b * hp, wp, kh, kw * channels]))
    x = tf.transpose(x, [0, 2, 1, 3])  # [B*Hp, kh, Wp, kw*C]
    return tf.reshape(x, tf.stack([b, hp * kh, wp * kw, channels]))


def max_pool_with_window_argmax(x, pool_size=(2, 2)):
    """Non-overlapping max pooling in ceil mode returning ``(pooled, window_indices)``.

    ``window_indices[b, i, j, c]`` is the row-major position ``dy * kw + dx`` inside the window of
    the first maximum. Functional form of ``MaxPoolingWithArgmax2D``.

    Example:
        >>> import numpy as np
        >>> x = np.array([1., 5., 2., 5.]).reshape(1, 2, 2, 1)
        >>> pooled, idx = max_pool_with_window_argmax(x, 2)
        >>> float(pooled[0, 0, 0, 0]), int(idx[0, 0, 0, 0])   # first of the two 5s
        (5.0, 1)
    """
    pool_size = _normalize_pool_size(pool_size)
    kh, kw = pool_size
    x = tf.convert_to_tensor(x)
    c = _static_channels(x, "max pooling")
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None or height % kh or width % kw:
        shape = tf.shape(x)
        pad_h = (kh - shape[1] % kh) % kh
        pad_w = (kw - shape[2] % kw) % kw
        # Padding sits after the real elements of a window and each window's first element is
        # real, so padding with the tensor minimum never wins (ties go to the first element).
        # A finite value also keeps int8 quantization ranges intact.
        x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], constant_values=tf.reduce_min(x))
    windows = _to_windows(x, pool_size)
    positions = [windows[..., p * c : (p + 1) * c] for p in range(kh * kw)]
    window_max = positions[0]
    for candidate in positions[1:]:
        window_max = tf.maximum(window_max, candidate)
    # Walk the positions backwards so the first (row-major) maximum is the one kept. Each step
    # compares two same-shaped tensors: no broadcasting, which TFLite's int8 path mishandles.
    indices = tf.fill(tf.shape(window_max), tf.constant(kh * kw - 1, tf.int32))
    pooled = positions[-1]
    for p in range(kh * kw - 2, -1, -1):
        is_max = tf.equal(positions[p], window_max)
        indices = tf.where(is_max, tf.constant(p, tf.int32), indices)
        # select (not the max itself) so the gradient goes to the chosen element only
        pooled = tf.where(is_max, positions[p], pooled)
    return pooled, indices


def max_unpool_from_window_argmax(values, indices, pool_size=(2, 2), output_size=None):
    """Writes ``values`` back to the window positions in ``indices``; zeros elsewhere.

    ``output_size`` is ``(H, W)`` (ints or scalar tensors) to crop the ceil-mode result to;
    default ``(Hp * kh, Wp * kw)``. Functional form of ``MaxUnpooling2D``.

    Example:
        >>> import numpy as np
        >>> values = np.array([[[[7.0]]]])              # one pooled value
        >>> idx = np.array([[[[2]]]], dtype="int32")     # window position (1, 0)
        >>> max_unpool_from_window_argmax(values, idx, 2)[0, :, :, 0].numpy().tolist()
        [[0.0, 0.0], [7.0, 0.0]]
    """
    pool_size = _normalize_pool_size(pool_size)
    values = tf.convert_to_tensor(values)
    c = _static_channels(values, "max unpooling")
    indices = tf.cast(indices, tf.int32)
    zeros = tf.zeros_like(values)
    slots = [
        tf.where(tf.equal(indices, p), values, zeros) for p in range(pool_size[0] * pool_size[1])
    ]
    out = _from_windows(tf.concat(slots, axis=-1), pool_size, c)
    if output_size is not None:
        out = out[:, : output_size[0], : output_size[1], :]
    return out


def window_to_flat_index(indices, input_shape, pool_size=(2, 2)):
    """Converts window indices to the flat index of ``tf.nn.max_pool_with_argmax``
    (``include_batch_in_index=True``): ``((b*H + y)*W + x)*C + c`` in the un-padded input.

    Example:
        >>> import numpy as np
        >>> idx = np.array([[[[3]]]], dtype="int32")     # bottom-right of a 2x2 window
        >>> int(window_to_flat_index(idx, (1, 2, 2, 1))[0, 0, 0, 0])
        3
    """
    kh, kw = _normalize_pool_size(pool_size)
    indices = tf.cast(indices, tf.int64)
    if len(input_shape) != 4:
        raise ValueError(
            f"input_shape must be (batch, height, width, channels). Received: input_shape={input_shape!r}"
        )
    height, width, channels = (int(d) for d in input_shape[1:])
    shape = tf.shape(indices, out_type=tf.int64)
    b = tf.reshape(tf.range(shape[0]), [-1, 1, 1, 1])
    i = tf.reshape(tf.range(shape[1]), [1, -1, 1, 1])
    j = tf.reshape(tf.range(shape[2]), [1, 1, -1, 1])
    c = tf.reshape(tf.range(shape[3]), [1, 1, 1, -1])
    y = i * kh + indices // kw
    x = j * kw + indices % kw
    return ((b * height + y) * width + x) * channels + c


@keras.saving.register_keras_serializable(package="kseg")
class MaxPoolingWithArgmax2D(keras.layers.Layer):
    """Max pooling (non-overlapping windows, ceil mode) that also returns argmax indices.

    Returns ``[pooled, indices]``: ``pooled`` has the input dtype, ``indices`` are int32 of the
    same shape holding the position of the first maximum inside each window
    (``dy * pool_width + dx``). Feed both, and optionally the pre-pool tensor for its size, to
    ``MaxUnpooling2D``. Converts to TFLite built-in ops (see the module docstring).

    Args:
        pool_size: int or ``(height, width)``; windows do not overlap (stride = pool size).

    Example:
        >>> import numpy as np
        >>> x = np.arange(2 * 5 * 3 * 4, dtype="float32").reshape(2, 5, 3, 4)
        >>> pooled, idx = MaxPoolingWithArgmax2D(2)(x)
        >>> tuple(pooled.shape), tuple(idx.shape)      # ceil(5/2), ceil(3/2)
        ((2, 3, 2, 4), (2, 3, 2, 4))
        >>> restored = MaxUnpooling2D(2)([pooled, idx, x])
        >>> tuple(restored.shape)
        (2, 5, 3, 4)
    """

    def __init__(self, pool_size=(2, 2), **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _normalize_pool_size(pool_size)

    def call(self, inputs):
        self.compute_output_shape(tuple(inputs.shape))  # validates the rank
        return list(max_pool_with_window_argmax(inputs, self.pool_size))

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"{self.name} expects a 4-D input [batch, height, width, channels]. "
                f"Received: shape={tuple(input_shape)!r}"
            )
        b, h, w, c = input_shape
        shape = (b, _ceil_div(h, self.pool_size[0]), _ceil_div(w, self.pool_size[1]), c)
        return [shape, shape]

    def compute_output_spec(self, inputs):
        pooled, indices = self.compute_output_shape(inputs.shape)
        return [
            keras.KerasTensor(pooled, dtype=self.compute_dtype),
            keras.KerasTensor(indices, dtype="int32"),
        ]

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="kseg")
class MaxUnpooling2D(keras.layers.Layer):
    """Max unpooling: scatters pooled values to the positions recorded by
    ``MaxPoolingWithArgmax2D``; every other position is zero (as SegNet's decoder upsampling).

    Call with ``[values, indices]`` or ``[values, indices, pre_pool]``; with the third input the
    output takes ``pre_pool``'s height and width (needed when the pooled input had odd sizes),
    otherwise it is ``Hp * pool_height`` by ``Wp * pool_width``. Gradients flow to ``values``.

    Args:
        pool_size: the ``pool_size`` of the matching pooling layer.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 2.], [4., 3.]], "float32").reshape(1, 2, 2, 1)
        >>> pooled, idx = MaxPoolingWithArgmax2D(2)(x)
        >>> MaxUnpooling2D(2)([pooled, idx])[0, :, :, 0].numpy().tolist()
        [[0.0, 0.0], [4.0, 0.0]]
    """

    def __init__(self, pool_size=(2, 2), **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _normalize_pool_size(pool_size)

    def _check_inputs(self, shapes):
        if not isinstance(shapes, (list, tuple)) or len(shapes) not in (2, 3):
            raise ValueError(
                f"{self.name} expects [values, indices] or [values, indices, pre_pool]. "
                f"Received: {len(shapes) if isinstance(shapes, (list, tuple)) else shapes!r} inputs"
            )
        values, indices = tuple(shapes[0]), tuple(shapes[1])
        if len(values) != 4 or len(indices) != 4:
            raise ValueError(
                f"{self.name}: values and indices must be 4-D. Received: "
                f"values.shape={values!r}, indices.shape={indices!r}"
            )
        for a, b in zip(values, indices):
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"{self.name}: values shape {values!r} and indices shape {indices!r} differ"
                )
        if len(shapes) == 3:
            ref = tuple(shapes[2])
            kh, kw = self.pool_size
            for axis, k, size in (
                (1, kh, ref[1] if len(ref) == 4 else -1),
                (2, kw, ref[2] if len(ref) == 4 else -1),
            ):
                if size is None or values[axis] is None:
                    continue
                if size == -1 or _ceil_div(size, k) != values[axis]:
                    raise ValueError(
                        f"{self.name}: pre_pool shape {ref!r} does not pool to values shape "
                        f"{values!r} with pool_size {self.pool_size!r}"
                    )

    def call(self, inputs):
        self._check_inputs([tuple(t.shape) for t in inputs])
        values, indices = inputs[0], inputs[1]
        output_size = None
        if len(inputs) == 3:
            ref_shape = tf.shape(inputs[2])
            output_size = (ref_shape[1], ref_shape[2])
        return max_unpool_from_window_argmax(values, indices, self.pool_size, output_size)

    def compute_output_shape(self, input_shape):
        self._check_inputs(input_shape)
        b, hp, wp, c = input_shape[0]
        if len(input_shape) == 3:
            return (b, input_shape[2][1], input_shape[2][2], c)
        kh, kw = self.pool_size
        return (b, None if hp is None else hp * kh, None if wp is None else wp * kw, c)

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape([tuple(t.shape) for t in inputs])
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}

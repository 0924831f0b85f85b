"""Permutohedral-lattice Gaussian filtering as a TensorFlow op, with its gradient."""

import tensorflow as tf

from kseg_ops import _validation as v
from kseg_ops._loader import load_ops_library

MAX_FEATURE_DIM = 16


def lattice_filter(values, features, transpose=False, name=None):
    """Gaussian filter of ``values`` in the space of ``features`` (permutohedral lattice).

    Approximates ``out[b, i] = sum_j exp(-|f[b, i] - f[b, j]|^2 / 2) * values[b, j]`` up to the
    lattice's smoothing, in O(n * d^2 + lattice size * d * channels) time (Adams et al. 2010), with
    the conventions of Kraehenbuehl & Koltun's dense CRF. The filter includes each point itself.
    Divide the features by the standard deviations you want before calling.

    Gradients flow to ``values`` (the filter is linear in them: the gradient is the transposed
    filter). ``features`` get no gradient (``None``): the lattice is piecewise constant in them.

    Args:
        values: float32/float64 ``[batch, n, channels]``, channels >= 1 (any number).
        features: same dtype, ``[batch, n, feature_dim]``, feature_dim in 1..16, finite.
        transpose: apply the transposed filter instead.
        name: optional name scope.

    Returns:
        ``[batch, n, channels]`` tensor of the dtype of ``values``.

    Raises:
        TypeError: non-float or mismatched dtypes.
        ValueError: wrong ranks, mismatched batch/n, channels = 0, feature_dim out of range,
            non-finite features, or features too large for the lattice's int32 keys (every
            ``|features[..., k]| * scale_k`` must stay below ``2^30 / (feature_dim + 1)``; the
            message gives the bound on the offending axis) — eagerly; in graphs the op raises
            InvalidArgumentError.
        tf.errors.ResourceExhaustedError: the host memory the call needs is over the budget
            (``$KSEG_OPS_MEMORY_BUDGET_BYTES``, read on every call, or half the physical
            memory): ``n * (d + 1) * (8 + 2 * t) + n * (5 * d + 2)`` bytes before the lattice is
            built (``d`` = feature_dim, ``t`` = 4 or 8 bytes per value), then
            ``8 * m * (d + 2) + 2 * t * (m + 1) * cp`` more for its ``m`` vertices
            (``cp`` = channels rounded up to a multiple of 8). The message names the shapes and
            the bytes.

    Example:
        >>> import numpy as np, kseg_ops
        >>> xy = np.stack(np.meshgrid(np.arange(8), np.arange(8)), -1).reshape(1, 64, 2) / 2.0
        >>> ones = np.ones((1, 64, 1), np.float32)
        >>> out = kseg_ops.lattice_filter(ones, xy.astype(np.float32))
        >>> out.shape
        TensorShape([1, 64, 1])
    """
    with tf.name_scope(name or "lattice_filter"):
        values = v.to_tensor("values", values)
        features = v.to_tensor("features", features)
        if values.dtype not in (tf.float32, tf.float64):
            raise TypeError(
                f"values must be float32 or float64. Received: values.dtype={values.dtype.name}"
            )
        if features.dtype != values.dtype:
            raise TypeError(
                f"features must have the dtype of values ({values.dtype.name}). "
                f"Received: features.dtype={features.dtype.name}"
            )
        v.check_rank("values", values, 3, "[batch, n, channels]")
        v.check_rank("features", features, 3, "[batch, n, feature_dim]")
        vs, fs = values.shape, features.shape
        for axis, what in ((0, "batch"), (1, "n")):
            if vs[axis] is not None and fs[axis] is not None and vs[axis] != fs[axis]:
                raise ValueError(
                    f"values {tuple(vs)} and features {tuple(fs)} must have the same {what} size"
                )
        if vs[2] == 0:
            raise ValueError(f"values must have at least one channel. Received: shape={tuple(vs)}")
        if fs[2] is not None and not 1 <= fs[2] <= MAX_FEATURE_DIM:
            raise ValueError(
                f"features' last dimension must be in [1, {MAX_FEATURE_DIM}]. Received: shape={tuple(fs)}"
            )
        if not isinstance(transpose, bool):
            raise TypeError(f"transpose must be a bool. Received: transpose={transpose!r}")
        v.check_finite_values("features", features)
        # Eagerly, what the kernel finds in the values (features too large for the lattice's
        # int32 keys) is a ValueError like the other argument errors.
        return v.value_errors_from_kernel(
            lambda: load_ops_library().kseg_lattice_filter(values, features, transpose=transpose)
        )


@tf.RegisterGradient("Kseg>LatticeFilter")
def _lattice_filter_grad(op, grad):
    # Linear in the values: the gradient is the transposed filter. No gradient for features.
    back = load_ops_library().kseg_lattice_filter(
        grad, op.inputs[1], transpose=not op.get_attr("transpose")
    )
    return [back, None]

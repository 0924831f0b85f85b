"""2D convolution by FFT as a TensorFlow op (``Kseg>FftConv2D``), with its gradients.

Equal to ``tf.nn.conv2d(x, kernel, strides=1, padding=...)`` (a cross-correlation), but its cost
grows with log(kernel size) instead of kernel area, so it wins for large kernels (about 7x7 and
up at 32 channels on a CPU; see ``benchmarks/RESULTS.md``).
"""

import tensorflow as tf

from kseg_ops import _validation as v
from kseg_ops._loader import load_ops_library

PADDINGS = ("SAME", "VALID")


def _check_unit(name, value):
    # Accepts 1, (1, 1) and (1, 1, 1, 1), as tf.nn.conv2d spells a unit stride or dilation.
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, 2, 4) or any(
        isinstance(s, bool) or not isinstance(s, int) or s != 1 for s in values
    ):
        raise ValueError(
            f"fft_conv2d supports only {name}=1 (the FFT computes every output position), "
            f"got {name}={value!r}; use tf.nn.conv2d for other {name}"
        )


def fft_conv2d(x, kernel, padding="SAME", strides=1, dilations=1, name=None):
    """2D convolution computed with FFTs, equal to ``tf.nn.conv2d`` with unit stride.

    ``out[b, y, x, o] = sum_{i, j, c} x[b, y + i - pt, x + j - pl, c] * kernel[i, j, c, o]`` with
    ``pt = (kh - 1) // 2, pl = (kw - 1) // 2`` for "SAME" and 0 for "VALID", exactly as
    ``tf.nn.conv2d`` (including even kernel sizes). Large images are cut into tiles so memory
    stays bounded. Gradients with respect to ``x`` and ``kernel`` are FFT correlations too.

    Args:
        x: float32 or float64 ``[batch, height, width, in_channels]``, finite.
        kernel: same dtype, ``[kernel_height, kernel_width, in_channels, out_channels]``, finite.
        padding: "SAME" or "VALID" (case-insensitive).
        strides, dilations: must be 1 (accepted for symmetry with ``tf.nn.conv2d``).
        name: optional name scope.

    Returns:
        ``[batch, out_height, out_width, out_channels]`` of the dtype of ``x``.

    Raises:
        TypeError: non-float or mismatched dtypes.
        ValueError: wrong ranks, channel mismatch, a kernel larger than the image with
            "VALID", an unknown padding, strides or dilations other than 1.
        tf.errors.InvalidArgumentError: NaN or infinity in ``x`` or ``kernel`` (raised by the
            kernel, which names the tensor and the first bad index).
        tf.errors.ResourceExhaustedError: the host memory the call (or its gradient) needs is
            over the budget (``$KSEG_OPS_MEMORY_BUDGET_BYTES``, read on every call, or half the
            physical memory); the count (kernel and tile spectra, per-thread workspaces) is
            given in ``fft_conv_core.h``, and the message names the shapes and the bytes.
        tf.errors.CancelledError: the step was cancelled; the kernels stop between tile groups.

    Example:
        >>> import numpy as np, tensorflow as tf, kseg_ops
        >>> x = np.random.rand(1, 32, 32, 4).astype(np.float32)
        >>> k = np.random.rand(15, 15, 4, 8).astype(np.float32)
        >>> y = kseg_ops.fft_conv2d(x, k, padding="SAME")
        >>> bool(np.allclose(y, tf.nn.conv2d(x, k, 1, "SAME"), rtol=1e-4, atol=1e-3))
        True
    """
    with tf.name_scope(name or "fft_conv2d"):
        x = v.to_tensor("x", x)
        kernel = v.to_tensor("kernel", kernel)
        if x.dtype not in (tf.float32, tf.float64):
            raise TypeError(f"x must be float32 or float64, got {x.dtype.name}")
        if kernel.dtype != x.dtype:
            raise TypeError(
                f"kernel must have the dtype of x ({x.dtype.name}), got {kernel.dtype.name}"
            )
        if not isinstance(padding, str) or padding.upper() not in PADDINGS:
            raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
        padding = padding.upper()
        _check_unit("strides", strides)
        _check_unit("dilations", dilations)
        v.check_rank("x", x, 4, "[batch, height, width, in_channels]")
        v.check_rank(
            "kernel", kernel, 4, "[kernel_height, kernel_width, in_channels, out_channels]"
        )
        xs, ks = x.shape, kernel.shape
        if xs.rank is not None and ks.rank is not None:
            if xs[3] is not None and ks[2] is not None and xs[3] != ks[2]:
                raise ValueError(
                    f"kernel {tuple(ks)} expects {ks[2]} input channels, but x {tuple(xs)} "
                    f"has {xs[3]}"
                )
            for axis, what in ((0, "height"), (1, "width")):
                size = xs[axis + 1]
                if any(d == 0 for d in (size, ks[axis])):
                    raise ValueError(
                        f"x {tuple(xs)} and kernel {tuple(ks)} must have non-zero {what}"
                    )
                if (
                    padding == "VALID"
                    and size is not None
                    and ks[axis] is not None
                    and ks[axis] > size
                ):
                    raise ValueError(
                        f"with padding 'VALID' the kernel {what} ({ks[axis]}) must not exceed the "
                        f"image {what} ({size}); x {tuple(xs)}, kernel {tuple(ks)}"
                    )
        return load_ops_library().kseg_fft_conv2d(x, kernel, padding=padding)


@tf.RegisterGradient("Kseg>FftConv2D")
def _fft_conv2d_grad(op, grad):
    # d/dx: correlation of grad with the flipped, channel-transposed kernel; d/dkernel:
    # correlation of x with grad. Both run through the same FFT machinery in C++.
    ops = load_ops_library()
    padding = op.get_attr("padding")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    x, kernel = op.inputs
    grad_x = ops.kseg_fft_conv2d_backprop_input(x, kernel, grad, padding=padding)
    grad_kernel = ops.kseg_fft_conv2d_backprop_filter(x, kernel, grad, padding=padding)
    return [grad_x, grad_kernel]

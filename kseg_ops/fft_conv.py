"""2D convolution by FFT as a TensorFlow op (``Kseg>FftConv2D``), with its gradients.

Equal to ``tf.nn.conv2d(x, kernel, strides=1, padding=...)`` (a cross-correlation), but its cost
grows with log(kernel size) instead of kernel area, so it wins for large kernels (about 7x7 and
up at 32 channels on a CPU; see ``benchmarks/RESULTS.md``).

The module also holds the cost model that picks FFT or ``tf.nn.conv2d`` for a call shape
(``fft_plan``, ``estimate_seconds``, ``choose_algorithm``), which ``kseg.layers.FFTConv2D``
uses for ``algorithm="auto"``: it mirrors the C++ tile chooser and is calibrated against the op.
"""

import functools
import math
import os

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
            f"fft_conv2d supports only {name}=1 (the FFT computes every output position); use "
            f"tf.nn.conv2d for other {name}. Received: {name}={value!r}"
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
            raise TypeError(f"x must be float32 or float64. Received: x.dtype={x.dtype.name}")
        if kernel.dtype != x.dtype:
            raise TypeError(
                f"kernel must have the dtype of x ({x.dtype.name}), Received: kernel.dtype={kernel.dtype.name}"
            )
        if not isinstance(padding, str) or padding.upper() not in PADDINGS:
            raise ValueError(f"padding must be 'SAME' or 'VALID'. Received: padding={padding!r}")
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


# Cost model of "auto", fitted by `benchmarks/fft_conv.py --calibrate` (see benchmarks/RESULTS.md
# for the run): forward seconds of tf.nn.conv2d per multiply-add by kernel size (oneDNN's speed
# per MAdd varies with the kernel: Winograd-like 3x3 paths, blocking of large kernels), linear
# in k between the calibrated sizes; FFT seconds per transform unit and per product unit of
# `fft_plan` (transforms of the input/output tiles and kernel, and the per-frequency channel
# contraction); fixed per-call overheads.
DIRECT_SECONDS_PER_MADD = {
    3: 1.09e-11,
    5: 7.77e-12,
    7: 8.75e-12,
    11: 1.05e-11,
    15: 8.78e-12,
    21: 7.55e-12,
    31: 7.08e-12,
}
DIRECT_SECONDS_FIXED = 5.0e-5
FFT_SECONDS_PER_TRANSFORM_UNIT = 1.89e-10
FFT_SECONDS_PER_PRODUCT_UNIT = 1.06e-10
FFT_SECONDS_FIXED = 2.0e-4
# Forward + backward over forward (training: gradients for the input and the kernel). The FFT
# backward runs two FFT convolutions of about the forward's cost. TensorFlow's oneDNN
# Conv2DBackpropFilter is pathologically slow from 13x13 kernels up (80 s against 0.05 s at
# 11x11 for 2x128x128x32), hence the separate factor there.
FFT_TRAINING_FACTOR = 3.66
DIRECT_TRAINING_FACTOR = 3.08
DIRECT_TRAINING_FACTOR_LARGE_ONEDNN = 1000.0
ONEDNN_SLOW_BACKPROP_AREA = 13 * 13
# Image size "auto" assumes when height/width are unknown while tracing.
NOMINAL_SIZE = 256


def _fast_size(n, even):
    m = max(n, 2 if even else 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1 and (not even or m % 2 == 0):
            return m
        m += 1


@functools.lru_cache(maxsize=1024)
def fft_plan(
    batch, height, width, in_channels, kernel_height, kernel_width, out_channels, padding="SAME"
):
    """The tiling the FFT kernel chooses (a mirror of ``ChooseTilePlan`` in fft_conv_core.h).

    Returns a dict with the FFT size ``(nh, nw)``, tile counts and the model cost in FFT units
    (``cost`` = ``transform_units`` + ``product_units``).

    Example:
        >>> fft_plan(2, 256, 256, 32, 15, 15, 32)["fft_size"]
        (40, 100)
    """
    if padding.upper() == "SAME":
        out_h, out_w = height, width
    else:
        out_h, out_w = height - kernel_height + 1, width - kernel_width + 1
    max_h = _fast_size(out_h + kernel_height - 1, False)
    max_w = _fast_size(out_w + kernel_width - 1, True)
    budget = 512 << 20
    best = None
    nh = _fast_size(kernel_height, False)
    while nh <= max_h:
        nw = _fast_size(kernel_width, True)
        while nw <= max_w:
            tiles_y = -(-out_h // (nh - kernel_height + 1))
            tiles_x = -(-out_w // (nw - kernel_width + 1))
            tiles = tiles_y * tiles_x
            freqs = nh * (nw // 2 + 1)
            logs = math.log2(nh) + math.log2(nw)
            b = max(batch, 1)
            fft = (
                (1.7 * b * tiles * (in_channels + out_channels) + 2.2 * in_channels * out_channels)
                * freqs
                * logs
            )
            product = b * tiles * freqs * in_channels * out_channels
            cost = fft + product
            kernel_bytes = 8.0 * freqs * in_channels * out_channels
            fits = kernel_bytes <= budget
            key = (not fits, cost if fits else kernel_bytes)
            if best is None or key < best[0]:
                best = (
                    key,
                    {
                        "fft_size": (nh, nw),
                        "tiles": (tiles_y, tiles_x),
                        "cost": cost,
                        "transform_units": fft,
                        "product_units": product,
                    },
                )
            nw = _fast_size(nw + 1, True)
        nh = _fast_size(nh + 1, False)
    return best[1]


def _onednn_enabled():
    # TensorFlow's own switch: on by default for x86-64 Linux builds.
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def direct_seconds_per_madd(kernel_height, kernel_width):
    """Calibrated forward seconds per MAdd of ``tf.nn.conv2d``, interpolated linearly in k."""
    k = math.sqrt(kernel_height * kernel_width)
    sizes = sorted(DIRECT_SECONDS_PER_MADD)
    if k <= sizes[0]:
        return DIRECT_SECONDS_PER_MADD[sizes[0]]
    for lo, hi in zip(sizes, sizes[1:]):
        if k <= hi:
            t = (k - lo) / (hi - lo)
            return (1 - t) * DIRECT_SECONDS_PER_MADD[lo] + t * DIRECT_SECONDS_PER_MADD[hi]
    return DIRECT_SECONDS_PER_MADD[sizes[-1]]


def estimate_seconds(
    batch,
    height,
    width,
    in_channels,
    kernel_height,
    kernel_width,
    out_channels,
    padding="SAME",
    training=False,
):
    """Model times of one call: ``{"fft": seconds, "direct": seconds}``.

    ``training=True`` estimates forward + backward (gradients for input and kernel).

    Example:
        >>> t = estimate_seconds(2, 256, 256, 32, 15, 15, 32)
        >>> t["fft"] < t["direct"]
        True
    """
    if padding.upper() == "SAME":
        out_h, out_w = height, width
    else:
        out_h, out_w = height - kernel_height + 1, width - kernel_width + 1
    madds = batch * out_h * out_w * in_channels * out_channels * kernel_height * kernel_width
    direct = DIRECT_SECONDS_FIXED + madds * direct_seconds_per_madd(kernel_height, kernel_width)
    plan = fft_plan(
        batch, height, width, in_channels, kernel_height, kernel_width, out_channels, padding
    )
    fft = (
        FFT_SECONDS_FIXED
        + plan["transform_units"] * FFT_SECONDS_PER_TRANSFORM_UNIT
        + plan["product_units"] * FFT_SECONDS_PER_PRODUCT_UNIT
    )
    if training:
        slow = _onednn_enabled() and kernel_height * kernel_width >= ONEDNN_SLOW_BACKPROP_AREA
        direct *= DIRECT_TRAINING_FACTOR_LARGE_ONEDNN if slow else DIRECT_TRAINING_FACTOR
        fft *= FFT_TRAINING_FACTOR
    return {"fft": fft, "direct": direct}


def choose_algorithm(
    batch,
    height,
    width,
    in_channels,
    kernel_height,
    kernel_width,
    out_channels,
    padding="SAME",
    training=False,
):
    """What ``algorithm="auto"`` runs for these static sizes: "fft" or "direct".

    Example:
        >>> choose_algorithm(2, 256, 256, 32, 3, 3, 32)
        'direct'
        >>> choose_algorithm(2, 256, 256, 32, 31, 31, 32)
        'fft'
    """
    t = estimate_seconds(
        batch,
        height,
        width,
        in_channels,
        kernel_height,
        kernel_width,
        out_channels,
        padding,
        training,
    )
    return "fft" if t["fft"] < t["direct"] else "direct"

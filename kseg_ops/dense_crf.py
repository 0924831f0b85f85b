"""Fully connected CRF (Kraehenbuehl & Koltun 2011) mean-field inference as a TensorFlow op."""

import tensorflow as tf

from kseg_ops import _validation as v
from kseg_ops._loader import load_ops_library

NORMALIZATIONS = ("symmetric", "after")
# The most mean-field iterations one call runs (kMaxCrfIterations in dense_crf_params.h).
MAX_ITERATIONS = 1000

# Mean-field inference is not differentiated: gradients through the op are None (as for
# tf.argmax), never a "No gradient defined" LookupError. Registered at import, before any use.
tf.no_gradient("Kseg>DenseCrf")


def dense_crf(
    probs,
    images,
    iterations=10,
    gaussian_sxy=3,
    gaussian_compat=3,
    bilateral_sxy=80,
    bilateral_srgb=13,
    bilateral_compat=10,
    normalization="symmetric",
    from_logits=False,
    name=None,
):
    """Refines per-pixel class probabilities with a fully connected CRF (mean field).

    Follows the reference implementation (Kraehenbuehl's, ``pydensecrf``) exactly: unary
    ``U = -log(clip(p, 1e-5, 1))`` (``-logits`` with ``from_logits``), ``Q0 = softmax(-U)``, then ``iterations`` times
    ``Q = softmax(-U + sum_k compat_k * Kn_k Q)`` with a Potts model over a gaussian kernel on
    ``(x / gaussian_sxy, y / gaussian_sxy)`` and a bilateral kernel on
    ``(x / bilateral_sxy, y / bilateral_sxy, rgb / bilateral_srgb)``; ``Kn`` is the
    permutohedral-lattice filter normalised symmetrically (``"symmetric"``, the reference's
    default: ``D^-1/2 L D^-1/2``) or after filtering (``"after"``, DeepLab's 2011 code:
    ``D^-1 L``). Both lattices are built once per image; the op runs on TF's CPU threads.

    Not differentiable: the op is registered with ``tf.no_gradient``, so a ``tf.GradientTape``
    gradient through it is ``None`` (for ``probs`` and ``images`` alike). To train through a
    CRF use ``kseg.layers.CRFRNN`` (mean field unrolled from differentiable ops), or build one
    from ``kseg_ops.lattice_filter``, which has a gradient.

    Args:
        probs: ``[batch, height, width, classes]`` probabilities (or logits with
            ``from_logits=True``); float16/32/64 or bfloat16, finite, classes >= 1.
        images: ``[batch, height, width, 3]`` RGB, uint8 or float in 0..255.
        iterations: mean-field iterations, in [0, ``MAX_ITERATIONS`` = 1000]. A call stops
            between iterations when its step is cancelled (``tf.errors.CancelledError``).
        gaussian_sxy, bilateral_sxy, bilateral_srgb: kernel widths in pixels / intensity (> 0).
        gaussian_compat, bilateral_compat: Potts weights of the two kernels.
        normalization: ``"symmetric"`` or ``"after"``.
        from_logits: ``probs`` holds logits (``Q0 = softmax(logits)``).
        name: optional name scope.

    Returns:
        Refined probabilities, same shape and dtype as ``probs`` (float64 is computed in float64,
        everything else in float32).

    Raises:
        TypeError: wrong dtypes. ValueError: wrong ranks or shapes, batch/size mismatch,
        classes = 0, empty images, NaN/Inf, bad parameters (eagerly; inside graphs the op
        raises ``InvalidArgumentError`` for what only the values reveal).
        tf.errors.ResourceExhaustedError: the host memory the call needs is over the budget,
        which is ``$KSEG_OPS_MEMORY_BUDGET_BYTES`` (read on every call) or half the physical
        memory. For ``n = height * width`` pixels, ``cp`` = classes rounded up to a multiple
        of 8 and ``t`` = 4 (float32) or 8 (float64) bytes, a call needs
        ``n * (t * (10 + 2 * cp) + 183)`` bytes (``255`` for float64) before its lattices are
        built, then for each lattice of dimension ``d`` (2 and 5) with ``m <= (d + 1) * n``
        vertices ``8 * m * (d + 2) + 2 * t * (m + 1) * (cp + 1)`` more (``CrfPointBytes`` and
        ``CrfVertexBytes`` in ``dense_crf.h``). The message names the shape and the bytes.

    Example:
        >>> import numpy as np, kseg_ops
        >>> images = np.zeros((1, 4, 6, 3), np.uint8); images[:, :, 3:] = 255
        >>> probs = np.full((1, 4, 6, 2), 0.5, np.float32); probs[:, :, :3, 0] = 0.9
        >>> probs[:, :, :3, 1] = 0.1
        >>> q = kseg_ops.dense_crf(probs, images, iterations=5)
        >>> q.shape
        TensorShape([1, 4, 6, 2])
    """
    iterations = v.check_int("iterations", iterations, 0)
    if iterations > MAX_ITERATIONS:
        raise ValueError(
            f"iterations must be in [0, {MAX_ITERATIONS}]. Received: iterations={iterations}"
        )
    gaussian_sxy = v.check_positive("gaussian_sxy", gaussian_sxy)
    bilateral_sxy = v.check_positive("bilateral_sxy", bilateral_sxy)
    bilateral_srgb = v.check_positive("bilateral_srgb", bilateral_srgb)
    gaussian_compat = v.check_finite_number("gaussian_compat", gaussian_compat)
    bilateral_compat = v.check_finite_number("bilateral_compat", bilateral_compat)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
        )
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be a bool. Received: from_logits={from_logits!r}")
    with tf.name_scope(name or "dense_crf"):
        probs = v.to_tensor("probs", probs)
        images = v.to_tensor("images", images)
        if not probs.dtype.is_floating:
            raise TypeError(
                f"probs must be a float tensor (float16/32/64, bfloat16). Received: probs.dtype={probs.dtype.name}"
            )
        if not (images.dtype == tf.uint8 or images.dtype.is_floating):
            raise TypeError(
                f"images must be uint8 or float. Received: images.dtype={images.dtype.name}"
            )
        v.check_rank("probs", probs, 4, "[batch, height, width, classes]")
        v.check_rank("images", images, 4, "[batch, height, width, 3]")
        ps, ims = probs.shape, images.shape
        if ims[3] is not None and ims[3] != 3:
            raise ValueError(f"images must have 3 (RGB) channels. Received: shape={tuple(ims)}")
        for axis, what in ((0, "batch size"), (1, "height"), (2, "width")):
            if ps[axis] is not None and ims[axis] is not None and ps[axis] != ims[axis]:
                raise ValueError(
                    f"probs {tuple(ps)} and images {tuple(ims)} must have the same {what}"
                )
        if ps[3] == 0:
            raise ValueError(f"probs must have at least one class. Received: shape={tuple(ps)}")
        for axis, what in ((1, "height"), (2, "width")):
            if ps[axis] == 0 or ims[axis] == 0:
                raise ValueError(
                    f"images must not be empty. Received: {what}=0 (probs {tuple(ps)}, "
                    f"images {tuple(ims)})"
                )
        compute_dtype = tf.float64 if probs.dtype == tf.float64 else tf.float32
        call = lambda: load_ops_library().kseg_dense_crf(  # noqa: E731
            tf.cast(probs, compute_dtype),
            tf.cast(images, compute_dtype),
            iterations=iterations,
            gaussian_sxy=gaussian_sxy,
            gaussian_compat=gaussian_compat,
            bilateral_sxy=bilateral_sxy,
            bilateral_srgb=bilateral_srgb,
            bilateral_compat=bilateral_compat,
            normalization=normalization,
            scores_kind="logits" if from_logits else "probabilities",
        )
        # The kernel checks the values (NaN/Inf, unusable features) in one parallel pass;
        # eagerly, what it finds is a ValueError like the other argument errors.
        q = v.value_errors_from_kernel(call)
        return tf.cast(q, probs.dtype)

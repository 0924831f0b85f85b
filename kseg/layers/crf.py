"""Fully connected CRF layers: DenseCRF (post-processing) and CRFRNN (trainable, Zheng et al.).

Both take ``[images, scores]``: images ``[B, H, W, 3]`` RGB in 0..255 and per-pixel class
scores ``[B, H, W, C]`` at the same size. They run the compiled ``kseg_ops`` ops (CPU, and GPU
where built), so they set ``supports_jit = False``; a model holding them builds and loads from
``.keras`` without the op library, which is only needed when the layer runs.
"""

from __future__ import annotations

import keras
import tensorflow as tf

import kseg_ops
from kseg_ops import _validation as checks
from kseg_ops.dense_crf import NORMALIZATIONS


def _check_pair_shapes(layer, input_shape):
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
        raise ValueError(
            f"{layer}: expects [images, scores], Received: input_shape={input_shape!r}"
        )
    images, scores = (tuple(s) for s in input_shape)
    if len(images) != 4 or images[-1] not in (3, None):
        raise ValueError(
            f"{layer}: images must be [batch, height, width, 3]. Received: images={images}"
        )
    if len(scores) != 4:
        raise ValueError(
            f"{layer}: scores must be [batch, height, width, classes]. Received: scores={scores}"
        )
    for axis, what in ((1, "height"), (2, "width")):
        if images[axis] is not None and scores[axis] is not None and images[axis] != scores[axis]:
            raise ValueError(
                f"{layer}: images {images} and scores {scores} must have the same {what}"
            )
    if scores[-1] == 0:
        raise ValueError(f"{layer}: scores must have at least one class. Received: scores={scores}")
    return images, scores


def _named(layer, check, name, value, *args):
    try:
        return check(name, value, *args)
    except ValueError as e:
        raise ValueError(f"{layer}: {e}") from None


@keras.saving.register_keras_serializable(package="kseg")
class DenseCRF(keras.layers.Layer):
    """Dense CRF post-processing (Kraehenbuehl & Koltun 2011) as a non-trainable layer.

    Called on ``[images, logits]`` (``from_logits=True``, the default, for a kseg model's
    output) or ``[images, probabilities]``; returns the refined probabilities
    ``[B, H, W, C]``. The conventions are those of the reference implementation; see
    ``kseg_ops.dense_crf`` for the math. Not differentiable: use ``CRFRNN`` to train.

    Mixed precision: the op runs in float32 (float64 under a float64 policy); float16 and
    bfloat16 scores are cast to float32 inside the layer and the probabilities cast back to
    the compute dtype. A model that turns them into logits (``DeepLabV1(crf=...)``) builds
    this layer as float32 under a mixed policy, since probabilities near 0 underflow in
    float16.

    Args:
        iterations: mean-field iterations.
        gaussian_sxy, gaussian_compat: width (pixels) and weight of the smoothness kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: widths (pixels, intensity) and weight
            of the appearance kernel.
        normalization: ``"symmetric"`` (the reference) or ``"after"`` (DeepLab's 2011 code).
        from_logits: the scores are logits (else probabilities).

    Example:
        >>> import numpy as np, kseg
        >>> images = np.zeros((1, 16, 16, 3), "float32")
        >>> logits = np.random.default_rng(0).normal(size=(1, 16, 16, 4)).astype("float32")
        >>> probs = kseg.layers.DenseCRF(iterations=5)([images, logits])
        >>> tuple(probs.shape)
        (1, 16, 16, 4)
    """

    def __init__(
        self,
        iterations=10,
        gaussian_sxy=3.0,
        gaussian_compat=3.0,
        bilateral_sxy=80.0,
        bilateral_srgb=13.0,
        bilateral_compat=10.0,
        normalization="symmetric",
        from_logits=True,
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.iterations = _named("DenseCRF", checks.check_int, "iterations", iterations, 0)
        self.gaussian_sxy = _named("DenseCRF", checks.check_positive, "gaussian_sxy", gaussian_sxy)
        self.gaussian_compat = _named(
            "DenseCRF", checks.check_finite_number, "gaussian_compat", gaussian_compat
        )
        self.bilateral_sxy = _named(
            "DenseCRF", checks.check_positive, "bilateral_sxy", bilateral_sxy
        )
        self.bilateral_srgb = _named(
            "DenseCRF", checks.check_positive, "bilateral_srgb", bilateral_srgb
        )
        self.bilateral_compat = _named(
            "DenseCRF", checks.check_finite_number, "bilateral_compat", bilateral_compat
        )
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"DenseCRF: normalization must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
            )
        if not isinstance(from_logits, bool):
            raise ValueError(
                f"DenseCRF: from_logits must be a bool. Received: from_logits={from_logits!r}"
            )
        self.normalization = normalization
        self.from_logits = from_logits
        self.supports_jit = False

    def build(self, input_shape):
        _check_pair_shapes("DenseCRF", input_shape)
        self.built = True

    def call(self, inputs):
        images, scores = inputs
        # The kernel exists for float32 and float64 only: half precision is computed in float32.
        dtype = tf.float64 if self.compute_dtype == "float64" else tf.float32
        probabilities = kseg_ops.dense_crf(
            tf.cast(scores, dtype),
            tf.cast(images, dtype),
            iterations=self.iterations,
            gaussian_sxy=self.gaussian_sxy,
            gaussian_compat=self.gaussian_compat,
            bilateral_sxy=self.bilateral_sxy,
            bilateral_srgb=self.bilateral_srgb,
            bilateral_compat=self.bilateral_compat,
            normalization=self.normalization,
            from_logits=self.from_logits,
        )
        return tf.cast(probabilities, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(_check_pair_shapes("DenseCRF", input_shape)[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            iterations=self.iterations,
            gaussian_sxy=self.gaussian_sxy,
            gaussian_compat=self.gaussian_compat,
            bilateral_sxy=self.bilateral_sxy,
            bilateral_srgb=self.bilateral_srgb,
            bilateral_compat=self.bilateral_compat,
            normalization=self.normalization,
            from_logits=self.from_logits,
        )
        return config


def _pixel_features(images, spatial_scale, colour_scale, dtype):
    """Per-pixel features ``[B, H*W, 2 or 5]``: (x, y) / spatial_scale [+ rgb / colour_scale]."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    ys, xs = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
    xy = tf.cast(tf.stack([xs, ys], axis=-1), dtype) / tf.cast(spatial_scale, dtype)
    xy = tf.tile(tf.reshape(xy, [1, height * width, 2]), [batch, 1, 1])
    if colour_scale is None:
        return xy
    rgb = tf.reshape(tf.cast(images, dtype), [batch, height * width, 3])
    return tf.concat([xy, rgb / tf.cast(colour_scale, dtype)], axis=-1)


@keras.saving.register_keras_serializable(package="kseg")
class CRFRNN(keras.layers.Layer):
    """CRF as RNN (Zheng et al., ICCV 2015): mean-field iterations as trainable layers.

    Each of the ``iterations`` unrolled steps computes ``Q = softmax(scores_t)``, filters it
    with a spatial kernel on ``(x, y) / theta_gamma`` and a bilateral kernel on
    ``(x, y) / theta_alpha, rgb / theta_beta`` (permutohedral lattice, normalised by the filter
    of ones), mixes the two messages with trainable ``C x C`` kernel weights, applies a
    trainable ``C x C`` compatibility matrix (Potts initialisation, ``-I``) and subtracts the
    result from the unaries: ``scores_{t+1} = unary - compat @ (Ws @ spatial + Wb @ bilateral)``.
    Gradients flow to the unaries and to all three matrices through the lattice filter (the
    image features get none). Returns scores (logits) ``[B, H, W, C]``.

    Mixed precision: the lattice op has float32 and float64 kernels only, so under a
    float16/bfloat16 policy the layer casts its inputs and weights to float32, runs the mean
    field in float32 and casts the scores back to the compute dtype.

    Args:
        iterations: unrolled mean-field steps (the paper trains with 5).
        theta_alpha, theta_beta: bilateral kernel widths (pixels, intensity).
        theta_gamma: spatial kernel width (pixels).
        spatial_weight, bilateral_weight: initial kernel weights (times the identity).

    Example:
        >>> import numpy as np, kseg
        >>> images = np.zeros((2, 12, 10, 3), "float32")
        >>> unary = np.random.default_rng(0).normal(size=(2, 12, 10, 3)).astype("float32")
        >>> tuple(kseg.layers.CRFRNN(iterations=2)([images, unary]).shape)
        (2, 12, 10, 3)
    """

    def __init__(
        self,
        iterations=5,
        theta_alpha=160.0,
        theta_beta=3.0,
        theta_gamma=3.0,
        spatial_weight=3.0,
        bilateral_weight=5.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.iterations = _named("CRFRNN", checks.check_int, "iterations", iterations, 1)
        self.theta_alpha = _named("CRFRNN", checks.check_positive, "theta_alpha", theta_alpha)
        self.theta_beta = _named("CRFRNN", checks.check_positive, "theta_beta", theta_beta)
        self.theta_gamma = _named("CRFRNN", checks.check_positive, "theta_gamma", theta_gamma)
        self.spatial_weight = _named(
            "CRFRNN", checks.check_finite_number, "spatial_weight", spatial_weight
        )
        self.bilateral_weight = _named(
            "CRFRNN", checks.check_finite_number, "bilateral_weight", bilateral_weight
        )
        self.supports_jit = False

    def build(self, input_shape):
        _, scores = _check_pair_shapes("CRFRNN", input_shape)
        classes = scores[-1]
        if classes is None:
            raise ValueError("CRFRNN: the number of classes (last axis of scores) must be known")
        eye = keras.initializers.Identity
        self.spatial_kernel_weights = self.add_weight(
            name="spatial_kernel_weights",
            shape=(classes, classes),
            initializer=eye(gain=self.spatial_weight),
        )
        self.bilateral_kernel_weights = self.add_weight(
            name="bilateral_kernel_weights",
            shape=(classes, classes),
            initializer=eye(gain=self.bilateral_weight),
        )
        self.compatibility = self.add_weight(
            name="compatibility",
            shape=(classes, classes),
            initializer=eye(gain=-1.0),
        )
        self.built = True

    def call(self, inputs):
        images, unary = inputs
        dtype = tf.float64 if self.compute_dtype == "float64" else tf.float32
        unary = tf.cast(unary, dtype)
        shape = tf.shape(unary)
        batch, classes = shape[0], unary.shape[-1]
        n = shape[1] * shape[2]
        spatial_features = _pixel_features(images, self.theta_gamma, None, dtype)
        bilateral_features = _pixel_features(images, self.theta_alpha, self.theta_beta, dtype)
        ones = tf.ones([batch, n, 1], dtype)
        spatial_norm = 1.0 / (kseg_ops.lattice_filter(ones, spatial_features) + 1e-20)
        bilateral_norm = 1.0 / (kseg_ops.lattice_filter(ones, bilateral_features) + 1e-20)
        ws = tf.cast(self.spatial_kernel_weights, dtype)
        wb = tf.cast(self.bilateral_kernel_weights, dtype)
        compat = tf.cast(self.compatibility, dtype)
        flat_unary = tf.reshape(unary, [batch, n, classes])
        scores = flat_unary
        for _ in range(self.iterations):
            q = tf.nn.softmax(scores, axis=-1)
            spatial = kseg_ops.lattice_filter(q, spatial_features) * spatial_norm
            bilateral = kseg_ops.lattice_filter(q, bilateral_features) * bilateral_norm
            # Row-vector convention: message[c] = sum_c' W[c, c'] * filtered[c'].
            message = tf.matmul(spatial, ws, transpose_b=True) + tf.matmul(
                bilateral, wb, transpose_b=True
            )
            pairwise = tf.matmul(message, compat, transpose_b=True)
            scores = flat_unary - pairwise
        return tf.cast(tf.reshape(scores, shape), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(_check_pair_shapes("CRFRNN", input_shape)[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            iterations=self.iterations,
            theta_alpha=self.theta_alpha,
            theta_beta=self.theta_beta,
            theta_gamma=self.theta_gamma,
            spatial_weight=self.spatial_weight,
            bilateral_weight=self.bilateral_weight,
        )
        return config

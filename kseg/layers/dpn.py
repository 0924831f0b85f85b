"""The Deep Parsing Network's MRF layers (Liu et al., ICCV 2015): one mean-field pass as a CNN."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from kseg.layers._composite import CompositeLayer, check_int


def _check_positive(argument, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(
            f"DPNMRF: {argument} must be a positive number. Received: {argument}={value!r}"
        )


@keras.saving.register_keras_serializable(package="kseg")
class DPNMRF(CompositeLayer):
    """One mean-field step of DPN's MRF (layers b12-b15 of the paper) on ``[images, unary]``.

    With ``P = softmax(unary)``:

    - b12, locally shared convolution (the triple penalty's ``sum_z d(j, z) p_z``): each pixel
      averages ``P`` over a ``window`` × ``window`` neighbourhood, weighted by
      ``exp(-|I_j - I_z|² / 2 theta_rgb² - |j - z|² / 2 theta_xy²)`` (colour and position, the
      paper's distance ``d``), the weights normalised to sum to 1 (outside the image: none);
    - b13, mixture of label contexts: a ``context_kernel`` × ``context_kernel`` convolution from
      the ``K`` smoothed maps to ``K * components`` maps (class-specific spatial label
      compatibilities, ``components`` of them per class);
    - b14, block min-pooling: the smallest of each class's ``components`` costs;
    - b15: ``logits = log_softmax(unary) - cost``, so a softmax of the output is the updated
      marginal ``Q ∝ P · exp(-cost)``.

    The paper applies a 50×50 window on 512×512 maps with 5 components and 9×9 contexts; the
    window is an argument here (its cost is ``window²`` shifted copies of the maps). The
    context filters start small (N(0, 0.01)), so an untrained layer nearly passes the unary
    log-probabilities through. Output: logits ``[B, H, W, K]``.

    Args:
        components: label-context mixtures per class (the paper's 5).
        context_kernel: side of the label-context convolution (the paper's 9).
        window: side of the b12 neighbourhood (odd).
        theta_rgb: colour scale of the b12 weights, in 0..255 units.
        theta_xy: position scale of the b12 weights, in pixels.

    Example:
        >>> import numpy as np
        >>> images = np.zeros((1, 8, 8, 3), "float32")
        >>> unary = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype("float32")
        >>> tuple(DPNMRF(components=2, context_kernel=3, window=3)([images, unary]).shape)
        (1, 8, 8, 4)
    """

    _input_dtypes = ("float", "float")

    def __init__(
        self, components=5, context_kernel=9, window=9, theta_rgb=13.0, theta_xy=3.0, **kwargs
    ):
        super().__init__(**kwargs)
        check_int("DPNMRF", "components", components)
        check_int("DPNMRF", "context_kernel", context_kernel)
        check_int("DPNMRF", "window", window)
        if window % 2 == 0:
            raise ValueError(f"DPNMRF: window must be odd. Received: window={window!r}")
        _check_positive("theta_rgb", theta_rgb)
        _check_positive("theta_xy", theta_xy)
        self.components = components
        self.context_kernel = context_kernel
        self.window = window
        self.theta_rgb = float(theta_rgb)
        self.theta_xy = float(theta_xy)

    def _check_shapes(self, shapes):
        super()._check_shapes(shapes)
        if len(shapes) != 2:
            raise ValueError(
                f"DPNMRF: expects [images, unary]. Received: input_shape={self._shape_repr(shapes)}"
            )

    def _create(self, shapes):
        self.num_classes = shapes[1][-1]
        self.context = keras.layers.Conv2D(
            self.num_classes * self.components,
            self.context_kernel,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="label_context",
            dtype=self.dtype_policy,
        )

    def _local_average(self, images, probs):
        # b12: normalised bilateral average over the window, as window² shifted copies
        radius = self.window // 2
        pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
        shape = ops.shape(probs)
        height, width = shape[1], shape[2]
        images_p = ops.pad(images, pad)
        probs_p = ops.pad(probs, pad)
        inside = ops.pad(ops.ones_like(probs[..., :1]), pad)
        total = ops.zeros_like(probs)
        norm = ops.zeros_like(probs[..., :1])
        for dy in range(self.window):
            for dx in range(self.window):
                spatial = ((dy - radius) ** 2 + (dx - radius) ** 2) / (2 * self.theta_xy**2)
                window = (slice(None), slice(dy, dy + height), slice(dx, dx + width))
                diff = images - images_p[window]
                colour = ops.sum(diff * diff, axis=-1, keepdims=True) / (2 * self.theta_rgb**2)
                weight = ops.exp(-colour - spatial) * inside[window]
                total = total + weight * probs_p[window]
                norm = norm + weight
        return total / norm  # norm >= 1: the centre pixel's own weight

    def call(self, inputs):
        images, unary = inputs
        images = ops.cast(images, self.compute_dtype)
        log_probs = ops.log_softmax(unary, axis=-1)
        smoothed = self._local_average(images, ops.exp(log_probs))
        costs = self.context(smoothed)
        shape = ops.shape(costs)
        costs = ops.reshape(costs, (-1, shape[1], shape[2], self.num_classes, self.components))
        return log_probs - ops.min(costs, axis=-1)

    def _output_shape(self, shapes):
        return tuple(shapes[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            components=self.components,
            context_kernel=self.context_kernel,
            window=self.window,
            theta_rgb=self.theta_rgb,
            theta_xy=self.theta_xy,
        )
        return config

"""The three Panoptic-DeepLab losses; the paper weighs them 1 / 200 / 0.01.

Each takes ``y_true`` with its per-pixel weights in the last channel (as
``kseg.panoptic.training_targets`` packs them), so ``fit`` needs no sample weights:

- ``BootstrappedCrossEntropy``: ``y_true`` ``[B, H, W, 2]`` = (label, weight), or plain labels
  ``[B, H, W]`` (weight 1); ``ignore_index`` pixels count as weight 0.
- ``CenterLoss``: ``y_true`` ``[B, H, W, 2]`` = (heat-map, weight).
- ``OffsetLoss``: ``y_true`` ``[B, H, W, 3]`` = (dy, dx, weight).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _check_channels(loss, y_true, y_pred, expected):
    channels = y_true.shape[-1]
    if channels is not None and channels != expected:
        raise ValueError(
            f"{loss}: y_true must have {expected} channels (targets and weight). Received: "
            f"y_true with shape {tuple(y_true.shape)} for y_pred {tuple(y_pred.shape)}"
        )


@keras.saving.register_keras_serializable(package="kseg")
class BootstrappedCrossEntropy(keras.losses.Loss):
    """Weighted softmax cross-entropy over the hardest ``top_k_percent`` of each image's pixels.

    Per image: the per-pixel cross-entropy times the pixel's weight, then the mean of the
    largest ``ceil(top_k_percent * H * W)`` of these (all pixels when ``top_k_percent`` is 1,
    then averaged over the pixels of non-zero weight), as deeplab2 (``top_k_percent: 0.2``).

    Args:
        top_k_percent: the fraction of pixels kept, in (0, 1].
        ignore_index: the label that is ignored (weight 0).

    Example:
        >>> import numpy as np
        >>> logits = np.zeros((1, 2, 2, 3), "float32")
        >>> labels = np.array([[[0, 1], [2, 255]]], "float32")
        >>> round(float(BootstrappedCrossEntropy(top_k_percent=1.0)(labels, logits)), 4)
        1.0986
    """

    def __init__(self, top_k_percent=0.2, ignore_index=255, name="bootstrapped_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(top_k_percent, bool) or not 0 < top_k_percent <= 1:
            raise ValueError(
                "BootstrappedCrossEntropy: top_k_percent must be in (0, 1]. Received: "
                f"top_k_percent={top_k_percent!r}"
            )
        self.top_k_percent = float(top_k_percent)
        self.ignore_index = int(ignore_index)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.cast(y_true, y_pred.dtype)
        if y_true.shape.rank == 4 and y_true.shape[-1] == 2:
            labels, weights = y_true[..., 0], y_true[..., 1]
        else:
            labels = tf.reshape(y_true, tf.shape(y_pred)[:-1])
            weights = tf.ones_like(labels)
        labels = tf.cast(tf.round(labels), tf.int32)
        valid = tf.not_equal(labels, self.ignore_index)
        weights = tf.where(valid, weights, tf.zeros_like(weights))
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=y_pred)
        pixel = tf.reshape(pixel * weights, [tf.shape(pixel)[0], -1])
        if self.top_k_percent >= 1.0:
            count = tf.reduce_sum(tf.cast(tf.reshape(weights > 0, tf.shape(pixel)), pixel.dtype), 1)
            return tf.reduce_sum(pixel, 1) / tf.maximum(count, 1.0)
        pixels = tf.shape(pixel)[1]
        k = tf.cast(tf.math.ceil(self.top_k_percent * tf.cast(pixels, tf.float32)), tf.int32)
        k = tf.clip_by_value(k, 1, pixels)
        return tf.reduce_mean(tf.math.top_k(pixel, k=k, sorted=False).values, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(top_k_percent=self.top_k_percent, ignore_index=self.ignore_index)
        return config


@keras.saving.register_keras_serializable(package="kseg")
class CenterLoss(keras.losses.Loss):
    """Weighted mean squared error of the centre heat-map, averaged over every pixel.

    Example:
        >>> import numpy as np
        >>> y_true = np.stack([np.ones((1, 2, 2)), [[[1, 1], [1, 0]]]], -1).astype("float32")
        >>> float(CenterLoss()(y_true, np.zeros((1, 2, 2, 1), "float32")))
        0.75
    """

    def __init__(self, name="center_mse", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.cast(y_true, y_pred.dtype)
        _check_channels("CenterLoss", y_true, y_pred, 2)
        error = tf.square(y_pred[..., 0] - y_true[..., 0]) * y_true[..., 1]
        return tf.reduce_mean(tf.reshape(error, [tf.shape(error)[0], -1]), axis=1)


@keras.saving.register_keras_serializable(package="kseg")
class OffsetLoss(keras.losses.Loss):
    """Weighted L1 of the centre offsets, averaged over both channels of the weighted pixels.

    Example:
        >>> import numpy as np
        >>> y_true = np.zeros((1, 1, 2, 3), "float32")
        >>> y_true[0, 0, 0] = [2.0, -4.0, 1.0]     # one weighted pixel, offset (2, -4)
        >>> float(OffsetLoss()(y_true, np.zeros((1, 1, 2, 2), "float32")))
        3.0
    """

    def __init__(self, name="offset_l1", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.cast(y_true, y_pred.dtype)
        _check_channels("OffsetLoss", y_true, y_pred, 3)
        weights = y_true[..., 2]
        error = tf.reduce_sum(tf.abs(y_pred - y_true[..., :2]), axis=-1) * weights
        batch = tf.shape(error)[0]
        total = tf.reduce_sum(tf.reshape(error, [batch, -1]), 1)
        count = tf.reduce_sum(tf.reshape(weights, [batch, -1]), 1)
        return total / (2.0 * tf.maximum(count, 1.0))

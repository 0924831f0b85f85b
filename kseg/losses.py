"""Segmentation losses for sparse label maps with an ignore index.

All losses take ``y_true`` as integer label maps ``[B, H, W]`` (or ``[B, H, W, 1]``) and
``y_pred`` as class scores ``[B, H, W, C]``: logits by default (``from_logits=True``),
or probabilities. Pixels labelled ``ignore_index`` (255) contribute nothing.
Losses combine with ``+`` and scalar ``*``:

Example:
    >>> import kseg
    >>> loss = kseg.losses.CrossEntropy() + 0.5 * kseg.losses.Dice()
    >>> model.compile(optimizer="adam", loss=loss)  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kseg.constants import IGNORE_INDEX
from kseg.loss_weights import unet_weight_map

__all__ = [
    "CrossEntropy",
    "Dice",
    "Focal",
    "WeightedSum",
    "class_weights_from_frequency",
    "unet_weight_map",
]

_EPSILON = 1e-7


class _Combinable:
    """Lets losses be added and scaled into a ``WeightedSum``."""

    def __add__(self, other):
        if not isinstance(other, keras.losses.Loss):
            return NotImplemented
        left = self if isinstance(self, WeightedSum) else WeightedSum([self], [1.0])
        right = other if isinstance(other, WeightedSum) else WeightedSum([other], [1.0])
        return WeightedSum(left.losses + right.losses, left.weights + right.weights)

    def __mul__(self, factor):
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.number)):
            return NotImplemented
        if isinstance(self, WeightedSum):
            return WeightedSum(self.losses, [w * float(factor) for w in self.weights])
        return WeightedSum([self], [float(factor)])

    __rmul__ = __mul__


class _PixelLoss(_Combinable, keras.losses.Loss):
    """Shared argument checks and label handling of the per-pixel losses."""

    def __init__(
        self,
        ignore_index=IGNORE_INDEX,
        class_weights=None,
        from_logits=True,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))
        ):
            raise ValueError(
                f"ignore_index must be an integer or None. Received: ignore_index={ignore_index!r}"
            )
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        if class_weights is not None:
            weights = np.asarray(class_weights, dtype=np.float64)
            if (
                weights.ndim != 1
                or weights.size == 0
                or not np.all(np.isfinite(weights))
                or np.any(weights < 0)
            ):
                raise ValueError(
                    f"class_weights must be a non-empty 1-D list of finite non-negative numbers. Received: class_weights={class_weights!r}"
                )
            class_weights = [float(w) for w in weights]
        self.class_weights = class_weights
        self.from_logits = bool(from_logits)

    def _labels(self, y_true, y_pred):
        """Returns (labels with ignored pixels set to 0, valid mask as float, num_classes)."""
        num_classes = y_pred.shape[-1]
        if num_classes is None:
            raise ValueError("y_pred must have a known number of classes in its last axis")
        if self.class_weights is not None and len(self.class_weights) != num_classes:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} entries but y_pred has {num_classes} classes"
            )
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank is not None and y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, axis=-1)
        labels = tf.cast(tf.round(tf.cast(y_true, tf.float32)), tf.int32)
        valid = (
            tf.ones_like(labels, dtype=tf.bool)
            if self.ignore_index is None
            else labels != self.ignore_index
        )
        in_range = (labels >= 0) & (labels < num_classes)
        tf.debugging.assert_equal(
            tf.reduce_all(in_range | ~valid),
            True,
            message=f"{self.name}: y_true holds a label outside [0, {num_classes}) that is not "
            f"the ignore index {self.ignore_index}",
        )
        labels = tf.where(valid, labels, 0)
        return labels, tf.cast(valid, y_pred.dtype), num_classes

    def _pixel_weights(self, labels, valid, dtype):
        if self.class_weights is None:
            return valid
        return tf.gather(tf.constant(self.class_weights, dtype=dtype), labels) * valid

    def _log_probs(self, y_pred):
        if self.from_logits:
            return tf.nn.log_softmax(y_pred, axis=-1)
        return tf.math.log(tf.clip_by_value(y_pred, _EPSILON, 1.0))

    @staticmethod
    def _weighted_mean_per_pixel(values, weights):
        # Scaled so that the default mean over all pixels equals sum(w * l) / sum(w):
        # ignored pixels neither add loss nor dilute the mean.
        scale = tf.math.divide_no_nan(
            tf.cast(tf.size(weights), weights.dtype), tf.reduce_sum(weights)
        )
        return values * weights * scale

    def get_config(self):
        config = super().get_config()
        config.update(
            ignore_index=self.ignore_index,
            class_weights=self.class_weights,
            from_logits=self.from_logits,
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class CrossEntropy(_PixelLoss):
    """Pixel-wise cross-entropy averaged over non-ignored pixels, optionally class-weighted.

    With ``class_weights`` the mean is ``sum(w[y] * nll) / sum(w[y])`` (as PyTorch's
    ``CrossEntropyLoss(weight=..., ignore_index=...)``).

    Example:
        >>> loss = CrossEntropy(ignore_index=255, class_weights=[0.5, 1.0, 2.0])
        >>> float(loss(np.array([[0, 255]]), np.array([[[2.0, 0.0, 0.0], [0.0, 9.0, 0.0]]])))  # doctest: +ELLIPSIS
        0.2395...
    """

    def __init__(
        self,
        ignore_index=IGNORE_INDEX,
        class_weights=None,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="cross_entropy",
        dtype=None,
    ):
        super().__init__(ignore_index, class_weights, from_logits, reduction, name, dtype)

    def call(self, y_true, y_pred):
        labels, valid, _ = self._labels(y_true, y_pred)
        log_probs = self._log_probs(y_pred)
        nll = -tf.squeeze(
            tf.gather(log_probs, labels[..., None], axis=-1, batch_dims=labels.shape.rank), -1
        )
        return self._weighted_mean_per_pixel(nll, self._pixel_weights(labels, valid, y_pred.dtype))


@keras.saving.register_keras_serializable(package="kseg")
class Focal(_PixelLoss):
    """Focal loss (Lin et al. 2017): ``-(1 - p_t)^gamma * log(p_t)``, class weights as ``alpha``.

    Averaged over non-ignored pixels like ``CrossEntropy``; ``gamma=0`` equals it.

    Example:
        >>> loss = Focal(gamma=2.0)
        >>> model.compile(optimizer="adam", loss=loss)  # doctest: +SKIP
    """

    def __init__(
        self,
        gamma=2.0,
        ignore_index=IGNORE_INDEX,
        class_weights=None,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="focal",
        dtype=None,
    ):
        super().__init__(ignore_index, class_weights, from_logits, reduction, name, dtype)
        if (
            isinstance(gamma, bool)
            or not isinstance(gamma, (int, float))
            or not np.isfinite(gamma)
            or gamma < 0
        ):
            raise ValueError(f"gamma must be a finite number >= 0. Received: gamma={gamma!r}")
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        labels, valid, _ = self._labels(y_true, y_pred)
        log_probs = self._log_probs(y_pred)
        log_pt = tf.squeeze(
            tf.gather(log_probs, labels[..., None], axis=-1, batch_dims=labels.shape.rank), -1
        )
        focal = -tf.pow(1.0 - tf.exp(log_pt), self.gamma) * log_pt
        return self._weighted_mean_per_pixel(
            focal, self._pixel_weights(labels, valid, y_pred.dtype)
        )

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="kseg")
class Dice(_PixelLoss):
    """Soft Dice loss, per image: ``1 - mean_c (2|P∩T| + s) / (|P| + |T| + s)``.

    Ignored pixels are masked out of both the prediction and the target. A class absent
    from an image's target and prediction scores 1 (no penalty) thanks to ``smooth``.
    ``class_weights`` turn the class mean into a weighted mean. Returns one value per image.

    Example:
        >>> loss = Dice(smooth=1.0)
        >>> model.compile(optimizer="adam", loss=kseg.losses.CrossEntropy() + loss)  # doctest: +SKIP
    """

    def __init__(
        self,
        smooth=1.0,
        ignore_index=IGNORE_INDEX,
        class_weights=None,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="dice",
        dtype=None,
    ):
        super().__init__(ignore_index, class_weights, from_logits, reduction, name, dtype)
        if (
            isinstance(smooth, bool)
            or not isinstance(smooth, (int, float))
            or not np.isfinite(smooth)
            or smooth < 0
        ):
            raise ValueError(f"smooth must be a finite number >= 0. Received: smooth={smooth!r}")
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        labels, valid, num_classes = self._labels(y_true, y_pred)
        probs = tf.nn.softmax(y_pred, axis=-1) if self.from_logits else y_pred
        target = tf.one_hot(labels, num_classes, dtype=y_pred.dtype)
        mask = valid[..., None]
        spatial_axes = list(range(1, y_pred.shape.rank - 1))
        intersection = tf.reduce_sum(probs * target * mask, axis=spatial_axes)
        sizes = tf.reduce_sum((probs + target) * mask, axis=spatial_axes)
        dice = (2.0 * intersection + self.smooth) / (sizes + self.smooth + _EPSILON)
        if self.class_weights is None:
            return 1.0 - tf.reduce_mean(dice, axis=-1)
        weights = tf.constant(self.class_weights, dtype=y_pred.dtype)
        return 1.0 - tf.reduce_sum(dice * weights, axis=-1) / tf.reduce_sum(weights)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="kseg")
class WeightedSum(_Combinable, keras.losses.Loss):
    """A weighted sum of losses, each reduced on its own: ``Σ w_i · loss_i(y_true, y_pred)``.

    Usually made with operators: ``CrossEntropy() + 0.5 * Dice()``.

    Example:
        >>> loss = WeightedSum([CrossEntropy(), Dice()], [1.0, 0.5])
        >>> loss.weights
        [1.0, 0.5]
    """

    def __init__(
        self, losses, weights=None, name="weighted_sum", reduction="sum_over_batch_size", dtype=None
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        losses = [
            keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss for loss in losses
        ]
        if not losses or not all(isinstance(loss, keras.losses.Loss) for loss in losses):
            raise ValueError(
                f"losses must be a non-empty list of keras.losses.Loss. Received: losses={losses!r}"
            )
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses) or not all(np.isfinite(w) for w in weights):
            raise ValueError(
                f"weights must be {len(losses)} finite numbers. Received: weights={weights!r}"
            )
        self.losses = list(losses)
        self.weights = weights

    def call(self, y_true, y_pred):
        return tf.add_n([w * loss(y_true, y_pred) for loss, w in zip(self.losses, self.weights)])

    def get_config(self):
        config = super().get_config()
        config.update(
            losses=[keras.saving.serialize_keras_object(loss) for loss in self.losses],
            weights=self.weights,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["losses"] = [
            keras.saving.deserialize_keras_object(loss) for loss in config["losses"]
        ]
        return cls(**config)


def class_weights_from_frequency(labels, num_classes, power=0.5, ignore_index=IGNORE_INDEX):
    """Class weights that grow as classes get rarer: ``w_c ∝ frequency_c ** -power``.

    ``power=1`` is inverse-frequency balancing (median-frequency balancing up to scale, as
    SegNet), ``0.5`` inverse square root, ``0`` uniform. The weights are scaled to mean 1 over
    the classes present; a class with no pixels gets the largest weight of the others. Pass the
    result as ``class_weights`` to ``CrossEntropy``, ``Focal`` or ``Dice``.

    Args:
        labels: label maps (an array of any shape), or a ``tf.data.Dataset`` (or other
            iterable) of label batches or of ``(image, label)`` pairs, counted batch by batch.
        num_classes: number of classes; labels must lie in ``[0, num_classes)`` or equal
            ``ignore_index``.
        power: the exponent, a finite number ``>= 0``.
        ignore_index: label left out of the counts (None: none).

    Returns:
        A list of ``num_classes`` floats.

    Example:
        >>> weights = class_weights_from_frequency([[0, 0, 0, 1], [0, 0, 0, 255]], 2, power=1.0)
        >>> [round(w, 3) for w in weights]  # pixel shares 6/7 and 1/7
        [0.286, 1.714]
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes!r}"
        )
    if (
        isinstance(power, bool)
        or not isinstance(power, (int, float, np.number))
        or not np.isfinite(power)
        or power < 0
    ):
        raise ValueError(f"power must be a finite number >= 0. Received: power={power!r}")
    pairs = not isinstance(labels, (np.ndarray, list, tuple, tf.Tensor))
    counts = np.zeros(num_classes, dtype=np.int64)
    for batch in labels if pairs else [labels]:
        if pairs and isinstance(batch, (tuple, list)) and len(batch) == 2:
            batch = batch[1]  # (image, label) pairs
        values = np.asarray(batch).reshape(-1)
        if ignore_index is not None:
            values = values[values != ignore_index]
        if not np.issubdtype(values.dtype, np.integer):
            fractional = values[~np.isfinite(values) | (values != np.round(values))]
            if fractional.size:
                raise ValueError(
                    f"labels must be integers. Received: a label value {float(fractional[0])}"
                )
        values = values.astype(np.int64)
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise ValueError(
                f"labels hold the value {int(bad[0])}, outside [0, {num_classes}) and not the ignore index {ignore_index}"
            )
        counts += np.bincount(values, minlength=num_classes)
    if not counts.any():
        raise ValueError(
            "labels hold no pixel to count (all are the ignore index, or there are none)"
        )
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = (counts[present] / counts.sum()) ** -float(power)
    weights /= weights[present].mean()
    weights[~present] = weights[present].max()
    return [float(w) for w in weights]

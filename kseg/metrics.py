"""Segmentation metrics: a confusion matrix and the survey's scores computed from it.

Conventions:
- Rows of the confusion matrix are the ground truth, columns the prediction.
- Pixels whose label is ``ignore_index`` (255 by default) are not counted.
- Per-class scores with a zero denominator are NaN. A class absent from both the truth and
  the prediction has no IoU (NaN) and is left out of ``mean_iou``; ``mean_accuracy`` averages
  over classes present in the truth. A matrix with no counted pixel gives NaN everywhere.

Example:
    >>> import numpy as np, kseg
    >>> cm = kseg.metrics.confusion_matrix([[0, 1], [1, 255]], [[0, 1], [0, 1]], num_classes=2)
    >>> cm.tolist()
    [[1, 0], [1, 1]]
    >>> round(kseg.metrics.scores(cm)["mean_iou"], 4)
    0.5
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kseg.constants import IGNORE_INDEX
from kseg.instance_metrics import coco_evaluate, panoptic_quality

__all__ = [
    "confusion_matrix",
    "scores",
    "ConfusionMatrixMetric",
    "MeanIoU",
    "PixelAccuracy",
    "MeanAccuracy",
    "FrequencyWeightedIoU",
    "MeanF1",
    "ClassIoU",
    "ClassF1",
    "change_scores",
    "cohen_kappa",
    "CohenKappa",
    "coco_evaluate",
    "panoptic_quality",
]


def _check_num_classes(num_classes):
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def _labels_from_prediction(y_true, y_pred, num_classes):
    """Turns scores [..., C] into a label map, or passes a label map through."""
    if y_pred.ndim == y_true.ndim + 1:
        if y_pred.shape[-1] != num_classes:
            raise ValueError(
                f"y_pred has {y_pred.shape[-1]} class scores in its last axis, but num_classes is {num_classes}"
            )
        return np.argmax(y_pred, axis=-1)
    return y_pred


def confusion_matrix(y_true, y_pred, num_classes, ignore_index=IGNORE_INDEX):
    """Counts (truth, prediction) pairs over all pixels that are not ``ignore_index``.

    Args:
        y_true: integer label map(s) of any shape, e.g. ``[B, H, W]``.
        y_pred: a label map of the same shape, or class scores (probabilities or
            logits) with one more trailing axis of size ``num_classes``.
        num_classes: number of classes C.
        ignore_index: label value that is skipped (None to count every pixel).

    Returns:
        ``np.ndarray`` int64 ``[C, C]``; rows are the truth, columns the prediction.

    Raises:
        ValueError: shapes differ, or a label lies outside ``[0, C)`` and is not the ignore index.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 1, 0], num_classes=2).tolist()
        [[1, 0], [1, 1]]
    """
    num_classes = _check_num_classes(num_classes)
    y_true = np.asarray(y_true)
    y_pred = _labels_from_prediction(y_true, np.asarray(y_pred), num_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    if y_true.size and not np.issubdtype(y_true.dtype, np.integer):
        if not np.all(np.isfinite(y_true)) or np.any(y_true != np.round(y_true)):
            raise ValueError("y_true must hold integer class labels; it holds non-integer values")
    y_true = y_true.astype(np.int64).ravel()
    y_pred = y_pred.astype(np.int64).ravel()
    keep = np.ones_like(y_true, dtype=bool) if ignore_index is None else y_true != ignore_index
    y_true, y_pred = y_true[keep], y_pred[keep]
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        bad = (values < 0) | (values >= num_classes)
        if np.any(bad):
            raise ValueError(
                f"{name} holds label {int(values[bad][0])}, outside [0, {num_classes}) "
                f"and not the ignore index {ignore_index}"
            )
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _divide(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanmean(values):
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def scores(cm):
    """Computes the survey's scores from a confusion matrix (rows truth, columns prediction).

    Returns a dict with floats ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``,
    ``fw_iou`` (frequency-weighted IoU), per-class arrays ``iou``, ``precision``,
    ``recall``, ``f1`` (NaN where undefined), and ``normalized_confusion_matrix``
    (each row divided by its sum; rows of absent classes are NaN).

    Example:
        >>> s = scores([[3, 1], [0, 4]])
        >>> s["pixel_accuracy"], s["iou"].round(2).tolist()
        (0.875, [0.75, 0.8])
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C]. Received: shape={cm.shape}")
    if np.any(cm < 0) or not np.all(np.isfinite(cm)):
        raise ValueError("confusion matrix must hold finite non-negative counts")
    true_positives = np.diag(cm)
    truth_counts = cm.sum(axis=1)
    predicted_counts = cm.sum(axis=0)
    total = cm.sum()
    union = truth_counts + predicted_counts - true_positives
    iou = _divide(true_positives, union)
    recall = _divide(true_positives, truth_counts)
    precision = _divide(true_positives, predicted_counts)
    f1 = _divide(2 * true_positives, truth_counts + predicted_counts)
    if total > 0:
        frequency = truth_counts / total
        present = truth_counts > 0
        fw_iou = float(np.sum(frequency[present] * iou[present]))
        pixel_accuracy = float(true_positives.sum() / total)
    else:
        fw_iou = pixel_accuracy = float("nan")
    return {
        "pixel_accuracy": pixel_accuracy,
        "mean_accuracy": _nanmean(recall),
        "mean_iou": _nanmean(iou),
        "fw_iou": fw_iou,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "normalized_confusion_matrix": _divide(cm, truth_counts[:, None]),
    }


def cohen_kappa(cm):
    """Cohen's kappa of a confusion matrix: agreement beyond chance, ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the overall accuracy and ``p_e = sum_c truth_c * predicted_c / total^2`` the
    accuracy of a prediction drawn at random with the same class frequencies. 1 is perfect,
    0 chance level; NaN for an empty matrix or when ``p_e`` is 1 (one class everywhere).

    Example:
        >>> round(cohen_kappa([[45, 5], [5, 45]]), 4)  # p_o 0.9, p_e 0.5
        0.8
    """
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    if total <= 0:
        return float("nan")
    observed = np.trace(cm) / total
    expected = float(np.sum(cm.sum(axis=0) * cm.sum(axis=1))) / total**2
    return float("nan") if expected >= 1 else float((observed - expected) / (1 - expected))


def change_scores(cm, change_class=1):
    """The change-detection scores of a confusion matrix (rows truth, columns prediction).

    Returns floats ``precision``, ``recall``, ``f1`` and ``iou`` of the change class,
    ``overall_accuracy`` (all classes) and ``kappa`` (Cohen's, see :func:`cohen_kappa`); NaN
    where a denominator is 0 (e.g. precision with no pixel predicted as change).

    Args:
        cm: ``[C, C]`` counts, e.g. ``confusion_matrix(truth, predicted, 2)``.
        change_class: the class that means "changed" (1 in kseg's change datasets).

    Example:
        >>> s = change_scores([[90, 2], [3, 5]])  # TP 5, FP 2, FN 3
        >>> round(s["precision"], 4), round(s["recall"], 4), round(s["f1"], 4), s["iou"]
        (0.7143, 0.625, 0.6667, 0.5)
    """
    result = scores(cm)
    if isinstance(change_class, bool) or not isinstance(change_class, (int, np.integer)):
        raise ValueError(
            f"change_class must be an integer. Received: change_class={change_class!r}"
        )
    if not 0 <= change_class < len(result["iou"]):
        raise ValueError(
            f"change_class must be in [0, {len(result['iou'])}). "
            f"Received: change_class={change_class!r}"
        )
    return {
        "precision": float(result["precision"][change_class]),
        "recall": float(result["recall"][change_class]),
        "f1": float(result["f1"][change_class]),
        "iou": float(result["iou"][change_class]),
        "overall_accuracy": result["pixel_accuracy"],
        "kappa": cohen_kappa(cm),
    }


@keras.saving.register_keras_serializable(package="kseg")
class ConfusionMatrixMetric(keras.metrics.Metric):
    """Streaming confusion matrix; subclasses report one score of it.

    ``update_state(y_true, y_pred)`` takes label maps ``[B, H, W]`` (or ``[B, H, W, 1]``)
    and either label maps or class scores ``[B, H, W, C]`` (logits or probabilities;
    the argmax is taken). ``result()`` of this base class is the mean IoU;
    ``confusion_matrix()`` and ``scores()`` give everything.

    Example:
        >>> m = ConfusionMatrixMetric(num_classes=3)
        >>> m.update_state([[0, 1, 2]], [[0, 2, 2]])
        >>> m.confusion_matrix().tolist()
        [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    """

    score_name = "mean_iou"

    def __init__(self, num_classes, ignore_index=IGNORE_INDEX, name=None, dtype=None):
        super().__init__(name=name or self.score_name, dtype=dtype)
        self.num_classes = _check_num_classes(num_classes)
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))
        ):
            raise ValueError(
                f"ignore_index must be an integer or None. Received: ignore_index={ignore_index!r}"
            )
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.total_cm = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="int64",
            name="total_confusion_matrix",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} does not take sample_weight; mark pixels with ignore_index"
            )
        y_true = tf.convert_to_tensor(y_true)
        y_pred = tf.convert_to_tensor(y_pred)
        if y_true.shape.rank is not None and y_pred.shape.rank is not None:
            if (
                y_true.shape.rank == y_pred.shape.rank
                and y_true.shape[-1] == 1
                and y_pred.shape[-1] != 1
            ):
                y_true = tf.squeeze(y_true, -1)
            if y_pred.shape.rank == y_true.shape.rank + 1:
                y_pred = tf.argmax(y_pred, axis=-1)
        y_true = tf.reshape(tf.cast(y_true, tf.int64), [-1])
        y_pred = tf.reshape(tf.cast(y_pred, tf.int64), [-1])
        tf.debugging.assert_equal(
            tf.size(y_true), tf.size(y_pred), message=f"{self.name}: y_true and y_pred sizes differ"
        )
        if self.ignore_index is not None:
            keep = tf.not_equal(y_true, self.ignore_index)
            y_true = tf.boolean_mask(y_true, keep)
            y_pred = tf.boolean_mask(y_pred, keep)
        c = self.num_classes
        in_range = tf.reduce_all((y_true >= 0) & (y_true < c) & (y_pred >= 0) & (y_pred < c))
        tf.debugging.assert_equal(
            in_range,
            True,
            message=f"{self.name}: a label is outside [0, {c}) and is not the ignore index {self.ignore_index}",
        )
        counts = tf.math.bincount(
            y_true * c + y_pred, minlength=c * c, maxlength=c * c, dtype=tf.int64
        )
        self.total_cm.assign_add(tf.reshape(counts, (c, c)))

    def _score(self, cm):
        cm = tf.cast(cm, tf.float64)
        tp = tf.linalg.diag_part(cm)
        truth = tf.reduce_sum(cm, axis=1)
        pred = tf.reduce_sum(cm, axis=0)
        total = tf.reduce_sum(cm)
        name = self.score_name
        if name == "pixel_accuracy":
            return tf.math.divide_no_nan(tf.reduce_sum(tp), total)
        if name == "mean_accuracy":
            present = truth > 0
            return tf.reduce_mean(tf.boolean_mask(tp / tf.where(present, truth, 1.0), present))
        union = truth + pred - tp
        iou = tp / tf.where(union > 0, union, 1.0)
        if name == "mean_iou":
            return tf.reduce_mean(tf.boolean_mask(iou, union > 0))
        if name == "fw_iou":
            return tf.math.divide_no_nan(tf.reduce_sum(truth * iou), total)
        # F1 = 2 TP / (truth + predicted); undefined (NaN) where a class is in neither.
        f1 = 2.0 * tp / tf.where(union > 0, truth + pred, 1.0)
        if name == "mean_f1":
            return tf.reduce_mean(tf.boolean_mask(f1, union > 0))
        nan = tf.constant(float("nan"), tf.float64)
        if name == "kappa":
            observed = tf.math.divide_no_nan(tf.reduce_sum(tp), total)
            expected = tf.math.divide_no_nan(tf.reduce_sum(truth * pred), total * total)
            return tf.where(expected < 1, (observed - expected) / (1 - expected), nan)
        if name == "class_iou":
            return tf.where(union[self.class_id] > 0, iou[self.class_id], nan)
        if name == "class_f1":
            return tf.where(union[self.class_id] > 0, f1[self.class_id], nan)
        raise ValueError(f"unknown score {name!r}")

    def result(self):
        return tf.cast(self._score(self.total_cm), self.dtype)

    def reset_state(self):
        self.total_cm.assign(tf.zeros_like(self.total_cm))

    def confusion_matrix(self):
        """The accumulated matrix as an int64 numpy array ``[C, C]``."""
        return np.asarray(keras.ops.convert_to_numpy(self.total_cm), dtype=np.int64)

    def scores(self):
        """All scores of the accumulated matrix (see ``kseg.metrics.scores``)."""
        return scores(self.confusion_matrix())

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "name": self.name,
            "dtype": self.dtype,
        }


@keras.saving.register_keras_serializable(package="kseg")
class MeanIoU(ConfusionMatrixMetric):
    """Streaming mean intersection-over-union for ``compile(metrics=...)``.

    Takes logits or probabilities ``[B, H, W, C]`` (argmax taken) or label maps.

    Example:
        >>> model.compile(optimizer="adam", loss=kseg.losses.CrossEntropy(),
        ...               metrics=[kseg.metrics.MeanIoU(num_classes=21)])  # doctest: +SKIP
    """

    score_name = "mean_iou"


@keras.saving.register_keras_serializable(package="kseg")
class PixelAccuracy(ConfusionMatrixMetric):
    """Streaming pixel accuracy (correct pixels / counted pixels).

    Example:
        >>> m = PixelAccuracy(num_classes=2); m.update_state([[0, 1]], [[0, 0]])
        >>> float(m.result())
        0.5
    """

    score_name = "pixel_accuracy"


@keras.saving.register_keras_serializable(package="kseg")
class MeanAccuracy(ConfusionMatrixMetric):
    """Streaming mean per-class accuracy (recall averaged over classes in the truth).

    Example:
        >>> m = MeanAccuracy(num_classes=2); m.update_state([[0, 1, 1]], [[0, 0, 1]])
        >>> float(m.result())
        0.75
    """

    score_name = "mean_accuracy"


@keras.saving.register_keras_serializable(package="kseg")
class FrequencyWeightedIoU(ConfusionMatrixMetric):
    """Streaming frequency-weighted IoU (per-class IoU weighted by the class's pixel share).

    Example:
        >>> m = FrequencyWeightedIoU(num_classes=2); m.update_state([[0, 0, 1]], [[0, 0, 0]])
        >>> round(float(m.result()), 4)
        0.4444
    """

    score_name = "fw_iou"


@keras.saving.register_keras_serializable(package="kseg")
class MeanF1(ConfusionMatrixMetric):
    """Streaming mean F1 (Dice) score over the classes present in the truth or the prediction.

    Per class ``F1 = 2 TP / (truth pixels + predicted pixels)``, as in :func:`scores`.

    Example:
        >>> m = MeanF1(num_classes=2); m.update_state([[0, 0, 1]], [[0, 0, 0]])
        >>> round(float(m.result()), 4)  # class 0: 4/5, class 1: 0
        0.4
    """

    score_name = "mean_f1"


def _check_class_id(metric, class_id, num_classes):
    if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)):
        raise ValueError(f"{metric}: class_id must be an integer. Received: class_id={class_id!r}")
    if not 0 <= class_id < num_classes:
        raise ValueError(
            f"{metric}: class_id must be in [0, num_classes={num_classes}). "
            f"Received: class_id={class_id!r}"
        )
    return int(class_id)


class _ClassScore(ConfusionMatrixMetric):
    # One class's score; NaN while the class is in neither the truth nor the prediction.
    prefix = None

    def __init__(self, num_classes, class_id, ignore_index=IGNORE_INDEX, name=None, dtype=None):
        num_classes = _check_num_classes(num_classes)
        class_id = _check_class_id(type(self).__name__, class_id, num_classes)
        super().__init__(num_classes, ignore_index, name or f"{self.prefix}_{class_id}", dtype)
        self.class_id = class_id

    def get_config(self):
        return {**super().get_config(), "class_id": self.class_id}


@keras.saving.register_keras_serializable(package="kseg")
class ClassIoU(_ClassScore):
    """Streaming IoU of one class (``class_id``), logged as ``iou_<class_id>`` by default.

    Use one per class of interest: ``metrics=[ClassIoU(21, c) for c in range(21)]``.

    Example:
        >>> m = ClassIoU(num_classes=3, class_id=2); m.update_state([[0, 1, 2]], [[0, 2, 2]])
        >>> float(m.result())  # TP 1, union 2
        0.5
    """

    score_name = "class_iou"
    prefix = "iou"


@keras.saving.register_keras_serializable(package="kseg")
class ClassF1(_ClassScore):
    """Streaming F1 (Dice) score of one class (``class_id``), logged as ``f1_<class_id>``.

    Example:
        >>> m = ClassF1(num_classes=3, class_id=2); m.update_state([[0, 1, 2]], [[0, 2, 2]])
        >>> round(float(m.result()), 4)  # 2 TP / (1 true + 2 predicted)
        0.6667
    """

    score_name = "class_f1"
    prefix = "f1"


@keras.saving.register_keras_serializable(package="kseg")
class CohenKappa(ConfusionMatrixMetric):
    """Streaming Cohen's kappa (see :func:`cohen_kappa`), e.g. for change detection.

    Example:
        >>> m = CohenKappa(num_classes=2); m.update_state([[0, 0, 1, 1]], [[0, 0, 1, 0]])
        >>> float(m.result())  # p_o 0.75, p_e 0.5
        0.5
    """

    score_name = "kappa"

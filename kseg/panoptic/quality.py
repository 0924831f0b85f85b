"""Panoptic quality (Kirillov, He, Girshick, Rother, Dollár, CVPR 2019) on panoptic id maps.

A compact implementation for the panoptic benchmarks and tests, following the COCO panoptic
API: segments match when they have the same class and IoU > 0.5; the IoU's union leaves out
the predicted segment's void pixels; an unmatched predicted segment more than half void is not
a false positive; predicted void is not evaluated. There are no crowd regions in these maps
(a thing-class segment with instance 0 is an ordinary segment here).
"""

from __future__ import annotations

import numpy as np

from kseg.panoptic.targets import LABEL_DIVISOR, VOID_LABEL


def _segments(panoptic, label_divisor, void_label):
    ids, counts = np.unique(panoptic, return_counts=True)
    return {
        int(i): int(c)
        for i, c in zip(ids, counts)
        if i >= 0 and int(i) // label_divisor != void_label
    }


def panoptic_quality(
    predictions, truths, thing_classes=(), label_divisor=LABEL_DIVISOR, void_label=VOID_LABEL
):
    """PQ, SQ and RQ over a set of images: overall, things, stuff and per class.

    Per class ``c``: ``PQ_c = sum of matched IoUs / (TP + FP / 2 + FN / 2)``,
    ``SQ_c = sum of IoUs / TP``, ``RQ_c = TP / (TP + FP / 2 + FN / 2)``; the overall figures
    average the classes that occur (TP + FP + FN > 0), as the COCO panoptic API does.

    Args:
        predictions, truths: int panoptic maps ``[H, W]`` (or batches ``[B, H, W]``, or lists
            of maps of any sizes), ``id = class * label_divisor + instance``.
        thing_classes: classes reported under ``things`` (the rest under ``stuff``).
        label_divisor: as above.
        void_label: the void class (ignored in the truth).

    Returns:
        A dict: ``pq``, ``sq``, ``rq``, ``things`` and ``stuff`` (each a dict of ``pq``, ``sq``,
        ``rq``, ``classes``), ``per_class`` (``{class: {pq, sq, rq, tp, fp, fn}}``).

    Example:
        >>> truth = np.array([[1001, 1001, 1002, 1002]])
        >>> pred = np.array([[1005, 1005, 1005, 1006]])   # one match (IoU 2/3), one FP, one FN
        >>> round(panoptic_quality(pred, truth, thing_classes=(1,))["pq"], 4)
        0.3333
    """
    if isinstance(predictions, np.ndarray) and predictions.ndim == 2:
        predictions, truths = [predictions], [truths]
    if len(predictions) != len(truths):
        raise ValueError(
            "panoptic_quality: as many predictions as truths are needed. Received: "
            f"{len(predictions)} predictions, {len(truths)} truths"
        )
    stats = {}

    def entry(cls):
        return stats.setdefault(cls, {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})

    for index, (pred, truth) in enumerate(zip(predictions, truths)):
        pred = np.asarray(pred, np.int64)
        truth = np.asarray(truth, np.int64)
        if pred.shape != truth.shape:
            raise ValueError(
                f"panoptic_quality: prediction {index} has shape {pred.shape}, its truth "
                f"{truth.shape}"
            )
        truth_void = (truth < 0) | (truth // label_divisor == void_label)
        pred_segments = _segments(pred, label_divisor, void_label)
        truth_segments = _segments(truth, label_divisor, void_label)
        pairs, pair_counts = np.unique(
            np.stack([pred.ravel(), np.where(truth_void, -1, truth).ravel()]),
            axis=1,
            return_counts=True,
        )
        overlap = {(int(p), int(t)): int(c) for (p, t), c in zip(pairs.T, pair_counts)}
        matched_pred, matched_truth = set(), set()
        for (p, t), inter in overlap.items():
            if p not in pred_segments or t not in truth_segments:
                continue
            if p // label_divisor != t // label_divisor:
                continue
            union = pred_segments[p] + truth_segments[t] - inter - overlap.get((p, -1), 0)
            iou = inter / union
            if iou > 0.5:
                matched_pred.add(p)
                matched_truth.add(t)
                e = entry(t // label_divisor)
                e["tp"] += 1
                e["iou"] += iou
        for t in truth_segments:
            if t not in matched_truth:
                entry(t // label_divisor)["fn"] += 1
        for p, area in pred_segments.items():
            if p in matched_pred or overlap.get((p, -1), 0) / area > 0.5:
                continue
            entry(p // label_divisor)["fp"] += 1

    per_class = {}
    for cls, e in sorted(stats.items()):
        denominator = e["tp"] + 0.5 * e["fp"] + 0.5 * e["fn"]
        if denominator == 0:
            continue
        sq = e["iou"] / e["tp"] if e["tp"] else 0.0
        rq = e["tp"] / denominator
        per_class[cls] = {
            "pq": sq * rq,
            "sq": sq,
            "rq": rq,
            "tp": e["tp"],
            "fp": e["fp"],
            "fn": e["fn"],
        }
    things = set(int(c) for c in thing_classes)

    def average(selected):
        classes = [c for c in per_class if selected(c)]
        if not classes:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "classes": 0}
        return {
            key: float(np.mean([per_class[c][key] for c in classes])) for key in ("pq", "sq", "rq")
        } | {"classes": len(classes)}

    overall = average(lambda c: True)
    return {
        "pq": overall["pq"],
        "sq": overall["sq"],
        "rq": overall["rq"],
        "things": average(lambda c: c in things),
        "stuff": average(lambda c: c not in things),
        "per_class": per_class,
    }

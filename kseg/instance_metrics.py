"""Instance and panoptic scores: COCO AP through ``pycocotools.COCOeval`` and panoptic quality.

Both are re-exported by :mod:`kseg.metrics` (``kseg.metrics.coco_evaluate``,
``kseg.metrics.panoptic_quality``).

Example:
    >>> import numpy as np, kseg
    >>> truth = np.array([[1001, 1001, 0, 0]])
    >>> kseg.metrics.panoptic_quality(truth, truth, thing_classes=[1])["pq"]
    1.0
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np

from kseg.constants import IGNORE_INDEX, PANOPTIC_LABEL_DIVISOR

COCO_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
"""Names of the twelve numbers of ``COCOeval.stats``, in its order (-1: no ground truth in range)."""


def _coco_ground_truth(annotations):
    from pycocotools.coco import COCO

    if isinstance(annotations, COCO):
        return annotations
    if isinstance(annotations, (str, os.PathLike)):
        with open(annotations, encoding="utf-8") as f:
            annotations = json.load(f)
    if not isinstance(annotations, dict) or "annotations" not in annotations:
        raise ValueError(
            "annotations must be an instances JSON path, its parsed dict or a pycocotools COCO. "
            f"Received: annotations={str(annotations)[:80]}"
        )
    coco = COCO()
    coco.dataset = annotations
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_evaluate(predictions, annotations, iou_types=("bbox", "segm"), verbose=False):
    """COCO detection and mask AP of ``predictions``, by ``pycocotools.COCOeval`` itself.

    Args:
        predictions: COCO result dicts (``image_id``, ``category_id``, ``bbox`` as
            ``[x, y, w, h]``, ``score`` and, for ``"segm"``, an RLE ``segmentation``; see
            :func:`kseg.data.coco_results`), or the path of a JSON file of them.
        annotations: the ground truth: an ``instances_*.json`` path, its parsed dict or a
            ``pycocotools.coco.COCO``. Crowd annotations are handled by COCOeval
            (detections on them are ignored).
        iou_types: any of ``"bbox"`` and ``"segm"``.
        verbose: print COCOeval's summary table.

    Returns:
        ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
        "ARs", "ARm", "ARl"}}`` as floats in [0, 1] (-1 where no ground truth falls in the
        range, as COCOeval). No predictions at all give 0 for every score.

    Example:
        >>> results = kseg.data.coco_results(1, boxes, scores, classes, masks)  # doctest: +SKIP
        >>> coco_evaluate(results, "instances.json")["segm"]["AP50"]  # doctest: +SKIP
        0.62
    """
    from pycocotools.cocoeval import COCOeval

    for iou_type in iou_types:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(
                f"iou_types must hold 'bbox' or 'segm'. Received: iou_type={iou_type!r}"
            )
    coco = _coco_ground_truth(annotations)
    if isinstance(predictions, (str, os.PathLike)):
        with open(predictions, encoding="utf-8") as f:
            predictions = json.load(f)
    predictions = list(predictions)
    if not predictions:
        return {t: dict.fromkeys(COCO_STAT_NAMES, 0.0) for t in iou_types}
    known = set(coco.getImgIds())
    for n, result in enumerate(predictions):
        if result.get("image_id") not in known:
            raise ValueError(
                f"prediction {n} names an image the annotations do not have. "
                f"Received: image_id={result.get('image_id')!r}"
            )
        if "segm" in iou_types and "segmentation" not in result:
            raise ValueError(f"prediction {n} has no 'segmentation', which iou_type 'segm' needs")
    scores = {}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        detections = coco.loadRes([dict(p) for p in predictions])
        for iou_type in iou_types:
            evaluator = COCOeval(coco, detections, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            scores[iou_type] = dict(zip(COCO_STAT_NAMES, map(float, evaluator.stats)))
    if verbose:
        print(output.getvalue())
    return scores


def _check_thing_classes(thing_classes):
    try:
        things = {int(k) for k in thing_classes}
    except (TypeError, ValueError):
        raise ValueError(
            f"thing_classes must be a collection of class indices. Received: thing_classes={thing_classes!r}"
        ) from None
    return things


def _as_maps(value, name):
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, np.ndarray) or (
        isinstance(value, (list, tuple)) and value and np.ndim(value[0]) == 1
    ):
        value = np.asarray(value)
        if value.ndim == 2:
            return [value]
        if value.ndim == 3:
            return list(value)
        raise ValueError(
            f"{name} must be [H, W] or [N, H, W] id maps. Received: {name} shape={value.shape}"
        )
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in value]


class _ClassStat:
    __slots__ = ("iou", "tp", "fp", "fn")

    def __init__(self):
        self.iou, self.tp, self.fp, self.fn = 0.0, 0, 0, 0


def _accumulate(pred, truth, things, divisor, ignore_label, stats, num_classes):
    pred = pred.astype(np.int64)
    truth = truth.astype(np.int64)
    pred_void = (pred // divisor == ignore_label) | (pred < 0)
    truth_void = (truth // divisor == ignore_label) | (truth < 0)
    for name, ids, void in (("pred", pred, pred_void), ("truth", truth, truth_void)):
        if num_classes is not None and np.any(ids[~void] // divisor >= num_classes):
            bad = np.unique(ids[~void][ids[~void] // divisor >= num_classes])[:5].tolist()
            raise ValueError(
                f"{name} holds ids of classes >= num_classes={num_classes}. Received: ids={bad}"
            )
    # Index segments: 0 is void, 1.. the distinct ids.
    gt_ids, gt_index = np.unique(np.where(truth_void, -1, truth), return_inverse=True)
    pr_ids, pr_index = np.unique(np.where(pred_void, -1, pred), return_inverse=True)
    gt_index, pr_index = gt_index.reshape(-1), pr_index.reshape(-1)
    if gt_ids.size and gt_ids[0] != -1:
        gt_ids, gt_index = np.concatenate([[-1], gt_ids]), gt_index + 1
    if pr_ids.size and pr_ids[0] != -1:
        pr_ids, pr_index = np.concatenate([[-1], pr_ids]), pr_index + 1
    joint = np.bincount(gt_index * len(pr_ids) + pr_index, minlength=len(gt_ids) * len(pr_ids))
    joint = joint.reshape(len(gt_ids), len(pr_ids))
    gt_area = joint.sum(axis=1)
    pr_area = joint.sum(axis=0)
    gt_class = gt_ids // divisor
    pr_class = pr_ids // divisor
    gt_crowd = np.isin(gt_class, list(things)) & (gt_ids % divisor == 0)
    crowd_of = {int(gt_class[g]): g for g in range(1, len(gt_ids)) if gt_crowd[g]}
    gt_matched = np.zeros(len(gt_ids), bool)
    pr_matched = np.zeros(len(pr_ids), bool)
    for g, p in zip(*np.nonzero(joint[1:, 1:])):
        g, p = g + 1, p + 1
        if gt_crowd[g] or gt_class[g] != pr_class[p]:
            continue
        union = pr_area[p] + gt_area[g] - joint[g, p] - joint[0, p]
        iou = joint[g, p] / union
        if iou > 0.5:
            stat = stats.setdefault(int(gt_class[g]), _ClassStat())
            stat.tp += 1
            stat.iou += float(iou)
            gt_matched[g] = pr_matched[p] = True
    for g in range(1, len(gt_ids)):
        if not gt_matched[g] and not gt_crowd[g]:
            stats.setdefault(int(gt_class[g]), _ClassStat()).fn += 1
    for p in range(1, len(pr_ids)):
        if pr_matched[p]:
            continue
        # Unmatched predictions mostly on void or on a crowd region of their class are not FP.
        ignored = joint[0, p]
        if int(pr_class[p]) in crowd_of:
            ignored += joint[crowd_of[int(pr_class[p])], p]
        if ignored / pr_area[p] > 0.5:
            continue
        stats.setdefault(int(pr_class[p]), _ClassStat()).fp += 1


def _average(per_class, classes):
    rows = [per_class[k] for k in classes if per_class[k]["n"]]
    if not rows:
        return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0, "classes": 0}
    return {key: float(np.mean([r[key] for r in rows])) for key in ("pq", "sq", "rq")} | {
        "n": len(rows),
        "classes": len(rows),
    }


def panoptic_quality(
    pred,
    truth,
    thing_classes=(),
    *,
    num_classes=None,
    label_divisor=PANOPTIC_LABEL_DIVISOR,
    ignore_label=IGNORE_INDEX,
    void_label=None,
):
    """Panoptic quality (Kirillov et al. 2019) with void and crowd as in the COCO panoptic API.

    The one implementation in kseg: ``kseg.metrics.panoptic_quality`` and
    ``kseg.panoptic.panoptic_quality`` are this function.

    Maps hold ``class * label_divisor + instance`` (see :data:`kseg.constants.PANOPTIC_LABEL_DIVISOR`);
    a class part equal to ``ignore_label`` is void. In ``truth``, instance 0 of a thing class is
    a crowd region. Per image, a predicted and a true segment of one class match when their IoU,
    with the prediction's void pixels taken out of the union, exceeds 0.5 (so matches are
    unique); matches count as TP with their IoU, unmatched true segments (not crowd) as FN,
    unmatched predictions as FP unless more than half of them lies on void or on a crowd region
    of their class. Counts add up over all images, then per class
    ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP`` (0 without TP),
    ``RQ = TP / (TP + FP/2 + FN/2)``; averages are over the classes with any TP, FP or FN.

    Args:
        pred, truth: id maps ``[H, W]``, a batch ``[N, H, W]`` or a list of maps (any sizes,
            paired by position).
        thing_classes: the classes that are things; all others are stuff. Without it there
            are no crowd regions (every class is stuff).
        num_classes: if given, an id of a class ``>= num_classes`` (other than void) is an error.
        label_divisor, ignore_label: the id convention.
        void_label: another name for ``ignore_label`` (the name ``kseg.panoptic`` used).

    Returns:
        ``{"pq", "sq", "rq"}`` over all classes, ``"all"``, ``"things"`` and ``"stuff"`` as
        ``{"pq", "sq", "rq", "n", "classes"}`` (``n`` and ``classes`` both the number of
        classes averaged; NaN scores when 0, where COCO's API would divide by zero),
        and ``"per_class"``: ``{class: {"pq", "sq", "rq", "tp", "fp", "fn", "n"}}``.

    Example:
        >>> truth = np.array([[0, 0, 1001, 1001], [0, 0, 1002, 1002]])
        >>> pred = np.array([[0, 0, 1001, 1001], [0, 0, 1001, 1001]])
        >>> round(panoptic_quality(pred, truth, thing_classes=[1])["things"]["pq"], 4)
        0.0
    """
    if void_label is not None:
        ignore_label = void_label
    things = _check_thing_classes(thing_classes)
    preds, truths = _as_maps(pred, "pred"), _as_maps(truth, "truth")
    if len(preds) != len(truths):
        raise ValueError(
            "pred and truth must hold as many maps. "
            f"Received: len(pred)={len(preds)}, len(truth)={len(truths)}"
        )
    stats = {}
    for n, (p, t) in enumerate(zip(preds, truths)):
        if p.shape != t.shape:
            raise ValueError(
                f"pred and truth maps {n} differ in size. "
                f"Received: pred[{n}].shape={p.shape}, truth[{n}].shape={t.shape}"
            )
        _accumulate(p, t, things, label_divisor, ignore_label, stats, num_classes)
    per_class = {}
    for cls in sorted(stats):
        s = stats[cls]
        denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
        n = int(s.tp + s.fp + s.fn > 0)
        per_class[cls] = {
            "pq": s.iou / denominator if denominator else 0.0,
            "sq": s.iou / s.tp if s.tp else 0.0,
            "rq": s.tp / denominator if denominator else 0.0,
            "tp": s.tp,
            "fp": s.fp,
            "fn": s.fn,
            "n": n,
        }
    overall = _average(per_class, per_class)
    return {
        "pq": overall["pq"],
        "sq": overall["sq"],
        "rq": overall["rq"],
        "all": overall,
        "things": _average(per_class, [k for k in per_class if k in things]),
        "stuff": _average(per_class, [k for k in per_class if k not in things]),
        "per_class": per_class,
    }


__all__ = ["COCO_STAT_NAMES", "coco_evaluate", "panoptic_quality"]

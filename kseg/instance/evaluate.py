"""COCO evaluation of an instance model on samples with ground truth.

Example:
    >>> held_out = list(kseg.data.synthetic_instances(100, (64, 64), seed=1))  # doctest: +SKIP
    >>> evaluate(model, held_out)["segm"]["AP50"]  # doctest: +SKIP
    0.61
"""

from __future__ import annotations

import numpy as np


def detections(model, samples, batch_size=4):
    """COCO result dicts of ``model.detect`` on ``samples`` (image ``n`` is COCO image ``n + 1``).

    Example:
        >>> results = detections(model, samples)  # doctest: +SKIP
        >>> sorted(results[0])  # doctest: +SKIP
        ['bbox', 'category_id', 'image_id', 'score', 'segmentation']
    """
    from kseg.data.coco import coco_results

    results = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        out = model.detect(np.stack([np.asarray(s["image"]) for s in chunk]).astype(np.float32))
        out = {k: np.asarray(v) for k, v in out.items()}
        for b in range(len(chunk)):
            n = int(out["num_detections"][b])
            results += coco_results(
                start + b + 1,
                out["boxes"][b, :n],
                out["scores"][b, :n],
                out["classes"][b, :n],
                out["masks"][b, :n],
            )
    return results


def evaluate(model, samples, batch_size=4, iou_types=("bbox", "segm")):
    """Runs ``model.detect`` on ``samples`` (dicts with ``image``, ``boxes``, ``classes``,
    ``masks``) and scores the detections with :func:`kseg.metrics.coco_evaluate`.

    Masks are thresholded at 0.5; the ground truth is built in memory by
    :func:`kseg.data.instances_to_coco` (image ``n`` of ``samples`` is COCO image ``n + 1``).

    Example:
        >>> scores = evaluate(model, samples)  # doctest: +SKIP
        >>> sorted(scores)  # doctest: +SKIP
        ['bbox', 'segm']
    """
    from kseg.data.coco import instances_to_coco
    from kseg.instance_metrics import coco_evaluate

    samples = [{k: np.asarray(v) for k, v in s.items()} for s in samples]
    results = detections(model, samples, batch_size)
    return coco_evaluate(results, instances_to_coco(samples), iou_types)


__all__ = ["evaluate"]

"""Evaluation reports: the plain-text score table and the files an evaluation writes.

Shared by the ``kseg`` command and :mod:`kseg.demo`, which both print and save evaluations.

Example:
    >>> import numpy as np
    >>> from kseg import metrics, report
    >>> result = metrics.scores(np.array([[3, 1], [0, 4]]))
    >>> print(report.format_scores(result, ["sky", "tree"]).splitlines()[2])
    mean IoU        0.7750
"""

from __future__ import annotations

import json
import os

from kseg import fileio


def format_scores(result, class_names=None):
    """Formats an ``evaluate`` result as a plain-text table (one line per class + the means).

    Example:
        >>> import numpy as np
        >>> from kseg import metrics
        >>> table = format_scores(metrics.scores(np.array([[3, 1], [0, 4]])), ["sky", "tree"])
        >>> table.splitlines()[-1]
        'tree            0.8000  0.8000  1.0000  0.8889'
    """
    lines = [
        f"pixel accuracy  {result['pixel_accuracy']:.4f}",
        f"mean accuracy   {result['mean_accuracy']:.4f}",
        f"mean IoU        {result['mean_iou']:.4f}",
        f"fw IoU          {result['fw_iou']:.4f}",
        "",
        f"{'class':<14}{'IoU':>8}{'prec.':>8}{'recall':>8}{'F1':>8}",
    ]
    for c, iou in enumerate(result["iou"]):
        name = class_names[c] if class_names else str(c)
        precision, recall, f1 = result["precision"][c], result["recall"][c], result["f1"][c]
        lines.append(f"{name:<14}{iou:8.4f}{precision:8.4f}{recall:8.4f}{f1:8.4f}")
    return "\n".join(lines)


def _jsonable(result):
    out = {}
    for key, value in result.items():
        if hasattr(value, "tolist"):
            value = value.tolist()
        out[key] = value
    return json.loads(json.dumps(out, default=float).replace("NaN", "null"))


def write_evaluation(result, output_dir, class_names=None):
    """Writes metrics.json and confusion_matrix.png into ``output_dir``; returns their paths.

    Example:
        >>> import numpy as np
        >>> from kseg import metrics
        >>> paths = write_evaluation(metrics.scores(np.eye(2) * 5), "/tmp/eval")  # doctest: +SKIP
    """
    from kseg import viz

    os.makedirs(output_dir, exist_ok=True)
    metrics_path = os.path.join(output_dir, "metrics.json")
    record = _jsonable(result)
    if class_names:
        record["class_names"] = list(class_names)
    with fileio.atomic_open(metrics_path, "w") as f:
        json.dump(record, f, indent=2)
    names = class_names or [str(i) for i in range(len(result["iou"]))]
    cm_path = viz.plot_confusion_matrix(
        result["confusion_matrix"], os.path.join(output_dir, "confusion_matrix.png"), names
    )
    return metrics_path, cm_path


__all__ = ["format_scores", "write_evaluation"]

"""Panoptic quality (Kirillov et al. 2019): kept as a name; the one definition is in kseg.metrics.

``kseg.panoptic.panoptic_quality`` and ``kseg.metrics.panoptic_quality`` are the same function,
:func:`kseg.instance_metrics.panoptic_quality` (COCO panoptic API conventions: matches at
IoU > 0.5, void left out of the union, crowd regions = instance 0 of a thing class in the truth).

Example:
    >>> import numpy as np
    >>> from kseg.panoptic.quality import panoptic_quality
    >>> truth = np.array([[1001, 1001, 1002, 1002]])
    >>> pred = np.array([[1005, 1005, 1005, 1006]])  # one match (IoU 2/3), one FP, one FN
    >>> round(panoptic_quality(pred, truth, thing_classes=(1,))["pq"], 4)
    0.3333
"""

from kseg.instance_metrics import panoptic_quality

__all__ = ["panoptic_quality"]

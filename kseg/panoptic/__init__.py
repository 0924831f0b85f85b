"""Panoptic segmentation: Panoptic-DeepLab's targets, losses and grouping, Panoptic FPN's merge.

The model itself is ``kseg.models.PanopticDeepLab`` (also here as ``PanopticDeepLab``).
Panoptic maps are int ``[H, W]`` with ``id = class * 1000 + instance`` (instance 0 for stuff,
class 255 void); see ``kseg.panoptic.targets``.

Example:
    >>> import numpy as np
    >>> import kseg
    >>> panoptic = np.zeros((32, 32), "int32"); panoptic[4:12, 4:12] = 1001
    >>> targets = kseg.panoptic.panoptic_targets(panoptic, thing_classes=(1,))
    >>> sorted(targets)
    ['center', 'center_weights', 'offset', 'offset_weights', 'semantic', 'semantic_weights']
"""

from kseg.models.panoptic_deeplab import OUTPUT_NAMES, PAPER_LOSS_WEIGHTS, PanopticDeepLab
from kseg.panoptic import export
from kseg.panoptic.losses import BootstrappedCrossEntropy, CenterLoss, OffsetLoss
from kseg.panoptic.postprocess import PanopticGrouping, group, merge
from kseg.panoptic.quality import panoptic_quality
from kseg.panoptic.targets import (
    LABEL_DIVISOR,
    VOID_LABEL,
    instance_centers,
    panoptic_targets,
    training_targets,
)

__all__ = [
    "BootstrappedCrossEntropy",
    "CenterLoss",
    "LABEL_DIVISOR",
    "OUTPUT_NAMES",
    "OffsetLoss",
    "PAPER_LOSS_WEIGHTS",
    "PanopticDeepLab",
    "PanopticGrouping",
    "VOID_LABEL",
    "export",
    "group",
    "instance_centers",
    "merge",
    "panoptic_quality",
    "panoptic_targets",
    "training_targets",
]

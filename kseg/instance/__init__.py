"""Instance segmentation: Mask R-CNN and its parts (anchors, box coding, RoIAlign, targets,
proposals and NMS, heads, losses).

Example:
    >>> import kseg
    >>> model = kseg.models.MaskRCNN(num_classes=3, input_shape=(64, 64, 3))  # doctest: +SKIP
"""

# kseg.models imports MaskRCNN from here; importing it first keeps either import order working.
import kseg.models  # noqa: F401
from kseg.instance import export
from kseg.instance.boxes import (
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    generate_anchors,
    level_sizes,
)
from kseg.instance.evaluate import detections, evaluate
from kseg.instance.mask_rcnn import MaskRCNN, UpsampleLike, pad_targets
from kseg.instance.proposals import detections_from_heads, paste_masks, proposals_from_rpn
from kseg.instance.roi_align import fpn_levels, multilevel_roi_align, roi_align
from kseg.instance.targets import assign_anchors, mask_targets, sample_rois

__all__ = [
    "MaskRCNN",
    "detections",
    "UpsampleLike",
    "assign_anchors",
    "box_iou",
    "clip_boxes",
    "decode_boxes",
    "detections_from_heads",
    "encode_boxes",
    "evaluate",
    "export",
    "fpn_levels",
    "generate_anchors",
    "level_sizes",
    "mask_targets",
    "multilevel_roi_align",
    "pad_targets",
    "paste_masks",
    "proposals_from_rpn",
    "roi_align",
    "sample_rois",
]

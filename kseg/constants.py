"""Conventions shared by data, losses, metrics and evaluation.

Example:
    >>> from kseg.constants import IGNORE_INDEX
    >>> IGNORE_INDEX
    255
"""

IGNORE_INDEX = 255
"""Label value of pixels that no loss or metric counts (VOC's object borders)."""

PANOPTIC_LABEL_DIVISOR = 1000
"""Panoptic id maps hold ``class * PANOPTIC_LABEL_DIVISOR + instance`` per pixel (Panoptic-DeepLab's
convention): instance 0 is a stuff segment, or a crowd region of a thing class; 1, 2, ... are
the objects of a thing class."""

PANOPTIC_VOID = IGNORE_INDEX * PANOPTIC_LABEL_DIVISOR
"""Panoptic id of void pixels (the semantic part is the ignore label): counted by no metric."""

__all__ = ["IGNORE_INDEX", "PANOPTIC_LABEL_DIVISOR", "PANOPTIC_VOID"]

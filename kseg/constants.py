"""Conventions shared by data, losses, metrics and evaluation.

Example:
    >>> from kseg.constants import IGNORE_INDEX
    >>> IGNORE_INDEX
    255
"""

IGNORE_INDEX = 255
"""Label value of pixels that no loss or metric counts (VOC's object borders)."""

__all__ = ["IGNORE_INDEX"]

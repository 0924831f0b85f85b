"""Colour maps for label images: the PASCAL VOC map and the synthetic scenes' class names."""

from __future__ import annotations

import numpy as np

from kseg.constants import IGNORE_INDEX  # noqa: F401 (kseg.data.palette.IGNORE_INDEX stays public)

SYNTHETIC_CLASSES = ("background", "ellipse", "rectangle", "triangle", "ring", "bars")
"""Class names of :func:`kseg.data.synthetic`, indexed by label value."""


def voc_colormap(num_colors: int = 256) -> np.ndarray:
    """Returns the PASCAL VOC colour map as a ``uint8`` array ``[num_colors, 3]``.

    Entry ``k`` spreads the bits of ``k`` over the high bits of R, G and B, which is how
    the VOC development kit colours its ``SegmentationClass`` PNGs; entry 255 (the
    "ignore" border) is ``(224, 224, 192)``.

    Example:
        >>> voc_colormap()[[0, 1, 15, 255]].tolist()
        [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]
    """
    if not isinstance(num_colors, (int, np.integer)) or not 1 <= num_colors <= 256:
        raise ValueError(
            f"num_colors must be an integer in [1, 256]. Received: num_colors={num_colors!r}"
        )
    index = np.arange(num_colors)
    colors = np.zeros((num_colors, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colors[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return colors.astype(np.uint8)


SYNTHETIC_PALETTE = voc_colormap(len(SYNTHETIC_CLASSES))
"""Colours of the synthetic classes (the first VOC colours), ``uint8 [6, 3]``."""

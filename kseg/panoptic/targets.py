"""Panoptic-DeepLab training targets from a panoptic id map.

Convention (as Panoptic-DeepLab / deeplab2): a panoptic map is an integer map ``[H, W]`` with
``id = class * label_divisor + instance``, ``label_divisor`` 1000. Stuff segments have instance 0
(``id = class * 1000``); each thing object has its own instance number ``>= 1`` (unique within
its class, not necessarily consecutive). The semantic class 255 is void (``id // 1000 == 255``,
e.g. 255000): ignored by the semantic loss, no centre and no offset. A thing-class pixel with
instance 0 (a crowd region, say) is trained as that class by the semantic loss but takes part
in no instance.
"""

from __future__ import annotations

import numpy as np

LABEL_DIVISOR = 1000
VOID_LABEL = 255


def _check_map(panoptic):
    array = np.asarray(panoptic)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            "panoptic_targets: the panoptic map must be an integer array [H, W]. Received: "
            f"panoptic with shape {array.shape} and dtype {array.dtype}"
        )
    return array.astype(np.int64)


def instance_centers(panoptic, thing_classes, label_divisor=LABEL_DIVISOR):
    """The centre of mass of every thing segment, rounded to the nearest pixel.

    Args:
        panoptic: int ``[H, W]`` panoptic map.
        thing_classes: the classes that have instances.
        label_divisor: ``id = class * label_divisor + instance``.

    Returns:
        A dict ``{segment id: (row, column)}`` (ints), one entry per thing segment with an
        instance number ``>= 1``, in increasing id order.

    Example:
        >>> m = np.zeros((4, 6), "int32")
        >>> m[1:3, 0:3] = 2001
        >>> instance_centers(m, thing_classes=(2,))
        {2001: (2, 1)}
    """
    panoptic = _check_map(panoptic)
    things = set(int(c) for c in thing_classes)
    centers = {}
    for segment in np.unique(panoptic):
        cls, instance = divmod(int(segment), label_divisor)
        if segment < 0 or cls not in things or instance == 0:
            continue
        rows, cols = np.nonzero(panoptic == segment)
        # round half up, so a centre between two pixels goes the same way on both axes
        centers[int(segment)] = (
            int(np.floor(rows.mean() + 0.5)),
            int(np.floor(cols.mean() + 0.5)),
        )
    return centers


def panoptic_targets(
    panoptic,
    thing_classes,
    label_divisor=LABEL_DIVISOR,
    sigma=8.0,
    ignore_label=VOID_LABEL,
    small_instance_area=4096,
    small_instance_weight=3.0,
):
    """Semantic labels, centre heat-map, centre offsets and their loss weights.

    - ``semantic`` int32 ``[H, W]``: ``id // label_divisor``; void (and negative ids) become
      ``ignore_label``.
    - ``semantic_weights`` float32: 1, ``small_instance_weight`` on thing segments smaller than
      ``small_instance_area`` pixels (deeplab2: 3 below 64×64), 0 on void.
    - ``center`` float32 ``[H, W]``: the maximum over the thing segments of
      ``exp(-d² / (2 sigma²))``, ``d`` the distance to the segment's rounded centre of mass
      (paper: sigma 8).
    - ``center_weights`` float32: 1 except 0 on void pixels.
    - ``offset`` float32 ``[H, W, 2]``: ``(centre_row - row, centre_col - col)`` on thing segment
      pixels, 0 elsewhere.
    - ``offset_weights`` float32: 1 on thing segment pixels, 0 elsewhere.

    Args:
        panoptic: int ``[H, W]`` panoptic map (module docstring).
        thing_classes: the classes that have instances.
        label_divisor: ``id = class * label_divisor + instance``.
        sigma: standard deviation of the centre Gaussians, in pixels.
        ignore_label: the void class.
        small_instance_area: segments with fewer pixels get ``small_instance_weight``.
        small_instance_weight: the semantic weight of small instances (1 turns it off).

    Returns:
        A dict of the six arrays above.

    Example:
        >>> m = np.zeros((5, 5), "int32")
        >>> m[1:4, 1:4] = 1001      # one object of class 1, centre (2, 2)
        >>> m[0, 0] = 255000        # void
        >>> t = panoptic_targets(m, thing_classes=(1,))
        >>> int(t["semantic"][0, 0]), float(t["center"][2, 2]), t["offset"][1, 1].tolist()
        (255, 1.0, [1.0, 1.0])
    """
    panoptic = _check_map(panoptic)
    height, width = panoptic.shape
    classes = np.floor_divide(panoptic, label_divisor)
    void = (panoptic < 0) | (classes == ignore_label)
    semantic = np.where(void, ignore_label, classes).astype(np.int32)
    semantic_weights = np.where(void, 0.0, 1.0).astype(np.float32)
    center = np.zeros((height, width), np.float32)
    offset = np.zeros((height, width, 2), np.float32)
    offset_weights = np.zeros((height, width), np.float32)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    for segment, (cy, cx) in instance_centers(panoptic, thing_classes, label_divisor).items():
        mask = panoptic == segment
        gaussian = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2.0 * sigma**2))
        np.maximum(center, gaussian.astype(np.float32), out=center)
        offset[mask, 0] = cy - rows[mask]
        offset[mask, 1] = cx - cols[mask]
        offset_weights[mask] = 1.0
        if mask.sum() < small_instance_area:
            semantic_weights[mask] = small_instance_weight
    return {
        "semantic": semantic,
        "semantic_weights": semantic_weights,
        "center": center,
        "center_weights": np.where(void, 0.0, 1.0).astype(np.float32),
        "offset": offset,
        "offset_weights": offset_weights,
    }


def training_targets(panoptic_maps, thing_classes, **options):
    """Targets of a batch, packed as the three ``PanopticDeepLab`` losses take them.

    Each loss's ``y_true`` carries its weights in its last channel, so the targets go through
    ``fit`` like any label: ``(semantic [B, H, W, 2] = (label, weight), center [B, H, W, 2] =
    (heat, weight), offset [B, H, W, 3] = (dy, dx, weight))``, float32.

    Args:
        panoptic_maps: int ``[B, H, W]`` panoptic maps.
        thing_classes: the classes that have instances.
        **options: ``panoptic_targets`` options (``label_divisor``, ``sigma``, ...).

    Returns:
        A tuple of the three arrays.

    Example:
        >>> maps = np.zeros((2, 8, 8), "int32")
        >>> sem, cen, off = training_targets(maps, thing_classes=(1,))
        >>> sem.shape, cen.shape, off.shape
        ((2, 8, 8, 2), (2, 8, 8, 2), (2, 8, 8, 3))
    """
    maps = np.asarray(panoptic_maps)
    if maps.ndim != 3:
        raise ValueError(
            "training_targets: expected panoptic maps [B, H, W]. Received: panoptic_maps with "
            f"shape {maps.shape}"
        )
    semantic, center, offset = [], [], []
    for panoptic in maps:
        t = panoptic_targets(panoptic, thing_classes, **options)
        semantic.append(np.stack([t["semantic"].astype(np.float32), t["semantic_weights"]], -1))
        center.append(np.stack([t["center"], t["center_weights"]], -1))
        offset.append(np.concatenate([t["offset"], t["offset_weights"][..., None]], -1))
    return np.stack(semantic), np.stack(center), np.stack(offset)

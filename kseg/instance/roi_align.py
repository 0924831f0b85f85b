"""RoIAlign (He et al. 2017): bilinear sampling of regularly spaced points, no quantisation.

Each output bin averages ``sampling_ratio**2`` points spaced evenly inside it, each sampled
bilinearly from the four nearest feature cells. With ``aligned=True`` a box coordinate ``x``
(pixels, pixel ``i`` spanning ``[i, i + 1)``) maps to the feature coordinate
``x * spatial_scale - 0.5``, so that cell ``j``'s centre ``j + 0.5`` is where it is sampled
(Detectron2's ``aligned`` RoIAlign; without it boxes are off by half a cell). Border rule as
Detectron's: points more than one cell outside the map are 0, points within one cell are
clamped to the edge.

Written with ``tf.gather_nd`` and arithmetic, so it runs and differentiates everywhere.

Example:
    >>> features = tf.reshape(tf.range(16.0), (1, 4, 4, 1))
    >>> roi_align(features, [[0.0, 0.0, 4.0, 4.0]], [0], output_size=2)[0, ..., 0].numpy().tolist()
    [[2.5, 4.5], [10.5, 12.5]]
"""

from __future__ import annotations

import tensorflow as tf


def _axis_samples(start, end, output_size, sampling_ratio, size):
    """Sample coordinates along one axis, ``[N, output_size * sampling_ratio]``, and their
    low / high cell indices and weights (zero weight outside the map)."""
    steps = output_size * sampling_ratio
    fraction = (tf.cast(tf.range(steps), start.dtype) + 0.5) / (steps)
    coords = start[:, None] + fraction[None, :] * (end - start)[:, None]
    size_f = tf.cast(size, coords.dtype)
    valid = (coords >= -1.0) & (coords <= size_f)
    coords = tf.maximum(coords, 0.0)
    low = tf.cast(tf.floor(coords), tf.int32)
    at_edge = low >= size - 1
    low = tf.where(at_edge, size - 1, low)
    high = tf.where(at_edge, size - 1, low + 1)
    coords = tf.where(at_edge, tf.cast(low, coords.dtype), coords)
    frac = coords - tf.cast(low, coords.dtype)
    valid = tf.cast(valid, coords.dtype)
    return low, high, (1.0 - frac) * valid, frac * valid


def roi_align(
    features,
    boxes,
    box_indices,
    output_size=7,
    spatial_scale=1.0,
    sampling_ratio=2,
    aligned=True,
):
    """RoIAlign of ``boxes`` on ``features``.

    Args:
        features: ``[B, H, W, C]``.
        boxes: ``[N, 4]`` (ymin, xmin, ymax, xmax) in input pixels.
        box_indices: ``[N]`` int, the batch image of each box.
        output_size: bins per side (int or ``(h, w)``).
        spatial_scale: feature cells per pixel (``1 / stride``).
        sampling_ratio: sampled points per bin and axis (2: four points, as the paper).
        aligned: shift by half a cell (see the module notes).

    Returns:
        ``[N, out_h, out_w, C]`` in the features' dtype.

    Example:
        >>> out = roi_align(tf.ones((2, 8, 8, 3)), [[0.0, 0.0, 16.0, 16.0]], [1], 7, 0.5)
        >>> out.shape.as_list()
        [1, 7, 7, 3]
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    out_h, out_w = output_size
    for name, value in (
        ("output_size", out_h),
        ("output_size", out_w),
        ("sampling_ratio", sampling_ratio),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    features = tf.convert_to_tensor(features)
    boxes = tf.cast(boxes, features.dtype)
    box_indices = tf.cast(box_indices, tf.int32)
    shape = tf.shape(features)
    height, width = shape[1], shape[2]
    offset = 0.5 if aligned else 0.0
    scaled = boxes * tf.cast(spatial_scale, features.dtype) - offset
    y_low, y_high, y_wl, y_wh = _axis_samples(
        scaled[:, 0], scaled[:, 2], out_h, sampling_ratio, height
    )
    x_low, x_high, x_wl, x_wh = _axis_samples(
        scaled[:, 1], scaled[:, 3], out_w, sampling_ratio, width
    )
    num = tf.shape(boxes)[0]
    sy, sx = out_h * sampling_ratio, out_w * sampling_ratio
    batch = tf.broadcast_to(box_indices[:, None, None], (num, sy, sx))

    def gather(ys, xs):
        index = tf.stack(
            [
                batch,
                tf.broadcast_to(ys[:, :, None], (num, sy, sx)),
                tf.broadcast_to(xs[:, None, :], (num, sy, sx)),
            ],
            axis=-1,
        )
        return tf.gather_nd(features, index)

    def weight(wy, wx):
        return (wy[:, :, None] * wx[:, None, :])[..., None]

    values = (
        gather(y_low, x_low) * weight(y_wl, x_wl)
        + gather(y_low, x_high) * weight(y_wl, x_wh)
        + gather(y_high, x_low) * weight(y_wh, x_wl)
        + gather(y_high, x_high) * weight(y_wh, x_wh)
    )
    channels = tf.shape(features)[3]
    values = tf.reshape(values, (num, out_h, sampling_ratio, out_w, sampling_ratio, channels))
    return tf.reduce_mean(values, axis=(2, 4))


def fpn_levels(boxes, min_level=2, max_level=5, canonical_level=4, canonical_size=224.0):
    """FPN level of each box: ``floor(canonical_level + log2(sqrt(area) / canonical_size))``.

    Example:
        >>> fpn_levels([[0.0, 0.0, 224.0, 224.0], [0.0, 0.0, 32.0, 32.0]]).numpy().tolist()
        [4, 2]
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    area = tf.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    level = tf.floor(
        canonical_level + tf.math.log(tf.sqrt(area) / canonical_size) / tf.math.log(2.0) + 1e-6
    )
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)


ROUTINGS = ("partition", "gather")


def multilevel_roi_align(
    features,
    boxes,
    box_indices,
    output_size=7,
    sampling_ratio=2,
    levels=(2, 3, 4, 5),
    routing="partition",
):
    """RoIAlign of each box on its FPN level (:func:`fpn_levels`).

    Args:
        features: ``{"P2": [B, H/4, W/4, C], ...}`` for ``levels``.
        boxes, box_indices, output_size, sampling_ratio: as :func:`roi_align`.
        routing: ``"partition"`` aligns each box on its level only (``tf.dynamic_partition``
            and ``tf.dynamic_stitch``: the cheap way, used in training); ``"gather"`` aligns
            every box on every level and gathers its level's crop (``len(levels)`` times the
            work, but only TFLite built-in ops, used by the exports). Both give the same values.

    Example:
        >>> feats = {f"P{l}": tf.ones((1, 64 // 2**l, 64 // 2**l, 4)) for l in (2, 3, 4, 5)}
        >>> multilevel_roi_align(feats, [[0.0, 0.0, 32.0, 32.0]], [0]).shape.as_list()
        [1, 7, 7, 4]
    """
    if routing not in ROUTINGS:
        raise ValueError(
            f"routing must be one of {', '.join(ROUTINGS)}. Received: routing={routing!r}"
        )
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    box_indices = tf.cast(box_indices, tf.int32)
    level = fpn_levels(boxes, min(levels), max(levels)) - min(levels)
    positions = tf.range(tf.shape(boxes)[0])
    if routing == "gather":
        crops = [
            tf.cast(
                roi_align(
                    features[f"P{lvl}"],
                    boxes,
                    box_indices,
                    output_size,
                    1.0 / 2**lvl,
                    sampling_ratio,
                ),
                tf.float32,
            )
            for lvl in levels
        ]
        return tf.gather(tf.concat(crops, 0), level * tf.shape(boxes)[0] + positions)
    parts_boxes = tf.dynamic_partition(boxes, level, len(levels))
    parts_index = tf.dynamic_partition(box_indices, level, len(levels))
    parts_position = tf.dynamic_partition(positions, level, len(levels))
    outputs = []
    for k, lvl in enumerate(levels):
        feature = features[f"P{lvl}"]
        outputs.append(
            tf.cast(
                roi_align(
                    feature,
                    parts_boxes[k],
                    parts_index[k],
                    output_size,
                    1.0 / 2**lvl,
                    sampling_ratio,
                ),
                tf.float32,
            )
        )
    return tf.dynamic_stitch(parts_position, outputs)


__all__ = ["ROUTINGS", "fpn_levels", "multilevel_roi_align", "roi_align"]

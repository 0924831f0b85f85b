"""Anchors, box encoding and decoding, and IoU, written with TF ops (they run inside models).

Boxes are ``(ymin, xmin, ymax, xmax)`` in input-image pixels, pixel ``i`` spanning
``[i, i + 1)``.

Example:
    >>> anchors = generate_anchors((64, 64), levels=(2,), sizes=(32,))
    >>> anchors.shape.as_list()
    [768, 4]
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

DEFAULT_LEVELS = (2, 3, 4, 5, 6)
DEFAULT_SIZES = (32, 64, 128, 256, 512)
DEFAULT_RATIOS = (0.5, 1.0, 2.0)
BOX_DELTA_CLIP = math.log(1000.0 / 16.0)
"""Largest ``dh``/``dw`` decoded (Detectron's clip: a box grows at most 62.5 times)."""


def level_sizes(image_size, levels=DEFAULT_LEVELS):
    """Feature sizes ``[(h, w)]`` of each level: ``ceil(size / 2**level)`` ("same" padding).

    Example:
        >>> level_sizes((100, 64), levels=(2, 6))
        [(25, 16), (2, 1)]
    """
    height, width = image_size
    return [(-(-height // 2**level), -(-width // 2**level)) for level in levels]


def generate_anchors(
    image_size, levels=DEFAULT_LEVELS, sizes=DEFAULT_SIZES, ratios=DEFAULT_RATIOS, dtype=tf.float32
):
    """Anchors of every level, ``[sum_l h_l * w_l * len(ratios), 4]`` (ymin, xmin, ymax, xmax).

    Level ``l`` has stride ``2**l``; its cell ``(i, j)`` holds one anchor per ratio, centred at
    ``((i + 0.5) * stride, (j + 0.5) * stride)`` with area ``size**2`` and height / width
    ``= ratio``. The order is level, row, column, ratio: the order in which an RPN head's
    ``[B, h, w, len(ratios) * k]`` outputs flatten.

    Example:
        >>> generate_anchors((8, 8), levels=(3,), sizes=(8,), ratios=(1.0,)).numpy().tolist()
        [[0.0, 0.0, 8.0, 8.0]]
    """
    if len(levels) != len(sizes):
        raise ValueError(
            f"levels and sizes must have one entry each per level. "
            f"Received: levels={levels!r}, sizes={sizes!r}"
        )
    if isinstance(image_size, tf.Tensor) or any(isinstance(v, tf.Tensor) for v in image_size):
        height, width = image_size[0], image_size[1]
    else:
        height, width = int(image_size[0]), int(image_size[1])
    ratios = np.asarray(ratios, dtype=np.float64)
    out = []
    for level, size in zip(levels, sizes):
        stride = 2**level
        h = (tf.cast(height, tf.int32) + stride - 1) // stride
        w = (tf.cast(width, tf.int32) + stride - 1) // stride
        cy = (tf.cast(tf.range(h), dtype) + 0.5) * stride
        cx = (tf.cast(tf.range(w), dtype) + 0.5) * stride
        half_h = tf.constant(size * np.sqrt(ratios) / 2.0, dtype)
        half_w = tf.constant(size / np.sqrt(ratios) / 2.0, dtype)
        cy = cy[:, None, None]
        cx = cx[None, :, None]
        grid_y = tf.broadcast_to(cy, (h, w, len(ratios)))
        grid_x = tf.broadcast_to(cx, (h, w, len(ratios)))
        anchors = tf.stack(
            [grid_y - half_h, grid_x - half_w, grid_y + half_h, grid_x + half_w], axis=-1
        )
        out.append(tf.reshape(anchors, (-1, 4)))
    return tf.concat(out, axis=0)


def encode_boxes(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets of ``boxes`` relative to ``anchors`` (Faster R-CNN's parametrisation).

    ``(dy, dx, dh, dw) = (wy (y - ya) / ha, wx (x - xa) / wa, wh log(h / ha), ww log(w / wa))``
    with centres ``y, x`` and sizes ``h, w``; ``weights`` are ``(wy, wx, wh, ww)`` (RPN: 1s;
    box head: 10, 10, 5, 5).

    Example:
        >>> encode_boxes([[0.0, 0.0, 4.0, 4.0]], [[0.0, 0.0, 2.0, 2.0]]).numpy().tolist()  # doctest: +SKIP
        [[0.5, 0.5, 0.6931, 0.6931]]
    """
    boxes = tf.convert_to_tensor(boxes)
    anchors = tf.cast(anchors, boxes.dtype)
    ha = anchors[..., 2] - anchors[..., 0]
    wa = anchors[..., 3] - anchors[..., 1]
    ya = anchors[..., 0] + 0.5 * ha
    xa = anchors[..., 1] + 0.5 * wa
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    y = boxes[..., 0] + 0.5 * h
    x = boxes[..., 1] + 0.5 * w
    wy, wx, wh, ww = weights
    return tf.stack(
        [
            wy * (y - ya) / ha,
            wx * (x - xa) / wa,
            wh * tf.math.log(h / ha),
            ww * tf.math.log(w / wa),
        ],
        axis=-1,
    )


def decode_boxes(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0), clip=BOX_DELTA_CLIP):
    """Inverse of :func:`encode_boxes`; ``dh``, ``dw`` are clipped at ``clip`` first.

    Example:
        >>> decode_boxes([[0.0, 0.0, 0.0, 0.0]], [[1.0, 2.0, 3.0, 6.0]]).numpy().tolist()
        [[1.0, 2.0, 3.0, 6.0]]
    """
    deltas = tf.convert_to_tensor(deltas)
    anchors = tf.cast(anchors, deltas.dtype)
    ha = anchors[..., 2] - anchors[..., 0]
    wa = anchors[..., 3] - anchors[..., 1]
    ya = anchors[..., 0] + 0.5 * ha
    xa = anchors[..., 1] + 0.5 * wa
    wy, wx, wh, ww = weights
    dy, dx = deltas[..., 0] / wy, deltas[..., 1] / wx
    dh = tf.minimum(deltas[..., 2] / wh, clip)
    dw = tf.minimum(deltas[..., 3] / ww, clip)
    y = ya + dy * ha
    x = xa + dx * wa
    h = ha * tf.exp(dh)
    w = wa * tf.exp(dw)
    return tf.stack([y - 0.5 * h, x - 0.5 * w, y + 0.5 * h, x + 0.5 * w], axis=-1)


def clip_boxes(boxes, image_size):
    """Clips boxes to ``[0, height] x [0, width]``.

    Example:
        >>> clip_boxes([[-2.0, 1.0, 9.0, 5.0]], (8, 8)).numpy().tolist()
        [[0.0, 1.0, 8.0, 5.0]]
    """
    boxes = tf.convert_to_tensor(boxes)
    height = tf.cast(image_size[0], boxes.dtype)
    width = tf.cast(image_size[1], boxes.dtype)
    limits = tf.stack([height, width, height, width])
    return tf.clip_by_value(boxes, tf.zeros_like(limits), limits)


def box_iou(boxes_a, boxes_b):
    """IoU matrix ``[N, M]`` of two sets of boxes (0 where a union is empty).

    Example:
        >>> box_iou([[0.0, 0.0, 2.0, 2.0]], [[1.0, 0.0, 3.0, 2.0]]).numpy().tolist()
        [[0.3333333432674408]]
    """
    a = tf.convert_to_tensor(boxes_a)
    b = tf.cast(boxes_b, a.dtype)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top = tf.maximum(a[:, None, 0], b[None, :, 0])
    left = tf.maximum(a[:, None, 1], b[None, :, 1])
    bottom = tf.minimum(a[:, None, 2], b[None, :, 2])
    right = tf.minimum(a[:, None, 3], b[None, :, 3])
    intersection = tf.maximum(bottom - top, 0.0) * tf.maximum(right - left, 0.0)
    union = area_a[:, None] + area_b[None, :] - intersection
    return tf.math.divide_no_nan(intersection, union)


__all__ = [
    "BOX_DELTA_CLIP",
    "DEFAULT_LEVELS",
    "DEFAULT_RATIOS",
    "DEFAULT_SIZES",
    "box_iou",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "generate_anchors",
    "level_sizes",
]

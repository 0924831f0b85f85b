"""Proposal decoding and detection post-processing with NMS, as TF ops.

Both use ``tf.image.non_max_suppression_with_scores`` (TFLite's built-in
``NON_MAX_SUPPRESSION_V5``); class-wise NMS shifts each class's boxes apart by an offset so
that one NMS call serves every class.

Example:
    >>> boxes = proposals_from_rpn([2.0, 1.0], tf.zeros((2, 4)), [[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 9.0]], (16, 16))
    >>> boxes.shape.as_list()  # the second anchor overlaps the first: suppressed
    [1, 4]
"""

from __future__ import annotations

import tensorflow as tf

from kseg.instance.boxes import clip_boxes, decode_boxes
from kseg.instance.targets import BOX_HEAD_WEIGHTS


def proposals_from_rpn(
    scores,
    deltas,
    anchors,
    image_size,
    pre_nms_top_k=2000,
    post_nms_top_k=1000,
    nms_iou=0.7,
    min_size=1e-3,
):
    """One image's proposals: decode the RPN deltas, keep the top ``pre_nms_top_k`` by
    objectness, clip to the image, drop empty boxes, NMS at ``nms_iou``, keep
    ``post_nms_top_k``. Returns ``[P, 4]`` boxes (highest score first).

    Example:
        >>> proposals_from_rpn([0.0], tf.zeros((1, 4)), [[0.0, 0.0, 4.0, 4.0]], (8, 8)).numpy().tolist()
        [[0.0, 0.0, 4.0, 4.0]]
    """
    scores = tf.reshape(tf.cast(scores, tf.float32), (-1,))
    k = tf.minimum(pre_nms_top_k, tf.size(scores))
    top_scores, top = tf.math.top_k(scores, k=k)
    boxes = decode_boxes(tf.gather(tf.cast(deltas, tf.float32), top), tf.gather(anchors, top))
    boxes = clip_boxes(boxes, image_size)
    size_ok = tf.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) > min_size
    top_scores = tf.where(size_ok, top_scores, tf.float32.min)
    keep, _ = tf.image.non_max_suppression_with_scores(
        boxes, top_scores, post_nms_top_k, iou_threshold=nms_iou
    )
    keep = tf.boolean_mask(keep, tf.gather(size_ok, keep))
    return tf.gather(boxes, keep)


def detections_from_heads(
    rois,
    class_logits,
    box_deltas,
    image_size,
    score_threshold=0.05,
    nms_iou=0.5,
    max_detections=100,
):
    """One image's detections from the box head: class-specific boxes, score threshold,
    class-wise NMS, the best ``max_detections``.

    Args:
        rois: ``[R, 4]`` proposals; class_logits: ``[R, K]`` (class 0 is the background);
        box_deltas: ``[R, K * 4]`` (weights :data:`BOX_HEAD_WEIGHTS`).

    Returns:
        ``boxes [D, 4]``, ``scores [D]``, ``classes [D]`` int32 (>= 1), highest score first.

    Example:
        >>> out = detections_from_heads([[0.0, 0.0, 4.0, 4.0]], [[0.0, 5.0]], tf.zeros((1, 8)), (8, 8))
        >>> out[2].numpy().tolist()
        [1]
    """
    rois = tf.cast(rois, tf.float32)
    probabilities = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)
    num_classes = tf.shape(probabilities)[1]
    deltas = tf.reshape(tf.cast(box_deltas, tf.float32), (tf.shape(rois)[0], num_classes, 4))
    boxes = decode_boxes(deltas, rois[:, None, :], BOX_HEAD_WEIGHTS)
    boxes = clip_boxes(boxes, image_size)[:, 1:]  # drop the background column
    scores = probabilities[:, 1:]
    classes = tf.broadcast_to(tf.range(1, num_classes)[None, :], tf.shape(scores))
    boxes = tf.reshape(boxes, (-1, 4))
    scores = tf.reshape(scores, (-1,))
    classes = tf.reshape(classes, (-1,))
    keep = tf.where(scores > score_threshold)[:, 0]
    boxes, scores, classes = (tf.gather(t, keep) for t in (boxes, scores, classes))
    # Class-wise NMS in one call: each class's boxes are moved to their own region.
    offset = tf.cast(classes, tf.float32)[:, None] * (
        tf.cast(tf.reduce_max(tf.stack(image_size)), tf.float32) + 1.0
    )
    selected, _ = tf.image.non_max_suppression_with_scores(
        boxes + offset, scores, max_detections, iou_threshold=nms_iou
    )
    return tf.gather(boxes, selected), tf.gather(scores, selected), tf.gather(classes, selected)


def paste_masks(masks, boxes, image_size):
    """Pastes ``[D, M, M]`` mask probabilities into ``[D, H, W]`` full-image maps.

    Each image pixel centre is mapped into its box's mask grid (bin centres at
    ``y0 + (k + 0.5) h / M``) and sampled bilinearly; pixels outside the box get 0.

    Example:
        >>> paste_masks(tf.ones((1, 2, 2)), [[0.0, 0.0, 2.0, 2.0]], (3, 3)).numpy()[0].tolist()
        [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    masks = tf.cast(masks, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    size = tf.cast(tf.shape(masks)[1], tf.float32)
    height, width = image_size
    # Pad by one cell of zeros so that sampling fades to 0 just past the box, not clamps.
    padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1]])
    # Bilinear sampling is separable: two batched products with hat-function weights give
    # tf.image.crop_and_resize's values with TFLite built-ins (it has no CropAndResize).
    rows = _grid_weights(boxes[:, 0], boxes[:, 2], height, size)  # [D, H, M + 2]
    cols = _grid_weights(boxes[:, 1], boxes[:, 3], width, size)  # [D, W, M + 2]
    return tf.matmul(tf.matmul(rows, padded), cols, transpose_b=True)


def _grid_weights(start, end, pixels, size):
    """``[D, pixels, M + 2]`` bilinear weights of each image pixel centre over the padded
    mask cells of its box (zero rows for pixels whose sample falls outside the padded mask)."""
    extent = tf.maximum(end - start, 1e-6)
    centres = tf.cast(tf.range(pixels), tf.float32) + 0.5
    # Cell-centre coordinate in the padded grid (mask cell k at k + 1).
    coords = (centres[None, :] - start[:, None]) / extent[:, None] * size - 0.5 + 1.0
    inside = (coords >= 0.0) & (coords <= size + 1.0)
    cells = tf.cast(tf.range(tf.cast(size, tf.int32) + 2), tf.float32)
    weights = tf.maximum(1.0 - tf.abs(coords[..., None] - cells[None, None, :]), 0.0)
    return tf.where(inside[..., None], weights, 0.0)


__all__ = ["detections_from_heads", "paste_masks", "proposals_from_rpn"]

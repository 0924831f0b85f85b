"""Training targets of Mask R-CNN: anchor labels for the RPN, sampled RoIs, mask crops.

Per image, on unpadded tensors (``gt_classes > 0`` marks the real boxes of a padded batch).
Crowd boxes (``gt_crowd``) are never matched; an anchor or proposal overlapping a crowd box by
more than the negative threshold is ignored rather than made a negative.

Example:
    >>> anchors = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]
    >>> labels, _, _ = assign_anchors(anchors, [[0.0, 0.0, 10.0, 11.0]], num_samples=None)
    >>> labels.numpy().tolist()
    [1, 0]
"""

from __future__ import annotations

import tensorflow as tf

from kseg.instance.boxes import box_iou, encode_boxes

BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
"""Box-head regression weights (Detectron, TF Model Garden)."""


def _random_keys(count, seed):
    if seed is None:
        return tf.random.uniform((count,))
    return tf.random.stateless_uniform((count,), seed=(int(seed), 0))


def _subsample(candidates, limit, seed):
    """A boolean mask keeping at most ``limit`` of the True entries of ``candidates``, at random."""
    keys = tf.where(candidates, _random_keys(tf.size(candidates), seed), -1.0)
    limit = tf.minimum(limit, tf.reduce_sum(tf.cast(candidates, tf.int32)))
    _, keep = tf.math.top_k(keys, k=limit)
    return tf.scatter_nd(keep[:, None], tf.ones_like(keep, tf.bool), tf.shape(candidates))


def _crowd_overlap(boxes, gt_boxes, gt_crowd):
    """Largest IoU of each box with a crowd box (0 without crowd boxes)."""
    crowd_boxes = tf.boolean_mask(gt_boxes, gt_crowd)
    iou = box_iou(boxes, crowd_boxes)
    return tf.reduce_max(tf.concat([iou, tf.zeros_like(iou[:, :1])], axis=1), axis=1)


def assign_anchors(
    anchors,
    gt_boxes,
    gt_crowd=None,
    positive_iou=0.7,
    negative_iou=0.3,
    num_samples=256,
    positive_fraction=0.5,
    seed=None,
):
    """RPN targets: each anchor positive (1), negative (0) or ignored (-1).

    Positive: IoU >= ``positive_iou`` with a box, or among the anchors of highest IoU (> 0)
    with some box (every box gets an anchor); negative: IoU < ``negative_iou`` with every box.
    Then ``num_samples`` anchors are sampled, at most ``positive_fraction`` of them positive,
    and the rest set to -1 (``num_samples=None`` keeps all).

    Returns:
        ``labels`` int32 ``[A]``, ``matched`` int32 ``[A]`` (index of the best box; 0 without
        boxes), ``deltas`` float32 ``[A, 4]`` (:func:`encode_boxes` of the matched box,
        unit weights; 0 for non-positives).

    Example:
        >>> labels, matched, deltas = assign_anchors([[0.0, 0.0, 4.0, 4.0]], [[0.0, 0.0, 4.0, 4.0]])
        >>> labels.numpy().tolist(), deltas.numpy().tolist()
        ([1], [[0.0, 0.0, 0.0, 0.0]])
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    gt_boxes = tf.reshape(tf.convert_to_tensor(gt_boxes, tf.float32), (-1, 4))
    if gt_crowd is None:
        gt_crowd = tf.zeros(tf.shape(gt_boxes)[:1], tf.bool)
    gt_crowd = tf.cast(gt_crowd, tf.bool)
    boxes = tf.boolean_mask(gt_boxes, ~gt_crowd)
    iou = box_iou(anchors, boxes)  # [A, G]
    # The extra column (IoU 0) makes every proposal of an image without objects background.
    padded = tf.concat([iou, tf.fill([tf.shape(iou)[0], 1], 0.0)], axis=1)
    best_iou = tf.reduce_max(padded, axis=1)
    matched = tf.cast(tf.argmax(padded, axis=1), tf.int32)
    best_per_box = tf.reduce_max(iou, axis=0)  # [G]
    is_best = tf.reduce_any((iou == best_per_box[None, :]) & (best_per_box[None, :] > 0), axis=1)
    positive = (best_iou >= positive_iou) | is_best
    negative = (best_iou < negative_iou) & ~positive
    negative &= _crowd_overlap(anchors, gt_boxes, gt_crowd) < negative_iou
    if num_samples is not None:
        positive = _subsample(positive, int(num_samples * positive_fraction), seed)
        remaining = num_samples - tf.reduce_sum(tf.cast(positive, tf.int32))
        negative = _subsample(negative, remaining, None if seed is None else seed + 1)
    labels = tf.where(positive, 1, tf.where(negative, 0, -1))
    matched = tf.where(positive, matched, 0)
    matched_boxes = tf.gather(tf.concat([boxes, [[0.0, 0.0, 1.0, 1.0]]], 0), matched)
    deltas = tf.where(positive[:, None], encode_boxes(matched_boxes, anchors), 0.0)
    # The original indices of the matched boxes, crowd boxes included.
    original = tf.boolean_mask(tf.range(tf.shape(gt_boxes)[0]), ~gt_crowd)
    matched = tf.gather(tf.concat([original, [0]], 0), matched)
    return tf.cast(labels, tf.int32), matched, deltas


def sample_rois(
    proposals,
    gt_boxes,
    gt_classes,
    gt_crowd=None,
    num_samples=512,
    positive_fraction=0.25,
    foreground_iou=0.5,
    background_iou=(0.0, 0.5),
    seed=None,
):
    """Samples the RoIs the box and mask heads train on, with their targets.

    The ground-truth boxes join the proposals (so early training has positives). A RoI is
    foreground when its best IoU with a (non-crowd) box is >= ``foreground_iou`` and
    background when it lies in ``[background_iou[0], background_iou[1])``; at most
    ``num_samples * positive_fraction`` foreground RoIs are drawn, then background RoIs fill
    up to ``num_samples`` (fewer when there are too few candidates).

    Returns:
        ``rois`` ``[R, 4]``, ``classes`` int32 ``[R]`` (0 for background), ``matched`` int32
        ``[R]`` (index of the matched box, for the mask targets), ``deltas`` ``[R, 4]``
        (weights :data:`BOX_HEAD_WEIGHTS`; 0 for background). Foreground RoIs come first.

    Example:
        >>> rois, classes, _, _ = sample_rois([[0.0, 0.0, 9.0, 9.0]], [[0.0, 0.0, 10.0, 10.0]], [3])
        >>> classes.numpy().tolist()
        [3, 3]
    """
    proposals = tf.reshape(tf.convert_to_tensor(proposals, tf.float32), (-1, 4))
    gt_boxes = tf.reshape(tf.convert_to_tensor(gt_boxes, tf.float32), (-1, 4))
    gt_classes = tf.cast(gt_classes, tf.int32)
    if gt_crowd is None:
        gt_crowd = tf.zeros(tf.shape(gt_classes), tf.bool)
    gt_crowd = tf.cast(gt_crowd, tf.bool)
    kept = tf.boolean_mask(tf.range(tf.shape(gt_boxes)[0]), ~gt_crowd)
    boxes = tf.gather(gt_boxes, kept)
    candidates = tf.concat([proposals, boxes], axis=0)
    iou = box_iou(candidates, boxes)
    # The extra column (IoU 0) makes every proposal of an image without objects background.
    padded = tf.concat([iou, tf.fill([tf.shape(iou)[0], 1], 0.0)], axis=1)
    best_iou = tf.reduce_max(padded, axis=1)
    best = tf.cast(tf.argmax(padded, axis=1), tf.int32)
    foreground = best_iou >= foreground_iou
    background = (best_iou < background_iou[1]) & (best_iou >= background_iou[0])
    background &= _crowd_overlap(candidates, gt_boxes, gt_crowd) < background_iou[1]
    foreground = _subsample(foreground, int(num_samples * positive_fraction), seed)
    remaining = num_samples - tf.reduce_sum(tf.cast(foreground, tf.int32))
    background = _subsample(background, remaining, None if seed is None else seed + 1)
    order = tf.concat([tf.where(foreground)[:, 0], tf.where(background)[:, 0]], axis=0)
    rois = tf.gather(candidates, order)
    is_foreground = tf.gather(foreground, order)
    matched_kept = tf.where(is_foreground, tf.gather(best, order), 0)
    matched = tf.gather(tf.concat([kept, [0]], 0), matched_kept)
    classes = tf.where(is_foreground, tf.gather(tf.concat([gt_classes, [0]], 0), matched), 0)
    matched_boxes = tf.gather(tf.concat([gt_boxes, [[0.0, 0.0, 1.0, 1.0]]], 0), matched)
    deltas = tf.where(
        is_foreground[:, None], encode_boxes(matched_boxes, rois, BOX_HEAD_WEIGHTS), 0.0
    )
    return rois, classes, matched, deltas


def mask_targets(gt_masks, matched, rois, size=28):
    """Crops each RoI's matched mask to ``size x size`` (bin centres, bilinear, >= 0.5 -> 1).

    Args:
        gt_masks: ``[G, H, W]`` binary masks of the image.
        matched: ``[R]`` index into ``gt_masks`` for each RoI.
        rois: ``[R, 4]`` pixel boxes.

    Example:
        >>> masks = tf.ones((1, 8, 8))
        >>> mask_targets(masks, [0], [[0.0, 0.0, 4.0, 4.0]], size=2).numpy().tolist()
        [[[1.0, 1.0], [1.0, 1.0]]]
    """
    gt_masks = tf.cast(gt_masks, tf.float32)
    rois = tf.cast(rois, tf.float32)
    height = tf.cast(tf.shape(gt_masks)[1], tf.float32)
    width = tf.cast(tf.shape(gt_masks)[2], tf.float32)
    # Sample points at the bin centres: y0 + (k + 0.5) h / size, in cell-centre coordinates.
    step_y = (rois[:, 2] - rois[:, 0]) / size
    step_x = (rois[:, 3] - rois[:, 1]) / size
    first_y = rois[:, 0] + 0.5 * step_y - 0.5
    last_y = rois[:, 2] - 0.5 * step_y - 0.5
    first_x = rois[:, 1] + 0.5 * step_x - 0.5
    last_x = rois[:, 3] - 0.5 * step_x - 0.5
    normalized = tf.stack(
        [
            first_y / tf.maximum(height - 1.0, 1.0),
            first_x / tf.maximum(width - 1.0, 1.0),
            last_y / tf.maximum(height - 1.0, 1.0),
            last_x / tf.maximum(width - 1.0, 1.0),
        ],
        axis=1,
    )
    crops = tf.image.crop_and_resize(
        gt_masks[..., None], normalized, tf.cast(matched, tf.int32), (size, size)
    )
    return tf.cast(crops[..., 0] >= 0.5, tf.float32)


__all__ = ["BOX_HEAD_WEIGHTS", "assign_anchors", "mask_targets", "sample_rois"]

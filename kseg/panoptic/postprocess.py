"""Panoptic post-processing: Panoptic-DeepLab's grouping (TF ops) and Panoptic FPN's merge.

``group`` (and the ``PanopticGrouping`` layer) is written with TensorFlow ops that TFLite has
as built-ins (max-pool, top-k, arg-min/arg-max, one-hot, batched matmul, gather), so a
``PanopticDeepLab.panoptic_model()`` exports to SavedModel and TFLite whole:

1. semantic labels: arg-max of the logits;
2. centres: keep the pixels where the heat-map equals its ``nms_kernel`` × ``nms_kernel``
   max-pool and exceeds ``center_threshold``; the ``top_k`` highest (equal scores: the
   earlier pixel in raster order first) are the instances 1, 2, ... in that order;
3. every thing pixel (its semantic class in ``thing_classes``) joins the centre nearest to
   ``pixel + offset`` (equal distances: the higher-ranked centre);
4. each instance takes the class most of its thing pixels vote for (ties: the lower class);
5. ids: ``class * label_divisor + instance`` on thing pixels, ``class * label_divisor`` on
   stuff pixels whose class covers at least ``stuff_area`` pixels of the image, and
   ``void_label * label_divisor`` elsewhere (thing pixels when no centre was found, small
   stuff regions).

``merge`` (numpy) is Panoptic FPN's heuristic for combining an instance model (Mask R-CNN)
with a semantic model: instances by decreasing score, each keeping the pixels not yet taken
unless too much of it is already taken; stuff classes fill the rest where they are large
enough.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kseg.panoptic.targets import LABEL_DIVISOR, VOID_LABEL


def _check_positive_int(argument, value, owner="PanopticGrouping"):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"{owner}: {argument} must be a positive int. Received: {argument}={value!r}"
        )


def _check_things(thing_classes, owner):
    try:
        things = tuple(sorted(set(int(c) for c in thing_classes)))
    except (TypeError, ValueError):
        things = None
    if things is None or any(c < 0 for c in things):
        raise ValueError(
            f"{owner}: thing_classes must be non-negative class indices. Received: "
            f"thing_classes={thing_classes!r}"
        )
    return things


def group(
    semantic_logits,
    center,
    offset,
    thing_classes,
    label_divisor=LABEL_DIVISOR,
    center_threshold=0.1,
    nms_kernel=7,
    top_k=200,
    stuff_area=0,
    void_label=VOID_LABEL,
):
    """Panoptic-DeepLab's grouping, in TF ops (module docstring for the steps).

    Args:
        semantic_logits: float ``[B, H, W, C]``.
        center: float ``[B, H, W, 1]`` centre heat-map.
        offset: float ``[B, H, W, 2]``, ``(dy, dx)`` from each pixel to its centre.
        thing_classes: the classes that have instances.
        label_divisor: ``id = class * label_divisor + instance``; ``top_k`` must be below it.
        center_threshold: centres must score above it.
        nms_kernel: odd window of the centre max-pool (deeplab2: 13 on Cityscapes, 41 on COCO).
        top_k: the most centres kept.
        stuff_area: stuff classes covering fewer pixels become void.
        void_label: the class of void pixels.

    Returns:
        int32 ``[B, H, W]`` panoptic map.

    Example:
        >>> logits = np.zeros((1, 4, 4, 2), "float32"); logits[..., 1] = 1   # all class 1
        >>> heat = np.zeros((1, 4, 4, 1), "float32"); heat[0, 1, 1] = 1.0     # one centre
        >>> out = group(logits, heat, np.zeros((1, 4, 4, 2), "float32"), thing_classes=(1,))
        >>> np.unique(out.numpy()).tolist()
        [1001]
    """
    things = _check_things(thing_classes, "group")
    _check_positive_int("top_k", top_k, "group")
    _check_positive_int("nms_kernel", nms_kernel, "group")
    if top_k >= label_divisor:
        raise ValueError(
            f"group: top_k must be below label_divisor={label_divisor}, or instance ids would "
            f"reach the next class. Received: top_k={top_k!r}"
        )
    semantic_logits = tf.convert_to_tensor(semantic_logits)
    center = tf.cast(center, tf.float32)
    offset = tf.cast(offset, tf.float32)
    num_classes = semantic_logits.shape[-1]
    shape = tf.shape(semantic_logits)
    batch, height, width = shape[0], shape[1], shape[2]

    semantic = tf.cast(tf.argmax(semantic_logits, axis=-1), tf.int32)  # [B, H, W]
    thing_table = tf.constant([c in things for c in range(num_classes)], tf.bool)
    is_thing = tf.gather(thing_table, semantic)

    # 2. centres: local maxima above the threshold, the top_k best
    pooled = tf.nn.max_pool2d(center, nms_kernel, strides=1, padding="SAME")
    heat = center[..., 0]
    keep = tf.logical_and(tf.equal(heat, pooled[..., 0]), heat > center_threshold)
    scores = tf.reshape(tf.where(keep, heat, tf.fill(tf.shape(heat), -1.0)), [batch, -1])
    static_pixels = (
        None
        if semantic_logits.shape[1] is None or semantic_logits.shape[2] is None
        else semantic_logits.shape[1] * semantic_logits.shape[2]
    )
    k = (
        min(top_k, static_pixels)
        if static_pixels is not None
        else tf.minimum(top_k, height * width)
    )
    top_scores, top_index = tf.math.top_k(scores, k=k)  # [B, K]
    valid = top_scores > center_threshold
    center_y = tf.cast(top_index // width, tf.float32)
    center_x = tf.cast(top_index % width, tf.float32)

    # 3. pixel -> nearest centre, from the pixel's predicted centre
    rows = tf.cast(tf.range(height), tf.float32)[:, None] + tf.zeros([1, width], tf.float32)
    cols = tf.zeros([height, 1], tf.float32) + tf.cast(tf.range(width), tf.float32)[None, :]
    target_y = tf.reshape(rows[None] + offset[..., 0], [batch, -1, 1])
    target_x = tf.reshape(cols[None] + offset[..., 1], [batch, -1, 1])
    distance = tf.square(target_y - center_y[:, None, :]) + tf.square(
        target_x - center_x[:, None, :]
    )  # [B, H*W, K]
    distance = tf.where(valid[:, None, :], distance, tf.fill(tf.shape(distance), 3.0e38))
    nearest = tf.cast(tf.argmin(distance, axis=-1), tf.int32) + 1  # [B, H*W]
    any_center = tf.reduce_any(valid, axis=-1, keepdims=True)
    flat_thing = tf.reshape(is_thing, [batch, -1])
    instance = tf.where(
        tf.logical_and(flat_thing, any_center), nearest, tf.zeros_like(nearest)
    )  # 0: no instance

    # 4. majority vote of the thing pixels' classes, per instance
    flat_semantic = tf.reshape(semantic, [batch, -1])
    thing_votes = tf.one_hot(flat_semantic, num_classes) * tf.cast(thing_table, tf.float32)
    counts = tf.matmul(tf.one_hot(instance, k + 1), thing_votes, transpose_a=True)  # [B, K + 1, C]
    instance_class = tf.cast(tf.argmax(counts, axis=-1), tf.int32)  # [B, K + 1]
    pixel_class = tf.gather(instance_class, instance, batch_dims=1)
    thing_ids = pixel_class * label_divisor + instance

    # 5. stuff, large enough; void elsewhere
    stuff_pixels = tf.cast(tf.logical_not(flat_thing), tf.float32)
    area = tf.reduce_sum(tf.one_hot(flat_semantic, num_classes) * stuff_pixels[..., None], 1)
    large = tf.gather(area >= float(stuff_area), flat_semantic, batch_dims=1)
    stuff_ids = flat_semantic * label_divisor
    void = tf.fill(tf.shape(flat_semantic), void_label * label_divisor)
    panoptic = tf.where(
        instance > 0,
        thing_ids,
        tf.where(tf.logical_and(tf.logical_not(flat_thing), large), stuff_ids, void),
    )
    return tf.reshape(panoptic, [batch, height, width])


@keras.saving.register_keras_serializable(package="kseg")
class PanopticGrouping(keras.layers.Layer):
    """``group`` as a layer: ``[semantic_logits, center, offset]`` -> int32 panoptic map.

    Args: as ``group``.

    Example:
        >>> layer = PanopticGrouping(thing_classes=(1,), top_k=4)
        >>> logits = np.zeros((1, 4, 4, 2), "float32"); logits[..., 1] = 1
        >>> heat = np.zeros((1, 4, 4, 1), "float32"); heat[0, 2, 2] = 1.0
        >>> layer([logits, heat, np.zeros((1, 4, 4, 2), "float32")]).shape
        TensorShape([1, 4, 4])
    """

    def __init__(
        self,
        thing_classes=(),
        label_divisor=LABEL_DIVISOR,
        center_threshold=0.1,
        nms_kernel=7,
        top_k=200,
        stuff_area=0,
        void_label=VOID_LABEL,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.thing_classes = _check_things(thing_classes, "PanopticGrouping")
        _check_positive_int("label_divisor", label_divisor)
        _check_positive_int("nms_kernel", nms_kernel)
        _check_positive_int("top_k", top_k)
        if top_k >= label_divisor:
            raise ValueError(
                f"PanopticGrouping: top_k must be below label_divisor={label_divisor}. "
                f"Received: top_k={top_k!r}"
            )
        if nms_kernel % 2 == 0:
            raise ValueError(
                f"PanopticGrouping: nms_kernel must be odd. Received: nms_kernel={nms_kernel!r}"
            )
        self.label_divisor = label_divisor
        self.center_threshold = float(center_threshold)
        self.nms_kernel = nms_kernel
        self.top_k = top_k
        self.stuff_area = int(stuff_area)
        self.void_label = int(void_label)
        self.supports_masking = False

    def call(self, inputs):
        semantic_logits, center, offset = inputs
        return group(
            semantic_logits,
            center,
            offset,
            self.thing_classes,
            label_divisor=self.label_divisor,
            center_threshold=self.center_threshold,
            nms_kernel=self.nms_kernel,
            top_k=self.top_k,
            stuff_area=self.stuff_area,
            void_label=self.void_label,
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:3])

    def compute_output_spec(self, inputs):
        shape = tuple(inputs[0].shape[:3])
        return keras.KerasTensor(shape, dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update(
            thing_classes=list(self.thing_classes),
            label_divisor=self.label_divisor,
            center_threshold=self.center_threshold,
            nms_kernel=self.nms_kernel,
            top_k=self.top_k,
            stuff_area=self.stuff_area,
            void_label=self.void_label,
        )
        return config


def merge(
    semantic,
    instances,
    thing_classes=None,
    label_divisor=LABEL_DIVISOR,
    score_threshold=0.5,
    overlap_threshold=0.5,
    stuff_area=4096,
    void_label=VOID_LABEL,
    ignore_index=255,
):
    """Panoptic FPN's merge of instance and semantic predictions into one panoptic map.

    Instances are taken by decreasing score (equal scores: input order), those scoring below
    ``score_threshold`` dropped; each claims its mask's pixels not yet claimed, unless more
    than ``overlap_threshold`` of its mask is claimed already (then it is dropped). Instance
    numbers count from 1 within each class, in that order. Then every semantic class that is
    neither a thing class nor ``ignore_index`` fills its still unclaimed pixels if they number
    at least ``stuff_area``. Everything else is ``void_label * label_divisor``.

    Args:
        semantic: int ``[H, W]`` semantic labels, or float ``[H, W, C]`` logits (arg-max taken).
        instances: a dict (or a ``(masks, classes, scores)`` tuple) with ``masks`` ``[N, H, W]``
            (bool, or probabilities thresholded at 0.5), ``classes`` ``[N]``, ``scores`` ``[N]``.
        thing_classes: semantic classes never used as stuff (their pixels not claimed by an
            instance become void); None: no class is excluded.
        label_divisor: ``id = class * label_divisor + instance``.
        score_threshold, overlap_threshold, stuff_area: as above (Panoptic FPN: 0.5, 0.5,
            4096).
        void_label: the class of void pixels.
        ignore_index: a semantic label that is never stuff.

    Returns:
        int32 ``[H, W]`` panoptic map.

    Example:
        >>> semantic = np.zeros((4, 4), "int32")
        >>> masks = np.zeros((1, 4, 4), bool); masks[0, :2, :2] = True
        >>> out = merge(semantic, {"masks": masks, "classes": [3], "scores": [0.9]},
        ...             stuff_area=1)
        >>> int(out[0, 0]), int(out[3, 3])
        (3001, 0)
    """
    semantic = np.asarray(semantic)
    if semantic.ndim == 3:
        semantic = np.argmax(semantic, axis=-1)
    if semantic.ndim != 2:
        raise ValueError(
            "merge: semantic must be labels [H, W] or logits [H, W, C]. Received: semantic "
            f"with shape {semantic.shape}"
        )
    if isinstance(instances, dict):
        masks, classes, scores = instances["masks"], instances["classes"], instances["scores"]
    else:
        masks, classes, scores = instances
    masks = np.asarray(masks)
    masks = masks if masks.dtype == bool else masks > 0.5
    classes = np.asarray(classes, np.int64).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if (
        masks.ndim != 3
        or masks.shape[1:] != semantic.shape
        or not (len(masks) == len(classes) == len(scores))
    ):
        raise ValueError(
            "merge: instances must hold masks [N, H, W] of the semantic map's size "
            f"{semantic.shape} and N classes and scores. Received: masks with shape "
            f"{masks.shape}, {len(classes)} classes, {len(scores)} scores"
        )
    things = set() if thing_classes is None else set(int(c) for c in thing_classes)
    panoptic = np.full(semantic.shape, void_label * label_divisor, np.int32)
    taken = np.zeros(semantic.shape, bool)
    counters = {}
    for index in np.argsort(-scores, kind="stable"):
        if scores[index] < score_threshold:
            continue
        mask = masks[index]
        area = int(mask.sum())
        if area == 0 or (mask & taken).sum() / area > overlap_threshold:
            continue
        free = mask & ~taken
        cls = int(classes[index])
        counters[cls] = counters.get(cls, 0) + 1
        panoptic[free] = cls * label_divisor + counters[cls]
        taken |= free
    for cls in np.unique(semantic):
        cls = int(cls)
        if cls in things or cls == ignore_index:
            continue
        region = (semantic == cls) & ~taken
        if region.sum() >= stuff_area:
            panoptic[region] = cls * label_divisor
            taken |= region
    return panoptic

"""Mask R-CNN (He et al. 2017) on a ResNet-FPN backbone from ``kseg.backbones``.

The functional graph maps images to the FPN levels P2-P6 and the RPN outputs; the box and
mask heads run on RoIAlign crops in :meth:`MaskRCNN.train_step` (targets from
:mod:`kseg.instance.targets`) and :meth:`MaskRCNN.predict_step` (detections, full-image masks).
The heads follow TF Model Garden's Mask R-CNN: FPN with a stride-2 convolution for P6, a
"4conv1fc" box head with class-specific regression, a 4-convolution 28x28 mask head.

Example:
    >>> model = MaskRCNN(num_classes=3, backbone="resnet50", input_shape=(64, 64, 3))  # doctest: +SKIP
    >>> out = model.predict(images)  # doctest: +SKIP
    >>> sorted(out)  # doctest: +SKIP
    ['boxes', 'classes', 'masks', 'num_detections', 'scores']
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg import backbones
from kseg.instance.boxes import DEFAULT_RATIOS, generate_anchors
from kseg.instance.proposals import detections_from_heads, paste_masks, proposals_from_rpn
from kseg.instance.roi_align import multilevel_roi_align
from kseg.instance.targets import assign_anchors, mask_targets, sample_rois
from kseg.layers import ImageNormalization
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_positive_int,
)
from kseg.registry import MODELS

FPN_LEVELS = (2, 3, 4, 5, 6)
ANCHOR_SIZES = (32, 64, 128, 256, 512)
RPN_NEGATIVE_IOU = 0.3


@keras.saving.register_keras_serializable(package="kseg")
class UpsampleLike(layers.Layer):
    """Nearest-neighbour 2x upsampling of ``x`` cropped to the size of ``reference`` (FPN).

    Example:
        >>> UpsampleLike()([tf.ones((1, 2, 2, 4)), tf.ones((1, 3, 3, 4))]).shape.as_list()
        [1, 3, 3, 4]
    """

    def call(self, inputs):
        x, reference = inputs
        x = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
        size = tf.shape(reference)
        return x[:, : size[1], : size[2], :]

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])


def _conv_bn_relu(filters, name):
    return [
        layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv"),
        layers.BatchNormalization(name=f"{name}_bn"),
        layers.ReLU(name=f"{name}_relu"),
    ]


def _normal(stddev):
    return keras.initializers.RandomNormal(stddev=stddev)


def _huber(x, beta):
    absolute = tf.abs(x)
    return tf.where(absolute < beta, 0.5 * x * x / beta, absolute - 0.5 * beta)


@MODELS.register("mask_rcnn", "maskrcnn")
@keras.saving.register_keras_serializable(package="kseg")
class MaskRCNN(SegmentationModel):
    """Mask R-CNN with a ResNet-FPN backbone: boxes, classes and instance masks.

    Args:
        num_classes: classes including the background (COCO: 81).
        backbone: a ``kseg.backbones`` name with levels P2-P5 (``resnet50``, ``resnet101``).
        fpn: must be True (the FPN is the only feature path implemented).
        input_shape: ``(H, W, 3)``; H and W may be None.
        weights: backbone initialisation (None or ``"imagenet"``).
        fpn_filters: channels of the FPN levels and the heads.
        rpn_samples, roi_samples, roi_positive_fraction: anchors per image for the RPN loss
            (half positive at most) and RoIs per image for the heads (25 % foreground at
            most), as the paper.
        rpn_positive_iou: IoU with a box from which an anchor is a positive of the RPN loss
            (the paper's 0.7; besides, each box's best anchors are positive). On small
            objects few anchors reach 0.7, so 0.5 gives the RPN several positives per box.
        train_proposals, test_proposals: proposals kept after NMS per image.
        max_detections, score_threshold: detections returned by ``predict``.
        anchor_sizes: anchor side (pixels) at P2..P6; three aspect ratios each.

    Inputs are float RGB images in 0..255. ``fit`` takes ``(images, targets)`` with targets
    ``{"boxes": [B, G, 4] (ymin, xmin, ymax, xmax pixels), "classes": [B, G] (0 pads),
    "masks": [B, G, H, W]}`` and optionally ``"is_crowd": [B, G]`` (see :func:`pad_targets`).
    ``predict`` returns ``boxes [B, D, 4]``, ``scores [B, D]``, ``classes [B, D]``,
    ``masks [B, D, H, W]`` (probabilities) and ``num_detections [B]``, padded to
    ``D = max_detections``.

    Registered as ``"mask_rcnn"`` (``kseg.models.create("mask_rcnn", ...)``) with
    ``task = "instance"``: the semantic sweeps (model matrix, ``kseg bench``) leave it out.

    Example:
        >>> model = MaskRCNN(num_classes=81)  # doctest: +SKIP
        >>> model.count_params()  # doctest: +SKIP
        46381173
    """

    task = "instance"

    def __init__(
        self,
        num_classes=81,
        backbone="resnet50",
        fpn=True,
        input_shape=(None, None, 3),
        weights=None,
        fpn_filters=256,
        rpn_samples=256,
        rpn_positive_iou=0.7,
        roi_samples=512,
        roi_positive_fraction=0.25,
        train_proposals=1000,
        test_proposals=1000,
        max_detections=100,
        score_threshold=0.05,
        anchor_sizes=ANCHOR_SIZES,
        name=None,
        **kwargs,
    ):
        check_num_classes("MaskRCNN", num_classes)
        anchor_sizes = tuple(anchor_sizes)
        if len(anchor_sizes) != len(FPN_LEVELS) or not all(
            isinstance(v, (int, float)) and v > 0 for v in anchor_sizes
        ):
            raise ValueError(
                "MaskRCNN: anchor_sizes must be five positive sizes (P2..P6). "
                f"Received: anchor_sizes={anchor_sizes!r}"
            )
        if num_classes < 2:
            raise ValueError(
                "MaskRCNN: num_classes counts the background and must be >= 2. "
                f"Received: num_classes={num_classes!r}"
            )
        if (
            isinstance(rpn_positive_iou, bool)
            or not isinstance(rpn_positive_iou, (int, float))
            or not RPN_NEGATIVE_IOU < rpn_positive_iou <= 1.0
        ):
            raise ValueError(
                f"MaskRCNN: rpn_positive_iou must be in ({RPN_NEGATIVE_IOU}, 1] (anchors under "
                f"{RPN_NEGATIVE_IOU} are the negatives). Received: rpn_positive_iou="
                f"{rpn_positive_iou!r}"
            )
        if fpn is not True:
            raise ValueError(f"MaskRCNN: only fpn=True is implemented. Received: fpn={fpn!r}")
        input_shape = check_input_shape("MaskRCNN", input_shape, channels=(3,))
        for argument, value in (
            ("fpn_filters", fpn_filters),
            ("rpn_samples", rpn_samples),
            ("roi_samples", roi_samples),
            ("train_proposals", train_proposals),
            ("test_proposals", test_proposals),
            ("max_detections", max_detections),
        ):
            check_positive_int("MaskRCNN", argument, value)
        # 1. layers: backbone, FPN (P2-P6), RPN head shared over the levels
        images = keras.Input(input_shape, name="images")
        builder = backbones.BACKBONES.get(backbone)
        x = ImageNormalization(getattr(builder, "preprocessing", "caffe"), name="normalize")(images)
        feats = backbones.build(backbone, x, output_stride=32, weights=weights)
        missing = [k for k in ("P2", "P3", "P4", "P5") if k not in feats]
        if missing:
            raise ValueError(
                f"MaskRCNN: the backbone must give P2-P5. Received: backbone={backbone!r} "
                f"without {missing}"
            )
        laterals = {
            level: layers.Conv2D(fpn_filters, 1, name=f"fpn_lateral{level}")(feats[f"P{level}"])
            for level in (2, 3, 4, 5)
        }
        merged = {5: laterals[5]}
        for level in (4, 3, 2):
            up = UpsampleLike(name=f"fpn_upsample{level}")([merged[level + 1], laterals[level]])
            merged[level] = layers.Add(name=f"fpn_add{level}")([up, laterals[level]])
        pyramid = {}
        for level in (2, 3, 4, 5):
            pyramid[level] = layers.Conv2D(
                fpn_filters, 3, padding="same", name=f"fpn_output{level}"
            )(merged[level])
        pyramid[6] = layers.Conv2D(fpn_filters, 3, strides=2, padding="same", name="fpn_p6")(
            pyramid[5]
        )
        num_anchors = len(DEFAULT_RATIOS)
        rpn_conv = layers.Conv2D(fpn_filters, 3, padding="same", activation="relu", name="rpn_conv")
        # Small initial outputs (Detectron's std 0.01 / 0.001): losses start near their
        # chance values instead of saturating.
        rpn_scores_layer = layers.Conv2D(
            num_anchors, 1, kernel_initializer=_normal(0.01), name="rpn_scores"
        )
        rpn_deltas_layer = layers.Conv2D(
            num_anchors * 4, 1, kernel_initializer=_normal(0.01), name="rpn_deltas"
        )
        scores, deltas = [], []
        for level in FPN_LEVELS:
            hidden = rpn_conv(pyramid[level])
            scores.append(
                layers.Reshape((-1,), name=f"rpn_scores_flat{level}")(rpn_scores_layer(hidden))
            )
            deltas.append(
                layers.Reshape((-1, 4), name=f"rpn_deltas_flat{level}")(rpn_deltas_layer(hidden))
            )
        outputs = {f"P{level}": pyramid[level] for level in FPN_LEVELS}
        outputs["rpn_scores"] = layers.Concatenate(axis=1, name="rpn_scores_all")(scores)
        outputs["rpn_deltas"] = layers.Concatenate(axis=1, name="rpn_deltas_all")(deltas)
        # 2. wiring
        super().__init__(images, outputs, name=name or "mask_rcnn", **kwargs)
        # The heads run on RoIAlign crops, outside the functional graph; built here so that
        # their weights exist before a .keras file is loaded.
        box_layers = []
        for k in range(4):
            box_layers += _conv_bn_relu(fpn_filters, f"box_head{k}")
        box_layers += [
            layers.Flatten(name="box_flatten"),
            layers.Dense(1024, activation="relu", name="box_fc"),
        ]
        self.box_head = keras.Sequential(box_layers, name="box_head")
        self.box_classifier = layers.Dense(
            num_classes, kernel_initializer=_normal(0.01), name="box_classifier"
        )
        self.box_regressor = layers.Dense(
            num_classes * 4, kernel_initializer=_normal(0.001), name="box_regressor"
        )
        mask_layers = [
            layers.Conv2D(fpn_filters, 3, padding="same", activation="relu", name=f"mask_conv{k}")
            for k in range(4)
        ]
        mask_layers += [
            layers.Conv2DTranspose(
                fpn_filters, 2, strides=2, activation="relu", name="mask_upsample"
            ),
            layers.Conv2D(num_classes, 1, name="mask_logits"),
        ]
        self.mask_head = keras.Sequential(mask_layers, name="mask_head")
        self.box_head.build((None, 7, 7, fpn_filters))
        self.box_classifier.build((None, 1024))
        self.box_regressor.build((None, 1024))
        self.mask_head.build((None, 14, 14, fpn_filters))
        # 3. config
        self._store_config(
            num_classes=num_classes,
            backbone=backbone,
            fpn=fpn,
            input_shape=input_shape,
            weights=weights,
            fpn_filters=fpn_filters,
            rpn_samples=rpn_samples,
            rpn_positive_iou=rpn_positive_iou,
            roi_samples=roi_samples,
            roi_positive_fraction=roi_positive_fraction,
            train_proposals=train_proposals,
            test_proposals=test_proposals,
            max_detections=max_detections,
            score_threshold=score_threshold,
            anchor_sizes=anchor_sizes,
        )

    # -- heads ---------------------------------------------------------------------------

    def _features(self, outputs):
        return {f"P{level}": outputs[f"P{level}"] for level in (2, 3, 4, 5)}

    def run_box_head(self, features, rois, box_indices, training=False, routing="partition"):
        """Class logits ``[R, K]`` and class-specific deltas ``[R, K * 4]`` of the RoIs
        (``routing``: see :func:`kseg.instance.multilevel_roi_align`)."""
        count = tf.shape(rois)[0]
        rois, box_indices = _at_least_one_roi(rois, box_indices)
        crops = multilevel_roi_align(features, rois, box_indices, 7, routing=routing)
        hidden = self.box_head(crops, training=training)
        return self.box_classifier(hidden)[:count], self.box_regressor(hidden)[:count]

    def run_mask_head(
        self, features, rois, box_indices, classes, training=False, routing="partition"
    ):
        """28x28 mask logits of each RoI for its class, ``[R, 28, 28]``."""
        count = tf.shape(rois)[0]
        rois, box_indices = _at_least_one_roi(rois, box_indices)
        crops = multilevel_roi_align(features, rois, box_indices, 14, routing=routing)
        logits = self.mask_head(crops, training=training)[:count]  # [R, 28, 28, K]
        return tf.gather(logits, tf.cast(classes, tf.int32), axis=3, batch_dims=1)

    def _proposals(self, outputs, anchors, image_size, count):
        scores = tf.stop_gradient(outputs["rpn_scores"])
        deltas = tf.stop_gradient(outputs["rpn_deltas"])
        rois, indices = [], []
        for b in range(_static_batch(scores)):
            boxes = proposals_from_rpn(
                scores[b], deltas[b], anchors, image_size, post_nms_top_k=count
            )
            rois.append(boxes)
            indices.append(tf.fill(tf.shape(boxes)[:1], b))
        return rois, indices

    # -- training ------------------------------------------------------------------------

    def compute_losses(self, images, targets, training=True):
        """The four losses (RPN objectness and boxes, head classes and boxes) and the mask
        loss, as a dict of scalars, for a batch with padded ``targets``.

        Example:
            >>> losses = model.compute_losses(images, pad_targets(samples))  # doctest: +SKIP
            >>> sorted(losses)  # doctest: +SKIP
            ['box_class', 'box_regression', 'mask', 'rpn_box', 'rpn_objectness']
        """
        outputs = self(images, training=training)
        image_size = (tf.shape(images)[1], tf.shape(images)[2])
        anchors = generate_anchors(image_size, FPN_LEVELS, self.anchor_sizes)
        features = self._features(outputs)
        rpn_scores, rpn_deltas = outputs["rpn_scores"], outputs["rpn_deltas"]
        proposals, _ = self._proposals(outputs, anchors, image_size, self.train_proposals)
        objectness, rpn_box = [], []
        rois, indices, classes, box_targets, masks = [], [], [], [], []
        for b in range(_static_batch(rpn_scores)):
            valid = targets["classes"][b] > 0
            gt_boxes = tf.boolean_mask(tf.cast(targets["boxes"][b], tf.float32), valid)
            gt_classes = tf.boolean_mask(tf.cast(targets["classes"][b], tf.int32), valid)
            gt_masks = tf.boolean_mask(targets["masks"][b], valid)
            crowd = targets.get("is_crowd")
            gt_crowd = (
                tf.zeros_like(gt_classes, tf.bool)
                if crowd is None
                else tf.boolean_mask(tf.cast(crowd[b], tf.bool), valid)
            )
            labels, _, deltas = assign_anchors(
                anchors,
                gt_boxes,
                gt_crowd,
                positive_iou=self.rpn_positive_iou,
                negative_iou=RPN_NEGATIVE_IOU,
                num_samples=self.rpn_samples,
            )
            sampled = labels >= 0
            count = tf.maximum(tf.reduce_sum(tf.cast(sampled, tf.float32)), 1.0)
            logits = tf.cast(rpn_scores[b], tf.float32)
            bce = tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.cast(tf.maximum(labels, 0), tf.float32), logits=logits
            )
            objectness.append(tf.reduce_sum(tf.where(sampled, bce, 0.0)) / count)
            positive = tf.cast(labels == 1, tf.float32)[:, None]
            error = _huber(tf.cast(rpn_deltas[b], tf.float32) - deltas, 1.0 / 9.0)
            rpn_box.append(tf.reduce_sum(error * positive) / count)
            r, c, matched, d = sample_rois(
                proposals[b],
                gt_boxes,
                gt_classes,
                gt_crowd,
                self.roi_samples,
                self.roi_positive_fraction,
            )
            rois.append(r)
            classes.append(c)
            box_targets.append(d)
            indices.append(tf.fill(tf.shape(r)[:1], b))
            # Foreground RoIs only (the mask loss's), so an image without objects needs none.
            fg = c > 0
            masks.append(
                mask_targets(gt_masks, tf.boolean_mask(matched, fg), tf.boolean_mask(r, fg), 28)
            )
        rois = tf.concat(rois, 0)
        indices = tf.concat(indices, 0)
        classes = tf.concat(classes, 0)
        box_targets = tf.concat(box_targets, 0)
        masks = tf.concat(masks, 0)
        class_logits, box_deltas = self.run_box_head(features, rois, indices, training)
        class_loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=classes, logits=tf.cast(class_logits, tf.float32)
            )
        )
        foreground = classes > 0
        num_rois = tf.maximum(tf.cast(tf.size(classes), tf.float32), 1.0)
        box_deltas = tf.reshape(tf.cast(box_deltas, tf.float32), (tf.shape(rois)[0], -1, 4))
        chosen = tf.gather(box_deltas, classes, axis=1, batch_dims=1)
        box_loss = (
            tf.reduce_sum(
                _huber(chosen - box_targets, 1.0) * tf.cast(foreground, tf.float32)[:, None]
            )
            / num_rois
        )
        fg_rois = tf.boolean_mask(rois, foreground)
        mask_logits = self.run_mask_head(
            features,
            fg_rois,
            tf.boolean_mask(indices, foreground),
            tf.boolean_mask(classes, foreground),
            training,
        )
        mask_bce = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=masks, logits=tf.cast(mask_logits, tf.float32)
        )
        mask_loss = tf.math.divide_no_nan(
            tf.reduce_sum(mask_bce), tf.cast(tf.size(mask_bce), tf.float32)
        )
        return {
            "rpn_objectness": tf.add_n(objectness) / len(objectness),
            "rpn_box": tf.add_n(rpn_box) / len(rpn_box),
            "box_class": class_loss,
            "box_regression": box_loss,
            "mask": mask_loss,
        }

    def train_step(self, data):
        images, targets = data[0], data[1]
        with tf.GradientTape() as tape:
            losses = self.compute_losses(images, targets, training=True)
            total = tf.add_n(list(losses.values()))
        variables = self.trainable_variables
        gradients = tape.gradient(total, variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None]
        )
        return {"loss": total, **losses}

    def test_step(self, data):
        images, targets = data[0], data[1]
        losses = self.compute_losses(images, targets, training=False)
        return {"loss": tf.add_n(list(losses.values())), **losses}

    # -- inference -----------------------------------------------------------------------

    def detect(self, images, routing="partition"):
        """Detections of a batch: see the class notes (``predict`` returns the same).

        ``routing="gather"`` sends RoIs to their FPN level with TFLite built-in ops only (the
        exports use it; same values, more work), see :func:`kseg.instance.multilevel_roi_align`.

        Example:
            >>> out = model.detect(images)  # doctest: +SKIP
            >>> out["masks"].shape  # doctest: +SKIP
            TensorShape([2, 100, 64, 64])
        """
        images = tf.convert_to_tensor(images, tf.float32)
        outputs = self(images, training=False)
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        image_size = (height, width)
        anchors = generate_anchors(image_size, FPN_LEVELS, self.anchor_sizes)
        features = self._features(outputs)
        proposals, indices = self._proposals(outputs, anchors, image_size, self.test_proposals)
        class_logits, box_deltas = self.run_box_head(
            features, tf.concat(proposals, 0), tf.concat(indices, 0), routing=routing
        )
        start = 0
        results = {"boxes": [], "scores": [], "classes": [], "masks": [], "num_detections": []}
        limit = self.max_detections
        for b, rois in enumerate(proposals):
            count = tf.shape(rois)[0]
            boxes, scores, classes = detections_from_heads(
                rois,
                class_logits[start : start + count],
                box_deltas[start : start + count],
                image_size,
                self.score_threshold,
                max_detections=limit,
            )
            start += count
            logits = self.run_mask_head(
                features, boxes, tf.fill(tf.shape(classes), b), classes, routing=routing
            )
            masks = paste_masks(tf.sigmoid(tf.cast(logits, tf.float32)), boxes, image_size)
            found = tf.shape(boxes)[0]
            pad = limit - found
            results["boxes"].append(tf.pad(boxes, [[0, pad], [0, 0]]))
            results["scores"].append(tf.pad(scores, [[0, pad]]))
            results["classes"].append(tf.pad(classes, [[0, pad]]))
            results["masks"].append(tf.pad(masks, [[0, pad], [0, 0], [0, 0]]))
            results["num_detections"].append(found)
        return {key: tf.stack(value) for key, value in results.items()}

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.detect(images)


def _at_least_one_roi(rois, box_indices):
    """Appends a 1x1 RoI only when there is none: an eager Conv2D on an empty batch fails
    (an image without objects, or without detections); the heads' callers drop it."""
    rois = tf.convert_to_tensor(rois, tf.float32)
    box_indices = tf.cast(box_indices, tf.int32)
    missing = tf.maximum(1 - tf.shape(rois)[0], 0)
    rois = tf.concat([rois, tf.tile([[0.0, 0.0, 1.0, 1.0]], [missing, 1])], 0)
    return rois, tf.concat([box_indices, tf.zeros([missing], tf.int32)], 0)


def _static_batch(tensor):
    batch = tensor.shape[0]
    if batch is None:
        raise ValueError(
            "MaskRCNN needs a static batch size in fit and predict (batch the dataset with "
            f"drop_remainder=True or pass arrays). Received: shape={tensor.shape}"
        )
    return batch


def pad_targets(samples, max_instances=None):
    """Stacks instance samples (dicts of ``image``, ``boxes``, ``classes``, ``masks`` and
    optionally ``is_crowd``, as :func:`kseg.data.synthetic_instances` gives) into
    ``(images [B, H, W, 3], targets)`` with ``targets`` padded to ``G`` instances (class 0).

    Example:
        >>> images, targets = pad_targets(list(kseg.data.synthetic_instances(2, (32, 32))))  # doctest: +SKIP
        >>> targets["masks"].shape  # doctest: +SKIP
        (2, 5, 32, 32)
    """
    import numpy as np

    samples = [{k: np.asarray(v) for k, v in s.items()} for s in samples]
    count = max_instances or max([len(s["classes"]) for s in samples] + [1])
    height, width = samples[0]["image"].shape[:2]
    images = np.stack([s["image"] for s in samples]).astype(np.float32)
    boxes = np.zeros((len(samples), count, 4), np.float32)
    classes = np.zeros((len(samples), count), np.int32)
    masks = np.zeros((len(samples), count, height, width), np.uint8)
    crowd = np.zeros((len(samples), count), bool)
    for b, s in enumerate(samples):
        n = min(len(s["classes"]), count)
        boxes[b, :n] = s["boxes"][:n]
        classes[b, :n] = s["classes"][:n]
        masks[b, :n] = s["masks"][:n]
        if "is_crowd" in s:
            crowd[b, :n] = s["is_crowd"][:n]
    return images, {"boxes": boxes, "classes": classes, "masks": masks, "is_crowd": crowd}


__all__ = ["MaskRCNN", "UpsampleLike", "pad_targets"]

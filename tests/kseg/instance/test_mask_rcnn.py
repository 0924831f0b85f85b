"""Mask R-CNN: losses, training steps, predict, .keras round trip, proposals and mask pasting."""

import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.instance import MaskRCNN, pad_targets, paste_masks, proposals_from_rpn
from kseg.instance.proposals import detections_from_heads


def _batch():
    samples = [
        {k: v.numpy() for k, v in s.items()}
        for s in kseg.data.synthetic_instances(2, (64, 64), seed=0)
    ]
    return pad_targets(samples)


def _small_model():
    return MaskRCNN(
        num_classes=6,
        backbone="resnet18",
        fpn_filters=32,
        input_shape=(64, 64, 3),
        roi_samples=64,
        train_proposals=200,
        test_proposals=100,
        max_detections=20,
    )


def test_mask_rcnn_trains_predicts_and_round_trips(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    images, targets = _batch()
    model = _small_model()
    assert isinstance(kseg.models.MaskRCNN(num_classes=3, backbone="resnet18"), MaskRCNN)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), run_eagerly=True)
    history = model.fit(images, targets, batch_size=2, epochs=3, verbose=0).history
    for key in ("rpn_objectness", "rpn_box", "box_class", "box_regression", "mask"):
        assert np.all(np.isfinite(history[key])), key
    assert history["loss"][-1] < history["loss"][0]
    out = model.predict(images, batch_size=2, verbose=0)
    assert out["boxes"].shape == (2, 20, 4) and out["masks"].shape == (2, 20, 64, 64)
    assert out["classes"].dtype == np.int32 and out["num_detections"].shape == (2,)
    for b in range(2):
        n = out["num_detections"][b]
        assert set(out["classes"][b, :n].tolist()) <= set(range(1, 6))
        assert np.all(np.diff(out["scores"][b, :n]) <= 0)  # best first
        assert np.all(out["masks"][b] >= 0) and np.all(out["masks"][b] <= 1)
        boxes = out["boxes"][b, :n]
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 64)
        # Mask probabilities lie inside their boxes (pasting fades over one pixel at most).
        for box, mask in zip(boxes, out["masks"][b, :n]):
            outside = np.ones((64, 64), bool)
            y0, x0 = int(np.floor(box[0])), int(np.floor(box[1]))
            outside[
                max(y0 - 1, 0) : int(np.ceil(box[2])) + 1, max(x0 - 1, 0) : int(np.ceil(box[3])) + 1
            ] = False
            assert np.all(mask[outside] == 0)
    path = tmp_path / "mask_rcnn.keras"
    model.save(path)
    restored = kseg.load_model(path)
    assert type(restored) is MaskRCNN and restored.get_config() == model.get_config()
    again = restored.predict(images, batch_size=2, verbose=0)
    for key in out:
        np.testing.assert_allclose(again[key], out[key], atol=1e-5)


def test_an_image_without_objects_is_trained_on_as_all_background():
    scene = next(iter(kseg.data.synthetic_instances(1, (64, 64), seed=0)))
    scene = {k: v.numpy() for k, v in scene.items()}
    empty = {
        "image": scene["image"],
        "boxes": np.zeros((0, 4), np.float32),
        "classes": np.zeros((0,), np.int32),
        "masks": np.zeros((0, 64, 64), np.uint8),
    }
    images, targets = pad_targets([empty, empty])
    assert not targets["classes"].any()  # padding only
    model = _small_model()
    with tf.GradientTape() as tape:
        losses = model.compute_losses(images, targets)
        total = tf.add_n(list(losses.values()))
    # No objects: no box or mask targets, only "background" for the RPN and the box classifier.
    assert float(losses["rpn_box"]) == 0.0 and float(losses["box_regression"]) == 0.0
    assert float(losses["mask"]) == 0.0
    assert float(losses["rpn_objectness"]) > 0.0 and float(losses["box_class"]) > 0.0
    gradients = tape.gradient(total, model.trainable_variables)
    assert all(np.isfinite(g.numpy()).all() for g in gradients if g is not None)


def test_every_weight_gets_a_gradient():
    images, targets = _batch()
    model = _small_model()
    with tf.GradientTape() as tape:
        losses = model.compute_losses(tf.constant(images), targets)
        total = tf.add_n(list(losses.values()))
    gradients = tape.gradient(total, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, gradients) if g is None]
    assert not missing


def test_proposals_are_decoded_clipped_and_suppressed():
    anchors = tf.constant(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 1.0, 10.0, 11.0],
            [20.0, 20.0, 30.0, 30.0],
            [-5.0, 50.0, 5.0, 70.0],
        ]
    )
    deltas = np.zeros((4, 4), np.float32)
    deltas[2] = [0.1, 0.0, np.log(2.0), 0.0]  # centre down one pixel, twice the height
    boxes = proposals_from_rpn([3.0, 2.0, 1.0, 0.5], deltas, anchors, (40, 64)).numpy()
    # Anchor 1 overlaps anchor 0 at IoU 0.82 > 0.7: suppressed. Anchor 3 is clipped.
    np.testing.assert_allclose(boxes, [[0, 0, 10, 10], [16, 20, 36, 30], [0, 50, 5, 64]], atol=1e-5)


def test_detections_use_class_specific_boxes_and_class_wise_nms():
    rois = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]
    logits = np.log([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])
    deltas = np.zeros((2, 12), np.float32)
    deltas[0, 4:8] = [10.0, 0.0, 0.0, 0.0]  # class 1 of RoI 0: shifted by one height
    boxes, scores, classes = detections_from_heads(rois, logits, deltas, (40, 40), 0.05)
    # Class 1: RoI 0's box moved to [10, 0, 20, 10] (0.8) and RoI 1's at [0, 0, 10, 10] (0.2)
    # do not overlap: both stay. Class 2: both boxes at [0, 0, 10, 10]; NMS keeps 0.7 only.
    # Class 2's box of RoI 1 overlaps class 1's of RoI 1 fully, but NMS is class-wise.
    np.testing.assert_allclose(scores.numpy(), [0.8, 0.7, 0.2], rtol=1e-5)
    assert classes.numpy().tolist() == [1, 2, 1]
    np.testing.assert_allclose(
        boxes.numpy(), [[10, 0, 20, 10], [0, 0, 10, 10], [0, 0, 10, 10]], atol=1e-5
    )


def test_pasted_mask_covers_its_box():
    mask = np.ones((1, 28, 28), np.float32)
    pasted = paste_masks(mask, [[8.0, 4.0, 24.0, 36.0]], (40, 48)).numpy()[0]
    # Inside the outermost bin centres the mask is 1; the box's edge pixels interpolate
    # towards the zero border (pixel centre 4.5 is 1/16 of a bin outside the first centre).
    assert np.all(pasted[9:23, 5:35] == 1.0)
    assert pasted[8, 4] == pytest.approx(0.9375) and np.all(pasted[8:24, 4:36] >= 0.9375)
    assert np.all(pasted[:7] == 0) and np.all(pasted[25:] == 0)
    assert np.all(pasted[:, :3] == 0) and np.all(pasted[:, 37:] == 0)


@pytest.mark.slow
def test_mask_rcnn_r50_fpn_parameter_count_matches_model_garden():
    # TF Model Garden, Mask R-CNN R50-FPN at 81 classes: 46.3 M. Ours: 46,384,245 (with the
    # 53,248 batch-norm statistics), 46,329,077 trainable.
    model = MaskRCNN(num_classes=81)
    assert abs(model.count_params() - 46.3e6) / 46.3e6 < 0.02
    assert model.count_params() == 46_384_245


def test_rpn_positive_iou_sets_the_rpn_positives(monkeypatch):
    from kseg.instance import mask_rcnn, targets

    calls = []

    def recording(anchors, gt_boxes, gt_crowd=None, **kwargs):
        labels, matched, deltas = targets.assign_anchors(anchors, gt_boxes, gt_crowd, **kwargs)
        every = targets.assign_anchors(
            anchors, gt_boxes, gt_crowd, **{**kwargs, "num_samples": None}
        )
        calls.append((kwargs["positive_iou"], int(np.sum(every[0].numpy() == 1)), labels))
        return labels, matched, deltas

    monkeypatch.setattr(mask_rcnn, "assign_anchors", recording)
    # One 20x20 box on a 64x64 image: at IoU 0.7 only its best anchor, at 0.5 several.
    images = np.zeros((1, 64, 64, 3), np.float32)
    box_targets = {
        "boxes": np.array([[[10.0, 20.0, 30.0, 40.0]]], np.float32),
        "classes": np.array([[1]], np.int32),
        "masks": np.zeros((1, 1, 64, 64), np.uint8),
    }
    box_targets["masks"][0, 0, 10:30, 20:40] = 1
    counts = {}
    for threshold in (0.7, 0.5):
        model = MaskRCNN(
            num_classes=2,
            backbone="resnet18",
            fpn_filters=16,
            input_shape=(64, 64, 3),
            roi_samples=16,
            train_proposals=50,
            test_proposals=50,
            rpn_positive_iou=threshold,
            anchor_sizes=(16, 32, 64, 128, 256),
        )
        assert model.get_config()["rpn_positive_iou"] == threshold
        model.compute_losses(tf.constant(images), box_targets)
        used, positives, labels = calls[-1]
        assert used == threshold
        counts[threshold] = positives
        # The sampled positives are those of the threshold (at most half of rpn_samples).
        assert int(np.sum(labels.numpy() == 1)) == positives
    # Brute force: anchors (16 px at P2, 32 px at P3; ratios 1/2, 1, 2) with IoU >= t.
    from kseg.instance.boxes import box_iou, generate_anchors

    iou = box_iou(
        generate_anchors((64, 64), sizes=(16, 32, 64, 128, 256)), [[10.0, 20.0, 30.0, 40.0]]
    )
    iou = iou.numpy()[:, 0]
    assert counts[0.5] == int(np.sum((iou >= 0.5) | (iou == iou.max())))
    assert counts[0.7] == int(np.sum((iou >= 0.7) | (iou == iou.max())))
    assert counts[0.5] > counts[0.7]


@pytest.mark.parametrize("value", [0.3, 0.1, 1.5, True, "0.5"])
def test_rpn_positive_iou_is_checked(value):
    with pytest.raises(ValueError, match=r"Received: rpn_positive_iou="):
        MaskRCNN(num_classes=3, backbone="resnet18", rpn_positive_iou=value)

"""Mask R-CNN export: the TFLite-friendly RoI routing and mask pasting equal the training
ones, the SavedModel signature equals predict, and the TFLite file uses built-in ops only."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.instance import MaskRCNN, multilevel_roi_align, paste_masks
from kseg.instance import export as instance_export


def _crop_and_resize_paste(masks, boxes, image_size):
    """Mask pasting as predict did before: tf.image.crop_and_resize on a zero-padded mask."""
    masks = tf.cast(masks, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    size = float(masks.shape[1])
    height, width = image_size
    h = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
    w = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    first_last = tf.stack(
        [
            (0.5 - boxes[:, 0]) / h * size - 0.5,
            (0.5 - boxes[:, 1]) / w * size - 0.5,
            (height - 0.5 - boxes[:, 0]) / h * size - 0.5,
            (width - 0.5 - boxes[:, 1]) / w * size - 0.5,
        ],
        axis=1,
    )
    normalized = (first_last + 1.0) / (size + 1.0)
    padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1]])[..., None]
    return tf.image.crop_and_resize(
        padded, normalized, tf.range(masks.shape[0]), (height, width), extrapolation_value=0.0
    )[..., 0]


def test_pasting_equals_crop_and_resize_and_gather_routing_equals_partition():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(12, 28, 28)).astype("float32")
    corner = rng.uniform(-8, 40, size=(12, 2))
    extent = rng.uniform(0.3, 30, size=(12, 2))  # sub-pixel to large, some past the border
    boxes = np.concatenate([corner, corner + extent], 1).astype("float32")
    np.testing.assert_allclose(
        paste_masks(masks, boxes, (37, 45)).numpy(),
        _crop_and_resize_paste(masks, boxes, (37, 45)).numpy(),
        # crop_and_resize rescales its coordinates in float32: on sub-pixel boxes (28 cells
        # per pixel) that rounding reaches ~1.7e-5 of the [0, 1] probabilities
        atol=3e-5,
    )
    features = {
        f"P{lvl}": tf.constant(rng.normal(size=(2, 256 // 2**lvl, 256 // 2**lvl, 3)), tf.float32)
        for lvl in (2, 3, 4, 5)
    }
    big = np.array(
        [[0, 0, 120, 120], [0, 0, 250, 250], [-10, 20, 490, 520], [5, 5, 9, 7]], "float32"
    )
    rois = np.concatenate([boxes * 4, big])
    indices = rng.integers(0, 2, len(rois))
    levels = kseg.instance.fpn_levels(rois).numpy()
    assert set(levels.tolist()) == {2, 3, 4, 5}  # every level is routed to
    np.testing.assert_allclose(
        multilevel_roi_align(features, rois, indices, 7, routing="gather").numpy(),
        multilevel_roi_align(features, rois, indices, 7, routing="partition").numpy(),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="Received: routing='loop'"):
        multilevel_roi_align(features, rois, indices, routing="loop")


def _model():
    keras.utils.set_random_seed(0)
    # score_threshold 0: an untrained model still returns max_detections detections
    return MaskRCNN(
        num_classes=4,
        backbone="resnet18",
        fpn_filters=8,
        input_shape=(32, 32, 3),
        test_proposals=20,
        max_detections=4,
        score_threshold=0.0,
    )


def _images(count):
    scenes = kseg.data.synthetic_instances(count, (32, 32), seed=1)
    return np.stack([s["image"].numpy() for s in scenes])


def _assert_detections_equal(got, expected, atol):
    assert sorted(got) == sorted(instance_export.OUTPUTS)
    for key in instance_export.OUTPUTS:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=atol)
    assert np.asarray(got["classes"]).dtype == np.int32


def test_saved_model_serving_signature_equals_predict(tmp_path):
    model = _model()
    images = _images(1)
    expected = model.predict(images, batch_size=1, verbose=0)
    assert int(expected["num_detections"][0]) == 4  # boxes, classes, scores, masks all exercised
    path = instance_export.saved_model(model, tmp_path / "saved")
    signature = tf.saved_model.load(path).signatures["serving_default"]
    got = signature(images=tf.constant(images))
    assert got["masks"].shape == (1, 4, 32, 32) and got["boxes"].shape == (1, 4, 4)
    _assert_detections_equal(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match="Received: model of type Sequential"):
        instance_export.saved_model(keras.Sequential([keras.Input((4,))]), tmp_path / "x")
    with pytest.raises(ValueError, match="Received: batch=0"):
        instance_export.saved_model(model, tmp_path / "y", batch=0)


@pytest.mark.slow
def test_tflite_with_builtin_ops_only_equals_predict(tmp_path):
    model = _model()
    images = _images(2)
    expected = model.predict(images, batch_size=1, verbose=0)
    path = instance_export.tflite(model, tmp_path / "m.tflite")  # built-ins only
    got = instance_export.run_tflite(path, images)
    _assert_detections_equal(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"Received: input_shape=\(None, None, 3\)"):
        instance_export.tflite(
            MaskRCNN(num_classes=3, backbone="resnet18", fpn_filters=8), tmp_path / "n.tflite"
        )

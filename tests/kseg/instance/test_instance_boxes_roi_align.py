"""Anchors, box coding and RoIAlign against hand computations and a numpy reference."""

import math

import numpy as np
import pytest
import tensorflow as tf

from kseg.instance.boxes import (
    box_iou,
    decode_boxes,
    encode_boxes,
    generate_anchors,
    level_sizes,
)
from kseg.instance.roi_align import fpn_levels, multilevel_roi_align, roi_align


def test_anchors_have_the_level_sizes_ratios_and_centres():
    anchors = generate_anchors((70, 100), levels=(2, 3), sizes=(32, 64), dtype=tf.float64).numpy()
    (h2, w2), (h3, w3) = level_sizes((70, 100), (2, 3))
    assert (h2, w2, h3, w3) == (18, 25, 9, 13)
    assert anchors.shape == ((h2 * w2 + h3 * w3) * 3, 4)
    level2 = anchors[: h2 * w2 * 3].reshape(h2, w2, 3, 4)
    heights = level2[..., 2] - level2[..., 0]
    widths = level2[..., 3] - level2[..., 1]
    np.testing.assert_allclose(heights * widths, 32.0**2)
    np.testing.assert_allclose(heights / widths, np.broadcast_to([0.5, 1.0, 2.0], (h2, w2, 3)))
    # Cell (i, j) of stride 4 is centred at (4 i + 2, 4 j + 2).
    centre_y = (level2[..., 0] + level2[..., 2]) / 2
    centre_x = (level2[..., 1] + level2[..., 3]) / 2
    np.testing.assert_allclose(centre_y[5, 7], 22.0)
    np.testing.assert_allclose(centre_x[5, 7], 30.0)
    level3 = anchors[h2 * w2 * 3 :].reshape(h3, w3, 3, 4)
    np.testing.assert_allclose(level3[1, 2, 1], [12 - 32, 20 - 32, 12 + 32, 20 + 32])
    # Ratio 0.5 (height / width) at size 64: height 64 sqrt(0.5), width 64 / sqrt(0.5).
    half_h, half_w = 32 * math.sqrt(0.5), 32 / math.sqrt(0.5)
    np.testing.assert_allclose(level3[0, 0, 0], [4 - half_h, 4 - half_w, 4 + half_h, 4 + half_w])


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_encoding_round_trips(weights):
    rng = np.random.default_rng(0)
    anchors = generate_anchors((64, 96), levels=(3, 4), sizes=(24, 48), dtype=tf.float64).numpy()
    corner = rng.uniform(-10, 90, size=(len(anchors), 2))
    size = rng.uniform(0.5, 120, size=(len(anchors), 2))
    boxes = np.concatenate([corner, corner + size], axis=1)
    deltas = encode_boxes(tf.constant(boxes), anchors, weights)
    np.testing.assert_allclose(decode_boxes(deltas, anchors, weights).numpy(), boxes, atol=1e-9)
    # A hand-computed case: a box twice an anchor's size, shifted by half the anchor.
    delta = encode_boxes(
        tf.constant([[1.0, 2.0, 5.0, 6.0]], tf.float64), [[0.0, 0.0, 2.0, 2.0]], weights
    ).numpy()
    expected = [weights[0] * 1.0, weights[1] * 1.5] + [w * math.log(2.0) for w in weights[2:]]
    np.testing.assert_allclose(delta[0], expected, rtol=1e-12)


def test_decoding_clips_large_size_deltas():
    box = decode_boxes(tf.constant([[0.0, 0.0, 100.0, 0.0]]), [[0.0, 0.0, 2.0, 2.0]]).numpy()[0]
    assert box[2] - box[0] == pytest.approx(2.0 * 1000.0 / 16.0, rel=1e-5)
    assert box[3] - box[1] == pytest.approx(2.0, rel=1e-6)


def test_box_iou_matches_hand_values():
    a = [[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0]]
    b = [[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 4.0, 2.0], [5.0, 5.0, 6.0, 6.0]]
    np.testing.assert_allclose(
        box_iou(a, b).numpy(), [[4 / 28, 0.5, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6
    )


def _bilinear(feature, y, x):
    """One sample of Detectron's RoIAlign bilinear interpolation (feature [H, W, C])."""
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * feature[y_low, x_low]
        + hy * lx * feature[y_low, x_high]
        + ly * hx * feature[y_high, x_low]
        + ly * lx * feature[y_high, x_high]
    )


def _reference_roi_align(features, boxes, indices, output, scale, ratio):
    """RoIAlign written from the paper, loop by loop: a bin averages ratio x ratio samples."""
    out = np.zeros((len(boxes), output, output, features.shape[3]))
    for n, (box, b) in enumerate(zip(boxes, indices)):
        y0, x0, y1, x1 = (v * scale - 0.5 for v in box)
        bin_h, bin_w = (y1 - y0) / output, (x1 - x0) / output
        for i in range(output):
            for j in range(output):
                total = np.zeros(features.shape[3])
                for iy in range(ratio):
                    y = y0 + i * bin_h + (iy + 0.5) * bin_h / ratio
                    for ix in range(ratio):
                        x = x0 + j * bin_w + (ix + 0.5) * bin_w / ratio
                        total += _bilinear(features[b], y, x)
                out[n, i, j] = total / ratio**2
    return out


def test_roi_align_equals_the_numpy_reference_at_borders_and_sub_pixel_sizes():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 9, 11, 3))
    boxes = np.array(
        [
            [0.0, 0.0, 36.0, 44.0],  # the whole map (stride 4)
            [-6.0, -3.0, 10.0, 7.0],  # past the top-left border
            [30.0, 38.0, 41.0, 47.0],  # past the bottom-right border
            [13.3, 17.1, 13.9, 17.5],  # smaller than a pixel
            [5.2, 9.7, 6.1, 31.4],  # thin
            [-9.0, -9.0, -4.5, -5.0],  # entirely outside
        ]
    )
    indices = np.array([0, 1, 0, 1, 0, 1])
    for ratio, output in ((2, 7), (1, 3), (3, 2)):
        got = roi_align(
            tf.constant(features), boxes, indices, output, spatial_scale=0.25, sampling_ratio=ratio
        ).numpy()
        expected = _reference_roi_align(features, boxes, indices, output, 0.25, ratio)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # float32 features give the same values to 1e-5.
    got32 = roi_align(tf.constant(features, tf.float32), boxes, indices, 7, 0.25).numpy()
    np.testing.assert_allclose(
        got32, _reference_roi_align(features, boxes, indices, 7, 0.25, 2), atol=1e-5
    )


def test_roi_align_has_gradients_and_levels_route_boxes():
    features = tf.Variable(tf.ones((1, 8, 8, 2)))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(roi_align(features, [[0.0, 0.0, 8.0, 8.0]], [0], 2))
    grad = tape.gradient(total, features)
    # The box covers the map: 16 unit-weight samples spread over the cells they touch.
    assert float(tf.reduce_sum(grad)) == pytest.approx(2 * 4.0)
    boxes = [[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 230.0, 230.0], [0.0, 0.0, 900.0, 900.0]]
    assert fpn_levels(boxes).numpy().tolist() == [2, 4, 5]
    feats = {f"P{k}": tf.fill((1, 256 // 2**k, 256 // 2**k, 1), float(k)) for k in (2, 3, 4, 5)}
    out = multilevel_roi_align(feats, [[10.0, 10.0, 60.0, 60.0], [0.0, 0.0, 200.0, 260.0]], [0, 0])
    assert out[:, 3, 3, 0].numpy().tolist() == [2.0, 4.0]

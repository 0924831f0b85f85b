"""Target assignment on hand-made boxes: positives, negatives, ignored, sampling, mask crops."""

import numpy as np
import tensorflow as tf

from kseg.instance.boxes import encode_boxes
from kseg.instance.targets import BOX_HEAD_WEIGHTS, assign_anchors, mask_targets, sample_rois

GT = np.array(
    [
        [0.0, 0.0, 10.0, 10.0],  # box 0
        [50.0, 50.0, 60.0, 60.0],  # box 1: crowd
        [20.0, 0.0, 30.0, 10.0],  # box 2
    ],
    np.float32,
)
CROWD = np.array([False, True, False])


def test_anchor_labels_on_hand_made_boxes():
    anchors = np.array(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with box 0: positive
            [0.0, 0.0, 10.0, 20.0],  # IoU 0.5 with box 0: between the thresholds, ignored
            [80.0, 80.0, 90.0, 90.0],  # far from everything: negative
            [20.0, 5.0, 30.0, 19.0],  # IoU 5/19 = 0.26 with box 2, its best anchor: positive
            [50.0, 50.0, 60.0, 70.0],  # IoU 0.5 with the crowd box: ignored, not negative
            [58.0, 58.0, 68.0, 68.0],  # IoU 4/196 with the crowd box: negative
        ],
        np.float32,
    )
    labels, matched, deltas = assign_anchors(anchors, GT, CROWD, num_samples=None)
    assert labels.numpy().tolist() == [1, -1, 0, 1, -1, 0]
    assert matched.numpy()[[0, 3]].tolist() == [0, 2]  # indices into the boxes, crowd counted
    np.testing.assert_allclose(deltas.numpy()[3], encode_boxes(GT[2:], anchors[3:4])[0], rtol=1e-6)
    np.testing.assert_array_equal(deltas.numpy()[[1, 2, 4, 5]], 0.0)


def test_anchor_sampling_keeps_half_positives():
    near = np.tile([[0.0, 0.0, 10.0, 10.4]], (200, 1))
    far = np.tile([[100.0, 100.0, 110.0, 110.0]], (300, 1))
    labels, _, _ = assign_anchors(np.concatenate([near, far]).astype(np.float32), GT[:1], seed=3)
    labels = labels.numpy()
    assert (labels[:200] == 1).sum() == 128 and (labels[:200] == -1).sum() == 72
    assert (labels[200:] == 0).sum() == 128 and (labels[200:] == -1).sum() == 172


def _proposals(count_fg, count_bg):
    rng = np.random.default_rng(0)
    fg = GT[2] + rng.uniform(-1.0, 1.0, (count_fg, 4))  # IoU > 0.5 with box 2
    bg = np.tile([[100.0, 100.0, 120.0, 120.0]], (count_bg, 1))
    return np.concatenate([fg, bg]).astype(np.float32)


def test_roi_sampling_takes_512_at_25_percent_foreground():
    rois, classes, matched, deltas = sample_rois(_proposals(300, 700), GT, [4, 1, 2], CROWD, seed=0)
    classes, matched = classes.numpy(), matched.numpy()
    assert len(classes) == 512
    assert (classes > 0).sum() == 128 and (classes[:128] > 0).all()
    assert set(classes[:128].tolist()) <= {2, 4}
    assert (matched[:128][classes[:128] == 2] == 2).all()
    np.testing.assert_allclose(
        deltas.numpy()[:128][classes[:128] == 2],
        encode_boxes(
            np.tile(GT[2:], (int((classes[:128] == 2).sum()), 1)),
            rois.numpy()[:128][classes[:128] == 2],
            BOX_HEAD_WEIGHTS,
        ),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_array_equal(deltas.numpy()[128:], 0.0)


def test_roi_sampling_with_few_positives_adds_the_ground_truth():
    _, classes, _, _ = sample_rois(_proposals(10, 700), GT, [4, 1, 2], CROWD, seed=0)
    classes = classes.numpy()
    # 10 proposals on box 2, plus the two non-crowd ground-truth boxes themselves.
    assert len(classes) == 512 and (classes > 0).sum() == 12
    assert sorted(classes[:12].tolist()) == [2] * 11 + [4]


def test_mask_targets_crop_the_matched_mask_at_bin_centres():
    masks = np.zeros((2, 56, 56), np.float32)
    masks[0, :, :28] = 1.0  # left half
    masks[1, 14:42, 14:42] = 1.0
    crops = mask_targets(
        masks,
        [0, 0, 1],
        [[0.0, 0.0, 56.0, 56.0], [0.0, 28.0, 56.0, 56.0], [14.0, 14.0, 42.0, 42.0]],
    ).numpy()
    expected = np.zeros((28, 28))
    expected[:, :14] = 1.0
    np.testing.assert_array_equal(crops[0], expected)
    np.testing.assert_array_equal(crops[1], 0.0)
    np.testing.assert_array_equal(crops[2], 1.0)
    assert tf.is_tensor(mask_targets(masks, [1], [[0.0, 0.0, 8.0, 8.0]]))

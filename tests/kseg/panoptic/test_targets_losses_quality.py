"""Panoptic-DeepLab targets, losses (against numpy) and the PQ used by the benchmark."""

import numpy as np
import pytest

from kseg.panoptic import (
    BootstrappedCrossEntropy,
    CenterLoss,
    OffsetLoss,
    instance_centers,
    panoptic_quality,
    panoptic_targets,
    training_targets,
)


def scene():
    panoptic = np.zeros((8, 10), "int32")  # stuff class 0
    panoptic[1:4, 1:5] = 1003  # class 1, instance 3: rows 1-3, cols 1-4 (12 px)
    panoptic[4:8, 1:5] = 1007  # touching, same class: rows 4-7 (16 px)
    panoptic[0, 9] = 255000  # void
    panoptic[6:8, 7:10] = 2000  # class 2 as stuff
    return panoptic


def test_targets_of_touching_objects():
    t = panoptic_targets(scene(), thing_classes=(1,), sigma=2.0, small_instance_area=13)
    # centres of mass: (2, 2.5) -> (2, 3) rounding half up; (5.5, 2.5) -> (6, 3)
    assert instance_centers(scene(), (1,)) == {1003: (2, 3), 1007: (6, 3)}
    assert t["semantic"][0, 9] == 255 and t["semantic"][2, 2] == 1 and t["semantic"][7, 9] == 2
    assert t["center"][2, 3] == 1.0 and t["center"][6, 3] == 1.0
    # the maximum of the two Gaussians: (4, 3) is 2 from both centres
    np.testing.assert_allclose(t["center"][4, 3], np.exp(-4 / 8), rtol=1e-6)
    np.testing.assert_allclose(t["center"][0, 0], np.exp(-(4 + 9) / 8), rtol=1e-6)
    np.testing.assert_array_equal(t["offset"][1, 1], [1, 2])
    np.testing.assert_array_equal(t["offset"][4, 4], [2, -1])  # second object, centre (6, 3)
    np.testing.assert_array_equal(t["offset"][0, 0], [0, 0])
    assert t["offset_weights"].sum() == 28 and t["offset_weights"][7, 9] == 0
    # the 12-pixel object is "small" (< 13): weight 3; the 16-pixel one is not; void is 0
    assert t["semantic_weights"][2, 2] == 3.0 and t["semantic_weights"][5, 2] == 1.0
    assert t["semantic_weights"][0, 9] == 0.0 and t["center_weights"][0, 9] == 0.0
    assert t["center_weights"].sum() == 79


def test_training_targets_pack_values_and_weights():
    maps = np.stack([scene(), np.zeros((8, 10), "int32")])
    semantic, center, offset = training_targets(maps, (1,), sigma=2.0)
    single = panoptic_targets(scene(), (1,), sigma=2.0)
    np.testing.assert_array_equal(semantic[0, ..., 0], single["semantic"])
    np.testing.assert_array_equal(center[0, ..., 1], single["center_weights"])
    np.testing.assert_array_equal(offset[0, ..., :2], single["offset"])
    assert offset[1].sum() == 0 and center[1, ..., 0].sum() == 0


def test_targets_name_a_bad_map():
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\) and dtype int64"):
        panoptic_targets(np.zeros((2, 3, 4), "int64"), (1,))
    with pytest.raises(ValueError, match=r"shape \(3, 4\) and dtype float32"):
        panoptic_targets(np.zeros((3, 4), "float32"), (1,))


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_bootstrapped_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 4, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 5, 4)).astype("float32")
    labels[0, 0, :2] = 255
    weights = rng.choice([1.0, 3.0], (2, 5, 4)).astype("float32")
    y_true = np.stack([labels, weights], -1)
    safe = np.where(labels == 255, 0, labels).astype(int)
    pixel = -np.take_along_axis(log_softmax(logits), safe[..., None], -1)[..., 0]
    pixel = pixel * weights * (labels != 255)
    flat = pixel.reshape(2, -1)
    k = int(np.ceil(0.25 * 20))
    expected = np.mean([np.sort(row)[-k:].mean() for row in flat])
    got = float(BootstrappedCrossEntropy(top_k_percent=0.25)(y_true, logits))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    valid = (labels != 255).reshape(2, -1).sum(1)
    expected_all = np.mean(flat.sum(1) / valid)
    got_all = float(BootstrappedCrossEntropy(top_k_percent=1.0)(y_true, logits))
    np.testing.assert_allclose(got_all, expected_all, rtol=1e-5)
    # plain labels: weight 1
    plain = float(BootstrappedCrossEntropy(top_k_percent=1.0)(labels, logits))
    unweighted = (pixel / weights).reshape(2, -1)
    np.testing.assert_allclose(plain, np.mean(unweighted.sum(1) / valid), rtol=1e-5)
    with pytest.raises(ValueError, match="Received: top_k_percent=0"):
        BootstrappedCrossEntropy(top_k_percent=0)


def test_center_and_offset_losses_match_numpy():
    rng = np.random.default_rng(1)
    prediction = rng.normal(size=(2, 4, 3, 1)).astype("float32")
    target = rng.uniform(size=(2, 4, 3)).astype("float32")
    weight = rng.choice([0.0, 1.0], (2, 4, 3)).astype("float32")
    got = float(CenterLoss()(np.stack([target, weight], -1), prediction))
    np.testing.assert_allclose(got, np.mean((prediction[..., 0] - target) ** 2 * weight), rtol=1e-5)
    offsets = rng.normal(size=(2, 4, 3, 2)).astype("float32") * 5
    predicted = rng.normal(size=(2, 4, 3, 2)).astype("float32")
    y_true = np.concatenate([offsets, weight[..., None]], -1)
    per_image = [
        (np.abs(predicted[i] - offsets[i]).sum(-1) * weight[i]).sum() / (2 * weight[i].sum())
        for i in range(2)
    ]
    np.testing.assert_allclose(
        float(OffsetLoss()(y_true, predicted)), np.mean(per_image), rtol=1e-5
    )
    with pytest.raises(ValueError, match=r"3 channels"):
        OffsetLoss()(offsets, predicted)


def test_panoptic_quality_on_a_hand_made_case():
    truth = np.array(
        [
            [1001, 1001, 1001, 1002, 1002, 0, 0, 255000],
            [1001, 1001, 1001, 1002, 1002, 0, 0, 255000],
        ]
    )
    pred = np.array(
        [
            [1007, 1007, 1007, 1007, 1009, 0, 0, 0],  # 1007 ~ 1001: IoU 6 / 8
            [1007, 1007, 1007, 1007, 1009, 0, 0, 0],  # 1009 ~ 1002: IoU 2 / 4, not > 0.5
        ]
    )
    result = panoptic_quality(pred, truth, thing_classes=(1,))
    things = result["per_class"][1]
    assert (things["tp"], things["fp"], things["fn"]) == (1, 1, 1)
    np.testing.assert_allclose(things["pq"], 0.75 / 2)
    # stuff 0: 6 predicted pixels, 2 of them on void -> IoU 4 / (6 + 4 - 4 - 2) = 1
    stuff = result["per_class"][0]
    assert (stuff["tp"], stuff["fp"], stuff["fn"]) == (1, 0, 0) and stuff["sq"] == 1.0
    np.testing.assert_allclose(result["pq"], (0.375 + 1.0) / 2)
    assert result["things"]["classes"] == 1 and result["stuff"]["pq"] == 1.0
    # a predicted segment mostly on void is no false positive
    pred2 = pred.copy()
    pred2[:, 7] = 1050
    pred2[:, 6] = 0
    assert panoptic_quality(pred2, truth, thing_classes=(1,))["per_class"][1]["fp"] == 1
    assert panoptic_quality(truth, truth)["pq"] == 1.0

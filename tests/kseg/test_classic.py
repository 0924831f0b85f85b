"""kseg.classic: the pre-deep-learning baselines and the Hungarian labelling of their segments."""

import numpy as np
import pytest

from kseg import classic, metrics


def three_regions(noise=3.0, seed=0):
    """A 40x48 image of three flat colours (left, right-top, right-bottom) with noise."""
    truth = np.zeros((40, 48), np.int32)
    truth[:20, 24:] = 1
    truth[20:, 24:] = 2
    colours = np.array([[30, 40, 200], [220, 200, 40], [120, 120, 120]], np.float64)
    image = colours[truth] + np.random.default_rng(seed).normal(0, noise, (40, 48, 3))
    return np.clip(image, 0, 255), truth


def test_hungarian_matching_is_one_to_one_then_fills_by_majority():
    # segment 0: 6 px of class 0 and 4 of class 1; segment 1: 10 px of class 0.
    # Majority voting would call both class 0 (16 px right); the one-to-one matching gives
    # segment 1 class 0 and segment 0 class 1 (10 + 4 = 14 px, the best one-to-one total).
    segments = np.array([[0] * 10 + [1] * 10 + [7] * 3])
    truth = np.array([[0] * 6 + [1] * 4 + [0] * 10 + [1, 1, 255]])
    predicted = classic.match_segments(segments, truth, num_classes=3)
    assert predicted[0, :10].tolist() == [1] * 10
    assert predicted[0, 10:20].tolist() == [0] * 10
    # segment 7 is left over (3 classes, 3 segments: it gets class 2, the one left); a 4th
    # segment beyond the classes takes its majority class
    assert predicted[0, 20:].tolist() == [2, 2, 2]
    more = np.concatenate([segments, [[9, 9]]], 1)
    truth_more = np.concatenate([truth, [[1, 1]]], 1)
    assert classic.match_segments(more, truth_more, 3)[0, -2:].tolist() == [1, 1]


def test_match_segments_bad_input():
    with pytest.raises(ValueError, match=r"truth.shape=\(2, 2\)"):
        classic.match_segments(np.zeros((2, 3)), np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match="label=5"):
        classic.match_segments(np.zeros((1, 2)), np.array([[0, 5]]), 2)


def test_thresholds_split_grey_levels_exactly():
    # three bands of grey levels, 9 columns each
    rng = np.random.default_rng(0)
    grey = np.concatenate([rng.uniform(lo, lo + 30, (6, 9)) for lo in (10, 110, 210)], axis=1)
    image = np.repeat(grey[..., None], 3, -1)
    expected = np.repeat(np.arange(3), 9)
    assert (classic.multi_otsu(image, classes=3) == expected).all()
    two = classic.otsu(image)
    assert (two[:, :9] == 0).all() and (two[:, 18:] == 1).all()
    assert classic.otsu(np.full((2, 2, 3), 7.0)).tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("kmeans", {"n_clusters": 3}),
        ("gmm", {"n_components": 3}),
        ("mean_shift", {"bandwidth": 0.15}),
        ("watershed", {"markers": 12}),
        ("felzenszwalb", {"scale": 50, "min_size": 30}),
        ("normalized_cuts", {"n_segments": 60}),
    ],
)
def test_each_method_recovers_three_flat_regions(method, kwargs):
    image, truth = three_regions()
    predicted = classic.match_segments(classic.segment(method, image, **kwargs), truth, 3)
    accuracy = (predicted == truth).mean()
    assert accuracy > 0.95, (method, accuracy)


def test_evaluate_matches_a_hand_made_confusion_matrix():
    image, truth = three_regions()
    truth_ignored = truth.copy()
    truth_ignored[0, :5] = 255
    result = classic.evaluate(
        "kmeans", [(image[None], truth_ignored[None])], num_classes=3, n_clusters=3
    )
    predicted = classic.match_segments(classic.kmeans(image, 3), truth_ignored, 3)
    expected = metrics.confusion_matrix(truth_ignored, predicted, 3)
    np.testing.assert_array_equal(result["confusion_matrix"], expected)
    assert result["num_pixels"] == truth.size - 5 and result["segments_per_image"] == 3
    assert result["mean_iou"] == pytest.approx(metrics.scores(expected)["mean_iou"])


def test_bad_images_and_arguments():
    with pytest.raises(ValueError, match=r"image.shape=\(4, 4\)"):
        classic.otsu(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="method='snakes'"):
        classic.segment("snakes", np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="n_clusters=0"):
        classic.kmeans(np.zeros((4, 4, 3)), n_clusters=0)
    with pytest.raises(ValueError, match="bandwidth=-1"):
        classic.mean_shift(np.zeros((4, 4, 3)), bandwidth=-1)
    with pytest.raises(ValueError, match="classes=1"):
        classic.multi_otsu(np.zeros((4, 4, 3)), classes=1)


def test_normalized_cuts_of_a_single_superpixel_is_one_segment():
    # SLIC returns one superpixel for this noise image: no region graph to cut
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3))
    assert classic.normalized_cuts(image, n_segments=16).tolist() == np.zeros((32, 32)).tolist()

"""U-Net weight map against a brute-force distance computation."""

import math

import numpy as np
import pytest

from kseg.losses import unet_weight_map


def brute_force(instances, w0, sigma, class_weight):
    """Every background pixel against every object pixel, plain Python loops."""
    h, w = instances.shape
    ids = sorted(set(instances.flat) - {0})
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            out[y, x] = class_weight[int(instances[y, x] != 0)]
            if instances[y, x] != 0 or len(ids) < 2:
                continue
            nearest = []
            for obj in ids:
                nearest.append(
                    min(
                        math.hypot(y - yy, x - xx)
                        for yy in range(h)
                        for xx in range(w)
                        if instances[yy, xx] == obj
                    )
                )
            d1, d2 = sorted(nearest)[:2]
            out[y, x] += w0 * math.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return out


def hand_made_image():
    image = np.zeros((12, 14), np.int32)
    image[1:5, 1:6] = 1  # two blocks touching but for a one-pixel gap (column 6)
    image[1:6, 7:12] = 2
    image[7:11, 2:5] = 3  # a third one further away
    image[8, 9] = 4  # a single-pixel object
    return image


def test_matches_brute_force_on_hand_made_image():
    labels = hand_made_image()
    weights = {0: 0.5, 1: 2.0}
    result = unet_weight_map(labels, w0=10, sigma=3, class_weights=weights)
    np.testing.assert_allclose(result, brute_force(labels, 10, 3, weights), rtol=1e-6)
    # the gap pixel between objects 1 and 2: d1 = d2 = 1
    assert result[2, 6] == pytest.approx(0.5 + 10 * math.exp(-4 / 18), rel=1e-6)
    # object pixels keep their class weight
    assert result[2, 2] == 2.0


def test_balanced_class_weights_and_batch():
    labels = hand_made_image()
    result = unet_weight_map(np.stack([labels, labels[::-1]])[..., None], w0=5, sigma=2)
    objects = np.count_nonzero(labels)
    total = labels.size
    balanced = {0: total / (2 * (total - objects)), 1: total / (2 * objects)}
    np.testing.assert_allclose(result[0], brute_force(labels, 5, 2, balanced), rtol=1e-6)
    np.testing.assert_allclose(result[1], brute_force(labels[::-1], 5, 2, balanced), rtol=1e-6)
    assert result.shape == (2, 12, 14) and result.dtype == np.float32


def test_label_map_components_and_ignore():
    # a semantic map: two separate components of class 1 and one of class 2
    labels = np.zeros((6, 9), np.int32)
    labels[1:3, 1:3] = 1
    labels[1:3, 5:7] = 1
    labels[4:6, 0:2] = 2
    labels[5, 8] = 255
    class_weights = {0: 1.0, 1: 3.0, 2: 4.0}
    result = unet_weight_map(
        labels, w0=10, sigma=5, class_weights=class_weights, split_components=True, ignore_index=255
    )
    instances = np.zeros_like(labels)
    instances[1:3, 1:3], instances[1:3, 5:7], instances[4:6, 0:2] = 1, 2, 3
    reference = brute_force(instances, 10, 5, {0: 1.0, 1: 0.0})
    reference += np.where(labels == 1, 3.0, 0) + np.where(labels == 2, 4.0, 0)
    reference[5, 8] = 0.0
    np.testing.assert_allclose(result, reference, rtol=1e-6)
    # without splitting, the two class-1 squares are one object: fewer, farther objects
    merged = unet_weight_map(
        labels, w0=10, sigma=5, class_weights={0: 1.0, 1: 1.0}, ignore_index=255
    )
    merged_reference = brute_force(np.where(labels == 255, 0, labels), 10, 5, {0: 1.0, 1: 1.0})
    merged_reference[5, 8] = 0.0
    np.testing.assert_allclose(merged, merged_reference, rtol=1e-6)
    assert merged[1, 4] < result[1, 4] - 1.0  # the gap inside one object gets less weight


def test_single_object_has_no_border_term():
    labels = np.zeros((5, 5), np.int32)
    labels[1:3, 1:3] = 7
    result = unet_weight_map(labels, class_weights=[1.0, 2.0])
    np.testing.assert_array_equal(result, np.where(labels > 0, 2.0, 1.0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": np.zeros((2, 2, 2, 2))}, "labels must be"),
        ({"labels": np.full((3, 3), 0.5)}, "integers"),
        ({"labels": np.zeros((3, 3), int), "sigma": 0}, "sigma"),
        ({"labels": np.zeros((3, 3), int), "w0": -1}, "w0"),
        ({"labels": np.eye(3, dtype=int), "class_weights": {0: 1.0}}, "class 1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        unet_weight_map(**kwargs)


def test_the_old_name_is_the_same_function():
    import kseg.loss_weights
    import kseg.models

    assert kseg.models.unet_weight_map is unet_weight_map is kseg.loss_weights.unet_weight_map

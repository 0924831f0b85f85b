"""Synthetic instance scenes: masks, boxes, classes and the panoptic map agree with the scene."""

import numpy as np
import pytest
from scipy import ndimage

from kseg.constants import PANOPTIC_LABEL_DIVISOR, PANOPTIC_VOID
from kseg.data import render_instance_scene, render_scene, synthetic_instances
from kseg.data.synthetic import INSTANCE_KEYS


def _check_scene(scene, height, width):
    masks, classes, boxes, panoptic = (
        scene["masks"],
        scene["classes"],
        scene["boxes"],
        scene["panoptic"],
    )
    assert masks.shape == (len(classes), height, width) and masks.dtype == np.uint8
    # Visible masks never overlap, and each is exactly one panoptic segment.
    assert masks.sum(axis=0).max(initial=0) <= 1
    for mask, cls, box in zip(masks.astype(bool), classes, boxes):
        ids = np.unique(panoptic[mask])
        assert len(ids) == 1 and ids[0] // PANOPTIC_LABEL_DIVISOR == cls and ids[0] % 1000 > 0
        assert np.array_equal(panoptic == ids[0], mask)
        rows, cols = np.nonzero(mask)
        np.testing.assert_array_equal(box, [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    covered = masks.any(axis=0)
    assert np.all(panoptic[~covered] % PANOPTIC_LABEL_DIVISOR == 0)


def test_without_touching_the_scene_is_render_scene_split_into_objects():
    for index in range(8):
        scene = render_instance_scene(index, (48, 64), seed=2, touching=0.0)
        image, label = render_scene(index, (48, 64), seed=2)
        np.testing.assert_array_equal(scene["image"], image)
        _check_scene(scene, 48, 64)
        # Painting each mask with its class gives back the semantic label.
        painted = np.zeros_like(label)
        for mask, cls in zip(scene["masks"].astype(bool), scene["classes"]):
            painted[mask] = cls
        np.testing.assert_array_equal(painted, label)
        np.testing.assert_array_equal(scene["panoptic"] // PANOPTIC_LABEL_DIVISOR, label)


def test_touching_scenes_hold_adjacent_objects_of_one_class():
    adjacent_pairs = 0
    for index in range(20):
        scene = render_instance_scene(index, (64, 64), seed=0, touching=0.8)
        _check_scene(scene, 64, 64)
        masks, classes = scene["masks"].astype(bool), scene["classes"]
        for a in range(len(classes)):
            grown = ndimage.binary_dilation(masks[a])
            for b in range(a + 1, len(classes)):
                adjacent_pairs += classes[a] == classes[b] and bool((grown & masks[b]).any())
    # The semantic label merges these pairs; the instance masks keep them apart.
    assert adjacent_pairs >= 20


def test_small_objects_are_void_in_the_panoptic_map():
    found = False
    for index in range(30):
        full = render_instance_scene(index, (48, 48), seed=1)
        small = render_instance_scene(index, (48, 48), seed=1, min_area=60)
        areas = full["masks"].reshape(len(full["classes"]), -1).sum(axis=1)
        kept = areas >= 60
        np.testing.assert_array_equal(small["masks"], full["masks"][kept])
        dropped = full["masks"][~kept].any(axis=0)
        assert np.all(small["panoptic"][dropped] == PANOPTIC_VOID)
        found |= bool(dropped.any())
    assert found


def test_dataset_matches_the_numpy_scenes():
    ds = synthetic_instances(3, (40, 56), seed=5, first_index=7)
    assert ds.element_spec["masks"].shape.as_list() == [None, 40, 56]
    for n, sample in enumerate(ds):
        scene = render_instance_scene(7 + n, (40, 56), seed=5)
        for key in INSTANCE_KEYS:
            np.testing.assert_array_equal(sample[key].numpy(), scene[key])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"touching": 1.5}, "touching"), ({"min_area": -1}, "min_area")],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_instances(2, (32, 32), **kwargs)

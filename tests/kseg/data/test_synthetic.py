import colorsys
import itertools

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage import measure

import kseg
from kseg.data import SYNTHETIC_CLASSES, render_scene, scene_options, synthetic, synthetic_numpy

CLEAN = dict(noise_std=0.0, texture=0.0, illumination=0.0, shading=0.0)


def test_scene_depends_only_on_seed_and_index():
    images, labels = synthetic_numpy(6, (40, 56), seed=3)
    # Any index range, drawn in any order, reproduces the same scenes.
    tail_images, tail_labels = synthetic_numpy(3, (40, 56), seed=3, first_index=3)
    np.testing.assert_array_equal(tail_images, images[3:])
    np.testing.assert_array_equal(tail_labels, labels[3:])
    image, label = render_scene(4, (40, 56), seed=3)
    np.testing.assert_array_equal(image, images[4])
    np.testing.assert_array_equal(label, labels[4])
    other_images, _ = synthetic_numpy(6, (40, 56), seed=4)
    assert all(not np.array_equal(a, b) for a, b in zip(images, other_images))
    assert len({im.tobytes() for im in images}) == 6


def test_dataset_matches_numpy_and_has_int32_labels():
    images, labels = synthetic_numpy(4, (33, 47), seed=1)
    ds = synthetic(4, (33, 47), seed=1)
    assert ds.element_spec[0].shape.as_list() == [33, 47, 3]
    assert ds.element_spec[1].dtype.name == "int32"
    for n, (image, label) in enumerate(ds):
        np.testing.assert_array_equal(image.numpy(), images[n])
        np.testing.assert_array_equal(label.numpy(), labels[n])


@pytest.mark.parametrize("size", [(16, 16), (37, 91), (150, 64)])
def test_any_image_size(size):
    images, labels = synthetic_numpy(3, size, seed=0)
    assert images.shape == (3, *size, 3) and labels.shape == (3, *size)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.min() >= 0 and images.max() <= 255
    np.testing.assert_array_equal(images, np.round(images))
    assert labels.min() >= 0 and labels.max() < len(SYNTHETIC_CLASSES)


def test_num_classes_limits_the_shapes():
    _, labels = synthetic_numpy(30, (48, 48), seed=0, num_classes=3)
    assert set(np.unique(labels)) == {0, 1, 2}


def test_all_classes_appear_with_their_share():
    _, labels = synthetic_numpy(60, (64, 64), seed=0)
    share = np.bincount(labels.ravel(), minlength=6) / labels.size
    assert 0.4 < share[0] < 0.9
    assert np.all(share[1:] > 0.004), share


def test_label_is_exact_visible_geometry_on_clean_scenes():
    # Without noise, texture, illumination and shading, every object is one flat colour on
    # a flat background: the pixels that differ from the background are exactly the
    # labelled ones, and each colour belongs to exactly one label (the visible object).
    for index in range(40):
        image, label = render_scene(index, (64, 80), seed=5, options=scene_options(0.5, **CLEAN))
        if not (label == 0).any():
            continue
        background = image[label == 0][0]
        np.testing.assert_array_equal((image != background).any(-1), label > 0)
        colours, inverse = np.unique(image.reshape(-1, 3), axis=0, return_inverse=True)
        labels_per_colour = {}
        for colour_id, value in zip(inverse.ravel(), label.ravel()):
            labels_per_colour.setdefault(colour_id, set()).add(int(value))
        assert all(len(v) == 1 for v in labels_per_colour.values())


def _single_object(kind, index, size=96):
    # First scene (by index) whose only object is of class `kind`, fully inside the frame.
    options = scene_options(0.5, min_objects=1, max_objects=1, object_size=(0.15, 0.2), **CLEAN)
    while True:
        image, label = render_scene(index, (size, size), seed=11, options=options)
        index += 1
        mask = label == kind
        if mask.any() and np.array_equal(np.unique(label), [0, kind]):
            border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
            if not border.any():
                return mask, index


def _inscribed_polygon_share(mask, corners):
    """Largest share of the convex hull covered by a polygon on `corners` of its vertices."""
    points = np.argwhere(mask).astype(float)
    hull = points[ConvexHull(points).vertices]  # counter-clockwise order
    combos = np.array(list(itertools.combinations(range(len(hull)), corners)))
    polygons = hull[combos]  # [n, corners, 2], vertices in hull order
    x, y = polygons[..., 0], polygons[..., 1]
    areas = 0.5 * np.abs((x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y).sum(1))
    return areas.max() / ConvexHull(points).volume


@pytest.mark.parametrize("kind", range(1, 6))
def test_each_class_has_its_shape(kind):
    index = 0
    for _ in range(4):
        mask, index = _single_object(kind, index)
        props = measure.regionprops(mask.astype(np.uint8))[0]
        name = SYNTHETIC_CLASSES[kind]
        if name == "ellipse":  # an inscribed quadrilateral covers at most 2/pi of an ellipse
            assert props.euler_number == 1 and props.solidity > 0.9
            assert _inscribed_polygon_share(mask, 4) < 0.72
        elif name == "rectangle":
            assert props.euler_number == 1 and props.solidity > 0.9
            assert _inscribed_polygon_share(mask, 4) > 0.9
            assert _inscribed_polygon_share(mask, 3) < 0.6
        elif name == "triangle":
            assert props.euler_number == 1 and props.solidity > 0.9
            assert _inscribed_polygon_share(mask, 3) > 0.85
        elif name == "ring":
            assert props.euler_number == 0  # one hole
            assert props.solidity < 0.8
        else:  # thin bars, 2-3.5 px wide: no pixel is more than 2 px from the outside
            assert ndimage.distance_transform_edt(mask).max() <= 2.0
            assert props.axis_major_length > 10


def test_thin_structures_at_default_difficulty():
    _, labels = synthetic_numpy(40, (128, 128), seed=2)
    bars = labels == SYNTHETIC_CLASSES.index("bars")
    assert bars.any()
    depth = np.stack([ndimage.distance_transform_edt(m) for m in bars])
    # Crossing bars can meet in thicker blobs; nearly all bar pixels are within 2 px of an edge.
    assert (depth[bars] <= 2.0).mean() > 0.98


def _object_hues(options, count=150):
    hues = {k: [] for k in range(1, 6)}
    for index in range(count):
        image, label = render_scene(index, (48, 48), seed=0, options=options)
        for k in range(1, 6):
            components, count = ndimage.label(label == k)
            for component in range(1, count + 1):
                pixels = image[components == component]
                r, g, b = pixels.mean(0) / 255.0
                hues[k].append(360.0 * colorsys.rgb_to_hsv(r, g, b)[0])
    return hues


def _hue_distance(a, b):
    return np.abs((np.asarray(a) - b + 180.0) % 360.0 - 180.0)


def test_colour_narrows_the_class_but_does_not_tell_it():
    # Default: class k's hues lie within hue_spread (40.5) degrees of (k - 1) * 72, so the
    # outer ninth of each band is shared with a neighbouring class; guessing the class from
    # the nearest hue centre misses about one object in nine.
    options = scene_options(0.5, **CLEAN)
    assert options.hue_spread == 40.5
    hues = _object_hues(options)
    correct, total = 0, 0
    for k, values in hues.items():
        assert len(values) > 20
        assert _hue_distance(values, (k - 1) * 72.0).max() <= 41
        nearest = (
            np.argmin([_hue_distance(values, (c - 1) * 72.0) for c in range(1, 6)], axis=0) + 1
        )
        correct += int((nearest == k).sum())
        total += len(values)
    assert 0.8 < correct / total < 0.97


def test_colour_says_nothing_at_full_hue_spread():
    hues = _object_hues(scene_options(0.5, hue_spread=180.0, **CLEAN), count=100)
    for k, values in hues.items():
        # Spread over the whole circle: a sizeable share is on the far side of the class centre.
        assert (_hue_distance(values, (k - 1) * 72.0) > 90).mean() > 0.25


def test_background_is_textured_and_lit_unevenly():
    options = scene_options(0.5, noise_std=0.0)
    image, label = render_scene(1, (96, 96), seed=0, options=options)
    flat = scene_options(0.5, **CLEAN)
    flat_image, flat_label = render_scene(1, (96, 96), seed=0, options=flat)
    np.testing.assert_array_equal(label, flat_label)  # appearance knobs leave the geometry alone
    assert flat_image[label == 0].std(0).max() == 0
    assert image[label == 0].std(0).min() > 5


def test_difficulty_and_knobs():
    easy, hard = scene_options(0.0), scene_options(1.0)
    assert easy.noise_std < hard.noise_std and easy.max_objects < hard.max_objects
    assert easy.min_contrast > hard.min_contrast
    noisy, _ = render_scene(
        0,
        (32, 32),
        options=scene_options(
            0.5, noise_std=30.0, **{k: v for k, v in CLEAN.items() if k != "noise_std"}
        ),
    )
    clean, _ = render_scene(0, (32, 32), options=scene_options(0.5, **CLEAN))
    assert 20 < np.std(noisy - clean) < 40


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_images=-1), "num_images must be a non-negative integer. Received: num_images=-1"),
        (dict(num_images=2, seed=-3), "seed must be a non-negative integer. Received: seed=-3"),
        (dict(num_images=2, image_size=(4, 32)), r"image_size .*. Received: image_size=\(4, 32\)"),
        (dict(num_images=2, image_size="big"), "image_size"),
        (
            dict(num_images=2, num_classes=7),
            r"num_classes must be an integer in \[2, 6\].*Received: num_classes=7",
        ),
        (
            dict(num_images=2, difficulty=1.5),
            r"difficulty must be a number in \[0, 1\]. Received: difficulty=1.5",
        ),
        (
            dict(num_images=2, noise_std=-1.0),
            "noise_std must be a non-negative number. Received: noise_std=-1.0",
        ),
        (dict(num_images=2, min_objects=5, max_objects=2), "min_objects"),
        (dict(num_images=2, object_size=(0.3, 0.1)), "object_size"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_numpy(**kwargs)
    with pytest.raises(ValueError, match=message):
        synthetic(**kwargs)


def test_unknown_knob_lists_valid_ones():
    with pytest.raises(TypeError, match="unknown scene option.*'blur'.*valid: .*noise_std"):
        synthetic_numpy(2, blur=3)


def test_load_synthetic_splits_are_disjoint_ranges():
    train = kseg.data.load("synthetic", split="train", num_images=3, image_size=(24, 24))
    val = kseg.data.load("synthetic", split="val", num_images=3, image_size=(24, 24))
    train_images = np.stack([x.numpy() for x, _ in train])
    val_images = np.stack([x.numpy() for x, _ in val])
    start = kseg.data.SYNTHETIC_SPLITS["val"][0]
    np.testing.assert_array_equal(val_images, synthetic_numpy(3, (24, 24), first_index=start)[0])
    np.testing.assert_array_equal(train_images, synthetic_numpy(3, (24, 24))[0])
    with pytest.raises(
        ValueError, match="synthetic split must be one of train, val, test. Received: split='dev'"
    ):
        kseg.data.load("synthetic", split="dev")


def test_load_synthetic_training_pipeline_is_reproducible():
    def batches():
        ds = kseg.data.load(
            "synthetic",
            split="train",
            num_images=6,
            image_size=(40, 48),
            crop_size=32,
            augment=True,
            batch_size=4,
            seed=3,
            deterministic=True,
        )
        return [(x.numpy(), y.numpy()) for x, y in ds]

    first, second = batches(), batches()
    assert [b[0].shape for b in first] == [(4, 32, 32, 3), (2, 32, 32, 3)]
    for (xa, ya), (xb, yb) in zip(first, second):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    labels = np.concatenate([y for _, y in first])
    assert set(np.unique(labels)) <= set(range(6)) | {255}


def test_synthetic_palette_is_the_voc_colours():
    np.testing.assert_array_equal(kseg.data.SYNTHETIC_PALETTE, kseg.data.voc_colormap()[:6])
    assert kseg.data.SYNTHETIC_CLASSES == (
        "background",
        "ellipse",
        "rectangle",
        "triangle",
        "ring",
        "bars",
    )

"""Panoptic-DeepLab grouping and Panoptic FPN merge on hand-made cases with exact ids."""

import numpy as np
import pytest

from kseg.panoptic import PanopticGrouping, group, merge
from kseg.testing import assert_keras_round_trip

VOID = 255000


def one_hot_logits(labels, num_classes):
    return np.eye(num_classes, dtype="float32")[labels][None] * 5.0


def pointing_offsets(assignment, centers):
    """Offsets sending each pixel to the centre named in ``assignment`` (-1: none)."""
    height, width = assignment.shape
    offsets = np.zeros((1, height, width, 2), "float32")
    for (row, col), target in np.ndenumerate(assignment):
        if target >= 0:
            cy, cx = centers[target]
            offsets[0, row, col] = (cy - row, cx - col)
    return offsets


def heat(shape, peaks):
    heatmap = np.zeros((1,) + shape + (1,), "float32")
    for (row, col), value in peaks.items():
        heatmap[0, row, col, 0] = value
    return heatmap


# 6x8 scene: two touching objects of thing class 2 (columns 0-1 and 2-3 of rows 0-3),
# stuff class 1 on rows 4-5, stuff class 0 elsewhere.
LABELS = np.zeros((6, 8), "int64")
LABELS[:4, :4] = 2
LABELS[4:] = 1
CENTERS = [(1, 0), (2, 3)]
ASSIGN = np.full((6, 8), -1)
ASSIGN[:4, :2] = 0
ASSIGN[:4, 2:4] = 1


def expected_two_objects(first=2001, second=2002):
    out = np.zeros((6, 8), "int32")
    out[:4, :2] = first
    out[:4, 2:4] = second
    out[4:] = 1000
    return out


def run_group(labels, peaks, assignment, centers, num_classes=3, **options):
    options.setdefault("thing_classes", (2,))
    options.setdefault("nms_kernel", 3)
    out = group(
        one_hot_logits(labels, num_classes),
        heat(labels.shape, peaks),
        pointing_offsets(assignment, centers),
        **options,
    )
    return out.numpy()[0]


def test_touching_objects_of_one_class_get_their_own_ids_by_centre_score():
    # the centre scoring 0.9 is instance 1; the 0.05 peak is below the threshold
    out = run_group(LABELS, {(1, 0): 0.9, (2, 3): 0.8, (0, 6): 0.05}, ASSIGN, CENTERS)
    np.testing.assert_array_equal(out, expected_two_objects())
    out = run_group(LABELS, {(1, 0): 0.7, (2, 3): 0.8}, ASSIGN, CENTERS)
    np.testing.assert_array_equal(out, expected_two_objects(2002, 2001))


def test_pixels_follow_their_offsets_not_their_nearest_centre():
    assignment = ASSIGN.copy()
    assignment[0, 3] = 0  # next to centre (2, 3) but pointing to (1, 0)
    out = run_group(LABELS, {(1, 0): 0.9, (2, 3): 0.8}, assignment, CENTERS)
    expected = expected_two_objects()
    expected[0, 3] = 2001
    np.testing.assert_array_equal(out, expected)


def test_instance_class_is_the_majority_vote_of_its_thing_pixels():
    labels = LABELS.copy()
    labels[:2, :2] = 3  # 4 of object 1's 8 pixels say class 3, plus 1 more below
    labels[2, 0] = 3
    out = run_group(
        labels, {(1, 0): 0.9, (2, 3): 0.8}, ASSIGN, CENTERS, num_classes=4, thing_classes=(2, 3)
    )
    expected = expected_two_objects(first=3001)
    np.testing.assert_array_equal(out, expected)
    # a tie (4 and 4) goes to the lower class
    labels[2, 0] = 2
    out = run_group(
        labels, {(1, 0): 0.9, (2, 3): 0.8}, ASSIGN, CENTERS, num_classes=4, thing_classes=(2, 3)
    )
    np.testing.assert_array_equal(out, expected_two_objects(first=2001))


def test_nms_keeps_one_centre_per_window_and_top_k_the_best():
    peaks = {(1, 0): 0.9, (1, 1): 0.5, (2, 3): 0.8}
    # (1, 1) lies in (1, 0)'s 3x3 window: suppressed
    centers = [(1, 0), (2, 3), (1, 1)]
    out = run_group(LABELS, peaks, ASSIGN, centers)
    np.testing.assert_array_equal(out, expected_two_objects())
    # with a 1x1 window all three survive and (1, 1) ranks third: object 1, pointing at it,
    # becomes instance 3
    assignment = ASSIGN.copy()
    assignment[:4, :2] = 2
    out = run_group(LABELS, peaks, assignment, centers, nms_kernel=1)
    np.testing.assert_array_equal(out, expected_two_objects(first=2003, second=2002))
    # top_k=1: only the best centre; every thing pixel joins it
    out = run_group(LABELS, peaks, ASSIGN, centers, top_k=1)
    np.testing.assert_array_equal(out, expected_two_objects(2001, 2001))


def test_no_centre_makes_thing_pixels_void_and_small_stuff_becomes_void():
    out = run_group(LABELS, {(1, 0): 0.05}, ASSIGN, CENTERS)
    expected = expected_two_objects(VOID, VOID)
    np.testing.assert_array_equal(out, expected)
    # stuff class 1 has 16 pixels, class 0 has 16: a limit of 17 voids both
    out = run_group(LABELS, {(1, 0): 0.9, (2, 3): 0.8}, ASSIGN, CENTERS, stuff_area=17)
    expected = expected_two_objects()
    expected[4:] = VOID
    expected[:4, 4:] = VOID
    np.testing.assert_array_equal(out, expected)


def test_batch_images_are_grouped_independently():
    first = (one_hot_logits(LABELS, 3), heat((6, 8), {(1, 0): 0.9, (2, 3): 0.8}))
    flipped = LABELS[:, ::-1].copy()
    second = (one_hot_logits(flipped, 3), heat((6, 8), {(2, 7): 0.6}))
    offsets = np.concatenate(
        [
            pointing_offsets(ASSIGN, CENTERS),
            pointing_offsets(np.where(flipped == 2, 0, -1), [(2, 7)]),
        ]
    )
    out = group(
        np.concatenate([first[0], second[0]]),
        np.concatenate([first[1], second[1]]),
        offsets,
        thing_classes=(2,),
        nms_kernel=3,
    ).numpy()
    np.testing.assert_array_equal(out[0], expected_two_objects())
    expected = expected_two_objects(2001, 2001)[:, ::-1]
    np.testing.assert_array_equal(out[1], expected)


def test_grouping_layer_matches_the_function_and_round_trips(tmp_path):
    import keras

    layer = PanopticGrouping(thing_classes=(2,), nms_kernel=3, top_k=5, stuff_area=2)
    inputs = [
        one_hot_logits(LABELS, 3),
        heat((6, 8), {(1, 0): 0.9, (2, 3): 0.8}),
        pointing_offsets(ASSIGN, CENTERS),
    ]
    np.testing.assert_array_equal(layer(inputs).numpy()[0], expected_two_objects())
    symbolic = [keras.Input((6, 8, 3)), keras.Input((6, 8, 1)), keras.Input((6, 8, 2))]
    model = keras.Model(symbolic, layer(symbolic))
    assert tuple(model.output_shape) == (None, 6, 8)
    loaded = assert_keras_round_trip(model, inputs, tmp_dir=tmp_path, exact_config=False)
    assert loaded.layers[-1].get_config()["top_k"] == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_k": 1000}, "top_k=1000"),
        ({"nms_kernel": 4}, "nms_kernel=4"),
        ({"thing_classes": (-1,)}, "thing_classes=(-1,)"),
    ],
)
def test_grouping_arguments_are_checked(kwargs, message):
    with pytest.raises(
        ValueError, match=r"Received: " + message.replace("(", r"\(").replace(")", r"\)")
    ):
        PanopticGrouping(**kwargs)


def test_merge_follows_panoptic_fpn():
    semantic = np.zeros((6, 6), "int64")
    semantic[:, 3:] = 1  # stuff 0 left, stuff 1 right
    semantic[5, 5] = 255  # ignored label
    masks = np.zeros((5, 6, 6), bool)
    masks[0, 0:3, 0:3] = True  # A, 0.9: 9 pixels
    masks[1, 1:4, 1:4] = True  # B, 0.8: 4 of 9 already taken -> keeps its 5 free pixels
    masks[2, 0:3, 0:2] = True  # C, 0.7: all taken -> dropped
    masks[3, 4:6, 0:2] = True  # D, 0.3: below the score threshold
    masks[4, 0:2, 4:6] = True  # E, 0.85, class 7: first of its class
    instances = {
        "masks": masks,
        "classes": [5, 5, 5, 5, 7],
        "scores": [0.9, 0.8, 0.7, 0.3, 0.85],
    }
    out = merge(semantic, instances, stuff_area=9)
    expected = np.full((6, 6), VOID, "int32")
    expected[semantic == 0] = 0
    expected[semantic == 1] = 1000
    expected[0:3, 0:3] = 5001
    b = masks[1] & ~masks[0]
    expected[b] = 5002
    expected[0:2, 4:6] = 7001
    expected[5, 5] = VOID
    # free pixels: class 1 17 - 3 (B) - 4 (E) = 10 >= 9; class 0 18 - 9 (A) - 2 (B) = 7 < 9
    expected[(semantic == 0) & (expected == 0)] = VOID
    np.testing.assert_array_equal(out, expected)
    # thing_classes: class 1 counted as a thing is never stuff
    out = merge(semantic, instances, thing_classes=(1, 5, 7), stuff_area=1)
    assert np.all(out[(semantic == 1) & ~masks[4] & ~b] == VOID)
    # logits are accepted, probabilities thresholded at 0.5; tuple form
    logits = np.eye(2)[np.where(semantic == 255, 0, semantic)]
    out2 = merge(
        logits,
        (masks.astype("float32") * 0.9, [5, 5, 5, 5, 7], [0.9, 0.8, 0.7, 0.3, 0.85]),
        stuff_area=1,
    )
    assert out2[0, 0] == 5001 and out2[2, 3] == 5002 and out2[0, 5] == 7001


def test_merge_names_bad_input():
    with pytest.raises(ValueError, match=r"masks with shape \(1, 3, 3\)"):
        merge(
            np.zeros((4, 4), int),
            {"masks": np.zeros((1, 3, 3), bool), "classes": [1], "scores": [1.0]},
        )

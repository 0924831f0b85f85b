"""ADE20K (SceneParsing, ADEChallengeData2016) on a tiny dataset in the release layout."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.data.ade20k import ade20k_pairs
from kseg.testing.datasets import write_ade20k

# A few rows of the benchmark's objectInfo150 (index, names) and of its color150 palette.
OBJECT_INFO = {
    1: "wall",
    2: "building, edifice",
    13: "person, individual, someone, somebody, mortal, soul",
    21: "car, auto, automobile, machine, motorcar",
    90: "television, television receiver, television set, tv, tv set",
    150: "flag",
}
COLOR150 = {1: (120, 120, 120), 3: (6, 230, 230), 13: (150, 5, 61), 150: (92, 0, 255)}


# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("ade20k")


def _error(ds):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for _ in ds:
            pass
    return caught.value.message


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade")
    return root, write_ade20k(root, {"train": 3, "val": 2})


def test_every_pixel_is_shifted_down_with_other_ignored(tiny):
    root, written = tiny
    for split, examples in written.items():
        read = [(x.numpy(), y.numpy()) for x, y in kseg.data.load("ade20k", root, split)]
        assert len(read) == len(examples)
        for (image, label), example in zip(read, examples):
            assert set(np.unique(example.ids)) == set(range(151))
            expected = np.where(example.ids == 0, 255, example.ids - 1)
            np.testing.assert_array_equal(label, expected)
            assert np.abs(image - example.image).mean() < 6  # JPEG


def test_split_lists(tiny):
    root, _ = tiny
    images, labels = ade20k_pairs(root, "val")
    assert [os.path.relpath(p, root) for p in images] == [
        "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg",
        "ADEChallengeData2016/images/validation/ADE_val_00000002.jpg",
    ]
    assert labels[0].endswith("annotations/validation/ADE_val_00000001.png")
    assert len(ade20k_pairs(root / "ADEChallengeData2016", "train")[0]) == 3
    with pytest.raises(ValueError, match="Received: split='test'"):
        ade20k_pairs(root, "test")


def test_info_follows_object_info_150_and_color150():
    info = kseg.data.info("ade20k")
    assert info.num_classes == 150 and len(set(info.class_names)) == 150
    assert info.splits == {"train": 20210, "val": 2000}
    for index, names in OBJECT_INFO.items():
        assert info.class_names[index - 1] in [n.strip() for n in names.split(",")]
    for index, colour in COLOR150.items():
        assert info.palette[index - 1] == colour


def test_errors_name_the_file_and_the_value(tmp_path):
    written = write_ade20k(tmp_path, {"val": 2})["val"]
    bad = written[1]
    ids = bad.ids.copy()
    ids[2, 2] = 151
    Image.fromarray(ids.astype(np.uint8), "L").save(bad.label_path)
    assert f"label map {bad.label_path!r} holds id 151," in _error(
        kseg.data.load("ade20k", tmp_path, "val")
    )
    Image.fromarray(bad.ids[:, 1:].astype(np.uint8), "L").save(bad.label_path)
    message = _error(kseg.data.load("ade20k", tmp_path, "val"))
    assert f"label map {bad.label_path!r} is 40x23" in message and "is 40x24" in message
    with open(bad.label_path, "r+b") as handle:
        handle.truncate(40)
    assert f"label map {bad.label_path!r} is corrupt or not an image" in _error(
        kseg.data.load("ade20k", tmp_path, "val")
    )
    os.remove(bad.label_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{bad.label_path!r} does not exist")):
        kseg.data.load("ade20k", tmp_path, "val")

"""COCO-Stuff 164k on a tiny dataset in the README's layout."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.data.coco_stuff import coco_stuff_pairs
from kseg.testing.datasets import write_coco_stuff

# COCO thing ids without segmentation annotations (COCO-Stuff README): street sign, hat, shoe,
# eye glasses, plate, mirror, window, desk, door, blender, hair brush.
UNUSED = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}


# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("coco_stuff")


def _official():
    """Label-map value (id - 1) -> class index among the used ids; 255 -> 255."""
    table = np.full(256, -1)
    used = [i for i in range(1, 183) if i not in UNUSED]
    table[[i - 1 for i in used]] = np.arange(171)
    table[255] = 255
    return table


def _error(ds):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for _ in ds:
            pass
    return caught.value.message


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return root, write_coco_stuff(root, {"train": 2, "val": 2})


def test_every_pixel_follows_the_171_class_mapping(tiny):
    root, written = tiny
    table = _official()
    for split, examples in written.items():
        read = [(x.numpy(), y.numpy()) for x, y in kseg.data.load("coco_stuff", root, split)]
        assert len(read) == len(examples)
        for (image, label), example in zip(read, examples):
            assert len(np.unique(example.ids)) == 172  # 171 used values and 255
            np.testing.assert_array_equal(label, table[example.ids])
            assert np.abs(image - example.image).mean() < 6


def test_split_lists_and_the_stuffthingmaps_folder(tiny, tmp_path):
    root, _ = tiny
    images, labels = coco_stuff_pairs(root, "val")
    assert [os.path.basename(p) for p in images] == ["000000001139.jpg", "000000001146.jpg"]
    assert labels[1] == os.path.join(root, "annotations", "val2017", "000000001146.png")
    written = write_coco_stuff(tmp_path, {"val": 1})
    os.rename(tmp_path / "annotations", tmp_path / "stuffthingmaps_trainval2017")
    label = next(iter(kseg.data.load("coco_stuff", tmp_path, "val")))[1].numpy()
    np.testing.assert_array_equal(label, _official()[written["val"][0].ids])
    with pytest.raises(ValueError, match="Received: split='test'"):
        coco_stuff_pairs(root, "test")


def test_info_names_and_the_thing_stuff_split():
    info = kseg.data.info("coco_stuff")
    assert info.num_classes == 171 and info.splits == {"train": 118287, "val": 5000}
    names = info.class_names
    # labels.txt: 1 person, 13 stop sign (12 street sign is unused), 90 toothbrush, 92 banner,
    # 182 wood.
    assert names[0] == "person" and names[11] == "stop sign" and names[79] == "toothbrush"
    assert names[80] == "banner" and names[170] == "wood"
    assert kseg.data.COCO_STUFF_THING_CLASSES == tuple(range(80))
    assert kseg.data.COCO_STUFF_STUFF_CLASSES == tuple(range(80, 171))
    assert len(set(info.palette)) == 171


def test_errors_name_the_file_and_the_value(tmp_path):
    written = write_coco_stuff(tmp_path, {"val": 2})["val"]
    bad = written[0]
    ids = bad.ids.copy()
    ids[1, 1] = 11  # id 12, "street sign": never annotated, so not a class
    ids[1, 2] = 200
    Image.fromarray(ids.astype(np.uint8), "L").save(bad.label_path)
    assert f"label map {bad.label_path!r} holds id 11 (and [200])," in _error(
        kseg.data.load("coco_stuff", tmp_path, "val")
    )
    Image.fromarray(bad.ids[2:].astype(np.uint8), "L").save(bad.label_path)
    message = _error(kseg.data.load("coco_stuff", tmp_path, "val"))
    assert f"label map {bad.label_path!r} is 30x48" in message and "is 32x48" in message
    with open(bad.label_path, "wb") as handle:
        handle.write(b"")
    assert f"label map {bad.label_path!r} is corrupt" in _error(
        kseg.data.load("coco_stuff", tmp_path, "val")
    )
    with open(bad.image_path, "r+b") as handle:
        handle.truncate(100)
    assert f"image file {bad.image_path!r} is corrupt" in _error(
        kseg.data.load("coco_stuff", tmp_path, "val")
    )
    os.remove(bad.label_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{bad.label_path!r} does not exist")):
        kseg.data.load("coco_stuff", tmp_path, "val")

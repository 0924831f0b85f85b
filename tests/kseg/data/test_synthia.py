"""SYNTHIA-RAND-CITYSCAPES on a tiny dataset with 16-bit multi-channel label PNGs."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.data.synthia import read_synthia_label, synthia_pairs
from kseg.testing.datasets import write_png16, write_synthia

# The SYNTHIA id of each of the 16 classes shared with Cityscapes, in Cityscapes' order
# (road, sidewalk, building, wall, fence, pole, light, sign, vegetation, sky, person, rider,
# car, bus, motorcycle, bicycle); the 13-class variant drops wall (21), fence (5), pole (7).
SHARED_16 = [3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11]
SHARED_13 = [i for i in SHARED_16 if i not in (21, 5, 7)]


# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("synthia")


def _official(shared):
    table = np.full(23, 255)
    table[shared] = np.arange(len(shared))
    return table


def _error(ds):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for _ in ds:
            pass
    return caught.value.message


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthia") / "RAND_CITYSCAPES"
    return root, write_synthia(root, 3)["train"]


@pytest.mark.parametrize("name, shared", [("synthia", SHARED_16), ("synthia13", SHARED_13)])
def test_every_pixel_follows_the_shared_class_mapping(tiny, name, shared):
    root, written = tiny
    read = [(x.numpy(), y.numpy()) for x, y in kseg.data.load(name, root.parent, "train")]
    assert len(read) == 3
    for (image, label), example in zip(read, written):
        assert set(np.unique(example.ids)) == set(range(23))
        np.testing.assert_array_equal(label, _official(shared)[example.ids])
        np.testing.assert_array_equal(image, example.image)
    info = kseg.data.info(name)
    assert info.num_classes == len(shared) and info.splits == {"train": 9400}
    assert info.class_names[0] == "road" and info.palette[0] == (128, 64, 128)


def test_the_class_is_the_first_of_the_16_bit_channels(tmp_path):
    # Pillow would read 16-bit colour PNGs as 8 bits: high bytes only, so every id 0.
    path = tmp_path / "label.png"
    ids = np.array([[3, 21], [22, 0]], np.uint16)
    write_png16(path, np.stack([ids, ids * 0 + 513, ids * 0 + 7], -1))
    assert np.asarray(Image.open(path).convert("RGB"))[..., 0].max() == 0
    np.testing.assert_array_equal(read_synthia_label(path), ids)
    write_png16(path, ids[..., None])  # greyscale 16-bit works too
    np.testing.assert_array_equal(read_synthia_label(path), ids)
    Image.fromarray(ids.astype(np.uint8), "L").save(path)  # so does 8-bit, unscaled
    np.testing.assert_array_equal(read_synthia_label(path), ids)


def test_split_list(tiny):
    root, written = tiny
    images, labels = synthia_pairs(root, "train")
    assert [os.path.basename(p) for p in images] == ["0000000.png", "0000001.png", "0000002.png"]
    assert labels == [e.label_path for e in written]
    with pytest.raises(ValueError, match="Received: split='val'"):
        synthia_pairs(root, "val")
    with pytest.raises(ValueError, match="Received: num_classes=19"):
        kseg.data.synthia(root, num_classes=19)


def test_errors_name_the_file_and_the_value(tmp_path):
    written = write_synthia(tmp_path, 2)["train"]
    bad = written[1]
    ids = bad.ids.copy()
    ids[5, 5] = 1000  # no such SYNTHIA class
    write_png16(bad.label_path, np.stack([ids, ids * 0, ids * 0], -1))
    message = _error(kseg.data.load("synthia", tmp_path))
    assert f"label map {bad.label_path!r} holds id 1000," in message

    write_png16(bad.label_path, np.stack([bad.ids[:-3]] * 3, -1))
    message = _error(kseg.data.load("synthia", tmp_path))
    assert f"label map {bad.label_path!r} is 37x24 (height x width)" in message
    assert f"its image {bad.image_path!r} is 40x24" in message

    data = open(bad.label_path, "rb").read()
    with open(bad.label_path, "wb") as handle:
        handle.write(data[:50])  # a truncated PNG
    assert f"label map {bad.label_path!r} is corrupt" in _error(kseg.data.load("synthia", tmp_path))
    with open(bad.label_path, "wb") as handle:
        handle.write(b"not a png at all")
    assert f"label map {bad.label_path!r} is corrupt or not a PNG" in _error(
        kseg.data.load("synthia", tmp_path)
    )

    os.remove(bad.label_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{bad.label_path!r} does not exist")):
        kseg.data.load("synthia", tmp_path)

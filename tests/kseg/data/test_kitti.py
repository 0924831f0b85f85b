"""KITTI semantics (Cityscapes label ids) on a tiny data_semantics folder."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.testing.datasets import write_kitti

# cityscapesScripts labels.py: the 19 evaluated label ids, in train-id order.
EVALUATED_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
OFFICIAL = np.full(34, 255)
OFFICIAL[EVALUATED_IDS] = np.arange(19)


def _read_all(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _error(ds):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for _ in ds:
            pass
    return caught.value.message


def test_kitti_maps_cityscapes_ids_and_lists_the_labelled_frames(tmp_path):
    written = write_kitti(tmp_path / "data_semantics", 3)["train"]
    read = _read_all(kseg.data.load("kitti", tmp_path, "train", batch_size=None))
    assert len(read) == 3  # the unlabelled *_11.png frames are not listed
    for (image, label), example in zip(read, written):
        np.testing.assert_array_equal(label, OFFICIAL[example.ids])
        np.testing.assert_array_equal(image, example.image)
    assert kseg.data.info("kitti").class_names == kseg.data.info("cityscapes").class_names
    with pytest.raises(ValueError, match="Received: split='test'"):
        kseg.data.load("kitti", tmp_path, "test")


def test_kitti_errors_name_the_file_and_value(tmp_path):
    written = write_kitti(tmp_path, 2)["train"]
    bad = written[1]
    ids = bad.ids.copy()
    ids[0, 0] = 200
    Image.fromarray(ids.astype(np.uint8), "L").save(bad.label_path)
    assert f"label map {bad.label_path!r} holds id 200," in _error(
        kseg.data.load("kitti", tmp_path)
    )
    Image.fromarray(bad.ids[:, :-2].astype(np.uint8), "L").save(bad.label_path)
    assert "is 40x22 (height x width)" in _error(kseg.data.load("kitti", tmp_path))
    with open(bad.label_path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n garbage")
    assert "is corrupt or not an image" in _error(kseg.data.load("kitti", tmp_path))
    os.remove(bad.label_path)
    with pytest.raises(FileNotFoundError, match=re.escape(bad.label_path)):
        kseg.data.load("kitti", tmp_path)

"""Cityscapes on tiny datasets written in the release layout (gtFine, gtCoarse)."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.data.cityscapes import cityscapes_pairs
from kseg.testing.datasets import write_cityscapes

# cityscapesScripts labels.py: the 19 evaluated label ids, in train-id order; the other ids
# of 0..33 are ignored (255).
EVALUATED_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
OFFICIAL = np.full(34, 255)
OFFICIAL[EVALUATED_IDS] = np.arange(19)


# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("cityscapes")


def _read_all(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _error(ds):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for _ in ds:
            pass
    return caught.value.message


@pytest.fixture(scope="module")
def fine(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    return root, write_cityscapes(root, {"train": 3, "val": 2, "test": 1})


def test_every_pixel_follows_the_devkit_mapping(fine):
    root, written = fine
    for split, examples in written.items():
        read = _read_all(kseg.data.load("cityscapes", root, split))
        assert len(read) == len(examples)
        for (image, label), example in zip(read, examples):
            assert set(np.unique(example.ids)) == set(range(34))  # every id, ignored ones too
            np.testing.assert_array_equal(label, OFFICIAL[example.ids])
            np.testing.assert_array_equal(image, example.image.astype(np.float32))
            assert label.dtype == np.int32 and image.dtype == np.float32


def test_split_lists_and_names(fine):
    root, written = fine
    images, labels = cityscapes_pairs(root, "train")
    assert [os.path.relpath(p, root) for p in images] == [
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "leftImg8bit/train/aachen/aachen_000002_000021_leftImg8bit.png",
        "leftImg8bit/train/bochum/bochum_000001_000020_leftImg8bit.png",
    ]
    assert [os.path.basename(p) for p in labels][0] == "aachen_000000_000019_gtFine_labelIds.png"
    assert [e.image_path for e in written["val"]] == cityscapes_pairs(root, "val")[0]
    with pytest.raises(ValueError, match="Received: split='train_extra'"):
        cityscapes_pairs(root, "train_extra")  # only in the coarse mode


def test_info_has_the_official_classes_colours_and_sizes():
    info = kseg.data.info("cityscapes")
    assert info.num_classes == 19 and info.class_names[0] == "road"
    assert info.class_names[18] == "bicycle" and info.class_names[11] == "person"
    assert info.palette[0] == (128, 64, 128) and info.palette[10] == (70, 130, 180)
    assert info.splits["train"] == 2975 and info.splits["val"] == 500
    assert info.splits["test"] == 1525 and info.ignore_index == 255


def test_label_train_ids_are_read_when_present(tmp_path):
    written = write_cityscapes(tmp_path, {"val": 2}, train_ids=True)
    for (_, label), example in zip(
        _read_all(kseg.data.load("cityscapes", tmp_path, "val")), written["val"]
    ):
        assert example.label_path.endswith("_gtFine_labelTrainIds.png")
        assert set(np.unique(example.ids)) == set(range(19)) | {255}
        np.testing.assert_array_equal(label, example.ids)


def test_coarse_mode_reads_gt_coarse_and_train_extra(tmp_path):
    written = write_cityscapes(tmp_path, {"train": 1, "train_extra": 2}, mode="coarse")
    ds = kseg.data.load("cityscapes", tmp_path, "train+train_extra", mode="coarse")
    read = _read_all(ds)
    examples = written["train"] + written["train_extra"]
    assert len(read) == 3 and "gtCoarse" in examples[2].label_path
    for (_, label), example in zip(read, examples):
        np.testing.assert_array_equal(label, OFFICIAL[example.ids])
    with pytest.raises(ValueError, match="Received: mode='medium'"):
        kseg.data.load("cityscapes", tmp_path, "train", mode="medium")


def test_missing_label_file(tmp_path):
    written = write_cityscapes(tmp_path, {"val": 2})
    missing = written["val"][1].label_path
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(f"label map {missing!r} does not exist")):
        kseg.data.load("cityscapes", tmp_path, "val")


def test_corrupt_png(tmp_path):
    written = write_cityscapes(tmp_path, {"val": 2})
    path = written["val"][1].label_path
    with open(path, "r+b") as handle:
        handle.truncate(60)
    message = _error(kseg.data.load("cityscapes", tmp_path, "val"))
    assert f"label map {path!r} is corrupt or not an image" in message


def test_label_id_outside_the_mapping(tmp_path):
    written = write_cityscapes(tmp_path, {"val": 1})
    example = written["val"][0]
    ids = example.ids.copy()
    ids[3, 4] = 34  # one past the devkit's last id
    Image.fromarray(ids.astype(np.uint8), "L").save(example.label_path)
    message = _error(kseg.data.load("cityscapes", tmp_path, "val"))
    assert f"label map {example.label_path!r} holds id 34," in message


def test_image_and_label_sizes_differ(tmp_path):
    written = write_cityscapes(tmp_path, {"val": 1})
    example = written["val"][0]
    Image.fromarray(example.ids[:-1].astype(np.uint8), "L").save(example.label_path)
    message = _error(kseg.data.load("cityscapes", tmp_path, "val"))
    assert f"label map {example.label_path!r} is 31x48 (height x width)" in message
    assert f"its image {example.image_path!r} is 32x48" in message


def test_training_pipeline_crops_batches_and_keeps_ignore(fine):
    root, _ = fine
    ds = kseg.data.load(
        "cityscapes", root, "train", crop_size=16, augment=True, batch_size=2, deterministic=True
    )
    images, labels = next(iter(ds))
    assert images.shape == (2, 16, 16, 3) and labels.shape == (2, 16, 16)
    values = set(np.unique(labels.numpy()).tolist())
    assert values <= set(range(19)) | {255} and 255 in values

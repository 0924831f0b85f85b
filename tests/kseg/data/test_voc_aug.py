"""VOC 2012 + SBD (train_aug) on a tiny VOCdevkit beside a tiny benchmark_RELEASE."""

import os
import re

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from PIL import Image

import kseg
from kseg.data.voc_aug import read_sbd_label, voc_aug_pairs
from kseg.testing.datasets import VOC_AUG_LISTS, write_sbd_mat, write_voc_aug

# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("voc_aug")


def _error(ds):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for _ in ds:
            pass
    return caught.value.message


@pytest.fixture(scope="module", params=["mat", "png"])
def tiny(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("vocaug_" + request.param)
    return root, write_voc_aug(root, aug_png=request.param == "png")


def test_train_aug_is_voc_train_and_sbd_minus_voc_val(tiny):
    root, written = tiny
    images, labels = voc_aug_pairs(root, "train")
    expected = ["2007_000032", "2008_000002", "2008_000003", "2008_000008"]
    assert [os.path.basename(p)[:-4] for p in images] == expected
    # VOC's own labels where it has them, SBD's for the rest.
    assert [os.path.basename(os.path.dirname(p)) for p in labels][::3] == [
        "SegmentationClass",
        "SegmentationClass",
    ]
    assert os.path.basename(os.path.dirname(labels[1])) in ("cls", "SegmentationClassAug")
    assert voc_aug_pairs(root, "train_aug") == (images, labels)
    val_images, _ = voc_aug_pairs(root, "val")
    assert [os.path.basename(p)[:-4] for p in val_images] == list(VOC_AUG_LISTS["voc_val"])
    info = kseg.data.info("voc_aug")
    assert info.splits == {"train": 10582, "val": 1449} and info.class_names[15] == "person"


def test_every_pixel_is_read_from_the_right_file(tiny):
    root, written = tiny
    for split, examples in written.items():
        read = [(x.numpy(), y.numpy()) for x, y in kseg.data.load("voc_aug", root, split)]
        assert len(read) == len(examples)
        for (image, label), example in zip(read, examples):
            is_voc = "SegmentationClass/" in example.label_path
            assert set(np.unique(example.ids)) == set(range(21)) | ({255} if is_voc else set())
            np.testing.assert_array_equal(label, example.ids)
            assert np.abs(image - example.image).mean() < 6


def test_sbd_mat_holds_the_gtcls_struct(tmp_path):
    path = tmp_path / "a.mat"
    segmentation = np.array([[0, 15, 15], [20, 0, 1]], np.uint8)
    write_sbd_mat(path, segmentation)
    raw = scipy.io.loadmat(path)["GTcls"][0, 0]
    assert set(raw.dtype.names) == {"Segmentation", "Boundaries", "CategoriesPresent"}
    assert raw["Boundaries"].shape == (20, 1)
    np.testing.assert_array_equal(read_sbd_label(path), segmentation)
    scipy.io.savemat(path, {"GTinst": {"Segmentation": segmentation}})
    with pytest.raises(ValueError, match=r"holds no GTcls.Segmentation \(variables: GTinst\)"):
        read_sbd_label(path)


def test_errors_name_the_file_and_the_value(tmp_path):
    written = write_voc_aug(tmp_path)["train"]
    sbd = next(e for e in written if e.label_path.endswith(".mat"))
    ids = sbd.ids.copy()
    ids[0, 1] = 21
    write_sbd_mat(sbd.label_path, ids)
    message = _error(kseg.data.load("voc_aug", tmp_path, "train"))
    assert f"label map {sbd.label_path!r} holds value 21, but num_classes is 21" in message

    write_sbd_mat(sbd.label_path, sbd.ids[:, :-1])
    message = _error(kseg.data.load("voc_aug", tmp_path, "train"))
    height, width = sbd.ids.shape
    assert f"label map {sbd.label_path!r} is {height}x{width - 1}" in message

    with open(sbd.label_path, "wb") as handle:
        handle.write(b"MATLAB 5.0 MAT-file, truncated")
    message = _error(kseg.data.load("voc_aug", tmp_path, "train"))
    assert f"label map {sbd.label_path!r} is corrupt or not a MATLAB file" in message

    voc = written[0]  # a VOC palette PNG
    ids = voc.ids.copy()
    ids[2, 2] = 40
    Image.fromarray(ids.astype(np.uint8), "L").save(voc.label_path)
    message = _error(kseg.data.load("voc_aug", tmp_path, "train"))
    assert f"label map {voc.label_path!r} holds value 40" in message
    with open(voc.label_path, "r+b") as handle:
        handle.truncate(30)
    assert f"label map {voc.label_path!r} is corrupt" in _error(
        kseg.data.load("voc_aug", tmp_path, "train")
    )

    os.remove(sbd.label_path)
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"label map {sbd.label_path!r} does not")
    ):
        kseg.data.load("voc_aug", tmp_path, "train")


def test_without_sbd_the_error_says_what_is_missing(tmp_path):
    written = write_voc_aug(tmp_path)
    assert written["val"]
    os.rename(tmp_path / "benchmark_RELEASE", tmp_path / "sbd")
    with pytest.raises(FileNotFoundError, match="voc_aug needs SBD"):
        kseg.data.load("voc_aug", tmp_path, "train")
    assert len(voc_aug_pairs(tmp_path, "train", sbd_root=tmp_path / "sbd")[0]) == 4
    with pytest.raises(FileNotFoundError, match="Received: sbd_root="):
        voc_aug_pairs(tmp_path, "train", sbd_root=tmp_path / "nowhere")

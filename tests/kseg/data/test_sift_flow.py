"""SIFT Flow on a tiny dataset in the release's layout (.jpg images, .mat labels with field S)."""

import os

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from PIL import Image

import kseg
from kseg.data.sift_flow import SIFT_FLOW_SUBDIR, SIFT_FLOW_TEST_IDS
from kseg.testing.datasets_camvid_sift import SIFT_FLOW_NAMES, write_sift_flow

# FCN's classes.txt: "0 is void and 1-33 are classes", in this order.
FCN_CLASSES = (
    "awning balcony bird boat bridge building bus car cow crosswalk desert door fence field "
    "grass moon mountain person plant pole river road rock sand sea sidewalk sign sky staircase "
    "streetlight sun tree window"
).split()


def _loaded(dataset):
    return [(image.numpy(), label.numpy()) for image, label in dataset]


def test_classes_and_the_standard_split(tmp_path):
    write_sift_flow(tmp_path)
    info = kseg.data.info("sift_flow")
    assert list(info.class_names) == FCN_CLASSES and info.num_classes == 33
    assert info.splits == {"train": 2486, "test": 200}
    assert len(SIFT_FLOW_TEST_IDS) == len(set(SIFT_FLOW_TEST_IDS)) == 200
    assert SIFT_FLOW_TEST_IDS[:3] == ("coast_natu975", "insidecity_art947", "insidecity_urb781")
    assert SIFT_FLOW_TEST_IDS[-1] == "highway_gre141"

    # Training: every image but the test ones and the unannotated highway_bost181.
    images, labels = kseg.data.sift_flow_pairs(tmp_path, "train")
    names = [os.path.basename(p)[:-4] for p in images]
    assert names == sorted(SIFT_FLOW_NAMES["train"])
    assert labels == [
        str(tmp_path / "SemanticLabels" / SIFT_FLOW_SUBDIR / (n + ".mat")) for n in names
    ]
    assert kseg.data.sift_flow_pairs(tmp_path, "trainval") == (images, labels)
    # Test: FCN's list in its order; the tiny set holds its first two images only.
    with pytest.raises(FileNotFoundError, match=r"insidecity_urb781.jpg' does not exist"):
        kseg.data.sift_flow_pairs(tmp_path, "test")
    # A <root>/<split>.txt replaces the built-in list.
    (tmp_path / "test.txt").write_text("insidecity_art947\ncoast_natu975\n")
    images, _ = kseg.data.sift_flow_pairs(tmp_path, "test")
    assert [os.path.basename(p) for p in images] == ["insidecity_art947.jpg", "coast_natu975.jpg"]


def test_labels_are_the_mat_ids_minus_one_with_0_ignored(tmp_path):
    written = write_sift_flow(tmp_path)
    (tmp_path / "test.txt").write_text("\n".join(SIFT_FLOW_NAMES["test"]) + "\n")
    for split in ("train", "test"):
        examples = {name: (image, ids) for name, image, ids in written[split]}
        images, _ = kseg.data.sift_flow_pairs(tmp_path, split)
        loaded = _loaded(kseg.data.load("sift_flow", tmp_path, split))
        assert len(loaded) == len(examples)
        for path, (image, label) in zip(images, loaded):
            original, ids = examples[os.path.basename(path)[:-4]]
            want = np.where(ids == 0, 255, ids - 1)
            np.testing.assert_array_equal(label, want)
            assert label.dtype == np.int32 and image.shape == (*ids.shape, 3)
            # JPEG: the decoded pixels are PIL's decoding of the file, near what was written.
            np.testing.assert_array_equal(image, np.asarray(Image.open(path), np.float32))
            assert np.abs(image - original).mean() < 3
    train = _loaded(kseg.data.load("sift_flow", tmp_path, "trainval"))
    assert {label.shape for _, label in train} == {(24, 32), (20, 28)}


def test_errors_name_the_file_and_the_value(tmp_path):
    write_sift_flow(tmp_path, unannotated=False)
    label_dir = tmp_path / "SemanticLabels" / SIFT_FLOW_SUBDIR
    mat = label_dir / "forest_for121.mat"

    scipy.io.savemat(mat, {"S": np.full((24, 32), 34.0)})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"forest_for121.mat' holds id 34"):
        _loaded(kseg.data.load("sift_flow", tmp_path, "train"))

    scipy.io.savemat(mat, {"S": np.ones((8, 8))})
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"forest_for121.mat' is 8x8 .* its image .* 24x32"
    ):
        _loaded(kseg.data.load("sift_flow", tmp_path, "train"))

    scipy.io.savemat(mat, {"L": np.ones((24, 32))})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"has no field 'S'. Received: fields"):
        _loaded(kseg.data.load("sift_flow", tmp_path, "train"))

    mat.write_bytes(b"MATLAB 5.0 but truncated")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"forest_for121.mat' is corrupt"):
        _loaded(kseg.data.load("sift_flow", tmp_path, "train"))

    jpg = tmp_path / "Images" / SIFT_FLOW_SUBDIR / "street_bost64.jpg"
    jpg.write_bytes(b"\xff\xd8\xff broken")
    scipy.io.savemat(mat, {"S": np.ones((24, 32))})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"street_bost64.jpg' is corrupt"):
        _loaded(kseg.data.load("sift_flow", tmp_path, "train"))

    mat.unlink()
    with pytest.raises(FileNotFoundError, match=r"forest_for121.mat' does not exist"):
        kseg.data.load("sift_flow", tmp_path, "train")
    with pytest.raises(ValueError, match="Received: split='val'"):
        kseg.data.load("sift_flow", tmp_path, "val")
    # The built-in test list names 200 images: the first one not on disk is reported.
    with pytest.raises(FileNotFoundError, match=r"insidecity_art947.jpg' does not exist"):
        os.remove(tmp_path / "Images" / SIFT_FLOW_SUBDIR / "insidecity_art947.jpg")
        kseg.data.sift_flow_pairs(tmp_path, "test")

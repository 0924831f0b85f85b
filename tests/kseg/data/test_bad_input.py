"""Each kind of bad input on disk gives an error naming the file and the value."""

import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kseg.data import folder, read_label, voc, voc_colormap, write_voc


def _voc(root, labels, image_sizes=None):
    """A tiny VOC folder: ids 'a', 'b', ... with grey images and palette-mode masks."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for n, label in enumerate(labels):
        image_id = "abcdefgh"[n]
        size = label.shape if image_sizes is None else image_sizes[n]
        Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(
            root / "JPEGImages" / f"{image_id}.jpg"
        )
        mask = Image.fromarray(label.astype(np.uint8), "P")
        mask.putpalette(voc_colormap().reshape(-1).tolist())  # as VOC stores them
        mask.save(root / "SegmentationClass" / f"{image_id}.png")
        ids.append(image_id)
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    return ids


def _iterate(dataset):
    for _ in dataset:
        pass


def test_mask_size_differs_from_image(tmp_path):
    _voc(tmp_path, [np.zeros((4, 5)), np.zeros((6, 7))], image_sizes=[(4, 5), (6, 8)])
    ds = voc(tmp_path, "train")
    expected = re.escape(
        f"label map '{tmp_path}/SegmentationClass/b.png' is 6x7 (height x width), "
        f"but its image '{tmp_path}/JPEGImages/b.jpg' is 6x8"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        _iterate(ds)


def test_label_value_not_below_num_classes(tmp_path):
    label = np.zeros((4, 5))
    label[1, 2] = 21
    label[0, 0] = 255  # ignore is allowed
    _voc(tmp_path, [np.zeros((4, 5)), label])
    expected = re.escape(
        f"label map '{tmp_path}/SegmentationClass/b.png' holds value 21, "
        "but num_classes is 21 (255 is ignored)"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        _iterate(voc(tmp_path, "train"))
    _iterate(voc(tmp_path, "train", num_classes=22))  # fine with room for it
    with pytest.raises(ValueError, match=r"holds value 21 \(and \[40\]\), but num_classes is 3"):
        label[3, 3] = 40
        Image.fromarray(label.astype(np.uint8), "L").save(tmp_path / "x.png")
        read_label(tmp_path / "x.png", num_classes=3)


def test_missing_image_file_at_creation(tmp_path):
    _voc(tmp_path, [np.zeros((4, 5)), np.zeros((4, 5))])
    (tmp_path / "JPEGImages/b.jpg").unlink()
    expected = re.escape(
        f"image file '{tmp_path}/JPEGImages/b.jpg' does not exist (id 'b', line 2 of "
    )
    with pytest.raises(FileNotFoundError, match=expected):
        voc(tmp_path, "train")


def test_missing_mask_file_at_creation(tmp_path):
    _voc(tmp_path, [np.zeros((4, 5))])
    (tmp_path / "SegmentationClass/a.png").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"label map '{tmp_path}/SegmentationClass/a.png' does not exist"),
    ):
        voc(tmp_path, "train")


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 not really a jpeg", None])
def test_corrupt_image_file(tmp_path, content):
    _voc(tmp_path, [np.zeros((4, 5)), np.zeros((40, 50))])
    path = tmp_path / "JPEGImages/b.jpg"
    if content is None:  # a truncated JPEG
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    expected = re.escape(f"image file '{path}' is corrupt or not an image")
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        _iterate(voc(tmp_path, "train"))


def test_empty_split_file(tmp_path):
    _voc(tmp_path, [np.zeros((4, 5))])
    split = tmp_path / "ImageSets/Segmentation/val.txt"
    split.write_text("\n  \n")
    with pytest.raises(
        ValueError, match=re.escape(f"split file '{split}' is empty: it lists no image ids")
    ):
        voc(tmp_path, "val")


def test_missing_split_file_lists_the_available_ones(tmp_path):
    _voc(tmp_path, [np.zeros((4, 5))])
    expected = re.escape(
        f"split file '{tmp_path}/ImageSets/Segmentation/test.txt' does not exist "
        "(split 'test'; available splits: train)"
    )
    with pytest.raises(FileNotFoundError, match=expected):
        voc(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="VOC root '.*nowhere' is not a directory"):
        voc(tmp_path / "nowhere", "train")


def test_colour_not_in_palette(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "images/p.png")
    mask = np.zeros((3, 4, 3), np.uint8)
    mask[2, 1] = (9, 8, 7)
    Image.fromarray(mask).save(tmp_path / "masks/p.png")
    ds = folder(tmp_path / "images", tmp_path / "masks", palette={(0, 0, 0): 0, (255, 0, 0): 1})
    expected = re.escape(
        f"label map '{tmp_path}/masks/p.png' has colour (9, 8, 7) at (row 2, column 1), "
        "which is not in the palette"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        _iterate(ds)


def test_colour_mask_without_palette(tmp_path):
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(
        ValueError,
        match=re.escape(f"label map '{tmp_path}/rgb.png' is a colour (RGB) image, but no palette"),
    ):
        read_label(tmp_path / "rgb.png")


def test_folder_errors_at_creation(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="images_dir '.*images' holds no images"):
        folder(tmp_path / "images", tmp_path / "masks")
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "images/q.jpg")
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            f"image '{tmp_path}/images/q.jpg' has no mask: expected '{tmp_path}/masks/q.png'"
        ),
    ):
        folder(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(FileNotFoundError, match="masks_dir '.*missing' is not a directory"):
        folder(tmp_path / "images", tmp_path / "missing")
    with pytest.raises(ValueError, match=r"palette lists colour \(1, 2, 3\) twice"):
        folder(tmp_path / "images", tmp_path / "images", palette=[(1, 2, 3), (1, 2, 3)])
    with pytest.raises(ValueError, match="palette colour \\(1, 2\\) is not an"):
        folder(tmp_path / "images", tmp_path / "images", palette={(1, 2): 0})


def test_pipeline_argument_errors(tmp_path):
    _voc(tmp_path, [np.zeros((4, 5))])
    with pytest.raises(
        ValueError, match="batch_size must be a positive integer or None. Received: batch_size=0"
    ):
        voc(tmp_path, "train", batch_size=0)
    with pytest.raises(
        ValueError,
        match="augment must be True, False or a kseg.data.Augment. Received: augment='yes'",
    ):
        voc(tmp_path, "train", augment="yes")
    with pytest.raises(ValueError, match=r"crop_size must be .*. Received: crop_size=-3"):
        voc(tmp_path, "train", crop_size=-3)


def test_write_voc_errors(tmp_path):
    images = np.zeros((2, 4, 5, 3), np.float32)
    labels = np.zeros((2, 4, 5), np.int32)
    with pytest.raises(
        ValueError, match="split 'val' refers to example 7, but there are 2 examples"
    ):
        write_voc((images, labels), tmp_path, splits={"val": [7]})
    labels[1, 0, 0] = 300
    with pytest.raises(
        ValueError, match=r"example 1: label values must be in \[0, 255\], found 0..300"
    ):
        write_voc((images, labels), tmp_path)
    with pytest.raises(ValueError, match="images and labels differ in length: 2 and 1"):
        write_voc((images, labels[:1]), tmp_path)


def test_decompression_bomb_is_an_error_naming_the_file(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    from kseg.data import read_image

    path = tmp_path / "huge.png"
    PILImage.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    # PIL refuses images over twice MAX_IMAGE_PIXELS: make this small one "too large".
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"huge\.png.*too large to decode safely"):
        read_image(path)


@pytest.mark.parametrize("bad_id", ["../outside", "/etc/passwd", "sub/2007_000032", ".."])
def test_voc_split_ids_cannot_leave_the_root(tmp_path, bad_id):
    from kseg.data.voc import voc_pairs

    root = tmp_path / "VOC"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text(f"{bad_id}\n")
    with pytest.raises(ValueError, match=r"line 1 of .*train\.txt.*Received: id="):
        voc_pairs(str(root), "train")


def test_write_voc_names_cannot_leave_the_root(tmp_path):
    from kseg.data import write_voc

    images = np.zeros((1, 4, 4, 3), np.float32)
    labels = np.zeros((1, 4, 4), np.int32)
    with pytest.raises(ValueError, match=r"name_format.*Received: id='\.\./escaped_000000'"):
        write_voc((images, labels), str(tmp_path / "voc"), name_format="../escaped_{:06d}")
    assert not (tmp_path / "escaped_000000.jpg").exists()
    with pytest.raises(ValueError, match=r"Received: id='\.\./train'"):
        write_voc((images, labels), str(tmp_path / "voc"), splits={"../train": 1})

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.data import (
    folder,
    load,
    read_image,
    read_label,
    synthetic_numpy,
    voc,
    voc_colormap,
    write_voc,
)

# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("voc_folder")


def test_voc_colormap_matches_the_devkit_bit_layout():
    def devkit_colour(index):
        # The VOC devkit's loop, written out bit by bit.
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        return [r, g, b]

    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    assert cmap.tolist() == [devkit_colour(i) for i in range(256)]
    assert cmap[15].tolist() == [192, 128, 128]  # person
    assert cmap[255].tolist() == [224, 224, 192]  # ignore border
    with pytest.raises(
        ValueError, match="num_colors must be an integer in \\[1, 256\\]. Received: num_colors=300"
    ):
        voc_colormap(300)


@pytest.fixture(scope="module")
def scenes():
    images, labels = synthetic_numpy(5, (36, 52), seed=2)
    labels[0, :3] = 255  # an ignore border must survive the round trip
    return images, labels


def test_write_voc_layout_and_formats(tmp_path, scenes):
    images, labels = scenes
    ids = write_voc(scenes, tmp_path, splits={"train": 3, "val": 2})
    assert ids == {"train": ["000000", "000001", "000002"], "val": ["000003", "000004"]}
    assert (tmp_path / "ImageSets/Segmentation/val.txt").read_text() == "000003\n000004\n"
    mask = Image.open(tmp_path / "SegmentationClass/000000.png")
    assert mask.mode == "P"
    assert np.array_equal(
        np.asarray(mask.getpalette(), np.uint8).reshape(-1, 3)[:256], voc_colormap()
    )
    np.testing.assert_array_equal(np.asarray(mask), labels[0])
    jpeg = Image.open(tmp_path / "JPEGImages/000000.jpg")
    assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
    assert np.abs(np.asarray(jpeg, np.float32) - images[0]).mean() < 6


def test_voc_reads_back_what_was_written(tmp_path, scenes):
    images, labels = scenes
    write_voc(
        kseg.data.synthetic(5, (36, 52), seed=2), tmp_path, splits={"train": [4, 1], "val": [0]}
    )
    ds = voc(tmp_path, "train", num_classes=6)
    read = [(x.numpy(), y.numpy()) for x, y in ds]
    assert len(read) == 2
    for (image, label), index in zip(read, [4, 1]):  # listed order is kept
        np.testing.assert_array_equal(label, labels[index])
        assert image.dtype == np.float32 and image.shape == (36, 52, 3)
        assert np.abs(image - images[index]).mean() < 6
    assert np.asarray(ds.element_spec[1].dtype == tf.int32)


def test_voc_batches_crops_and_pads(tmp_path, scenes):
    images, labels = scenes
    write_voc(scenes, tmp_path, splits={"val": 5})
    # Evaluation with crop_size: deterministic pad to 40x56 (label 255), no crop needed.
    batches = list(voc(tmp_path, "val", num_classes=6, crop_size=(40, 56), batch_size=2))
    assert [b[1].shape[0] for b in batches] == [2, 2, 1]
    first = batches[0][1].numpy()
    np.testing.assert_array_equal(first[0, :36, :52], labels[0])
    assert (first[:, 36:] == 255).all() and (first[:, :, 52:] == 255).all()
    # Training: random crops of the requested size with augmentation.
    train = voc(tmp_path, "val", num_classes=6, crop_size=24, augment=True, batch_size=2, seed=1)
    for x, y in train:
        assert x.shape[1:] == (24, 24, 3) and y.shape[1:] == (24, 24)
        assert set(np.unique(y.numpy())) <= set(range(6)) | {255}


def test_images_of_different_sizes_batch_with_padding(tmp_path):
    small = synthetic_numpy(1, (20, 30), seed=0)
    large = synthetic_numpy(1, (26, 24), seed=0)
    write_voc((list(small[0]) + list(large[0]), list(small[1]) + list(large[1])), tmp_path)
    ((images, labels),) = list(voc(tmp_path, "train", num_classes=6, batch_size=2))
    assert labels.shape == (2, 26, 30)
    np.testing.assert_array_equal(labels[0, :20, :30], small[1][0])
    assert (labels.numpy()[0, 20:] == 255).all() and (labels.numpy()[1, :, 24:] == 255).all()


def test_deterministic_option_repeats_batches_across_runs(tmp_path, scenes):
    write_voc(scenes, tmp_path, splits={"train": 5})

    def two_epochs():
        ds = voc(
            tmp_path,
            "train",
            num_classes=6,
            crop_size=20,
            augment=True,
            batch_size=2,
            deterministic=True,
            seed=5,
        )
        return [[y.numpy() for _, y in ds] for _ in range(2)]

    run_a, run_b = two_epochs(), two_epochs()
    for epoch_a, epoch_b in zip(run_a, run_b):
        for a, b in zip(epoch_a, epoch_b):
            np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(run_a[0], run_a[1]))


def test_greyscale_and_rgba_images_become_rgb(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (6, 7), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    rgba = np.random.default_rng(1).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(grey, "L").save(tmp_path / "grey.jpg", quality=100)
    np.testing.assert_array_equal(
        read_image(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, -1)
    )
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])
    jpeg = read_image(tmp_path / "grey.jpg")
    assert jpeg.shape == (6, 7, 3) and (jpeg[..., 0] == jpeg[..., 2]).all()


def _write_folder(root, labels, colour_coded=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for n, label in enumerate(labels):
        image = np.full((*label.shape, 3), 40 * n, np.uint8)
        Image.fromarray(image).save(root / "images" / f"img{n}.jpg")
        if colour_coded is None:
            Image.fromarray(label.astype(np.uint8), "L").save(root / "masks" / f"img{n}.png")
        else:
            Image.fromarray(colour_coded[label]).save(root / "masks" / f"img{n}.png")


def test_folder_with_class_index_masks(tmp_path):
    labels = [np.array([[0, 1, 2], [255, 1, 0]]), np.array([[2, 2, 0], [0, 0, 1]])]
    _write_folder(tmp_path, labels)
    read = [y.numpy() for _, y in folder(tmp_path / "images", tmp_path / "masks", num_classes=3)]
    for got, expected in zip(read, labels):
        np.testing.assert_array_equal(got, expected)


def test_folder_with_colour_coded_masks(tmp_path):
    colours = np.zeros((256, 3), np.uint8)
    colours[[0, 1, 2, 255]] = [[0, 0, 0], [250, 10, 10], [10, 250, 10], [255, 255, 255]]
    palette = {(0, 0, 0): 0, (250, 10, 10): 1, (10, 250, 10): 2, (255, 255, 255): 255}
    labels = [np.array([[0, 1, 2], [255, 1, 0]]), np.array([[2, 2, 0], [0, 0, 1]])]
    _write_folder(tmp_path, labels, colour_coded=colours)
    read = [y.numpy() for _, y in folder(tmp_path / "images", tmp_path / "masks", palette=palette)]
    for got, expected in zip(read, labels):
        np.testing.assert_array_equal(got, expected)
    # A list of colours works too: position = class.
    as_list = [(0, 0, 0), (250, 10, 10), (10, 250, 10)]
    np.testing.assert_array_equal(
        read_label(tmp_path / "masks/img1.png", palette=as_list, num_classes=3), labels[1]
    )


def test_load_dispatches_by_name(tmp_path, scenes):
    write_voc(scenes, tmp_path / "voc", splits={"val": 2})
    ds = load("voc", tmp_path / "voc", "val", num_classes=6)
    assert len(list(ds)) == 2
    labels = [np.array([[0, 1], [1, 0]])]
    _write_folder(tmp_path / "f" / "x", labels)
    os.makedirs(tmp_path / "g" / "images", exist_ok=True)
    os.replace(tmp_path / "f/x/images", tmp_path / "g/images/train")
    os.makedirs(tmp_path / "g" / "masks", exist_ok=True)
    os.replace(tmp_path / "f/x/masks", tmp_path / "g/masks/train")
    ((_, label),) = list(load("folder", tmp_path / "g", "train", num_classes=2))
    np.testing.assert_array_equal(label.numpy(), labels[0])
    with pytest.raises(ValueError, match="Unknown dataset 'mapillary'. Valid names: ") as error:
        load("mapillary", tmp_path)
    listed = str(error.value).split("Valid names: ")[1].split(", ")
    assert {"folder", "synthetic", "voc", "cityscapes", "coco", "pennfudan"} <= set(listed)


def test_batch_by_size_groups_images_of_one_size():
    small = kseg.data.synthetic(3, (16, 24), seed=1)
    large = kseg.data.synthetic(2, (20, 20), seed=2)
    mixed = small.concatenate(large).concatenate(kseg.data.synthetic(1, (16, 24), seed=3))
    batches = [(x.numpy(), y.numpy()) for x, y in kseg.data.batch_by_size(mixed, 2)]
    assert sorted(x.shape for x, _ in batches) == [
        (2, 16, 24, 3),
        (2, 16, 24, 3),
        (2, 20, 20, 3),
    ]
    # Every example once, unpadded.
    want = sorted(y.numpy().tobytes() for _, y in mixed)
    got = sorted(label.tobytes() for _, ys in batches for label in ys)
    assert got == want
    fixed = kseg.data.batch_by_size(small, 2)
    assert [x.shape[0] for x, _ in fixed] == [2, 1]
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        kseg.data.batch_by_size(small, 0)


def test_load_folder_takes_explicit_directories(tmp_path):
    images, labels = kseg.data.synthetic_numpy(2, (16, 16), seed=0)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i in range(2):
        Image.fromarray(images[i].astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray(labels[i].astype(np.uint8)).save(tmp_path / "lab" / f"{i}.png")
    ds = kseg.data.load(
        "folder", images_dir=str(tmp_path / "img"), masks_dir=str(tmp_path / "lab"), num_classes=6
    )
    got = np.stack([y.numpy() for _, y in ds])
    np.testing.assert_array_equal(got, labels)
    with pytest.raises(ValueError, match="images_dir and masks_dir must be given together"):
        kseg.data.load("folder", images_dir=str(tmp_path / "img"))

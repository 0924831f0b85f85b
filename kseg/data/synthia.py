"""SYNTHIA-RAND-CITYSCAPES: 9,400 rendered street scenes labelled with Cityscapes-like classes.

Layout (``SYNTHIA_RAND_CITYSCAPES.rar`` unpacked)::

    root/RGB/<0000000..0009399>.png          8-bit RGB, 1280x760
    root/GT/LABELS/<same name>.png           16-bit, several channels

The README says the first channel of ``GT/LABELS`` holds the class id and the second the
instance id. Pillow reduces 16-bit colour PNGs to 8 bits (the ids would read as 0), so these
files are decoded with TensorFlow's PNG decoder at their own bit depth. The ids (README table):
0 void, 1 sky, 2 building, 3 road, 4 sidewalk, 5 fence, 6 vegetation, 7 pole, 8 car,
9 traffic sign, 10 pedestrian, 11 bicycle, 12 motorcycle, 13 parking-slot, 14 road-work,
15 traffic light, 16 terrain, 17 rider, 18 truck, 19 bus, 20 train, 21 wall, 22 lanemarking.

Domain-adaptation work (SYNTHIA -> Cityscapes) trains and scores on the 16 classes both
datasets share, or on 13 of them (without wall, fence and pole); this follows that mapping:
every other id (void, parking-slot, road-work, terrain, truck, train, lanemarking) is 255.
The class order is Cityscapes' with the missing classes left out, so a model's class ``k``
means the same thing in both datasets. SYNTHIA has no official split: ``"train"`` is all 9,400.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from kseg.data.cityscapes import CITYSCAPES_LABELS
from kseg.data.files import check_split, find_root, numpy_reader, pair_by_suffix, pairs_pipeline
from kseg.data.info import DatasetInfo, register_info
from kseg.data.io import label_lookup, read_image
from kseg.data.palette import IGNORE_INDEX

SYNTHIA_ID_NAMES = dict(
    enumerate(
        (
            "void",
            "sky",
            "building",
            "road",
            "sidewalk",
            "fence",
            "vegetation",
            "pole",
            "car",
            "traffic sign",
            "pedestrian",
            "bicycle",
            "motorcycle",
            "parking-slot",
            "road-work",
            "traffic light",
            "terrain",
            "rider",
            "truck",
            "bus",
            "train",
            "wall",
            "lanemarking",
        )
    )
)
"""SYNTHIA class id (0..22) -> name, from the SYNTHIA-RAND-CITYSCAPES README."""

# Cityscapes class name -> SYNTHIA id, for the classes both datasets have.
_SHARED = {
    "road": 3,
    "sidewalk": 4,
    "building": 2,
    "wall": 21,
    "fence": 5,
    "pole": 7,
    "traffic light": 15,
    "traffic sign": 9,
    "vegetation": 6,
    "sky": 1,
    "person": 10,
    "rider": 17,
    "car": 8,
    "bus": 19,
    "motorcycle": 12,
    "bicycle": 11,
}
_COLOURS = {label.name: label.color for label in CITYSCAPES_LABELS}

SYNTHIA16_CLASSES = tuple(_SHARED)
"""The 16 classes shared with Cityscapes, in Cityscapes' train-id order."""

SYNTHIA13_CLASSES = tuple(n for n in _SHARED if n not in ("wall", "fence", "pole"))
"""The 13-class variant: :data:`SYNTHIA16_CLASSES` without wall, fence and pole."""


def synthia_label_map(num_classes=16):
    """SYNTHIA id -> class for the 16- or 13-class variant (unshared ids -> 255).

    Example:
        >>> synthia_label_map(16)[3], synthia_label_map(13)[15], synthia_label_map(13)[21]
        (0, 3, 255)
    """
    if num_classes not in (16, 13):
        raise ValueError(
            f"SYNTHIA is used with 16 or 13 classes. Received: num_classes={num_classes!r}"
        )
    classes = SYNTHIA16_CLASSES if num_classes == 16 else SYNTHIA13_CLASSES
    mapping = dict.fromkeys(SYNTHIA_ID_NAMES, IGNORE_INDEX)
    mapping.update({_SHARED[name]: index for index, name in enumerate(classes)})
    return mapping


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_synthia_label(path, label_map=None):
    """The class ids of a ``GT/LABELS`` PNG (its first channel, 8 or 16 bit) as ``int32``,
    mapped through ``label_map`` when given (an unlisted id is an error naming it).

    Example:
        >>> ids = read_synthia_label("GT/LABELS/0000000.png")  # doctest: +SKIP
    """
    path = os.fspath(path.decode() if isinstance(path, bytes) else path)
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 33:
        raise ValueError(f"label map {path!r} is corrupt or not a PNG file")
    bit_depth = data[24]  # IHDR's bit depth; decode_png would rescale 8-bit values to 16 bits
    try:
        decoded = tf.io.decode_png(
            data, channels=0, dtype=tf.uint16 if bit_depth == 16 else tf.uint8
        )
        ids = decoded.numpy()[..., 0].astype(np.int64)
    except tf.errors.OpError as error:
        raise ValueError(f"label map {path!r} is corrupt: {error.message}") from None
    if label_map is None:
        return ids.astype(np.int32)
    table = label_lookup(label_map)
    inside = ids < len(table)
    mapped = table[np.where(inside, ids, 0)]
    unknown = ~inside | (mapped < 0)
    if unknown.any():
        values = np.unique(ids[unknown])
        raise ValueError(
            f"label map {path!r} holds id {int(values[0])}"
            + (f" (and {values[1:].tolist()})" if values.size > 1 else "")
            + ", which the dataset's label mapping does not list"
        )
    return mapped.astype(np.int32)


def synthia_pairs(root, split="train"):
    """The ``(image_paths, label_paths)`` of ``RGB/*.png`` and ``GT/LABELS/*.png``.

    Example:
        >>> images, labels = synthia_pairs("RAND_CITYSCAPES")  # doctest: +SKIP
    """
    check_split("synthia", split, ("train",))
    root = find_root("synthia", root, "RGB", ("RAND_CITYSCAPES", "SYNTHIA_RAND_CITYSCAPES"))
    return pair_by_suffix(
        os.path.join(root, "RGB"), os.path.join(root, "GT", "LABELS"), ".png", ".png"
    )


def synthia(
    root,
    split="train",
    *,
    num_classes=16,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
):
    """SYNTHIA-RAND-CITYSCAPES as a ``tf.data.Dataset`` of ``(image, label)``.

    Args:
        root: the folder holding ``RGB/`` and ``GT/LABELS/`` (``RAND_CITYSCAPES``).
        split: ``"train"`` (all 9,400 images).
        num_classes: 16 (:data:`SYNTHIA16_CLASSES`) or 13 (:data:`SYNTHIA13_CLASSES`).
        crop_size, augment, batch_size, shuffle, seed, deterministic, drop_remainder: as in
            :func:`kseg.data.voc`.

    Errors: a missing label file raises at creation; a corrupt PNG, an id outside 0..22 and an
    image/label size mismatch name the file and the value when reached.

    Example:
        >>> ds = synthia("RAND_CITYSCAPES", crop_size=(512, 1024), augment=True,
        ...              batch_size=8)  # doctest: +SKIP
    """
    table = label_lookup(synthia_label_map(num_classes))
    image_paths, label_paths = synthia_pairs(root, split)

    def read_arrays(image_path, label_path):
        image = read_image(image_path)
        label = read_synthia_label(label_path, table)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"label map {label_path.decode()!r} is {label.shape[0]}x{label.shape[1]} "
                f"(height x width), but its image {image_path.decode()!r} is "
                f"{image.shape[0]}x{image.shape[1]}"
            )
        return image, label

    return pairs_pipeline(
        image_paths,
        label_paths,
        numpy_reader(read_arrays),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )


_DESCRIPTION = (
    "SYNTHIA-RAND-CITYSCAPES: RGB/ and GT/LABELS/ (16-bit, class id in the first channel); "
    "the {} classes shared with Cityscapes, the rest 255."
)
for _name, _classes in (("synthia", SYNTHIA16_CLASSES), ("synthia13", SYNTHIA13_CLASSES)):
    register_info(
        DatasetInfo(
            _name,
            _classes,
            tuple(_COLOURS[c] for c in _classes),
            splits={"train": 9400},
            description=_DESCRIPTION.format(len(_classes)),
        )
    )

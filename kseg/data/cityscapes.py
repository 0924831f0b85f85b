"""Cityscapes: fine (and coarse) pixel labels of street scenes from 50 German cities.

Layout (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unpacked side by side;
``leftImg8bit_trainextra.zip`` and ``gtCoarse.zip`` for the coarse mode)::

    root/leftImg8bit/{train,val,test,train_extra}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    root/gtCoarse/{train,train_extra,val}/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png

``*_labelIds.png`` are 8-bit greyscale PNGs holding the 34 label ids (0..33) of the devkit's
``cityscapesscripts/helpers/labels.py``; they are mapped to its 19 train ids, every other id
to 255. Where ``*_labelTrainIds.png`` (written by the devkit's ``createTrainIdLabelImgs.py``)
sits beside a ``labelIds`` file it is read instead (values 0..18 and 255). The license plate
(id -1) is never drawn in the label images, so it has no entry here.
"""

from __future__ import annotations

import collections
import os

from kseg.data.files import check_split, find_root, numpy_reader, pair_by_suffix, pairs_pipeline
from kseg.data.info import DatasetInfo, register_info
from kseg.data.io import label_lookup, read_example
from kseg.data.palette import IGNORE_INDEX

CityscapesLabel = collections.namedtuple("CityscapesLabel", "name id train_id category color")
"""One row of the devkit's label table: the stored ``id``, its ``train_id`` (255 = ignored)."""

_I = IGNORE_INDEX
CITYSCAPES_LABELS = tuple(
    CityscapesLabel(*row)
    for row in (
        ("unlabeled", 0, _I, "void", (0, 0, 0)),
        ("ego vehicle", 1, _I, "void", (0, 0, 0)),
        ("rectification border", 2, _I, "void", (0, 0, 0)),
        ("out of roi", 3, _I, "void", (0, 0, 0)),
        ("static", 4, _I, "void", (0, 0, 0)),
        ("dynamic", 5, _I, "void", (111, 74, 0)),
        ("ground", 6, _I, "void", (81, 0, 81)),
        ("road", 7, 0, "flat", (128, 64, 128)),
        ("sidewalk", 8, 1, "flat", (244, 35, 232)),
        ("parking", 9, _I, "flat", (250, 170, 160)),
        ("rail track", 10, _I, "flat", (230, 150, 140)),
        ("building", 11, 2, "construction", (70, 70, 70)),
        ("wall", 12, 3, "construction", (102, 102, 156)),
        ("fence", 13, 4, "construction", (190, 153, 153)),
        ("guard rail", 14, _I, "construction", (180, 165, 180)),
        ("bridge", 15, _I, "construction", (150, 100, 100)),
        ("tunnel", 16, _I, "construction", (150, 120, 90)),
        ("pole", 17, 5, "object", (153, 153, 153)),
        ("polegroup", 18, _I, "object", (153, 153, 153)),
        ("traffic light", 19, 6, "object", (250, 170, 30)),
        ("traffic sign", 20, 7, "object", (220, 220, 0)),
        ("vegetation", 21, 8, "nature", (107, 142, 35)),
        ("terrain", 22, 9, "nature", (152, 251, 152)),
        ("sky", 23, 10, "sky", (70, 130, 180)),
        ("person", 24, 11, "human", (220, 20, 60)),
        ("rider", 25, 12, "human", (255, 0, 0)),
        ("car", 26, 13, "vehicle", (0, 0, 142)),
        ("truck", 27, 14, "vehicle", (0, 0, 70)),
        ("bus", 28, 15, "vehicle", (0, 60, 100)),
        ("caravan", 29, _I, "vehicle", (0, 0, 90)),
        ("trailer", 30, _I, "vehicle", (0, 0, 110)),
        ("train", 31, 16, "vehicle", (0, 80, 100)),
        ("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
        ("bicycle", 33, 18, "vehicle", (119, 11, 32)),
    )
)
"""The 34 labels stored in ``*_labelIds.png`` (devkit ``labels.py``, license plate left out)."""

_EVALUATED = sorted(
    (label for label in CITYSCAPES_LABELS if label.train_id != IGNORE_INDEX),
    key=lambda label: label.train_id,
)
CITYSCAPES_CLASSES = tuple(label.name for label in _EVALUATED)
"""The 19 evaluated classes, indexed by train id (``road`` = 0 ... ``bicycle`` = 18)."""

CITYSCAPES_PALETTE = tuple(label.color for label in _EVALUATED)
"""The devkit's colour of each of the 19 classes."""

CITYSCAPES_LABEL_MAP = {label.id: label.train_id for label in CITYSCAPES_LABELS}
"""Label id (0..33) -> train id (0..18, or 255 for the 15 labels not evaluated)."""

_TRAIN_ID_MAP = {**{i: i for i in range(len(CITYSCAPES_CLASSES))}, IGNORE_INDEX: IGNORE_INDEX}

_SPLITS = {"fine": ("train", "val", "test"), "coarse": ("train", "train_extra", "val")}


def cityscapes_pairs(root, split="train", mode="fine"):
    """The ``(image_paths, label_paths)`` of one split, sorted by city and file name.

    ``split`` may join splits with ``+`` (``"train+train_extra"`` in the coarse mode). Each
    label path is the ``*_labelTrainIds.png`` file where one exists, else ``*_labelIds.png``.
    A missing label file, or a split folder without images, raises here.

    Example:
        >>> images, labels = cityscapes_pairs("cityscapes", "val")  # doctest: +SKIP
        >>> os.path.basename(labels[0])  # doctest: +SKIP
        'frankfurt_000000_000294_gtFine_labelIds.png'
    """
    if mode not in _SPLITS:
        raise ValueError(f"cityscapes mode must be 'fine' or 'coarse'. Received: mode={mode!r}")
    gt = "gtFine" if mode == "fine" else "gtCoarse"
    root = find_root("cityscapes", root, "leftImg8bit", ("cityscapes",))
    names = split.split("+") if isinstance(split, str) else [split]
    image_paths, label_paths = [], []
    for name in names:
        check_split(f"cityscapes ({mode})", name, _SPLITS[mode])
        images, labels = pair_by_suffix(
            os.path.join(root, "leftImg8bit", name),
            os.path.join(root, gt, name),
            "_leftImg8bit.png",
            f"_{gt}_labelIds.png",
            recursive=True,
        )
        image_paths += images
        for path in labels:
            train_ids = path[: -len("labelIds.png")] + "labelTrainIds.png"
            label_paths.append(train_ids if os.path.isfile(train_ids) else path)
    return image_paths, label_paths


def id_label_reader(label_map, train_id_map=None):
    """A reader of ``(image path, label path)`` that maps the stored ids through ``label_map``;
    files ending in ``_labelTrainIds.png`` go through ``train_id_map`` instead.

    Example:
        >>> read = id_label_reader(CITYSCAPES_LABEL_MAP)
    """
    table = label_lookup(label_map)
    train_table = None if train_id_map is None else label_lookup(train_id_map)

    def read_arrays(image_path, label_path):
        use_train_ids = train_table is not None and label_path.endswith(b"_labelTrainIds.png")
        return read_example(
            image_path, label_path, label_map=train_table if use_train_ids else table
        )

    return numpy_reader(read_arrays)


def cityscapes(
    root,
    split="train",
    *,
    mode="fine",
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
):
    """Cityscapes as a ``tf.data.Dataset`` of ``(image float32 [1024, 2048, 3], label int32)``.

    Labels hold the 19 train ids (:data:`CITYSCAPES_CLASSES`), 255 elsewhere.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/`` (or ``gtCoarse/``).
        split: ``"train"`` (2,975), ``"val"`` (500) or ``"test"`` (1,525, whose public labels
            are empty); with ``mode="coarse"``: ``"train"``, ``"train_extra"`` (19,998) or
            ``"val"``; splits may be joined with ``+``.
        mode: ``"fine"`` (``gtFine``) or ``"coarse"`` (``gtCoarse``).
        crop_size, augment, batch_size, shuffle, seed, deterministic, drop_remainder: as in
            :func:`kseg.data.voc`.

    Errors: a missing label file raises when the dataset is created; a corrupt PNG, a label
    id outside 0..33 (or a train id outside 0..18 and 255) and an image/label size mismatch
    raise ``tf.errors.InvalidArgumentError`` naming the file and the value when reached.

    Example:
        >>> train = cityscapes("cityscapes", "train", crop_size=(512, 1024), augment=True,
        ...                    batch_size=8)  # doctest: +SKIP
    """
    image_paths, label_paths = cityscapes_pairs(root, split, mode)
    return pairs_pipeline(
        image_paths,
        label_paths,
        id_label_reader(CITYSCAPES_LABEL_MAP, _TRAIN_ID_MAP),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )


register_info(
    DatasetInfo(
        "cityscapes",
        CITYSCAPES_CLASSES,
        CITYSCAPES_PALETTE,
        splits={"train": 2975, "val": 500, "test": 1525, "train_extra": 19998},
        description="Cityscapes: leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
        "(gtCoarse.zip, leftImg8bit_trainextra.zip for mode='coarse'); 34 label ids -> 19 train "
        "ids, the rest 255.",
    )
)

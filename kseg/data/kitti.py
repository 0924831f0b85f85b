"""KITTI semantic segmentation (the 2015 stereo frames labelled the Cityscapes way).

Layout (``data_semantics.zip`` unpacked)::

    root/training/image_2/<000000..000199>_10.png      RGB, about 375x1242 (sizes vary)
    root/training/semantic/<000000..000199>_10.png     8-bit Cityscapes label ids (0..33)
    root/testing/image_2/<000000..000199>_10.png       no labels are published

The benchmark's devkit states that the labels follow Cityscapes; they are mapped with
:data:`kseg.data.cityscapes.CITYSCAPES_LABEL_MAP` to the 19 Cityscapes train ids (the rest
255). KITTI defines no validation split: ``"train"`` is all 200 labelled frames.
"""

from __future__ import annotations

import os

from kseg.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_MAP,
    CITYSCAPES_PALETTE,
    id_label_reader,
)
from kseg.data.files import check_split, find_root, pair_by_suffix, pairs_pipeline
from kseg.data.info import DatasetInfo, register_info


def kitti_pairs(root, split="train"):
    """The ``(image_paths, label_paths)`` of ``training/image_2`` and ``training/semantic``.

    Example:
        >>> images, labels = kitti_pairs("data_semantics")  # doctest: +SKIP
        >>> os.path.basename(labels[0])  # doctest: +SKIP
        '000000_10.png'
    """
    check_split("kitti", split, ("train",))
    root = find_root("kitti", root, "training", ("data_semantics",))
    training = os.path.join(root, "training")
    return pair_by_suffix(
        os.path.join(training, "image_2"), os.path.join(training, "semantic"), "_10.png", "_10.png"
    )


def kitti(
    root,
    split="train",
    *,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
):
    """KITTI semantics as a ``tf.data.Dataset`` of ``(image, label)`` in Cityscapes train ids.

    Args:
        root: the folder holding ``training/`` (``data_semantics``).
        split: ``"train"`` (the 200 labelled frames).
        crop_size, augment, batch_size, shuffle, seed, deterministic, drop_remainder: as in
            :func:`kseg.data.voc`.

    Errors: as :func:`kseg.data.cityscapes`: a missing label file at creation; a corrupt PNG,
    an id outside 0..33 and an image/label size mismatch name the file and the value.

    Example:
        >>> ds = kitti("data_semantics", crop_size=(352, 1216), augment=True,
        ...            batch_size=4)  # doctest: +SKIP
    """
    image_paths, label_paths = kitti_pairs(root, split)
    return pairs_pipeline(
        image_paths,
        label_paths,
        id_label_reader(CITYSCAPES_LABEL_MAP),
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
        "kitti",
        CITYSCAPES_CLASSES,
        CITYSCAPES_PALETTE,
        splits={"train": 200, "test": 200},
        description="KITTI semantics: data_semantics.zip (training/image_2, training/semantic in "
        "Cityscapes label ids -> 19 train ids, the rest 255).",
    )
)

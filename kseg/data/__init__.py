"""Datasets: the embedded synthetic scenes, PASCAL VOC and image/mask folders, and augmentation.

Every loader returns a ``tf.data.Dataset`` of ``(image float32 [H, W, 3] in 0..255,
label int32 [H, W])`` (batched when ``batch_size`` is given); 255 in a label means "ignore".

Example:
    >>> import kseg
    >>> train = kseg.data.synthetic(1000, image_size=(128, 128), seed=0)
    >>> val = kseg.data.synthetic(200, image_size=(128, 128), seed=1)
    >>> kseg.data.write_voc(val, "/tmp/synthetic_voc", splits={"val": 200})  # doctest: +SKIP
    >>> ds = kseg.data.load("voc", "/tmp/synthetic_voc", "val", num_classes=6)  # doctest: +SKIP
"""

from kseg.data.augment import IMAGENET_MEAN_RGB, Augment, center_crop_or_pad, pad_to_size
from kseg.data.change import (
    CHANGE_CLASSES,
    augment_change_pair,
    change_files,
    change_folder,
    read_change_example,
    read_change_mask,
    render_change_pair,
    synthetic_change,
    synthetic_change_numpy,
    write_change_dataset,
)
from kseg.data.folder import folder, folder_pairs
from kseg.data.info import DatasetInfo, info, register_info
from kseg.data.io import color_lookup, label_lookup, read_example, read_image, read_label
from kseg.data.palette import IGNORE_INDEX, SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, voc_colormap
from kseg.data.pipeline import batch_by_size, build_pipeline
from kseg.data.synthetic import (
    SceneOptions,
    render_scene,
    scene_options,
    scene_reader,
    synthetic,
    synthetic_numpy,
)
from kseg.data.voc import VOC_CLASSES, voc, voc_pairs, write_voc
from kseg.registry import Registry

DATASETS = Registry("dataset")

SYNTHETIC_SPLITS = {"train": (0, 1000), "val": (1_000_000_000, 200), "test": (2_000_000_000, 200)}
"""Synthetic split name -> (first scene index, default number of scenes); the ranges are disjoint."""

register_info(
    DatasetInfo(
        "voc",
        VOC_CLASSES,
        tuple(map(tuple, voc_colormap(len(VOC_CLASSES)).tolist())),
        splits={"train": 1464, "val": 1449, "trainval": 2913},
        description="PASCAL VOC 2012: VOCdevkit/VOC2012 (JPEGImages, SegmentationClass, "
        "ImageSets/Segmentation).",
    )
)
register_info(
    DatasetInfo(
        "synthetic",
        SYNTHETIC_CLASSES,
        tuple(map(tuple, SYNTHETIC_PALETTE.tolist())),
        splits={name: count for name, (_, count) in SYNTHETIC_SPLITS.items()},
        description="Built-in scenes of shapes, generated on the fly (nothing to download).",
    )
)
register_info(
    DatasetInfo(
        "change",
        CHANGE_CLASSES,
        ((0, 0, 0), (255, 255, 255)),
        splits={"train": 445, "val": 64, "test": 128},
        description="Bi-temporal change detection, LEVIR-CD layout: <root>/<split>/A, B and "
        "label (0 unchanged, 255 or 1 changed); examples are 6-channel pairs.",
    )
)
register_info(
    DatasetInfo(
        "synthetic_change",
        CHANGE_CLASSES,
        ((0, 0, 0), (255, 255, 255)),
        splits={name: count for name, (_, count) in SYNTHETIC_SPLITS.items()},
        description="Built-in synthetic image pairs: objects appear, vanish and move under "
        "illumination changes that are not change.",
    )
)


@DATASETS.register("change")
def _load_change(root, split, **kwargs):
    if root is None:
        raise ValueError("root must be the change dataset folder. Received: root=None")
    return change_folder(root, split, **kwargs)


@DATASETS.register("synthetic_change")
def _load_synthetic_change(root, split, **kwargs):
    if split not in SYNTHETIC_SPLITS:
        raise ValueError(
            f"synthetic_change split must be one of {', '.join(SYNTHETIC_SPLITS)}. "
            f"Received: split={split!r}"
        )
    first_index, default_count = SYNTHETIC_SPLITS[split]
    return synthetic_change(
        kwargs.pop("num_images", default_count),
        kwargs.pop("image_size", (64, 64)),
        first_index=first_index,
        **kwargs,
    )


@DATASETS.register("voc")
def _load_voc(root, split, **kwargs):
    return voc(root, split, **kwargs)


@DATASETS.register("folder")
def _load_folder(root, split, images_dir=None, masks_dir=None, **kwargs):
    import os

    if images_dir is not None or masks_dir is not None:
        # Explicit folders (the CLI's --images-dir/--masks-dir) replace the root layout.
        if images_dir is None or masks_dir is None:
            raise ValueError(
                "images_dir and masks_dir must be given together. "
                f"Received: images_dir={images_dir!r}, masks_dir={masks_dir!r}"
            )
        return folder(images_dir, masks_dir, **kwargs)
    if root is None:
        raise ValueError("root must be the dataset folder. Received: root=None")
    parts = () if split is None else (split,)
    return folder(
        os.path.join(root, "images", *parts), os.path.join(root, "masks", *parts), **kwargs
    )


@DATASETS.register("synthetic")
def _load_synthetic(root, split, **kwargs):
    import tensorflow as tf

    from kseg.data.synthetic import _resolve

    if split not in SYNTHETIC_SPLITS:
        raise ValueError(
            f"synthetic split must be one of {', '.join(SYNTHETIC_SPLITS)}. Received: split={split!r}"
        )
    first_index, default_count = SYNTHETIC_SPLITS[split]
    pipeline_keys = (
        "crop_size",
        "augment",
        "batch_size",
        "shuffle",
        "seed",
        "deterministic",
        "drop_remainder",
    )
    pipeline_kwargs = {k: kwargs.pop(k) for k in pipeline_keys if k in kwargs}
    scene_seed = pipeline_kwargs.get("seed")
    num_images, image_size, seed, num_classes, options, first_index = _resolve(
        kwargs.pop("num_images", default_count),
        kwargs.pop("image_size", (128, 128)),
        0 if scene_seed is None else scene_seed,
        kwargs.pop("num_classes", len(SYNTHETIC_CLASSES)),
        kwargs.pop("difficulty", 0.5),
        first_index,
        kwargs,
    )
    indices = tf.data.Dataset.range(first_index, first_index + num_images)
    return build_pipeline(
        indices, num_images, scene_reader(image_size, seed, num_classes, options), **pipeline_kwargs
    )


def load(name, root=None, split="train", **kwargs):
    """Loads dataset ``name`` ("voc", "folder", "synthetic", "change", "synthetic_change").

    A wrong name lists the valid ones.

    - ``"voc"``: :func:`voc` on ``root``.
    - ``"folder"``: :func:`folder` on ``root/images/<split>`` and ``root/masks/<split>``
      (``split=None``: ``root/images`` and ``root/masks``), or on ``images_dir`` and
      ``masks_dir`` when these keywords are given (``root`` and ``split`` are then unused).
    - ``"synthetic"``: the embedded scenes (``root`` is not used); ``split`` "train", "val"
      or "test" selects disjoint scene ranges (see :data:`SYNTHETIC_SPLITS`); keyword
      arguments of :func:`synthetic` (``num_images``, ``image_size``, ``num_classes``,
      ``difficulty``, knobs) and of the loaders (``crop_size``, ``augment``, ``batch_size``,
      ``shuffle``, ``seed``, ``deterministic``) are accepted; ``seed`` seeds both.
    - ``"change"``: bi-temporal change detection, :func:`change_folder` on LEVIR-CD-style
      ``root/<split>/A``, ``B`` and ``label``: ``(pair [H, W, 6], label 0/1)``; a mask's 255
      means *changed* (LEVIR-CD), not ignore.
    - ``"synthetic_change"``: :func:`synthetic_change` pairs (``num_images``, ``image_size``,
      ``illumination``, ``noise_std`` and the loader keywords); splits as "synthetic".

    Example:
        >>> ds = load("synthetic", split="val", num_images=50, image_size=(96, 96), batch_size=8)
        >>> images, labels = next(iter(ds))
        >>> images.shape.as_list(), labels.shape.as_list()
        ([8, 96, 96, 3], [8, 96, 96])
    """
    return DATASETS.get(name)(root, split, **kwargs)


__all__ = [
    "CHANGE_CLASSES",
    "augment_change_pair",
    "change_files",
    "change_folder",
    "read_change_example",
    "read_change_mask",
    "render_change_pair",
    "synthetic_change",
    "synthetic_change_numpy",
    "write_change_dataset",
    "Augment",
    "DATASETS",
    "DatasetInfo",
    "IGNORE_INDEX",
    "IMAGENET_MEAN_RGB",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "SYNTHETIC_SPLITS",
    "SceneOptions",
    "VOC_CLASSES",
    "batch_by_size",
    "build_pipeline",
    "center_crop_or_pad",
    "color_lookup",
    "folder",
    "folder_pairs",
    "info",
    "label_lookup",
    "load",
    "pad_to_size",
    "read_example",
    "read_image",
    "read_label",
    "register_info",
    "render_scene",
    "scene_options",
    "scene_reader",
    "synthetic",
    "synthetic_numpy",
    "voc",
    "voc_colormap",
    "voc_pairs",
    "write_voc",
]

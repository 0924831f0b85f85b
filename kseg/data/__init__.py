"""Datasets: synthetic scenes, image/mask folders, the standard benchmarks, and augmentation.

The benchmarks (``voc``, ``voc_aug``, ``cityscapes``, ``kitti``, ``synthia``, ``ade20k``,
``coco_stuff``) are read from their release files, one module each; :func:`info` gives their
classes, colours and split sizes.

Every loader returns a ``tf.data.Dataset`` of ``(image float32 [H, W, 3] in 0..255,
label int32 [H, W])`` (batched when ``batch_size`` is given); 255 in a label means "ignore".

Example:
    >>> import kseg
    >>> train = kseg.data.synthetic(1000, image_size=(128, 128), seed=0)
    >>> val = kseg.data.synthetic(200, image_size=(128, 128), seed=1)
    >>> kseg.data.write_voc(val, "/tmp/synthetic_voc", splits={"val": 200})  # doctest: +SKIP
    >>> ds = kseg.data.load("voc", "/tmp/synthetic_voc", "val", num_classes=6)  # doctest: +SKIP
"""

from kseg.data.ade20k import ADE20K_CLASSES, ADE20K_LABEL_MAP, ADE20K_PALETTE, ade20k
from kseg.data.augment import IMAGENET_MEAN_RGB, Augment, center_crop_or_pad, pad_to_size
from kseg.data.camvid import (
    CAMVID32_CLASSES,
    CAMVID32_PALETTE,
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CAMVID_SPLITS,
    camvid,
    camvid_pairs,
)
from kseg.data.change import (
    CHANGE_CLASSES,
    augment_change_pair,
    change_files,
    change_folder,
    read_change_example,
    read_change_mask,
    read_change_pair,
    render_change_pair,
    synthetic_change,
    synthetic_change_numpy,
    write_change_dataset,
)
from kseg.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_MAP,
    CITYSCAPES_LABELS,
    CITYSCAPES_PALETTE,
    cityscapes,
)
from kseg.data.coco import (
    coco_instances,
    coco_results,
    instances_to_coco,
    read_coco_instances,
    write_coco_instances,
)
from kseg.data.coco_panoptic import (
    coco_panoptic,
    decode_panoptic_png,
    encode_panoptic_png,
    read_coco_panoptic,
    write_coco_panoptic,
)
from kseg.data.coco_stuff import (
    COCO_STUFF_CLASSES,
    COCO_STUFF_LABEL_MAP,
    COCO_STUFF_STUFF_CLASSES,
    COCO_STUFF_THING_CLASSES,
    coco_stuff,
)
from kseg.data.folder import folder, folder_pairs
from kseg.data.info import DatasetInfo, info, register_info
from kseg.data.io import color_lookup, label_lookup, read_example, read_image, read_label
from kseg.data.kitti import kitti
from kseg.data.palette import IGNORE_INDEX, SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, voc_colormap
from kseg.data.pennfudan import pennfudan, write_pennfudan
from kseg.data.pipeline import batch_by_size, build_pipeline
from kseg.data.sequences import SEQUENCE_CLASSES, synthetic_sequences
from kseg.data.sift_flow import SIFT_FLOW_CLASSES, SIFT_FLOW_SPLITS, sift_flow, sift_flow_pairs
from kseg.data.synthetic import (
    SceneOptions,
    render_instance_scene,
    render_scene,
    scene_options,
    scene_reader,
    synthetic,
    synthetic_instances,
    synthetic_numpy,
)
from kseg.data.synthia import SYNTHIA13_CLASSES, SYNTHIA16_CLASSES, synthia, synthia_label_map
from kseg.data.tfds_loader import TFDS_DEFAULTS, tfds
from kseg.data.tfrecord import encode_example, tfrecord, write_tfrecord
from kseg.data.voc import VOC_CLASSES, voc, voc_pairs, write_voc
from kseg.data.voc_aug import voc_aug
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


register_info(
    DatasetInfo(
        "camvid",
        CAMVID_CLASSES,
        CAMVID_PALETTE,
        splits=dict(CAMVID_SPLITS),
        description="CamVid, SegNet's 11 classes: train/, trainannot/, val/, valannot/, test/, "
        "testannot/ (greyscale ids, 11 = Unlabelled is ignored).",
    )
)
register_info(
    DatasetInfo(
        "camvid32",
        CAMVID32_CLASSES,
        CAMVID32_PALETTE,
        splits={**CAMVID_SPLITS, "all": 701},
        description="CamVid's original 32 colour-coded labels: 701_StillsRaw_full/, "
        "LabeledApproved_full/*_L.png, label_colors.txt (Void is ignored).",
    )
)
register_info(
    DatasetInfo(
        "sift_flow",
        SIFT_FLOW_CLASSES,
        tuple(map(tuple, voc_colormap(len(SIFT_FLOW_CLASSES)).tolist())),
        splits=dict(SIFT_FLOW_SPLITS),
        description="SIFT Flow: Images/ and SemanticLabels/ "
        "spatial_envelope_256x256_static_8outdoorcategories/ (.jpg, .mat field S; 0 is ignored).",
    )
)
for _name, _defaults in TFDS_DEFAULTS.items():
    register_info(
        DatasetInfo(
            f"tfds:{_name}",
            _defaults["class_names"],
            tuple(map(tuple, voc_colormap(len(_defaults["class_names"])).tolist())),
            description=f"TFDS {_name!r} through tensorflow_datasets "
            f"({_defaults['image_key']!r}, {_defaults['label_key']!r}).",
        )
    )


@DATASETS.register("camvid")
def _load_camvid(root, split, **kwargs):
    return camvid(root, split, **kwargs)


@DATASETS.register("camvid32")
def _load_camvid32(root, split, **kwargs):
    return camvid(root, split, mode="32", **kwargs)


@DATASETS.register("sift_flow")
def _load_sift_flow(root, split, **kwargs):
    return sift_flow(root, split, **kwargs)


@DATASETS.register("tfds")
def _load_tfds(root, split, **kwargs):
    # root is the TFDS name ("oxford_iiit_pet"); the data folder is data_dir=.
    return tfds(root, split, **kwargs)


@DATASETS.register("tfrecord")
def _load_tfrecord(root, split, **kwargs):
    # root is a file pattern or write_tfrecord's prefix; "{split}" in it takes the split.
    return tfrecord(root, split, **kwargs)


@DATASETS.register("voc")
def _load_voc(root, split, **kwargs):
    return voc(root, split, **kwargs)


# The standard benchmarks: each module lists its layout, label mapping and metadata.
DATASETS.register("voc_aug")(voc_aug)
DATASETS.register("cityscapes")(cityscapes)
DATASETS.register("kitti")(kitti)
DATASETS.register("synthia")(synthia)
DATASETS.register("ade20k")(ade20k)
DATASETS.register("coco_stuff")(coco_stuff)


def _coco_split_name(split):
    # "train" -> "train2017" (COCO's 2017 release); a split with a year ("val2014") is kept.
    if not isinstance(split, str) or not split:
        raise ValueError(
            f"split must be a COCO split name such as 'val'. Received: split={split!r}"
        )
    return split if any(ch.isdigit() for ch in split) else f"{split}2017"


@DATASETS.register("coco", "coco_instances")
def _load_coco_instances(root, split, annotation_file=None, image_dir=None, **kwargs):
    import os

    if annotation_file is None or image_dir is None:
        if root is None:
            raise ValueError(
                "root must be the COCO folder (annotations/, train2017/, val2017/), or "
                "annotation_file and image_dir given. Received: root=None"
            )
        name = _coco_split_name(split)
        annotation_file = annotation_file or os.path.join(
            root, "annotations", f"instances_{name}.json"
        )
        image_dir = image_dir or os.path.join(root, name)
    return coco_instances(annotation_file, image_dir, **kwargs)


@DATASETS.register("coco_panoptic")
def _load_coco_panoptic(root, split, json_file=None, image_dir=None, panoptic_dir=None):
    import os

    if json_file is None or image_dir is None or panoptic_dir is None:
        if root is None:
            raise ValueError(
                "root must be the COCO folder (annotations/panoptic_<split>2017.json and its "
                "PNG folder, <split>2017/), or json_file, image_dir and panoptic_dir given. "
                "Received: root=None"
            )
        name = _coco_split_name(split)
        json_file = json_file or os.path.join(root, "annotations", f"panoptic_{name}.json")
        image_dir = image_dir or os.path.join(root, name)
        panoptic_dir = panoptic_dir or os.path.join(root, "annotations", f"panoptic_{name}")
    return coco_panoptic(json_file, image_dir, panoptic_dir)


PENNFUDAN_SPLITS = ("all", "train", "val", "test")
"""PennFudan has no official split: "train" is all but the last ``held_out=50`` images (sorted
by name), "val" and "test" those last 50 (as torchvision's detection tutorial), "all" (or None)
every image."""


@DATASETS.register("pennfudan")
def _load_pennfudan(root, split="all", held_out=50):
    if root is None:
        raise ValueError("root must be the PennFudanPed folder. Received: root=None")
    key = "all" if split is None else split
    if key not in PENNFUDAN_SPLITS:
        raise ValueError(
            f"pennfudan split must be one of {', '.join(PENNFUDAN_SPLITS)}. "
            f"Received: split={split!r}"
        )
    dataset = pennfudan(root)
    count = int(dataset.cardinality())
    if not isinstance(held_out, int) or held_out < 0:
        raise ValueError(f"held_out must be an int >= 0. Received: held_out={held_out!r}")
    cut = max(count - held_out, 0)
    first, last = {"all": (0, count), "train": (0, cut)}.get(key, (cut, count))
    return dataset.skip(first).take(last - first)


@DATASETS.register("synthetic_instances")
def _load_synthetic_instances(root, split="train", **kwargs):
    if split not in SYNTHETIC_SPLITS:
        raise ValueError(
            f"synthetic_instances split must be one of {', '.join(SYNTHETIC_SPLITS)}. "
            f"Received: split={split!r}"
        )
    first_index, default_count = SYNTHETIC_SPLITS[split]
    return synthetic_instances(
        kwargs.pop("num_images", default_count), first_index=first_index, **kwargs
    )


INSTANCE_DATASETS = ("coco", "coco_instances", "pennfudan", "synthetic_instances")
"""Names in :data:`DATASETS` giving instance samples (dicts of image, boxes, classes, masks)."""
PANOPTIC_DATASETS = ("coco_panoptic", "synthetic_instances")
"""Names in :data:`DATASETS` giving panoptic samples (dicts with ``image`` and ``panoptic``)."""


@DATASETS.register("synthia13")
def _load_synthia13(root, split="train", **kwargs):
    return synthia(root, split, num_classes=13, **kwargs)


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
    """Loads dataset ``name`` (see ``DATASETS.names()``); a wrong name lists the valid ones.

    - ``"voc"``: :func:`voc` on ``root``.
    - ``"voc_aug"``, ``"cityscapes"``, ``"kitti"``, ``"synthia"`` (``"synthia13"``: its
      13-class variant), ``"ade20k"``, ``"coco_stuff"``: the function of that name on
      ``root`` (the folder the dataset's archives were unpacked into); each maps the dataset's
      label ids to the classes of :func:`info` and marks what the benchmark ignores with 255.
    - ``"folder"``: :func:`folder` on ``root/images/<split>`` and ``root/masks/<split>``
      (``split=None``: ``root/images`` and ``root/masks``), or on ``images_dir`` and
      ``masks_dir`` when these keywords are given (``root`` and ``split`` are then unused).
    - ``"synthetic"``: the embedded scenes (``root`` is not used); ``split`` "train", "val"
      or "test" selects disjoint scene ranges (see :data:`SYNTHETIC_SPLITS`); keyword
      arguments of :func:`synthetic` (``num_images``, ``image_size``, ``num_classes``,
      ``difficulty``, knobs) and of the loaders (``crop_size``, ``augment``, ``batch_size``,
      ``shuffle``, ``seed``, ``deterministic``) are accepted; ``seed`` seeds both.
    - ``"camvid"`` / ``"camvid32"``: :func:`camvid` on ``root`` (11 or 32 classes);
      ``"sift_flow"``: :func:`sift_flow`.
    - ``"tfds"``: :func:`tfds` with ``root`` the TFDS name; ``"tfrecord"``: :func:`tfrecord`
      with ``root`` a file pattern or prefix (``{split}`` in it is replaced by ``split``).
    - ``"change"``: bi-temporal change detection, :func:`change_folder` on LEVIR-CD-style
      ``root/<split>/A``, ``B`` and ``label``: ``(pair [H, W, 6], label 0/1)``; a mask's 255
      means *changed* (LEVIR-CD), not ignore.
    - ``"synthetic_change"``: :func:`synthetic_change` pairs (``num_images``, ``image_size``,
      ``illumination``, ``noise_std`` and the loader keywords); splits as "synthetic".

    Instance and panoptic datasets give dicts (``image``, ``boxes``, ``classes``, ``masks``,
    ...; or ``image``, ``panoptic``), not ``(image, label)`` pairs:

    - ``"coco"`` (also ``"coco_instances"``): :func:`coco_instances` on
      ``root/annotations/instances_<split>2017.json`` and ``root/<split>2017/`` (a split with a
      year, e.g. "val2014", is used as is; ``annotation_file=`` / ``image_dir=`` override).
    - ``"coco_panoptic"``: :func:`coco_panoptic` on ``root/annotations/panoptic_<split>2017.json``,
      its PNG folder ``root/annotations/panoptic_<split>2017/`` and ``root/<split>2017/``
      (``json_file=``, ``image_dir=``, ``panoptic_dir=`` override).
    - ``"pennfudan"``: :func:`pennfudan` on the ``PennFudanPed`` folder; ``split`` "all"
      (default), "train" (all but the last ``held_out=50`` images by name) or "val"/"test"
      (those last 50).
    - ``"synthetic_instances"``: :func:`synthetic_instances` (its keywords); splits as
      "synthetic".

    Example:
        >>> ds = load("synthetic", split="val", num_images=50, image_size=(96, 96), batch_size=8)
        >>> images, labels = next(iter(ds))
        >>> images.shape.as_list(), labels.shape.as_list()
        ([8, 96, 96, 3], [8, 96, 96])
        >>> sorted(next(iter(load("synthetic_instances", split="val", num_images=1))))
        ['boxes', 'classes', 'image', 'masks', 'panoptic']
    """
    return DATASETS.get(name)(root, split, **kwargs)


__all__ = [
    "instances_to_coco",
    "synthetic_instances",
    "render_instance_scene",
    "write_pennfudan",
    "pennfudan",
    "write_coco_panoptic",
    "read_coco_panoptic",
    "encode_panoptic_png",
    "decode_panoptic_png",
    "coco_panoptic",
    "write_coco_instances",
    "read_coco_instances",
    "coco_results",
    "coco_instances",
    "ADE20K_CLASSES",
    "SEQUENCE_CLASSES",
    "synthetic_sequences",
    "ADE20K_LABEL_MAP",
    "ADE20K_PALETTE",
    "Augment",
    "CAMVID32_CLASSES",
    "CAMVID32_PALETTE",
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CHANGE_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_LABEL_MAP",
    "CITYSCAPES_PALETTE",
    "COCO_STUFF_CLASSES",
    "COCO_STUFF_LABEL_MAP",
    "COCO_STUFF_STUFF_CLASSES",
    "COCO_STUFF_THING_CLASSES",
    "DATASETS",
    "INSTANCE_DATASETS",
    "PANOPTIC_DATASETS",
    "PENNFUDAN_SPLITS",
    "DatasetInfo",
    "IGNORE_INDEX",
    "IMAGENET_MEAN_RGB",
    "SIFT_FLOW_CLASSES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "SYNTHETIC_SPLITS",
    "SYNTHIA13_CLASSES",
    "SYNTHIA16_CLASSES",
    "SceneOptions",
    "TFDS_DEFAULTS",
    "VOC_CLASSES",
    "ade20k",
    "augment_change_pair",
    "batch_by_size",
    "build_pipeline",
    "camvid",
    "camvid_pairs",
    "center_crop_or_pad",
    "change_files",
    "change_folder",
    "cityscapes",
    "coco_stuff",
    "color_lookup",
    "encode_example",
    "folder",
    "folder_pairs",
    "info",
    "kitti",
    "label_lookup",
    "load",
    "pad_to_size",
    "read_change_example",
    "read_change_mask",
    "read_change_pair",
    "read_example",
    "read_image",
    "read_label",
    "register_info",
    "render_change_pair",
    "render_scene",
    "scene_options",
    "scene_reader",
    "sift_flow",
    "sift_flow_pairs",
    "synthetic",
    "synthetic_change",
    "synthetic_change_numpy",
    "synthetic_numpy",
    "synthia",
    "synthia_label_map",
    "tfds",
    "tfrecord",
    "voc",
    "voc_aug",
    "voc_colormap",
    "voc_pairs",
    "write_change_dataset",
    "write_tfrecord",
    "write_voc",
]

"""Tiny datasets in the real on-disk layouts, for testing the loaders without the downloads.

Each writer puts a few images of two sizes under ``root`` with the dataset's folder names,
file names and encodings (8-bit or 16-bit PNG, JPEG, MATLAB ``.mat``), and label maps that
hold every id the dataset's mapping knows, ignored ones included. It returns
``{split: [TinyExample, ...]}`` in the order the loader lists the files, so a test can
compare what a loader yields with the stored ids, pixel by pixel.

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> written = write_cityscapes(root, {"val": 2})
    >>> [e.ids.shape for e in written["val"]]
    [(32, 48), (40, 24)]
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

DEFAULT_SIZES = ((32, 48), (40, 24))
"""The two image sizes (height, width) the writers alternate between."""


@dataclasses.dataclass
class TinyExample:
    """One written example: its files, the stored image and the stored label ids.

    Attributes:
        image_path: the image file.
        label_path: the label file the loader reads.
        image: ``uint8 [H, W, 3]``, the pixels written (JPEG files hold a lossy copy).
        ids: ``int64 [H, W]``, the dataset ids stored in the label file.
    """

    image_path: str
    label_path: str
    image: np.ndarray
    ids: np.ndarray


def label_ids(shape, ids, seed):
    """``int64 [H, W]`` holding each of ``ids`` at least once (when it has room), shuffled.

    Example:
        >>> sorted(set(label_ids((4, 5), [0, 7, 255], seed=0).ravel().tolist()))
        [0, 7, 255]
    """
    rng = np.random.default_rng(seed)
    ids = np.asarray(ids, np.int64)
    count = shape[0] * shape[1]
    values = np.concatenate([ids, rng.choice(ids, max(count - ids.size, 0))])[:count]
    return rng.permutation(values).reshape(shape)


def _image(shape, seed):
    return np.random.default_rng(seed + 1000).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _makedirs_for(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def _save_png(path, array, mode=None):
    Image.fromarray(array, mode).save(_makedirs_for(path), format="PNG")


def _save_jpeg(path, image):
    Image.fromarray(image).save(_makedirs_for(path), format="JPEG", quality=95, subsampling=0)


def _sizes(sizes, index):
    return tuple(sizes[index % len(sizes)])


CITYSCAPES_CITIES = {
    "train": ("aachen", "bochum"),
    "val": ("frankfurt",),
    "test": ("berlin",),
    "train_extra": ("augsburg",),
}
"""The cities the Cityscapes writer uses per split (real city names of each split)."""


def write_cityscapes(
    root, splits=None, *, mode="fine", train_ids=False, sizes=DEFAULT_SIZES, seed=0
):
    """Writes a tiny Cityscapes: ``leftImg8bit`` PNGs and ``gtFine`` (or ``gtCoarse``) labels.

    Label files are 8-bit greyscale ``*_labelIds.png`` holding ids 0..33; beside them the
    ``*_color.png`` and 16-bit ``*_instanceIds.png`` files of the real release. With
    ``train_ids=True`` a ``*_labelTrainIds.png`` (train ids 0..18 and 255) is written too and
    is the file returned (``ids`` then holds train ids).

    Args:
        root: output folder.
        splits: ``{split: number of images}`` (default ``{"train": 3, "val": 2}``); images are
            spread over :data:`CITYSCAPES_CITIES`.
        mode: ``"fine"`` or ``"coarse"``.
        train_ids: also write ``*_labelTrainIds.png``.
        sizes: image sizes (height, width), used in turn.
        seed: pixel values.

    Example:
        >>> written = write_cityscapes("/tmp/cs", {"train": 2})  # doctest: +SKIP
    """
    from kseg.data.cityscapes import CITYSCAPES_LABEL_MAP, CITYSCAPES_LABELS

    splits = {"train": 3, "val": 2} if splits is None else splits
    gt = {"fine": "gtFine", "coarse": "gtCoarse"}[mode]
    colours = {label.id: label.color for label in CITYSCAPES_LABELS}
    written = {}
    for split_index, (split, count) in enumerate(splits.items()):
        cities = CITYSCAPES_CITIES[split]
        examples = []
        for index in range(count):
            city = cities[index % len(cities)]
            stem = f"{city}_{index:06d}_{19 + index:06d}"
            shape = _sizes(sizes, index)
            example_seed = seed + 100 * split_index + index
            image = _image(shape, example_seed)
            ids = label_ids(shape, range(34), example_seed)
            image_path = os.path.join(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png")
            _save_png(image_path, image)
            base = os.path.join(root, gt, split, city, f"{stem}_{gt}_")
            label_path = base + "labelIds.png"
            _save_png(label_path, ids.astype(np.uint8), "L")
            colour = np.zeros((*shape, 3), np.uint8)
            for label_id, rgb in colours.items():
                colour[ids == label_id] = rgb
            _save_png(base + "color.png", colour)
            _save_png(base + "instanceIds.png", (ids * 1000 + 1).astype(np.uint16))
            if train_ids:
                table = np.array([CITYSCAPES_LABEL_MAP[i] for i in range(34)])
                ids = table[ids]
                label_path = base + "labelTrainIds.png"
                _save_png(label_path, ids.astype(np.uint8), "L")
            examples.append(TinyExample(image_path, label_path, image, ids))
        written[split] = sorted(examples, key=lambda e: e.image_path)
    return written


def write_kitti(root, count=3, *, sizes=DEFAULT_SIZES, seed=0):
    """Writes a tiny KITTI semantics (``training/image_2``, ``training/semantic``, ...).

    Labels are 8-bit greyscale PNGs of Cityscapes ids 0..33; ``semantic_rgb`` and a
    ``testing/image_2`` folder (without labels) are written as in the release.

    Example:
        >>> written = write_kitti("/tmp/kitti", 2)  # doctest: +SKIP
    """
    examples = []
    for index in range(count):
        shape = _sizes(sizes, index)
        image = _image(shape, seed + index)
        ids = label_ids(shape, range(34), seed + index)
        name = f"{index:06d}_10.png"
        image_path = os.path.join(root, "training", "image_2", name)
        label_path = os.path.join(root, "training", "semantic", name)
        _save_png(image_path, image)
        _save_png(label_path, ids.astype(np.uint8), "L")
        _save_png(os.path.join(root, "training", "semantic_rgb", name), image)
        _save_png(os.path.join(root, "testing", "image_2", name), image)
        # The stereo pair's other frame is not labelled and must not be listed.
        _save_png(os.path.join(root, "training", "image_2", f"{index:06d}_11.png"), image)
        examples.append(TinyExample(image_path, label_path, image, ids))
    return {"train": examples}


def write_png16(path, array):
    """Writes ``uint16 [H, W, C]`` (C in 1..4) as a 16-bit PNG (Pillow cannot write these).

    Example:
        >>> write_png16("/tmp/x.png", np.zeros((2, 3, 3), np.uint16))  # doctest: +SKIP
    """
    import tensorflow as tf

    data = tf.io.encode_png(tf.constant(np.asarray(array, np.uint16)))
    with open(_makedirs_for(path), "wb") as handle:
        handle.write(data.numpy())


def write_synthia(root, count=3, *, sizes=DEFAULT_SIZES, seed=0):
    """Writes a tiny SYNTHIA-RAND-CITYSCAPES: ``RGB/*.png`` and 16-bit ``GT/LABELS/*.png``.

    The label PNGs have three 16-bit channels: class id (0..22), instance id, 0.

    Example:
        >>> written = write_synthia("/tmp/synthia", 2)  # doctest: +SKIP
    """
    examples = []
    for index in range(count):
        shape = _sizes(sizes, index)
        image = _image(shape, seed + index)
        ids = label_ids(shape, range(23), seed + index)
        name = f"{index:07d}.png"
        image_path = os.path.join(root, "RGB", name)
        label_path = os.path.join(root, "GT", "LABELS", name)
        _save_png(image_path, image)
        instances = np.where(ids == 8, 300 + index, 0)  # cars get an instance id
        write_png16(label_path, np.stack([ids, instances, np.zeros_like(ids)], -1))
        _save_png(os.path.join(root, "GT", "COLOR", name), image)
        examples.append(TinyExample(image_path, label_path, image, ids))
    return {"train": examples}


def write_ade20k(root, splits=None, *, sizes=DEFAULT_SIZES, seed=0):
    """Writes a tiny ``ADEChallengeData2016`` (JPEG images, 8-bit annotations 0..150) in ``root``.

    Example:
        >>> written = write_ade20k("/tmp/ade", {"val": 2})  # doctest: +SKIP
    """
    splits = {"train": 3, "val": 2} if splits is None else splits
    folders = {"train": ("training", "ADE_train"), "val": ("validation", "ADE_val")}
    written = {}
    for split_index, (split, count) in enumerate(splits.items()):
        folder, prefix = folders[split]
        examples = []
        for index in range(count):
            shape = _sizes(sizes, index)
            example_seed = seed + 100 * split_index + index
            image = _image(shape, example_seed)
            ids = label_ids(shape, range(151), example_seed)
            stem = f"{prefix}_{index + 1:08d}"
            image_path = os.path.join(root, "ADEChallengeData2016", "images", folder, stem + ".jpg")
            label_path = os.path.join(
                root, "ADEChallengeData2016", "annotations", folder, stem + ".png"
            )
            _save_jpeg(image_path, image)
            _save_png(label_path, ids.astype(np.uint8), "L")
            examples.append(TinyExample(image_path, label_path, image, ids))
        written[split] = examples
    return written


def write_coco_stuff(root, splits=None, *, sizes=DEFAULT_SIZES, seed=0):
    """Writes a tiny COCO-Stuff 164k: ``images/<split>2017/*.jpg``, ``annotations/...png``.

    Label maps hold the values of the 171 used classes (COCO-Stuff id - 1) and 255.

    Example:
        >>> written = write_coco_stuff("/tmp/coco", {"val": 2})  # doctest: +SKIP
    """
    from kseg.data.coco_stuff import COCO_STUFF_UNUSED_IDS

    splits = {"train": 3, "val": 2} if splits is None else splits
    values = [i - 1 for i in range(1, 183) if i not in COCO_STUFF_UNUSED_IDS] + [255]
    written = {}
    for split_index, (split, count) in enumerate(splits.items()):
        examples = []
        for index in range(count):
            shape = _sizes(sizes, index)
            example_seed = seed + 100 * split_index + index
            image = _image(shape, example_seed)
            ids = label_ids(shape, values, example_seed)
            stem = f"{139 + 1000 * split_index + 7 * index:012d}"
            image_path = os.path.join(root, "images", f"{split}2017", stem + ".jpg")
            label_path = os.path.join(root, "annotations", f"{split}2017", stem + ".png")
            _save_jpeg(image_path, image)
            _save_png(label_path, ids.astype(np.uint8), "L")
            examples.append(TinyExample(image_path, label_path, image, ids))
        written[split] = examples
    return written


VOC_AUG_LISTS = {
    "voc_train": ("2007_000032", "2008_000008"),
    "voc_val": ("2007_000033", "2008_000009"),
    "sbd_train": ("2008_000002", "2008_000008", "2007_000033"),
    "sbd_val": ("2008_000003", "2008_000009"),
}
"""The ids of the VOC + SBD writer: SBD lists a VOC val image in each of its splits (as the
real SBD does), which the train_aug split must leave out."""


def write_sbd_mat(path, segmentation):
    """Writes an SBD ``cls/<id>.mat``: a ``GTcls`` struct (``Segmentation``, ``Boundaries``,
    ``CategoriesPresent``), MATLAB 5 format as in the release.

    Example:
        >>> write_sbd_mat("/tmp/a.mat", np.zeros((4, 5), np.uint8))  # doctest: +SKIP
    """
    import scipy.io
    import scipy.sparse

    segmentation = np.asarray(segmentation, np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        edges = segmentation == k + 1
        edges &= ~np.pad(edges, 1, mode="edge")[2:, 1:-1]
        boundaries[k, 0] = scipy.sparse.csc_matrix(edges)
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8)
    scipy.io.savemat(
        _makedirs_for(path),
        {
            "GTcls": {
                "Segmentation": segmentation,
                "Boundaries": boundaries,
                "CategoriesPresent": present,
            }
        },
    )


def write_voc_aug(root, *, aug_png=False, sizes=DEFAULT_SIZES, seed=0):
    """Writes a tiny VOC 2012 + SBD: ``VOCdevkit/VOC2012`` beside ``benchmark_RELEASE``.

    VOC labels are palette PNGs (VOC colour map) with 255 borders; SBD labels are ``.mat``
    files (0..20, no border), or with ``aug_png=True`` greyscale PNGs in
    ``VOC2012/SegmentationClassAug`` (no SBD folder). Ids are those of :data:`VOC_AUG_LISTS`.

    Returns ``{"train": [...], "val": [...]}``: the train_aug and val examples, sorted by id,
    each with the label file the loader must pick.

    Example:
        >>> written = write_voc_aug("/tmp/vocaug")  # doctest: +SKIP
    """
    from kseg.data.palette import voc_colormap

    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    sbd = os.path.join(root, "benchmark_RELEASE", "dataset")
    lists = VOC_AUG_LISTS
    voc_ids = set(lists["voc_train"]) | set(lists["voc_val"])
    every = sorted(voc_ids | set(lists["sbd_train"]) | set(lists["sbd_val"]))
    palette = voc_colormap().reshape(-1).tolist()
    examples = {}
    for index, image_id in enumerate(every):
        shape = _sizes(sizes, index)
        image = _image(shape, seed + index)
        image_path = os.path.join(voc, "JPEGImages", image_id + ".jpg")
        _save_jpeg(image_path, image)
        if image_id in voc_ids:
            ids = label_ids(shape, list(range(21)) + [255], seed + index)
            label_path = os.path.join(voc, "SegmentationClass", image_id + ".png")
            mask = Image.fromarray(ids.astype(np.uint8), "P")
            mask.putpalette(palette)
            mask.save(_makedirs_for(label_path), format="PNG")
        else:
            ids = label_ids(shape, range(21), seed + index)
            if aug_png:
                label_path = os.path.join(voc, "SegmentationClassAug", image_id + ".png")
                _save_png(label_path, ids.astype(np.uint8), "L")
            else:
                label_path = os.path.join(sbd, "cls", image_id + ".mat")
                write_sbd_mat(label_path, ids)
                _save_jpeg(os.path.join(sbd, "img", image_id + ".jpg"), image)
        examples[image_id] = TinyExample(image_path, label_path, image, ids)
    # VOC images that SBD also labels: the SBD copy exists but VOC's label wins.
    for image_id in sorted(voc_ids & (set(lists["sbd_train"]) | set(lists["sbd_val"]))):
        if aug_png:
            _save_png(
                os.path.join(voc, "SegmentationClassAug", image_id + ".png"),
                np.minimum(examples[image_id].ids, 20).astype(np.uint8),
                "L",
            )
        else:
            write_sbd_mat(
                os.path.join(sbd, "cls", image_id + ".mat"), np.minimum(examples[image_id].ids, 20)
            )
    sets = os.path.join(voc, "ImageSets", "Segmentation")
    os.makedirs(sets, exist_ok=True)
    for name in ("train", "val"):
        with open(os.path.join(sets, name + ".txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(i + "\n" for i in lists["voc_" + name]))
    with open(os.path.join(sets, "trainval.txt"), "w", encoding="utf-8") as handle:
        handle.write("".join(i + "\n" for i in lists["voc_train"] + lists["voc_val"]))
    if not aug_png:
        for name in ("train", "val"):
            with open(os.path.join(sbd, name + ".txt"), "w", encoding="utf-8") as handle:
                handle.write("".join(i + "\n" for i in lists["sbd_" + name]))
    train = sorted(
        (set(lists["voc_train"]) | set(lists["sbd_train"]) | set(lists["sbd_val"]))
        - set(lists["voc_val"])
    )
    return {
        "train": [examples[i] for i in train],
        "val": [examples[i] for i in lists["voc_val"]],
    }


__all__ = [
    "CITYSCAPES_CITIES",
    "DEFAULT_SIZES",
    "TinyExample",
    "VOC_AUG_LISTS",
    "label_ids",
    "write_ade20k",
    "write_cityscapes",
    "write_coco_stuff",
    "write_kitti",
    "write_png16",
    "write_sbd_mat",
    "write_synthia",
    "write_voc_aug",
]

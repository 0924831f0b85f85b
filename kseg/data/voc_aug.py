"""PASCAL VOC 2012 augmented with the SBD annotations: the usual 10,582 / 1,449 split.

Layout (``VOCtrainval_11-May-2012.tar`` and SBD's ``benchmark.tgz`` unpacked side by side)::

    root/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    root/VOCdevkit/VOC2012/SegmentationClass/<id>.png          VOC's own 2,913 labels
    root/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    root/benchmark_RELEASE/dataset/cls/<id>.mat                SBD: GTcls.Segmentation, 0..20
    root/benchmark_RELEASE/dataset/{train,val}.txt             8,498 + 2,857 ids
    root/benchmark_RELEASE/dataset/img/<id>.jpg                (used if JPEGImages lacks one)

Instead of SBD's ``.mat`` files, a ``SegmentationClassAug/<id>.png`` folder inside ``VOC2012``
(the SBD labels converted to greyscale PNGs, as DeepLab's set-up distributes them) is read.

``"train"`` ("train_aug") is VOC train ∪ SBD train ∪ SBD val, minus every VOC val image
(10,582 ids with the full data); without SBD's lists, the ids of ``SegmentationClassAug``
stand for SBD's. ``"val"`` is VOC's 1,449 val images. Each image takes VOC's own label where
``SegmentationClass`` has one (it marks object borders with 255), else the
``SegmentationClassAug`` PNG, else SBD's ``.mat`` (SBD has no 255 borders). The ``.mat``
struct follows SBD's README: ``GTcls.Segmentation`` is the class of each pixel.
"""

from __future__ import annotations

import os

import numpy as np

from kseg.data.files import check_split, numpy_reader, pairs_pipeline
from kseg.data.folder import _check_dir
from kseg.data.info import DatasetInfo, register_info
from kseg.data.io import IMAGE_EXTENSIONS, check_file_id, read_image, read_label
from kseg.data.palette import IGNORE_INDEX, voc_colormap
from kseg.data.voc import VOC_CLASSES


def _read_ids(path):
    with open(path, encoding="utf-8") as handle:
        ids = [line.split()[0] for line in handle if line.strip()]
    for line, image_id in enumerate(ids, start=1):
        check_file_id(image_id, f"line {line} of {path!r}")
    return ids


def _voc_dir(root):
    root = _check_dir("voc_aug root", root)
    for candidate in (
        root,
        os.path.join(root, "VOCdevkit", "VOC2012"),
        os.path.join(root, "VOC2012"),
    ):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise FileNotFoundError(
        f"voc_aug root {root!r} holds no VOC 2012 folder: expected "
        f"{os.path.join(root, 'VOCdevkit', 'VOC2012', 'JPEGImages')!r} (or JPEGImages in root)"
    )


def _sbd_dir(root, sbd_root):
    candidates = [sbd_root] if sbd_root is not None else [os.path.join(root, "benchmark_RELEASE")]
    for candidate in candidates:
        candidate = os.fspath(candidate)
        for folder in (os.path.join(candidate, "dataset"), candidate):
            if os.path.isdir(os.path.join(folder, "cls")):
                return folder
    if sbd_root is not None:
        raise FileNotFoundError(
            f"sbd_root {os.fspath(sbd_root)!r} holds no SBD 'dataset/cls' folder. "
            f"Received: sbd_root={sbd_root!r}"
        )
    return None


def voc_aug_pairs(root, split="train", sbd_root=None):
    """The ``(image_paths, label_paths)`` of ``"train"`` (train_aug) or ``"val"``, sorted by id.

    Label paths end in ``.png`` (VOC or ``SegmentationClassAug``) or ``.mat`` (SBD).

    Example:
        >>> images, labels = voc_aug_pairs("data", "train")  # doctest: +SKIP
        >>> len(images)  # doctest: +SKIP
        10582
    """
    split = "train" if split == "train_aug" else split
    check_split("voc_aug", split, ("train", "val"))
    voc_dir = _voc_dir(root)
    sets = os.path.join(voc_dir, "ImageSets", "Segmentation")
    lists = {name: os.path.join(sets, name + ".txt") for name in ("train", "val")}
    for path in lists.values():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"split file {path!r} does not exist")
    voc_val = _read_ids(lists["val"])
    aug_dir = os.path.join(voc_dir, "SegmentationClassAug")
    sbd_dir = _sbd_dir(os.fspath(root), sbd_root)
    if split == "val":
        ids = voc_val
    else:
        extra = []
        if sbd_dir is not None:
            for name in ("train.txt", "val.txt"):
                path = os.path.join(sbd_dir, name)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"SBD split file {path!r} does not exist")
                extra += _read_ids(path)
        elif os.path.isdir(aug_dir):
            extra = [n[:-4] for n in os.listdir(aug_dir) if n.endswith(".png")]
        else:
            raise FileNotFoundError(
                f"voc_aug needs SBD: neither {os.path.join(os.fspath(root), 'benchmark_RELEASE')!r} "
                f"(or sbd_root=) nor {aug_dir!r} exists"
            )
        ids = sorted(set(_read_ids(lists["train"])).union(extra) - set(voc_val))
    if not ids:
        raise ValueError(f"voc_aug split {split!r} lists no image ids")
    image_paths, label_paths = [], []
    for image_id in ids:
        candidates = [os.path.join(voc_dir, "JPEGImages", image_id + e) for e in IMAGE_EXTENSIONS]
        if sbd_dir is not None:
            candidates.append(os.path.join(sbd_dir, "img", image_id + ".jpg"))
        image = next((p for p in candidates if os.path.isfile(p)), None)
        if image is None:
            raise FileNotFoundError(
                f"image file {candidates[0]!r} does not exist (id {image_id!r})"
            )
        labels = [
            os.path.join(voc_dir, "SegmentationClass", image_id + ".png"),
            os.path.join(aug_dir, image_id + ".png"),
        ]
        if sbd_dir is not None:
            labels.append(os.path.join(sbd_dir, "cls", image_id + ".mat"))
        label = next((p for p in labels if os.path.isfile(p)), None)
        if label is None:
            raise FileNotFoundError(
                f"label map {labels[-1]!r} does not exist (id {image_id!r}; nor does {labels[0]!r})"
            )
        image_paths.append(image)
        label_paths.append(label)
    return image_paths, label_paths


def read_sbd_label(path):
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` file as ``int32 [H, W]``.

    Example:
        >>> label = read_sbd_label("benchmark_RELEASE/dataset/cls/2008_000002.mat")  # doctest: +SKIP
    """
    import scipy.io

    path = os.fspath(path.decode() if isinstance(path, bytes) else path)
    try:
        contents = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as error:  # scipy raises several types for damaged files
        raise ValueError(f"label map {path!r} is corrupt or not a MATLAB file: {error}") from None
    gt = contents.get("GTcls")
    segmentation = getattr(gt, "Segmentation", None)
    if segmentation is None:
        raise ValueError(
            f"label map {path!r} holds no GTcls.Segmentation (variables: "
            f"{', '.join(k for k in contents if not k.startswith('__'))})"
        )
    label = np.asarray(segmentation)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(
            f"label map {path!r} has a GTcls.Segmentation of shape {label.shape} and dtype "
            f"{label.dtype}, expected an integer [height, width] array"
        )
    return label.astype(np.int32)


def _read_arrays(image_path, label_path):
    image = read_image(image_path)
    if label_path.endswith(b".mat"):
        label = read_sbd_label(label_path)
        bad = (label < 0) | (label >= len(VOC_CLASSES)) & (label != IGNORE_INDEX)
        if bad.any():
            values = np.unique(label[bad])
            raise ValueError(
                f"label map {label_path.decode()!r} holds value {int(values[0])}"
                + (f" (and {values[1:].tolist()})" if values.size > 1 else "")
                + f", but num_classes is {len(VOC_CLASSES)} ({IGNORE_INDEX} is ignored)"
            )
    else:
        label = read_label(label_path, num_classes=len(VOC_CLASSES))
    if image.shape[:2] != label.shape:
        raise ValueError(
            f"label map {label_path.decode()!r} is {label.shape[0]}x{label.shape[1]} (height x "
            f"width), but its image {image_path.decode()!r} is {image.shape[0]}x{image.shape[1]}"
        )
    return image, label


def voc_aug(
    root,
    split="train",
    *,
    sbd_root=None,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
):
    """VOC 2012 + SBD (21 classes) as a ``tf.data.Dataset`` of ``(image, label)``.

    Args:
        root: the folder holding ``VOCdevkit/VOC2012`` and ``benchmark_RELEASE`` (or the
            ``VOC2012`` folder itself, with SBD given by ``sbd_root`` or a
            ``SegmentationClassAug`` folder inside it).
        split: ``"train"`` (or ``"train_aug"``: 10,582 images) or ``"val"`` (1,449).
        sbd_root: SBD's ``benchmark_RELEASE`` (or its ``dataset``) folder, if not in ``root``.
        crop_size, augment, batch_size, shuffle, seed, deterministic, drop_remainder: as in
            :func:`kseg.data.voc`.

    Errors: a missing split file, image or label raises at creation; a corrupt image, PNG or
    ``.mat``, a label value above 20 other than 255 and an image/label size mismatch name the
    file and the value when reached.

    Example:
        >>> ds = voc_aug("data", "train", crop_size=512, augment=True, batch_size=16)  # doctest: +SKIP
    """
    image_paths, label_paths = voc_aug_pairs(root, split, sbd_root)
    return pairs_pipeline(
        image_paths,
        label_paths,
        numpy_reader(_read_arrays),
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
        "voc_aug",
        VOC_CLASSES,
        tuple(map(tuple, voc_colormap(len(VOC_CLASSES)).tolist())),
        splits={"train": 10582, "val": 1449},
        description="PASCAL VOC 2012 + SBD: VOCtrainval_11-May-2012.tar and SBD benchmark.tgz "
        "side by side (or VOC2012/SegmentationClassAug); train_aug minus VOC val.",
    )
)

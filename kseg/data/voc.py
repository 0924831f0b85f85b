"""PASCAL VOC layout: reading it as a dataset, and writing any (image, label) set in it.

Layout::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png        palette-mode PNG, VOC colour map, 255 = ignore
    root/ImageSets/Segmentation/<split>.txt   one <id> per line
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from kseg import fileio
from kseg.data.folder import _check_dir, example_reader
from kseg.data.io import IMAGE_EXTENSIONS, check_file_id
from kseg.data.palette import IGNORE_INDEX, voc_colormap
from kseg.data.pipeline import build_pipeline

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 21 PASCAL VOC 2012 segmentation classes, indexed by label value."""


def _split_file(root, split):
    if not isinstance(split, str) or not split or os.sep in split:
        raise ValueError(
            f"split must be a split name such as 'train' or 'val'. Received: split={split!r}"
        )
    sets_dir = os.path.join(root, "ImageSets", "Segmentation")
    path = os.path.join(sets_dir, split + ".txt")
    if not os.path.isfile(path):
        available = (
            sorted(n[:-4] for n in os.listdir(sets_dir) if n.endswith(".txt"))
            if os.path.isdir(sets_dir)
            else []
        )
        raise FileNotFoundError(
            f"split file {path!r} does not exist (split {split!r}; available splits: "
            f"{', '.join(available) if available else 'none'})"
        )
    return path


def voc_pairs(root, split="train"):
    """The ``(image_paths, mask_paths)`` listed by ``ImageSets/Segmentation/<split>.txt``.

    Missing files and empty split files are reported here, before any training starts.

    Example:
        >>> images, masks = voc_pairs("VOCdevkit/VOC2012", "val")  # doctest: +SKIP
    """
    root = _check_dir("VOC root", root)
    split_path = _split_file(root, split)
    with open(split_path, encoding="utf-8") as handle:
        ids = [line.split()[0] for line in handle if line.strip()]
    if not ids:
        raise ValueError(f"split file {split_path!r} is empty: it lists no image ids")
    image_paths, mask_paths = [], []
    for line, image_id in enumerate(ids, start=1):
        check_file_id(image_id, f"line {line} of {split_path!r}")
        candidates = [os.path.join(root, "JPEGImages", image_id + ext) for ext in IMAGE_EXTENSIONS]
        image_path = next((p for p in candidates if os.path.isfile(p)), None)
        if image_path is None:
            raise FileNotFoundError(
                f"image file {candidates[0]!r} does not exist (id {image_id!r}, line {line} of {split_path!r})"
            )
        mask_path = os.path.join(root, "SegmentationClass", image_id + ".png")
        if not os.path.isfile(mask_path):
            raise FileNotFoundError(
                f"label map {mask_path!r} does not exist (id {image_id!r}, line {line} of {split_path!r})"
            )
        image_paths.append(image_path)
        mask_paths.append(mask_path)
    return image_paths, mask_paths


def voc(
    root,
    split="train",
    *,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    num_classes=21,
    drop_remainder=False,
):
    """A PASCAL-VOC-layout folder as a ``tf.data.Dataset`` of ``(image, label)``.

    Images are float32 RGB in 0..255, labels int32 with 255 = ignore. Arguments after
    ``split`` are as in :func:`kseg.data.folder`: ``augment=True`` (or an :class:`Augment`)
    with ``crop_size`` for training, none of it (full size) or ``crop_size`` alone
    (deterministic pad / centre crop) for evaluation.

    Errors: a missing split file, an empty one, or a listed file that does not exist raise
    when the dataset is created; a corrupt image, a mask whose size differs from its image
    or a label value ``>= num_classes`` (not 255) raise ``tf.errors.InvalidArgumentError``
    naming the file and the value when the example is read.

    Example:
        >>> train = voc("VOCdevkit/VOC2012", "train", crop_size=512, augment=True,
        ...             batch_size=8, seed=0)  # doctest: +SKIP
        >>> val = voc("VOCdevkit/VOC2012", "val")  # doctest: +SKIP
    """
    image_paths, mask_paths = voc_pairs(root, split)
    sources = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    return build_pipeline(
        sources,
        len(image_paths),
        example_reader(None, num_classes),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )


def _examples(dataset_or_arrays):
    """Yields (image, label) numpy pairs from a dataset or from (images, labels) arrays."""
    if isinstance(dataset_or_arrays, tf.data.Dataset):
        spec = dataset_or_arrays.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2 or spec[0].shape.rank not in (None, 3):
            raise ValueError(
                "dataset_or_arrays must yield unbatched (image [H, W, 3], label [H, W]) pairs, "
                f"its element_spec is {spec}"
            )
        yield from dataset_or_arrays.as_numpy_iterator()
        return
    if not isinstance(dataset_or_arrays, (tuple, list)) or len(dataset_or_arrays) != 2:
        raise ValueError(
            "dataset_or_arrays must be a tf.data.Dataset of (image, label) or a pair "
            f"(images, labels) of arrays. Received: {type(dataset_or_arrays).__name__}"
        )
    images, labels = dataset_or_arrays
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} and {len(labels)}")
    yield from zip(images, labels)


def _split_indices(splits, count):
    """{split: sorted index list} from {split: count or iterable of indices}; counts are consecutive."""
    if splits is None:
        return None
    if not isinstance(splits, dict) or not splits:
        raise ValueError(
            f"splits must be a non-empty dict {{name: indices or count}}. Received: splits={splits!r}"
        )
    resolved, start = {}, 0
    for name, value in splits.items():
        if not isinstance(name, str):
            raise ValueError(f"split names must be strings. Received: split={name!r}")
        check_file_id(name, "splits")
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"split {name!r} has a negative count {value}")
            indices = list(range(start, start + int(value)))
            start += int(value)
        else:
            try:
                indices = [int(i) for i in value]
            except (TypeError, ValueError):
                raise ValueError(
                    f"split {name!r} must be a count or an iterable of integer indices. Received: {name}={value!r}"
                ) from None
        if count is not None:
            outside = [i for i in indices if not 0 <= i < count]
            if outside:
                raise ValueError(
                    f"split {name!r} refers to example {outside[0]}, but there are {count} examples"
                )
        resolved[name] = indices
    return resolved


def write_voc(dataset_or_arrays, root, splits=None, *, quality=95, name_format="{:06d}"):
    """Writes ``(image, label)`` examples as a PASCAL-VOC-layout folder.

    Images go to ``JPEGImages/<id>.jpg`` (JPEG ``quality``, no chroma subsampling), labels
    to ``SegmentationClass/<id>.png`` as palette-mode PNGs with the VOC colour map (255, the
    ignore value, is VOC's cream border colour), and each split's ids to
    ``ImageSets/Segmentation/<split>.txt``. Example ``n`` gets id ``name_format.format(n)``.

    Args:
        dataset_or_arrays: an unbatched ``tf.data.Dataset`` of ``(image, label)``, or a pair
            ``(images [N, H, W, 3], labels [N, H, W])``. Images in 0..255 (rounded, clipped).
        root: output folder (created; existing files of the same names are overwritten).
        splits: ``{split: indices}`` (any iterable of example indices) or ``{split: count}``
            (consecutive examples, in dict order); default: every example in ``"train"``.
        quality: JPEG quality, 1..100.

    Returns:
        ``{split: [ids]}``.

    Example:
        >>> scenes = kseg.data.synthetic(100, (96, 128), seed=0)  # doctest: +SKIP
        >>> write_voc(scenes, "synthetic_voc", splits={"train": 80, "val": 20})  # doctest: +SKIP
    """
    if not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root must be a path. Received: root={root!r}")
    if not isinstance(quality, numbers.Integral) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in [1, 100]. Received: quality={quality!r}")
    count = None
    if isinstance(dataset_or_arrays, (tuple, list)) and len(dataset_or_arrays) == 2:
        count = len(dataset_or_arrays[0])
    elif isinstance(dataset_or_arrays, tf.data.Dataset):
        cardinality = int(dataset_or_arrays.cardinality())
        count = cardinality if cardinality >= 0 else None
    split_indices = _split_indices(splits, count)
    wanted = None if split_indices is None else {i for ids in split_indices.values() for i in ids}

    root = os.fspath(root)
    image_dir = os.path.join(root, "JPEGImages")
    label_dir = os.path.join(root, "SegmentationClass")
    sets_dir = os.path.join(root, "ImageSets", "Segmentation")
    for path in (image_dir, label_dir, sets_dir):
        os.makedirs(path, exist_ok=True)
    colour_map = voc_colormap(256).reshape(-1).tolist()

    written, seen = [], 0
    for index, (image, label) in enumerate(_examples(dataset_or_arrays)):
        seen = index + 1
        if wanted is not None and index not in wanted:
            continue
        image = np.asarray(image)
        label = np.asarray(label)
        if label.ndim == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        if image.ndim != 3 or image.shape[-1] != 3 or label.shape != image.shape[:2]:
            raise ValueError(
                f"example {index}: image {image.shape} and label {label.shape} must be "
                "[H, W, 3] and [H, W]"
            )
        if label.size and (label.min() < 0 or label.max() > IGNORE_INDEX):
            raise ValueError(
                f"example {index}: label values must be in [0, 255], found "
                f"{int(label.min())}..{int(label.max())}"
            )
        name = check_file_id(name_format.format(index), f"name_format {name_format!r}")
        # Each file is written under a temporary name and renamed: a kill leaves no torn file.
        with fileio.atomic_path(os.path.join(image_dir, name + ".jpg")) as temporary:
            Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8), "RGB").save(
                temporary, format="JPEG", quality=int(quality), subsampling=0
            )
        mask = Image.fromarray(label.astype(np.uint8), "P")
        mask.putpalette(colour_map)
        with fileio.atomic_path(os.path.join(label_dir, name + ".png")) as temporary:
            mask.save(temporary, format="PNG")
        written.append(index)

    if split_indices is None:
        split_indices = {"train": written}
    missing = sorted({i for ids in split_indices.values() for i in ids} - set(written))
    if missing:
        raise ValueError(
            f"splits refer to example {missing[0]}, but the data holds only {seen} examples"
        )
    split_ids = {}
    for split, indices in split_indices.items():
        split_ids[split] = [name_format.format(i) for i in indices]
        with fileio.atomic_open(
            os.path.join(sets_dir, split + ".txt"), "w", encoding="utf-8"
        ) as handle:
            handle.write("".join(f"{image_id}\n" for image_id in split_ids[split]))
    return split_ids

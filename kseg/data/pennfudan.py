"""PennFudan-style instance folders: ``PNGImages/NAME.png`` and ``PedMasks/NAME_mask.png``.

Each mask PNG holds 0 for the background and one id (1, 2, ...) per object; every object is
of class 1 (pedestrian).

Example:
    >>> ds = kseg.data.pennfudan("PennFudanPed")  # doctest: +SKIP
    >>> sorted(next(iter(ds)))  # doctest: +SKIP
    ['boxes', 'classes', 'image', 'masks']
"""

from __future__ import annotations

import os

import numpy as np


def _pairs(root):
    images_dir = os.path.join(root, "PNGImages")
    masks_dir = os.path.join(root, "PedMasks")
    for folder in (images_dir, masks_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"PennFudan folder {folder!r} does not exist")
    pairs = []
    for name in sorted(os.listdir(images_dir)):
        stem, _ = os.path.splitext(name)
        mask = os.path.join(masks_dir, stem + "_mask.png")
        if not os.path.isfile(mask):
            raise FileNotFoundError(f"image {name!r} has no mask {mask!r}")
        pairs.append((os.path.join(images_dir, name), mask))
    return pairs


def instances_from_id_map(ids):
    """An object-id map (0 background, 1..N objects) -> ``boxes``, ``classes``, ``masks``.

    Objects are ordered by id; boxes are ``(ymin, xmin, ymax, xmax)`` pixel edges.

    Example:
        >>> out = instances_from_id_map(np.array([[0, 1], [2, 2]]))
        >>> out["boxes"].tolist(), out["classes"].tolist()
        ([[0.0, 1.0, 1.0, 2.0], [1.0, 0.0, 2.0, 2.0]], [1, 1])
    """
    ids = np.asarray(ids)
    values = [v for v in np.unique(ids).tolist() if v != 0]
    masks = np.zeros((len(values), *ids.shape), dtype=np.uint8)
    boxes = np.zeros((len(values), 4), dtype=np.float32)
    for n, value in enumerate(values):
        masks[n] = ids == value
        rows = np.nonzero(masks[n].any(axis=1))[0]
        cols = np.nonzero(masks[n].any(axis=0))[0]
        boxes[n] = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    return {"boxes": boxes, "classes": np.ones(len(values), dtype=np.int32), "masks": masks}


def pennfudan(root):
    """A PennFudan-style dataset: ``tf.data.Dataset`` of ``{image, boxes, classes, masks}``.

    ``image`` float32 ``[H, W, 3]`` in 0..255, ``boxes`` float32 ``[N, 4]`` (ymin, xmin, ymax,
    xmax), ``classes`` int32 ``[N]`` (all 1), ``masks`` uint8 ``[N, H, W]``.

    Example:
        >>> ds = pennfudan("PennFudanPed")  # doctest: +SKIP
        >>> next(iter(ds))["classes"].numpy().tolist()  # doctest: +SKIP
        [1, 1]
    """
    import tensorflow as tf
    from PIL import Image

    from kseg.data.io import read_image

    pairs = _pairs(os.fspath(root))

    def load(index):
        image_path, mask_path = pairs[int(index)]
        image = read_image(image_path)
        with Image.open(mask_path) as opened:
            ids = np.asarray(opened)
        if ids.ndim != 2 or ids.shape != image.shape[:2]:
            raise ValueError(
                f"mask {mask_path!r} must be one id per pixel of its {image.shape[0]}x"
                f"{image.shape[1]} image. Received: mask shape={ids.shape}"
            )
        out = instances_from_id_map(ids)
        return image, out["boxes"], out["classes"], out["masks"]

    def read(index):
        image, boxes, classes, masks = tf.numpy_function(
            load, [index], (tf.float32, tf.float32, tf.int32, tf.uint8), stateful=False
        )
        image.set_shape((None, None, 3))
        boxes.set_shape((None, 4))
        classes.set_shape((None,))
        masks.set_shape((None, None, None))
        return {"image": image, "boxes": boxes, "classes": classes, "masks": masks}

    return tf.data.Dataset.range(len(pairs)).map(read)


def write_pennfudan(samples, root, prefix="FudanPed"):
    """Writes ``image`` + ``masks`` samples as ``root/PNGImages`` and ``root/PedMasks``.

    Masks must not overlap (one id per pixel); object ``n`` gets id ``n + 1``. Names are
    ``{prefix}00001.png`` and ``{prefix}00001_mask.png``, ...

    Example:
        >>> write_pennfudan(kseg.data.synthetic_instances(4, (64, 64)), "/tmp/ped")  # doctest: +SKIP
    """
    from PIL import Image

    root = os.fspath(root)
    os.makedirs(os.path.join(root, "PNGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "PedMasks"), exist_ok=True)
    for n, sample in enumerate(samples):
        image = np.asarray(sample["image"])
        masks = np.asarray(sample["masks"]).astype(bool)
        if masks.shape[0] > 255:
            raise ValueError(
                f"sample {n}: at most 255 objects fit an 8-bit mask. Received: {masks.shape[0]}"
            )
        if masks.size and masks.sum(axis=0).max() > 1:
            raise ValueError(
                f"sample {n}: masks overlap, but a PennFudan mask holds one id per pixel"
            )
        ids = np.zeros(image.shape[:2], dtype=np.uint8)
        for k, mask in enumerate(masks):
            ids[mask] = k + 1
        name = f"{prefix}{n + 1:05d}"
        Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(
            os.path.join(root, "PNGImages", name + ".png")
        )
        Image.fromarray(ids).save(os.path.join(root, "PedMasks", name + "_mask.png"))


__all__ = ["instances_from_id_map", "pennfudan", "write_pennfudan"]

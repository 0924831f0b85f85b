"""A generic dataset: a folder of images and a folder of masks paired by file name."""

from __future__ import annotations

import os

import tensorflow as tf

from kseg.data.decode import ExampleReader
from kseg.data.io import IMAGE_EXTENSIONS, color_lookup
from kseg.data.palette import IGNORE_INDEX
from kseg.data.pipeline import build_pipeline


def example_reader(palette=None, num_classes=None, ignore_index=IGNORE_INDEX, label_map=None):
    """A TF function reading ``(image_path, label_path)`` to ``(image, label)`` tensors.

    ``label_map`` maps the stored ids to classes (see :func:`kseg.data.io.read_label`).
    Plain PNG/JPEG files are decoded with TensorFlow ops (in parallel in a pipeline); other
    formats, and any file that fails a check, are read with PIL, so an error names the file and
    the value; in a ``tf.data`` pipeline it surfaces as ``tf.errors.InvalidArgumentError``
    when the example is reached. Returns a :class:`kseg.data.decode.ExampleReader`.

    Example:
        >>> read = example_reader(num_classes=21)
        >>> image, label = read(tf.constant("a.jpg"), tf.constant("a.png"))  # doctest: +SKIP
    """
    return ExampleReader(palette, num_classes, ignore_index, label_map)


def _check_dir(name, path):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path. Received: {name}={path!r}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{name} {path!r} is not a directory")
    return path


def folder_pairs(images_dir, masks_dir, mask_extensions=(".png",)):
    """Pairs every image in ``images_dir`` with the mask of the same stem in ``masks_dir``.

    Returns ``(image_paths, mask_paths)``, sorted by file name. A missing mask is an error.

    Example:
        >>> images, masks = folder_pairs("data/images", "data/masks")  # doctest: +SKIP
    """
    images_dir = _check_dir("images_dir", images_dir)
    masks_dir = _check_dir("masks_dir", masks_dir)
    masks = {}
    for name in os.listdir(masks_dir):
        stem, extension = os.path.splitext(name)
        if extension.lower() in mask_extensions:
            masks.setdefault(stem, os.path.join(masks_dir, name))
    image_paths, mask_paths = [], []
    for name in sorted(os.listdir(images_dir)):
        stem, extension = os.path.splitext(name)
        if extension.lower() not in IMAGE_EXTENSIONS:
            continue
        if stem not in masks:
            raise FileNotFoundError(
                f"image {os.path.join(images_dir, name)!r} has no mask: expected "
                f"{os.path.join(masks_dir, stem + mask_extensions[0])!r}"
            )
        image_paths.append(os.path.join(images_dir, name))
        mask_paths.append(masks[stem])
    if not image_paths:
        raise ValueError(
            f"images_dir {images_dir!r} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return image_paths, mask_paths


def folder(
    images_dir,
    masks_dir,
    *,
    palette=None,
    num_classes=None,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
    ignore_index=IGNORE_INDEX,
):
    """Images in one folder, masks (``<image stem>.png``) in another, as a ``tf.data.Dataset``.

    Args:
        images_dir: folder of JPEG/PNG/... images (greyscale and RGBA become RGB).
        masks_dir: folder of masks named like the images, with a ``.png`` extension.
        palette: ``None`` when masks hold class indices (palette-mode or greyscale PNGs);
            else a ``{(r, g, b): class}`` dict or a list of colours (position = class)
            for colour-coded masks. A colour outside the palette is an error.
        num_classes: label values ``>= num_classes`` other than ``ignore_index`` are errors;
            ``None`` infers it from the palette (largest class below 255, plus 1) or skips the check.
        crop_size: ``(height, width)`` or an integer. With augmentation, the random crop;
            without, a deterministic pad (image with the ImageNet mean, label with 255) and
            centre crop.
        augment: ``False`` (evaluation, no randomness), ``True`` (default :class:`Augment`)
            or an :class:`Augment`.
        batch_size: ``None`` for single examples; batches of differently sized examples
            are padded (image 0, label 255).
        shuffle: shuffle each epoch; ``None`` shuffles exactly when augmenting.
        seed: seed of shuffling and augmentation.
        deterministic: identical batches on every run (seed 0 unless given).
        drop_remainder: drop the last, smaller batch.
        ignore_index: the label value that means "ignore".

    Example:
        >>> ds = folder("data/images", "data/masks", palette={(0, 0, 0): 0, (255, 0, 0): 1},
        ...             crop_size=256, augment=True, batch_size=8)  # doctest: +SKIP
    """
    if palette is not None:
        _, classes = color_lookup(palette)  # validates the palette now, not per example
        if num_classes is None:
            num_classes = int(classes[classes != ignore_index].max(initial=-1)) + 1
    image_paths, mask_paths = folder_pairs(images_dir, masks_dir)
    sources = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    return build_pipeline(
        sources,
        len(image_paths),
        example_reader(palette, num_classes, ignore_index),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )

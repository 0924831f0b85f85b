"""Segmentation datasets of TensorFlow Datasets (``tensorflow_datasets``) as kseg pipelines.

Any TFDS dataset whose examples hold an image and a per-pixel label map works: name the two
features with ``image_key`` / ``label_key`` and map the stored ids with ``label_map``. Known
datasets have defaults (:data:`TFDS_DEFAULTS`):

- ``oxford_iiit_pet``: ``image`` and ``segmentation_mask`` (the trimap: 1 pet, 2 background,
  3 border), mapped to 0 pet, 1 background, 2 border, as the TensorFlow segmentation tutorial
  trains it (pass ``label_map={1: 0, 2: 1, 3: 255}`` to ignore the uncertain border instead).

``tensorflow_datasets`` is imported only when a TFDS dataset is loaded
(``pip install tensorflow-datasets``).
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from kseg.data.io import label_lookup
from kseg.data.palette import IGNORE_INDEX
from kseg.data.pipeline import build_pipeline

TFDS_DEFAULTS = {
    "oxford_iiit_pet": {
        "image_key": "image",
        "label_key": "segmentation_mask",
        "label_map": {1: 0, 2: 1, 3: 2},
        "class_names": ("pet", "background", "border"),
    },
}
"""TFDS name -> ``image_key``, ``label_key``, ``label_map`` and the class names they give."""


def _base_name(name):
    return name.split("/")[0].split(":")[0]


def tfds_example_reader(
    name, split, image_key, label_key, label_map=None, num_classes=None, ignore_index=IGNORE_INDEX
):
    """The ``(index, example dict) -> (image, label)`` TF function of :func:`tfds`.

    Errors name the dataset, split and example index, and the value.

    Example:
        >>> read = tfds_example_reader("oxford_iiit_pet", "train", "image", "segmentation_mask")
    """
    table = None if label_map is None else label_lookup(label_map)
    where_format = f"example {{}} of TFDS {name!r} split {split!r}"

    def check(index, image, label):
        where = where_format.format(int(index))
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"{where}: {image_key!r} must be an image [H, W, 1|3|4]. Received: shape={image.shape}"
            )
        if label.ndim == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        if label.ndim != 2 or label.shape != image.shape[:2]:
            raise ValueError(
                f"{where}: {label_key!r} has shape {label.shape}, but the image is "
                f"{image.shape[0]}x{image.shape[1]} (height x width)"
            )
        image = image[..., :3] if image.shape[-1] != 1 else np.repeat(image, 3, axis=-1)
        label = label.astype(np.int64)
        if table is not None:
            outside = (label < 0) | (label >= len(table))
            mapped = table[np.where(outside, 0, label)]
            unknown = outside | (mapped < 0)
            if unknown.any():
                raise ValueError(
                    f"{where}: {label_key!r} holds id {int(np.unique(label[unknown])[0])}, "
                    "which the label mapping does not list"
                )
            label = mapped.astype(np.int64)
        if num_classes is not None:
            bad = ((label >= num_classes) & (label != ignore_index)) | (label < 0)
            if bad.any():
                raise ValueError(
                    f"{where}: {label_key!r} holds value {int(np.unique(label[bad])[0])}, but "
                    f"num_classes is {num_classes} ({ignore_index} is ignored)"
                )
        return image.astype(np.float32), label.astype(np.int32)

    def read(index, example):
        for key in (image_key, label_key):
            if key not in example:
                raise ValueError(
                    f"TFDS {name!r} has no feature {key!r}; its features are "
                    f"{sorted(example)}. Received: {key}"
                )
        image, label = tf.numpy_function(
            check, [index, example[image_key], example[label_key]], (tf.float32, tf.int32)
        )
        image.set_shape((None, None, 3))
        label.set_shape((None, None))
        return image, label

    return read


def tfds(
    name,
    split="train",
    *,
    image_key=None,
    label_key=None,
    label_map=None,
    num_classes=None,
    data_dir=None,
    download=True,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
    shuffle_buffer=256,
):
    """A TFDS dataset as a ``tf.data.Dataset`` of ``(image float32 [H, W, 3], label int32)``.

    Args:
        name: the TFDS name (``"oxford_iiit_pet"``, ``"oxford_iiit_pet:4.0.0"``).
        split: a TFDS split (``"train"``, ``"test[:10%]"``).
        image_key, label_key: the features holding the image and the label map; default
            from :data:`TFDS_DEFAULTS`, else ``"image"`` and ``"segmentation_mask"``.
        label_map: ``{stored id: class}`` (255 to ignore); an id it does not list is an
            error naming the example. Default from :data:`TFDS_DEFAULTS`, else (or with
            ``False``) the stored values are the classes.
        num_classes: classes ``>= num_classes`` other than 255 are errors.
        data_dir, download: passed to ``tensorflow_datasets.load``.
        shuffle_buffer: examples in the shuffle buffer (TFDS examples arrive decoded).
        crop_size, augment, batch_size, shuffle, seed, deterministic, drop_remainder: as in
            :func:`kseg.data.voc`.

    Example:
        >>> pets = tfds("oxford_iiit_pet", "train", crop_size=128, augment=True,
        ...             batch_size=16)  # doctest: +SKIP
    """
    import tensorflow_datasets

    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a TFDS dataset name. Received: name={name!r}")
    defaults = TFDS_DEFAULTS.get(_base_name(name), {})
    image_key = image_key or defaults.get("image_key", "image")
    label_key = label_key or defaults.get("label_key", "segmentation_mask")
    if label_map is None:
        label_map = defaults.get("label_map")
    elif label_map is False:  # the stored values are the classes, even for a known dataset
        label_map = None
    if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, numbers.Integral):
        raise ValueError(
            f"shuffle_buffer must be a positive integer. Received: shuffle_buffer={shuffle_buffer!r}"
        )
    examples = tensorflow_datasets.load(
        name, split=split, data_dir=data_dir, download=download, shuffle_files=False
    )
    return build_pipeline(
        examples.enumerate(),
        max(int(shuffle_buffer), 1),
        tfds_example_reader(name, split, image_key, label_key, label_map, num_classes),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )

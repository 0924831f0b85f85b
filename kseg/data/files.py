"""What the dataset loaders share: split checks, pairing image and label files, TF readers."""

from __future__ import annotations

import os

import tensorflow as tf

from kseg.data.folder import _check_dir
from kseg.data.pipeline import build_pipeline


def check_split(dataset, split, valid):
    """Returns ``split`` if it is one of ``valid``, else raises naming the valid ones.

    Example:
        >>> check_split("ade20k", "val", ("train", "val"))
        'val'
    """
    if not isinstance(split, str) or split not in valid:
        raise ValueError(
            f"{dataset} split must be one of {', '.join(valid)}. Received: split={split!r}"
        )
    return split


def find_root(dataset, root, marker, subfolders=()):
    """The dataset folder: ``root`` itself when it holds ``marker``, else the first
    ``root/<subfolder>`` that does (archives unpack into a folder of their own).

    Example:
        >>> find_root("ade20k", "data", "images", ("ADEChallengeData2016",))  # doctest: +SKIP
        'data/ADEChallengeData2016'
    """
    root = _check_dir(f"{dataset} root", root)
    for candidate in (root, *(os.path.join(root, s) for s in subfolders)):
        if os.path.isdir(os.path.join(candidate, marker)):
            return candidate
    tried = [os.path.join(root, marker), *(os.path.join(root, s, marker) for s in subfolders)]
    raise FileNotFoundError(
        f"{dataset} root {root!r} does not hold the dataset: none of "
        f"{', '.join(repr(t) for t in tried)} is a folder"
    )


def pair_by_suffix(images_dir, labels_dir, image_suffix, label_suffix, *, recursive=False):
    """Lists ``images_dir/**/<stem><image_suffix>`` and pairs each image with
    ``labels_dir/**/<stem><label_suffix>`` (the same subfolder), sorted by path.

    A missing label file or an empty image folder raises here, naming the files.

    Example:
        >>> images, labels = pair_by_suffix("leftImg8bit/val", "gtFine/val", "_leftImg8bit.png",
        ...                                 "_gtFine_labelIds.png", recursive=True)  # doctest: +SKIP
    """
    images_dir = _check_dir("image folder", images_dir)
    _check_dir("label folder", labels_dir)
    image_paths, label_paths = [], []
    for folder, subfolders, names in os.walk(images_dir):
        subfolders.sort()
        if not recursive:
            subfolders.clear()
        relative = os.path.relpath(folder, images_dir)
        for name in sorted(names):
            if not name.endswith(image_suffix):
                continue
            stem = name[: -len(image_suffix)]
            label_path = os.path.normpath(os.path.join(labels_dir, relative, stem + label_suffix))
            if not os.path.isfile(label_path):
                raise FileNotFoundError(
                    f"label map {label_path!r} does not exist (the label of image "
                    f"{os.path.join(folder, name)!r})"
                )
            image_paths.append(os.path.join(folder, name))
            label_paths.append(label_path)
    if not image_paths:
        raise ValueError(
            f"image folder {images_dir!r} holds no images named *{image_suffix}"
            + (" (in any subfolder)" if recursive else "")
        )
    return image_paths, label_paths


def numpy_reader(read_arrays):
    """Wraps ``read_arrays(image_path: bytes, label_path: bytes) -> (image, label)`` (numpy,
    float32 ``[H, W, 3]`` and int32 ``[H, W]``) as a TF function for ``tf.data``.

    Errors raised by ``read_arrays`` surface as ``tf.errors.InvalidArgumentError`` with the
    same message when the example is reached.

    Example:
        >>> import numpy as np
        >>> read = numpy_reader(lambda a, b: (np.zeros((2, 3, 3), np.float32),
        ...                                   np.zeros((2, 3), np.int32)))
        >>> read(tf.constant("a.png"), tf.constant("b.png"))[1].shape.as_list()
        [2, 3]
    """

    def read(image_path, label_path):
        image, label = tf.numpy_function(
            read_arrays, [image_path, label_path], (tf.float32, tf.int32), stateful=False
        )
        image.set_shape((None, None, 3))
        label.set_shape((None, None))
        return image, label

    return read


def pairs_pipeline(image_paths, label_paths, read, **pipeline_options):
    """``build_pipeline`` over listed ``(image, label)`` file pairs.

    Example:
        >>> ds = pairs_pipeline(images, labels, read, batch_size=2)  # doctest: +SKIP
    """
    sources = tf.data.Dataset.from_tensor_slices((list(image_paths), list(label_paths)))
    return build_pipeline(sources, len(image_paths), read, **pipeline_options)

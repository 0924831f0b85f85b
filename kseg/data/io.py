"""Reading images and label maps from disk, with errors that name the file and the value."""

from __future__ import annotations

import numbers
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from kseg.data.palette import IGNORE_INDEX

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _open(path, what):
    path = os.fspath(path.decode() if isinstance(path, bytes) else path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        with Image.open(path) as opened:
            opened.load()
            return path, opened.copy()
    except Image.DecompressionBombError as error:
        # PIL refuses images past twice Image.MAX_IMAGE_PIXELS (a zip-bomb defence).
        raise ValueError(
            f"{what} {path!r} is too large to decode safely ({error}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{what} {path!r} is corrupt or not an image: {error}") from None


def read_image(path) -> np.ndarray:
    """Decodes an image file (JPEG, PNG, ...) to RGB ``float32 [H, W, 3]`` in 0..255.

    Greyscale is repeated over the three channels; an alpha channel is dropped.

    Example:
        >>> image = read_image("JPEGImages/000000.jpg")  # doctest: +SKIP
        >>> image.dtype, image.shape[-1]  # doctest: +SKIP
        (dtype('float32'), 3)
    """
    path, image = _open(path, "image file")
    if image.mode in ("I", "I;16", "I;16B", "F"):
        # 16-bit / float greyscale: keep the scale if it fits 8 bits, otherwise refuse to guess.
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255 or values.min(initial=0) < 0:
            raise ValueError(
                f"image file {path!r} is {image.mode} greyscale with values up to {values.max():g}; "
                "convert it to 8-bit first"
            )
        return np.repeat(values.astype(np.float32)[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def color_lookup(palette):
    """Normalises a colour palette to ``(sorted packed colours, their classes)``.

    ``palette`` is a mapping ``{(r, g, b): class_index}`` or a sequence of ``(r, g, b)``
    colours whose position is the class index (as :func:`kseg.data.palette.voc_colormap`).

    Example:
        >>> keys, classes = color_lookup({(0, 0, 0): 0, (255, 0, 0): 1, (224, 224, 192): 255})
        >>> classes.tolist()
        [0, 255, 1]
    """
    if isinstance(palette, dict):
        items = list(palette.items())
    else:
        try:
            colours = np.asarray(palette)
        except Exception:  # noqa: BLE001 - any non-array-like input gets the same message
            colours = None
        if colours is None or colours.ndim != 2 or colours.shape[1] != 3:
            raise ValueError(
                "palette must be a dict {(r, g, b): class} or a sequence of (r, g, b) colours. "
                f"Received: palette={palette!r}"
            )
        items = [(tuple(colour), index) for index, colour in enumerate(colours.tolist())]
    if not items:
        raise ValueError("palette is empty")
    keys, classes = [], []
    for colour, index in items:
        if (
            not isinstance(colour, (tuple, list))
            or len(colour) != 3
            or not all(isinstance(c, numbers.Integral) and 0 <= c <= 255 for c in colour)
        ):
            raise ValueError(
                f"palette colour {colour!r} is not an (r, g, b) triple of integers in [0, 255]"
            )
        if not isinstance(index, numbers.Integral) or not 0 <= index <= 255:
            raise ValueError(
                f"palette class for colour {tuple(colour)} must be an integer in [0, 255]. Received: class={index!r}"
            )
        keys.append((int(colour[0]) << 16) | (int(colour[1]) << 8) | int(colour[2]))
        classes.append(int(index))
    keys = np.asarray(keys, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int32)
    order = np.argsort(keys, kind="stable")
    keys, classes = keys[order], classes[order]
    duplicate = np.flatnonzero(np.diff(keys) == 0)
    if duplicate.size:
        key = int(keys[duplicate[0]])
        raise ValueError(f"palette lists colour {(key >> 16, (key >> 8) & 255, key & 255)} twice")
    return keys, classes


def label_lookup(label_map, size=1 << 16):
    """Turns a ``{dataset id: class}`` mapping into a lookup table for :func:`read_label`.

    Returns ``int32 [size]``: ``table[id]`` is the class of ``id`` (255 to ignore it), and -1
    for ids the mapping does not list, which :func:`read_label` reports as errors.

    Example:
        >>> table = label_lookup({0: 255, 7: 0, 8: 1})
        >>> table[[0, 7, 8, 9]].tolist()
        [255, 0, 1, -1]
    """
    if isinstance(label_map, np.ndarray) and label_map.ndim == 1:
        return label_map.astype(np.int32)
    if not isinstance(label_map, dict):
        raise ValueError(
            f"label_map must be a dict {{id: class}} or a 1-D array. Received: label_map={label_map!r}"
        )
    table = np.full(size, -1, np.int32)
    for raw, mapped in label_map.items():
        if not isinstance(raw, numbers.Integral) or not 0 <= raw < size:
            raise ValueError(
                f"label_map id must be an integer in [0, {size}). Received: id={raw!r}"
            )
        if not isinstance(mapped, numbers.Integral) or not 0 <= mapped <= 255:
            raise ValueError(
                f"label_map class for id {raw} must be an integer in [0, 255]. Received: class={mapped!r}"
            )
        table[raw] = mapped
    return table


def read_label(
    path, palette=None, num_classes=None, ignore_index=IGNORE_INDEX, label_map=None
) -> np.ndarray:
    """Decodes a label map to ``int32 [H, W]``.

    Without ``palette`` the file holds class indices: a palette-mode ("P") PNG such as
    VOC's ``SegmentationClass``, or a greyscale (8- or 16-bit) PNG. With ``palette`` the file
    is a colour image and each colour is mapped to its class (see :func:`color_lookup`).
    With ``label_map`` (a table from :func:`label_lookup`, or a ``{id: class}`` dict) the
    stored ids are mapped to classes, and an id the map does not list is an error naming it.
    With ``num_classes``, any value ``>= num_classes`` other than ``ignore_index`` is an error.

    Example:
        >>> label = read_label("SegmentationClass/000000.png", num_classes=21)  # doctest: +SKIP
        >>> label.dtype  # doctest: +SKIP
        dtype('int32')
    """
    path, mask = _open(path, "label map")
    if palette is None:
        if mask.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
            raise ValueError(
                f"label map {path!r} is a colour ({mask.mode}) image, but no palette was given; "
                "pass palette= to map its colours to classes, or store class indices "
                "(palette-mode or greyscale PNG)"
            )
        if mask.mode == "LA":
            mask = mask.getchannel(0)
        label = np.asarray(mask).astype(np.int64)
        if label.ndim != 2:
            raise ValueError(
                f"label map {path!r} has shape {label.shape}, expected [height, width]"
            )
    else:
        keys, classes = color_lookup(palette)
        rgb = np.asarray(mask.convert("RGB"), dtype=np.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        position = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
        unknown = keys[position] != packed
        if unknown.any():
            row, col = (int(v) for v in np.argwhere(unknown)[0])
            raise ValueError(
                f"label map {path!r} has colour {tuple(int(c) for c in rgb[row, col])} at "
                f"(row {row}, column {col}), which is not in the palette "
                f"({int(unknown.sum())} pixel(s) with unknown colours)"
            )
        label = classes[position].astype(np.int64)
    if label_map is not None:
        table = label_lookup(label_map)
        outside = (label < 0) | (label >= len(table))
        mapped = table[np.where(outside, 0, label)]
        unknown = outside | (mapped < 0)
        if unknown.any():
            values = np.unique(label[unknown])
            raise ValueError(
                f"label map {path!r} holds id {int(values[0])}"
                + (f" (and {values[1:].tolist()})" if values.size > 1 else "")
                + ", which the dataset's label mapping does not list"
            )
        label = mapped.astype(np.int64)
    if num_classes is not None:
        bad = (label >= num_classes) & (label != ignore_index) | (label < 0)
        if bad.any():
            values = np.unique(label[bad])
            raise ValueError(
                f"label map {path!r} holds value {int(values[0])}"
                + (f" (and {values[1:].tolist()})" if values.size > 1 else "")
                + f", but num_classes is {num_classes} ({ignore_index} is ignored)"
            )
    return label.astype(np.int32)


def read_example(
    image_path,
    label_path,
    palette=None,
    num_classes=None,
    ignore_index=IGNORE_INDEX,
    label_map=None,
):
    """Reads an image and its label map and checks that their sizes agree.

    Example:
        >>> image, label = read_example("a.jpg", "a.png", num_classes=21)  # doctest: +SKIP
    """
    image = read_image(image_path)
    label = read_label(
        label_path,
        palette=palette,
        num_classes=num_classes,
        ignore_index=ignore_index,
        label_map=label_map,
    )
    if image.shape[:2] != label.shape:
        name = lambda p: os.fspath(p.decode() if isinstance(p, bytes) else p)  # noqa: E731
        raise ValueError(
            f"label map {name(label_path)!r} is {label.shape[0]}x{label.shape[1]} (height x width), "
            f"but its image {name(image_path)!r} is {image.shape[0]}x{image.shape[1]}"
        )
    return image, label


def check_file_id(file_id, where):
    """Raises unless ``file_id`` names a file inside its folder (no folders, no ``..``).

    Dataset split lists and name patterns give ids that are joined to a dataset root; an id
    such as ``../../etc/passwd`` or ``/tmp/x`` would read or write outside it.

    Example:
        >>> check_file_id("2007_000032", "line 1 of train.txt")
        '2007_000032'
    """
    text = str(file_id)
    if (
        not text
        or text in (".", "..")
        or "/" in text
        or "\\" in text
        or "\x00" in text
        or os.path.isabs(text)
        or (os.altsep and os.altsep in text)
    ):
        raise ValueError(
            f"id {text!r} ({where}) is not a plain file name: ids must not hold folders, '..' "
            f"or absolute paths, so that they stay inside the dataset root. Received: id={text!r}"
        )
    return text

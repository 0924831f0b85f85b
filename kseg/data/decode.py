"""Reading image / label-map pairs in TensorFlow ops, with the PIL reader behind it.

``tf.io.decode_png`` / ``decode_jpeg`` run in parallel inside ``tf.data`` (``tf.numpy_function``
holds the GIL, so PIL decoding runs one file at a time) and leave the image as bytes until it is
cropped. They handle the common files: 8-bit grey/RGB/RGBA PNG and greyscale/YCbCr JPEG images,
8- or 16-bit greyscale PNG label maps. Everything else (palette-mode masks such as VOC's,
colour-coded masks, BMP/TIFF/WebP, 16-bit images, CMYK JPEG) goes to the PIL reader of
:mod:`kseg.data.io`, and so does every file the fast path rejects: a corrupt file, a label id
outside the mapping, a size mismatch. The PIL reader then either reads the file the way it always
did or raises its error, which names the file and the value.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kseg.data.io import label_lookup, read_example
from kseg.data.palette import IGNORE_INDEX

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADER_BYTES = 32
_TABLE_SIZE = 1 << 16  # 16-bit label maps hold ids below this


def _header(data):
    """The first 32 bytes of ``data`` as uint8 (zero-padded: short files are not an error here)."""
    head = tf.strings.substr(data + b"\0" * _HEADER_BYTES, 0, _HEADER_BYTES)
    return tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int32)


def _starts_with(head, prefix):
    return tf.reduce_all(tf.equal(head[: len(prefix)], list(prefix)))


def _is_png(head):
    # PNG signature, then IHDR (always the first chunk): width, height, bit depth, colour type.
    return _starts_with(head, _PNG_SIGNATURE) & _starts_with(head[12:], b"IHDR")


def _is_jpeg(head):
    return _starts_with(head, b"\xff\xd8\xff")


def _image_is_plain(data):
    """True for an 8-bit grey/RGB/grey+alpha/RGBA PNG or a 1- or 3-component JPEG."""
    head = _header(data)
    png = _is_png(head) & tf.equal(head[24], 8) & tf.reduce_any(tf.equal(head[25], [0, 2, 4, 6]))
    return png | (
        _is_jpeg(head)
        & tf.cond(
            _is_jpeg(head),
            lambda: tf.reduce_any(tf.equal(tf.io.extract_jpeg_shape(data)[2], [1, 3])),
            lambda: tf.constant(False),
        )
    )


def _label_is_plain(data):
    """True for an 8- or 16-bit greyscale PNG (class indices stored as grey values)."""
    head = _header(data)
    return _is_png(head) & tf.reduce_any(tf.equal(head[24], [8, 16])) & tf.equal(head[25], 0)


def _decode_image(data):
    head = _header(data)
    # INTEGER_ACCURATE is libjpeg's default DCT, the one PIL uses: the same pixels either way.
    return tf.cond(
        _is_png(head),
        lambda: tf.io.decode_png(data, channels=3),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
    )


def _decode_ids(data):
    head = _header(data)
    return tf.cond(
        tf.equal(head[24], 16),
        lambda: tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16)[..., 0], tf.int32),
        lambda: tf.cast(tf.io.decode_png(data, channels=1)[..., 0], tf.int32),
    )


class ExampleReader:
    """Reads ``(image_path, label_path)`` to ``(image float32 [H, W, 3], label int32 [H, W])``.

    What :func:`kseg.data.folder.example_reader` returns. Plain PNG/JPEG files are decoded
    with TensorFlow ops and checked there (label values, sizes); other formats and any file
    that fails a check are read by :func:`kseg.data.io.read_example` (PIL), so values and
    error messages are those of the PIL reader. In a ``tf.data`` pipeline an error surfaces
    as ``tf.errors.InvalidArgumentError`` naming the file and the value when the example
    is reached.

    Args:
        palette: colour -> class mapping of colour-coded masks (read with PIL), or None.
        num_classes: label values ``>= num_classes`` other than ``ignore_index`` are errors.
        ignore_index: the label value that means "ignore".
        label_map: ``{stored id: class}`` or a table from :func:`kseg.data.io.label_lookup`.

    Example:
        >>> read = ExampleReader(num_classes=19, label_map={7: 0, 8: 1, 0: 255})
        >>> image, label = read(tf.constant("a.png"), tf.constant("a_ids.png"))  # doctest: +SKIP
    """

    def __init__(self, palette=None, num_classes=None, ignore_index=IGNORE_INDEX, label_map=None):
        self.palette = palette
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # Validated and tabled once, not per example.
        self.label_map = None if label_map is None else label_lookup(label_map)
        table = np.arange(_TABLE_SIZE, dtype=np.int64)
        if self.label_map is not None:
            table = np.full(_TABLE_SIZE, -1, np.int64)
            listed = self.label_map[:_TABLE_SIZE]
            table[: len(listed)] = listed
        valid = table >= 0
        if num_classes is not None:
            valid &= (table < num_classes) | (table == ignore_index)
        self._table = None if self.label_map is None else table.astype(np.int32)
        self._valid = valid
        # Ids below this are all valid: one max() checks most label maps.
        invalid = np.flatnonzero(~valid)
        self._first_invalid = int(invalid[0]) if invalid.size else _TABLE_SIZE

    def __call__(self, image_path, label_path):
        """Reads one example; see the class docstring."""
        pixels, pil_image, label, from_pil = self._read(image_path, label_path)
        if self._table is not None:
            table = tf.constant(self._table)
            label = tf.cond(from_pil, lambda: label, lambda: tf.gather(table, label))
        image = tf.cond(from_pil, lambda: pil_image, lambda: tf.cast(pixels, tf.float32))
        return image, label

    def augmented(self, source, augment, seed):
        """Reads ``source = (image_path, label_path)`` and applies ``augment`` with ``seed``.

        Equal to ``augment(*self(*source), seed)``, but the image stays bytes until the crop
        window is sampled and the id -> class mapping runs on the crop.

        Example:
            >>> read = ExampleReader(num_classes=19)
            >>> augment = kseg.data.Augment(crop_size=(512, 1024))  # doctest: +SKIP
            >>> image, label = read.augmented(("a.png", "a_ids.png"), augment, [1, 2])  # doctest: +SKIP
        """
        pixels, pil_image, label, from_pil = self._read(*source)
        table = None if self._table is None else tf.constant(self._table)
        return tf.cond(
            from_pil,
            lambda: augment(pil_image, label, seed),
            lambda: augment(pixels, label, seed, label_table=table),
        )

    def _pil(self, image_path, label_path):
        def read_arrays(image_path, label_path):
            return read_example(
                image_path,
                label_path,
                self.palette,
                self.num_classes,
                self.ignore_index,
                self.label_map,
            )

        image, label = tf.numpy_function(
            read_arrays, [image_path, label_path], (tf.float32, tf.int32), stateful=False
        )
        image.set_shape((None, None, 3))
        label.set_shape((None, None))
        return image, label

    def _decode(self, image_data, label_data):
        """TF decoding of a plain pair; raises (so that the PIL reader runs) on anything wrong."""
        image = _decode_image(image_data)
        ids = _decode_ids(label_data)
        checks = [
            tf.debugging.assert_equal(
                tf.shape(image)[:2], tf.shape(ids), message="image and label sizes differ"
            )
        ]
        if self._first_invalid < _TABLE_SIZE:
            valid = tf.constant(self._valid)
            largest = tf.reduce_max(ids)

            def only_valid_ids():
                counts = tf.math.bincount(ids, minlength=largest + 1)
                return ~tf.reduce_any((counts > 0) & ~valid[: largest + 1])

            ok = tf.cond(largest < self._first_invalid, lambda: tf.constant(True), only_valid_ids)
            checks.append(tf.debugging.Assert(ok, ["label ids outside the mapping"]))
        with tf.control_dependencies(checks):
            return tf.identity(image), tf.identity(ids)

    def _read(self, image_path, label_path):
        """``(uint8 image, float32 image, label, from_pil)``: one image is empty.

        From TensorFlow's decoders: the bytes and the stored ids (checked, not yet mapped);
        from PIL: its float image and the mapped label.
        """
        plain_label = self.palette is None
        nothing = tf.zeros((0, 0, 3))

        def load(image_path, label_path):
            return tf.io.read_file(image_path), tf.io.read_file(label_path)

        def plain(image_data, label_data):
            return _image_is_plain(image_data) & (plain_label and _label_is_plain(label_data))

        def decode(image_data, label_data):
            pixels, ids = self._decode(image_data, label_data)
            return pixels, nothing, ids, False

        def pil(image_path, label_path):
            image, label = self._pil(image_path, label_path)
            return tf.zeros((0, 0, 3), tf.uint8), image, label, True

        # tf.data has no try/except: the TF attempt is a one-element dataset that is empty when
        # the files are not plain (filter) or fail a check (ignore_errors); then the PIL reader
        # runs, and either reads the files or raises the error that names the file and value.
        paths = (image_path, label_path)
        attempt = (
            tf.data.Dataset.from_tensors(paths).map(load).filter(plain).map(decode).ignore_errors()
        )
        fallback = tf.data.Dataset.from_tensors(paths).map(pil)
        return attempt.concatenate(fallback).take(1).get_single_element()

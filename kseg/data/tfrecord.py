"""Segmentation examples in TFRecord files, with the keys of TF Model Garden's reader.

Each record is a ``tf.train.Example`` with::

    image/encoded                      bytes   the image, PNG or JPEG
    image/format                       bytes   b"png" or b"jpeg"
    image/filename                     bytes   where the example came from (may be empty)
    image/height, image/width          int64
    image/channels                     int64   3
    image/segmentation/class/encoded   bytes   the label map, an 8-bit greyscale PNG of classes
    image/segmentation/class/format    bytes   b"png"

``image/encoded``, ``image/height``, ``image/width`` and ``image/segmentation/class/encoded``
are what ``official/vision/dataloaders/segmentation_input.py`` (Model Garden) parses; the format,
file name and channel keys are those DeepLab's ``build_data.py`` adds. Records written by
:func:`write_tfrecord` load in Model Garden, and Model Garden's records (which may lack the
optional keys) load here. Labels hold classes (255 = ignore), not dataset ids.
"""

from __future__ import annotations

import contextlib
import glob
import io
import numbers
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from kseg import fileio
from kseg.data.io import label_lookup
from kseg.data.palette import IGNORE_INDEX
from kseg.data.pipeline import build_pipeline

IMAGE_KEY = "image/encoded"
IMAGE_FORMAT_KEY = "image/format"
FILENAME_KEY = "image/filename"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
CHANNELS_KEY = "image/channels"
LABEL_KEY = "image/segmentation/class/encoded"
LABEL_FORMAT_KEY = "image/segmentation/class/format"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _image_format(data):
    if data.startswith(_PNG_MAGIC):
        return b"png"
    if data.startswith(_JPEG_MAGIC):
        return b"jpeg"
    return None


def _png_bytes(array, mode):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_example(image, label, filename=""):
    """One serialized ``tf.train.Example`` holding ``image`` and ``label`` (see the module).

    Args:
        image: ``[H, W, 3]`` pixels in 0..255 (uint8, or integer-valued floats), stored as a
            lossless PNG; or the bytes of an encoded PNG/JPEG file, stored as they are.
        label: ``[H, W]`` classes in 0..255 (a trailing 1 is accepted), stored as a PNG.
        filename: kept in ``image/filename``.

    Example:
        >>> record = encode_example(np.zeros((4, 6, 3), np.uint8), np.ones((4, 6), np.int32))
        >>> example = tf.train.Example.FromString(record)
        >>> example.features.feature["image/width"].int64_list.value[0]
        6
    """
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.ndim != 2:
        raise ValueError(f"label must be a map [H, W]. Received: label.shape={label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255 or np.any(label != np.round(label))):
        raise ValueError(
            f"label values must be integers in [0, 255]. Received: values {label.min()}..{label.max()}"
        )
    if isinstance(image, (bytes, np.bytes_)):
        data = bytes(image)
        image_format = _image_format(data)
        if image_format is None:
            raise ValueError(
                f"image bytes are neither PNG nor JPEG. Received: first bytes={data[:8]!r}"
            )
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
    else:
        pixels = np.asarray(image)
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise ValueError(f"image must be [H, W, 3]. Received: image.shape={pixels.shape}")
        if pixels.dtype != np.uint8:
            if pixels.size and (
                pixels.min() < 0 or pixels.max() > 255 or np.any(pixels != np.round(pixels))
            ):
                raise ValueError(
                    "image values must be integers in [0, 255] to be stored losslessly. "
                    f"Received: values {pixels.min()}..{pixels.max()}"
                )
            pixels = pixels.astype(np.uint8)
        data, image_format = _png_bytes(np.ascontiguousarray(pixels), "RGB"), b"png"
        height, width = pixels.shape[:2]
    if (height, width) != label.shape:
        raise ValueError(
            f"image is {height}x{width} but label is {label.shape[0]}x{label.shape[1]} "
            f"(height x width). Received: filename={filename!r}"
        )
    features = {
        IMAGE_KEY: _bytes_feature(data),
        IMAGE_FORMAT_KEY: _bytes_feature(image_format),
        FILENAME_KEY: _bytes_feature(os.fspath(filename).encode()),
        HEIGHT_KEY: _int_feature(height),
        WIDTH_KEY: _int_feature(width),
        CHANNELS_KEY: _int_feature(3),
        LABEL_KEY: _bytes_feature(_png_bytes(label.astype(np.uint8), "L")),
        LABEL_FORMAT_KEY: _bytes_feature(b"png"),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def shard_paths(prefix, num_shards):
    """The shard files :func:`write_tfrecord` writes: ``<prefix>-00000-of-00004.tfrecord``, ...

    Example:
        >>> shard_paths("out/train", 2)
        ['out/train-00000-of-00002.tfrecord', 'out/train-00001-of-00002.tfrecord']
    """
    prefix = os.fspath(prefix)
    return [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    return int(value)


def write_tfrecord(dataset, prefix, num_shards=1, *, progress=False):
    """Writes ``(image, label)`` examples to ``num_shards`` TFRecord files; returns their paths.

    Example ``i`` goes to shard ``i % num_shards``, so :func:`tfrecord` reading the shards in
    turn gives the examples back in their order. Each shard is written under a temporary
    name and renamed when all are complete: an interrupted run leaves no partial shard.

    Args:
        dataset: an unbatched ``tf.data.Dataset`` (or iterable) of ``(image, label)`` or
            ``(image, label, filename)``; images as in :func:`encode_example` (pixels become
            lossless PNGs, encoded bytes are kept as they are).
        prefix: the output path without the shard suffix (folders are created).
        num_shards: the number of files.
        progress: show a progress bar (``keras.utils.Progbar``).

    Example:
        >>> import kseg, tempfile
        >>> scenes = kseg.data.synthetic(4, (32, 32), seed=0)
        >>> paths = write_tfrecord(scenes, os.path.join(tempfile.mkdtemp(), "train"), 2)
        >>> [os.path.basename(p) for p in paths]
        ['train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord']
    """
    num_shards = _check_positive("num_shards", num_shards)
    if not isinstance(prefix, (str, os.PathLike)) or not os.fspath(prefix):
        raise ValueError(f"prefix must be a path. Received: prefix={prefix!r}")
    paths = shard_paths(prefix, num_shards)
    os.makedirs(os.path.dirname(os.path.abspath(paths[0])), exist_ok=True)
    if isinstance(dataset, tf.data.Dataset):
        count = int(dataset.cardinality())
        examples = dataset.as_numpy_iterator()
    else:
        count = len(dataset) if hasattr(dataset, "__len__") else -1
        examples = iter(dataset)
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(count if count >= 0 else None, unit_name="example")
    written = 0
    with contextlib.ExitStack() as stack:
        temporaries = [stack.enter_context(fileio.atomic_path(p)) for p in paths]
        writers = [stack.enter_context(tf.io.TFRecordWriter(t)) for t in temporaries]
        for index, example in enumerate(examples):
            if not isinstance(example, (tuple, list)) or len(example) not in (2, 3):
                raise ValueError(
                    "dataset must yield (image, label) or (image, label, filename). "
                    f"Received: element {index} of type {type(example).__name__}"
                )
            filename = example[2] if len(example) == 3 else ""
            if isinstance(filename, bytes):
                filename = filename.decode()
            try:
                record = encode_example(example[0], example[1], filename)
            except ValueError as error:
                raise ValueError(f"example {index}: {error}") from None
            writers[index % num_shards].write(record)
            written += 1
            if bar is not None:
                bar.update(written)
        for writer in writers:
            writer.close()  # flushed before the atomic rename
    return paths


def _resolve_pattern(pattern, split):
    if not isinstance(pattern, (str, os.PathLike)) or not os.fspath(pattern):
        raise ValueError(f"pattern must be a file pattern. Received: pattern={pattern!r}")
    pattern = os.fspath(pattern)
    if "{split}" in pattern:
        pattern = pattern.replace("{split}", str(split))
    files = sorted(glob.glob(pattern))
    if not files and not glob.has_magic(pattern):
        files = sorted(glob.glob(glob.escape(pattern) + "-*-of-*.tfrecord"))
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise FileNotFoundError(
            f"no TFRecord file matches {pattern!r} (nor {pattern + '-*-of-*.tfrecord'!r})"
        )
    return files


def _decode_png_or_jpeg(data, what, where):
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.copy()
    except Exception as error:  # noqa: BLE001 - PIL raises several kinds for bad bytes
        raise ValueError(f"{what} of {where} is corrupt or not an image: {error}") from None


def decode_record(fields, where, num_classes=None, label_map=None, ignore_index=IGNORE_INDEX):
    """``(image float32 [H, W, 3], label int32 [H, W])`` from a record's parsed fields.

    ``fields`` maps the keys of the module docstring to Python values; ``where`` names the
    record in errors (a missing or corrupt image or label, sizes that differ from
    ``image/height`` x ``image/width``, a label id outside ``label_map`` or ``num_classes``).

    Example:
        >>> record = encode_example(np.zeros((2, 3, 3), np.uint8), np.ones((2, 3), np.uint8))
        >>> feature = tf.train.Example.FromString(record).features.feature
        >>> fields = {k: (v.bytes_list.value or v.int64_list.value)[0] for k, v in feature.items()}
        >>> decode_record(fields, "record 0")[1].tolist()
        [[1, 1, 1], [1, 1, 1]]
    """
    for key, what in ((IMAGE_KEY, "image"), (LABEL_KEY, "label map")):
        if not fields.get(key):
            raise ValueError(f"{where} has no {what}: its {key!r} is missing or empty")
    image = _decode_png_or_jpeg(fields[IMAGE_KEY], "the image", where)
    image = np.asarray(image.convert("RGB"), dtype=np.float32)
    mask = _decode_png_or_jpeg(fields[LABEL_KEY], "the label map", where)
    if mask.mode not in ("L", "P", "I", "I;16", "I;16B", "LA"):
        raise ValueError(
            f"the label map of {where} must be a greyscale or palette PNG of classes. "
            f"Received: mode={mask.mode!r}"
        )
    if mask.mode == "LA":
        mask = mask.getchannel(0)
    label = np.asarray(mask).astype(np.int64)
    height, width = int(fields.get(HEIGHT_KEY) or 0), int(fields.get(WIDTH_KEY) or 0)
    for what, shape in (("image", image.shape[:2]), ("label map", label.shape)):
        if (height, width) != (0, 0) and shape != (height, width):
            raise ValueError(
                f"the {what} of {where} is {shape[0]}x{shape[1]} (height x width), but the "
                f"record says {height}x{width}"
            )
    if image.shape[:2] != label.shape:
        raise ValueError(
            f"the label map of {where} is {label.shape[0]}x{label.shape[1]}, but its image is "
            f"{image.shape[0]}x{image.shape[1]} (height x width)"
        )
    if label_map is not None:
        table = label_lookup(label_map)
        outside = (label < 0) | (label >= len(table))
        mapped = table[np.where(outside, 0, label)]
        unknown = outside | (mapped < 0)
        if unknown.any():
            raise ValueError(
                f"the label map of {where} holds id {int(np.unique(label[unknown])[0])}, which "
                "the label mapping does not list"
            )
        label = mapped.astype(np.int64)
    if num_classes is not None:
        bad = ((label >= num_classes) & (label != ignore_index)) | (label < 0)
        if bad.any():
            raise ValueError(
                f"the label map of {where} holds value {int(np.unique(label[bad])[0])}, but "
                f"num_classes is {num_classes} ({ignore_index} is ignored)"
            )
    return image, label.astype(np.int32)


_FEATURES = {
    IMAGE_KEY: tf.io.FixedLenFeature((), tf.string, default_value=""),
    HEIGHT_KEY: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    WIDTH_KEY: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    LABEL_KEY: tf.io.FixedLenFeature((), tf.string, default_value=""),
}


def record_reader(num_classes=None, label_map=None, ignore_index=IGNORE_INDEX):
    """The ``(file, index, serialized) -> (image, label)`` TF function of :func:`tfrecord`.

    Decoding runs in Python (PIL, the decoder of the file loaders, so images match them
    exactly) and errors name the file and the record's index.

    Example:
        >>> read = record_reader(num_classes=21)
        >>> image, label = read(tf.constant("a.tfrecord"), tf.constant(0, tf.int64),
        ...                     tf.constant(b"..."))  # doctest: +SKIP
    """
    table = None if label_map is None else label_lookup(label_map)

    def decode(path, index, image_bytes, label_bytes, height, width):
        where = f"record {int(index)} of {path.decode()!r}"
        fields = {
            IMAGE_KEY: image_bytes,
            LABEL_KEY: label_bytes,
            HEIGHT_KEY: height,
            WIDTH_KEY: width,
        }
        return decode_record(fields, where, num_classes, table, ignore_index)

    def read(path, index, serialized):
        parsed = tf.io.parse_single_example(serialized, _FEATURES)
        image, label = tf.numpy_function(
            decode,
            [
                path,
                index,
                parsed[IMAGE_KEY],
                parsed[LABEL_KEY],
                parsed[HEIGHT_KEY],
                parsed[WIDTH_KEY],
            ],
            (tf.float32, tf.int32),
            stateful=False,
        )
        image.set_shape((None, None, 3))
        label.set_shape((None, None))
        return image, label

    return read


def tfrecord(
    pattern,
    split=None,
    *,
    num_classes=None,
    label_map=None,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
    shuffle_buffer=128,
):
    """TFRecord files of segmentation examples as a ``tf.data.Dataset`` of ``(image, label)``.

    ``pattern`` is a glob (``"data/train-*.tfrecord"``) or the ``prefix`` given to
    :func:`write_tfrecord`; a ``{split}`` in it is replaced by ``split``. Unshuffled, the
    files are read in turn, one record of each, which gives :func:`write_tfrecord`'s order
    back. Shuffling shuffles the files and a ``shuffle_buffer`` of records (encoded: 128
    Cityscapes records hold about 300 MB). ``label_map``
    (``{id: class}``) maps stored ids; ``num_classes`` checks the classes. Other arguments
    are as in :func:`kseg.data.voc`.

    Example:
        >>> ds = tfrecord("records/camvid-train", crop_size=(360, 480), augment=True,
        ...               batch_size=8)  # doctest: +SKIP
        >>> ds = kseg.data.load("tfrecord", "records/camvid-{split}", "val")  # doctest: +SKIP
    """
    files = _resolve_pattern(pattern, split)
    do_shuffle = bool(augment) if shuffle is None else bool(shuffle)
    names = tf.data.Dataset.from_tensor_slices(files)
    if do_shuffle:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def records(path):
        return tf.data.TFRecordDataset(path).enumerate().map(lambda i, r: (path, i, r))

    if do_shuffle:
        sources = names.interleave(
            records,
            cycle_length=len(files),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    else:  # one record of each file in turn: write_tfrecord's order
        sources = names.interleave(records, cycle_length=len(files), block_length=1)
    return build_pipeline(
        sources,
        _check_positive("shuffle_buffer", shuffle_buffer),
        record_reader(num_classes, label_map),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=do_shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )

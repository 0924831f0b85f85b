"""TFRecord: kseg's writer and reader against records built with the raw tf.train.Example protos."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.testing.datasets_camvid_sift import raw_tfrecord_example


def _png(array, mode):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array):
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _examples(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(12, 16), (9, 7), (12, 16), (9, 7), (5, 6)]
    return [
        (
            rng.integers(0, 256, (*size, 3), dtype=np.uint8),
            np.where(rng.random(size) < 0.2, 255, rng.integers(0, 4, size)).astype(np.int32),
        )
        for size in sizes
    ]


def _write_raw(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def _parsed(path):
    """Every feature of every record, read with the protos, not with kseg."""
    out = []
    for raw in tf.data.TFRecordDataset(str(path)):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        out.append({k: (v.bytes_list.value or v.int64_list.value)[0] for k, v in feature.items()})
    return out


def test_written_records_have_model_garden_keys_and_round_trip_in_order(tmp_path):
    examples = _examples()
    paths = kseg.data.write_tfrecord(examples, tmp_path / "out" / "train", num_shards=2)
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    first = _parsed(paths[0])
    assert len(first) == 3 and len(_parsed(paths[1])) == 2  # example i -> shard i % 2
    record = first[1]  # example 2
    image, label = examples[2]
    assert record["image/height"] == 12 and record["image/width"] == 16
    assert record["image/format"] == b"png" and record["image/segmentation/class/format"] == b"png"
    # What Model Garden's parser does: decode_image on the two encoded fields.
    np.testing.assert_array_equal(tf.io.decode_image(record["image/encoded"]).numpy(), image)
    decoded_label = tf.io.decode_image(record["image/segmentation/class/encoded"], channels=1)
    np.testing.assert_array_equal(decoded_label.numpy()[..., 0], label)

    loaded = list(kseg.data.load("tfrecord", str(tmp_path / "out" / "train")))
    assert len(loaded) == len(examples)
    for (got_image, got_label), (image, label) in zip(loaded, examples):
        assert got_image.dtype == tf.float32 and got_label.dtype == tf.int32
        np.testing.assert_array_equal(got_image.numpy(), image.astype(np.float32))
        np.testing.assert_array_equal(got_label.numpy(), label)
    # A glob and a {split} pattern find the same files.
    pattern = str(tmp_path / "out" / "{split}-*.tfrecord")
    assert len(list(kseg.data.load("tfrecord", pattern, "train"))) == 5


def test_reads_records_built_with_raw_protos(tmp_path):
    examples = _examples(1)
    records = []
    for index, (image, label) in enumerate(examples):
        encoded = _jpeg(image) if index % 2 else _png(image, "RGB")
        records.append(
            raw_tfrecord_example(
                encoded,
                _png(label.astype(np.uint8), "L"),
                *label.shape,
                b"jpeg" if index % 2 else b"png",
            )
        )
    _write_raw(tmp_path / "garden.tfrecord", records)
    loaded = list(kseg.data.tfrecord(str(tmp_path / "garden.tfrecord"), num_classes=4))
    for index, ((got_image, got_label), (image, label)) in enumerate(zip(loaded, examples)):
        np.testing.assert_array_equal(got_label.numpy(), label)
        if index % 2:  # JPEG: the pixels PIL decodes from the same bytes
            want = np.asarray(Image.open(io.BytesIO(_jpeg(image))).convert("RGB"), np.float32)
            np.testing.assert_array_equal(got_image.numpy(), want)
        else:
            np.testing.assert_array_equal(got_image.numpy(), image.astype(np.float32))
    # label_map maps stored ids (3 -> ignore) and augmentation crops both alike.
    mapped = next(
        iter(
            kseg.data.tfrecord(
                str(tmp_path / "garden.tfrecord"), label_map={0: 0, 1: 1, 2: 2, 3: 255, 255: 255}
            )
        )
    )[1].numpy()
    np.testing.assert_array_equal(mapped, np.where(examples[0][1] == 3, 255, examples[0][1]))
    images, labels = next(
        iter(
            kseg.data.tfrecord(
                str(tmp_path / "garden.tfrecord"),
                crop_size=(8, 8),
                augment=True,
                batch_size=2,
                seed=0,
            )
        )
    )
    assert images.shape == (2, 8, 8, 3) and labels.shape == (2, 8, 8)


def test_errors_name_the_file_the_record_and_the_value(tmp_path):
    image, label = _examples()[0]
    good = raw_tfrecord_example(_png(image, "RGB"), _png(label.astype(np.uint8), "L"), 12, 16)
    cases = {
        "no_label": (
            raw_tfrecord_example(_png(image, "RGB"), b"", 12, 16),
            r"record 1 of '.*no_label.tfrecord' has no label map",
        ),
        "corrupt": (
            raw_tfrecord_example(_png(image, "RGB"), b"\x89PNG\r\n\x1a\nbroken", 12, 16),
            r"the label map of record 1 of '.*corrupt.tfrecord' is corrupt",
        ),
        "size": (
            raw_tfrecord_example(
                _png(image, "RGB"), _png(label[:, :10].astype(np.uint8), "L"), 12, 16
            ),
            r"the label map of record 1 of '.*size.tfrecord' is 12x10 .* the record says 12x16",
        ),
        "value": (
            raw_tfrecord_example(
                _png(image, "RGB"), _png(np.full((12, 16), 7, np.uint8), "L"), 12, 16
            ),
            r"record 1 of '.*value.tfrecord' holds value 7, but num_classes is 4",
        ),
    }
    for name, (bad, message) in cases.items():
        _write_raw(tmp_path / f"{name}.tfrecord", [good, bad])
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            list(kseg.data.tfrecord(str(tmp_path / f"{name}.tfrecord"), num_classes=4))
    _write_raw(tmp_path / "id.tfrecord", [good])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"holds id 0, which the label mapping"
    ):
        list(kseg.data.tfrecord(str(tmp_path / "id.tfrecord"), label_map={1: 0}))
    with pytest.raises(FileNotFoundError, match="no TFRecord file matches"):
        kseg.data.tfrecord(str(tmp_path / "missing-*.tfrecord"))
    with pytest.raises(ValueError, match="Received: num_shards=0"):
        kseg.data.write_tfrecord(_examples(), tmp_path / "x", num_shards=0)
    with pytest.raises(ValueError, match=r"example 1: image is 12x16 but label is 3x3"):
        kseg.data.write_tfrecord([(image, label), (image, label[:3, :3])], tmp_path / "y")
    assert not list(tmp_path.glob("y-*"))  # nothing left behind by the failed write

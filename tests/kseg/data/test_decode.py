"""The TensorFlow decode path of example_reader: the PIL reader's values and errors."""

import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg.data.decode
from kseg.data import Augment, build_pipeline, read_example
from kseg.data.folder import example_reader

CITYSCAPES_LIKE = {0: 255, 1: 255, 7: 0, 8: 1, 11: 2, 21: 3, 26: 4, 300: 5}


def _scene(height, width, seed):
    """A smooth RGB image (so JPEG keeps detail) and blocky label ids."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1)
    image = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    ids = np.array([0, 7, 8, 11, 21, 26])[(y // 7 + x // 9 + seed) % 6]
    return image, ids


def _write(tmp_path, name, image, ids, image_format="PNG", label_mode="L", **save):
    image_path = tmp_path / f"{name}.{'jpg' if image_format == 'JPEG' else 'png'}"
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(image_path, image_format, **save)
    label_path = tmp_path / f"{name}_ids.png"
    if label_mode == "I;16":
        Image.fromarray(ids.astype(np.uint16)).save(label_path)
    elif label_mode == "P":
        mask = Image.fromarray(ids.astype(np.uint8), "P")
        mask.putpalette(list(range(256)) * 3)
        mask.save(label_path)
    else:
        Image.fromarray(ids.astype(np.uint8), label_mode).save(label_path)
    return str(image_path), str(label_path)


def _files(tmp_path):
    """Pairs in every format the reader meets, with the format each one has."""
    files = []
    for n, (image_format, label_mode, convert, save) in enumerate(
        [
            ("PNG", "L", "RGB", {}),
            ("PNG", "I;16", "RGBA", {}),
            ("PNG", "L", "L", {}),
            ("PNG", "L", "LA", {}),
            ("PNG", "L", "P", {}),  # palette-mode image: read by PIL
            ("PNG", "P", "RGB", {}),  # palette-mode mask (VOC): read by PIL
            ("JPEG", "L", "RGB", {"quality": 90}),
            ("JPEG", "L", "RGB", {"quality": 80, "progressive": True, "subsampling": 2}),
            ("JPEG", "L", "L", {}),
        ]
    ):
        image, ids = _scene(33 + n, 47 - n, n)
        if label_mode == "I;16":
            ids = np.where(ids == 26, 300, ids)  # an id above 255
        converted = Image.fromarray(image).convert(convert)
        files.append(_write(tmp_path, f"{n}", converted, ids, image_format, label_mode, **save))
    return files


def test_values_equal_the_pil_reader_for_every_format(tmp_path):
    files = _files(tmp_path)
    table = kseg.data.label_lookup(CITYSCAPES_LIKE)
    read = tf.function(example_reader(num_classes=6, label_map=CITYSCAPES_LIKE))
    seen = set()
    for image_path, label_path in files:
        image, label = read(tf.constant(image_path), tf.constant(label_path))
        want_image, want_label = read_example(image_path, label_path, None, 6, 255, table)
        assert image.dtype == tf.float32 and label.dtype == tf.int32
        np.testing.assert_array_equal(image.numpy(), want_image, err_msg=image_path)
        np.testing.assert_array_equal(label.numpy(), want_label, err_msg=label_path)
        seen.update(np.unique(want_label).tolist())
    assert seen == {0, 1, 2, 3, 4, 5, 255}  # every mapped class, the 16-bit id 300 included


def test_plain_files_do_not_touch_pil(tmp_path, monkeypatch):
    # Without the PIL reader, plain PNG/JPEG still read; palette files cannot.
    files = _files(tmp_path)

    def no_pil(*args):
        raise AssertionError("PIL reader called")

    monkeypatch.setattr(kseg.data.decode, "read_example", no_pil)
    read = example_reader(label_map=CITYSCAPES_LIKE)
    plain = [0, 1, 2, 3, 6, 7, 8]
    for n in plain:
        image, _ = read(tf.constant(files[n][0]), tf.constant(files[n][1]))
        assert image.shape[0] == 33 + n
    for n in (4, 5):
        with pytest.raises(tf.errors.OpError, match="PIL reader called"):
            read(tf.constant(files[n][0]), tf.constant(files[n][1]))


def test_fused_augmentation_equals_augmenting_what_pil_reads(tmp_path):
    image, ids = _scene(40, 60, 3)
    pair = _write(tmp_path, "a", image, ids)
    read = example_reader(num_classes=6, label_map=CITYSCAPES_LIKE)
    want = read_example(*pair, None, 6, 255, kseg.data.label_lookup(CITYSCAPES_LIKE))
    # Crops larger than the scaled image are padded (and flipped with it).
    augment = Augment(scale_range=(0.5, 1.5), crop_size=(32, 48), seed=0)
    fused = tf.function(lambda seed: read.augmented(pair, augment, seed))
    reference = tf.function(lambda seed: augment(*want, seed))  # graph vs graph: same rounding
    for seed in range(6):
        seed = tf.constant([seed, 1], tf.int64)
        image, label = fused(seed)
        want_image, want_label = reference(seed)
        np.testing.assert_array_equal(label.numpy(), want_label.numpy())
        np.testing.assert_array_equal(image.numpy(), want_image.numpy())


def _first_error(pairs, **reader_args):
    sources = tf.data.Dataset.from_tensor_slices(tuple(map(list, zip(*pairs))))
    augment = Augment(crop_size=16, seed=0)
    ds = build_pipeline(sources, len(pairs), example_reader(**reader_args), augment=augment)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        for _ in ds:
            pass
    return str(error.value)


def test_errors_on_plain_files_name_the_file_and_the_value(tmp_path):
    good = _write(tmp_path, "good", *_scene(20, 30, 0))
    image, ids = _scene(20, 30, 1)
    ids[3, 4] = 9  # not in the mapping
    unknown = _write(tmp_path, "unknown", image, ids)
    message = _first_error([good, unknown], label_map=CITYSCAPES_LIKE)
    assert re.search(
        re.escape(f"label map '{unknown[1]}' holds id 9, which the dataset's label mapping"),
        message,
    )

    ids[3, 4] = 21  # maps to 3: too large for num_classes=3
    over = _write(tmp_path, "over", image, ids)
    message = _first_error([over], num_classes=3, label_map=CITYSCAPES_LIKE)
    assert f"label map '{over[1]}' holds value 3 (and [4]), but num_classes is 3" in message

    raw = _write(tmp_path, "raw", image, np.where(ids == 26, 40, ids))
    message = _first_error([raw], num_classes=30)
    assert f"label map '{raw[1]}' holds value 40, but num_classes is 30" in message

    Image.fromarray(np.zeros((20, 31), np.uint8)).save(tmp_path / "wide.png")
    message = _first_error([(good[0], str(tmp_path / "wide.png"))])
    assert (
        f"label map '{tmp_path}/wide.png' is 20x31 (height x width), "
        f"but its image '{good[0]}' is 20x30"
    ) in message

    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(good[0], "rb").read()[:200])
    message = _first_error([(str(truncated), good[1])])
    assert f"image file '{truncated}' is corrupt or not an image" in message

    gone = _write(tmp_path, "gone", *_scene(20, 30, 2))
    sources = tf.data.Dataset.from_tensor_slices(([gone[0]], [gone[1]]))
    ds = build_pipeline(sources, 1, example_reader(), augment=Augment(crop_size=16))
    (tmp_path / "gone_ids.png").unlink()  # removed after the dataset was made
    # The PIL reader's FileNotFoundError: UnknownError, as before the TensorFlow decode path.
    with pytest.raises(tf.errors.OpError, match=re.escape(f"label map '{gone[1]}' does not exist")):
        next(iter(ds))

"""Change-detection data: LEVIR-CD folders, synthetic pairs, the pair augmentation, bad input."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.data import (
    augment_change_pair,
    read_change_mask,
    render_change_pair,
    synthetic_change_numpy,
    write_change_dataset,
)


def test_levir_folder_round_trip_maps_255_to_change(tmp_path):
    pairs, labels = synthetic_change_numpy(3, (32, 40), seed=3)
    write_change_dataset(pairs, labels, tmp_path, "val")
    # LEVIR-CD stores change as 255
    stored = np.asarray(Image.open(tmp_path / "val" / "label" / "pair_00001.png"))
    assert set(np.unique(stored)) == {0, 255}
    ds = kseg.data.load("change", str(tmp_path), "val", batch_size=3)
    got_pairs, got_labels = next(iter(ds))
    assert got_pairs.shape == (3, 32, 40, 6) and got_labels.dtype == tf.int32
    np.testing.assert_array_equal(got_labels.numpy(), labels)
    np.testing.assert_array_equal(got_pairs.numpy(), np.clip(np.round(pairs), 0, 255))


def test_mask_with_ones_and_equal_rgb_channels(tmp_path):
    path = tmp_path / "m.png"
    values = np.array([[0, 1], [255, 0]], np.uint8)
    Image.fromarray(values).save(path)
    np.testing.assert_array_equal(read_change_mask(str(path)), [[0, 1], [1, 0]])
    Image.fromarray(np.repeat(values[..., None], 3, -1)).save(path)
    np.testing.assert_array_equal(read_change_mask(str(path)), [[0, 1], [1, 0]])


def _write_pair(root, size_a=(16, 16), size_b=(16, 16), mask_value=255):
    for part, size in (("A", size_a), ("B", size_b)):
        (root / "train" / part).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(root / "train" / part / "x.png")
    (root / "train" / "label").mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size_a, np.uint8)
    mask[3, 4] = mask_value
    Image.fromarray(mask).save(root / "train" / "label" / "x.png")


def test_bad_input_names_the_file_and_the_value(tmp_path):
    _write_pair(tmp_path / "sizes", size_b=(16, 20))
    ds = kseg.data.load("change", str(tmp_path / "sizes"), "train")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"different sizes.*B/x.png.*16x20"):
        next(iter(ds))
    _write_pair(tmp_path / "values", mask_value=7)
    ds = kseg.data.load("change", str(tmp_path / "values"), "train")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"label/x.png.*value 7.*value=7"):
        next(iter(ds))
    _write_pair(tmp_path / "missing")
    (tmp_path / "missing" / "train" / "B" / "x.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"A/x.png.*no B partner"):
        kseg.data.load("change", str(tmp_path / "missing"), "train")
    colour = tmp_path / "colour.png"
    Image.fromarray(np.array([[[255, 0, 0]]], np.uint8)).save(colour)
    with pytest.raises(ValueError, match=r"colour.*\(255, 0, 0\)"):
        read_change_mask(str(colour))


def test_synthetic_label_is_exactly_where_objects_differ():
    # Without illumination change and noise, unchanged pixels are identical in A and B and
    # changed pixels differ (an object replaced by background or by another object).
    for index in range(4):
        pair, label = render_change_pair(index, (48, 48), seed=1, illumination=0, noise_std=0)
        same = np.all(pair[..., :3] == pair[..., 3:], axis=-1)
        assert 0 < label.mean() < 0.6
        assert np.all(same[label == 0])
        assert (~same[label == 1]).mean() > 0.95


def test_synthetic_illumination_changes_unchanged_pixels_but_not_the_label():
    plain, label = render_change_pair(2, (48, 48), seed=1, illumination=0, noise_std=0)
    lit, lit_label = render_change_pair(2, (48, 48), seed=1, illumination=0.5, noise_std=0)
    np.testing.assert_array_equal(label, lit_label)
    np.testing.assert_array_equal(plain[..., :3], lit[..., :3])  # only B is relit
    unchanged = label == 0
    assert np.abs(plain[..., 3:] - lit[..., 3:])[unchanged].mean() > 5
    ds = kseg.data.load("synthetic_change", split="val", num_images=2, image_size=(24, 24))
    first = next(iter(ds))
    np.testing.assert_array_equal(
        first[1].numpy(), render_change_pair(1_000_000_000, (24, 24), seed=0)[1]
    )


def test_augmentation_moves_both_images_and_the_mask_together():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (20, 20, 3)).astype("float32")
    pair = np.concatenate([image, image], -1)
    label = (image[..., 0] > 128).astype("int32")
    for seed in range(6):
        out, out_label = augment_change_pair(
            pair, label, seed=[seed, 7], crop_size=(24, 24), brightness=0, contrast=0
        )
        out, out_label = out.numpy(), out_label.numpy()
        np.testing.assert_array_equal(out[..., :3], out[..., 3:])
        valid = out_label != 255
        assert valid.sum() == 400  # the 20x20 image, padded to 24x24 with ignored labels
        np.testing.assert_array_equal(out_label[valid], (out[..., 0] > 128)[valid])
    # photometric jitter is drawn apart for A and B
    out, _ = augment_change_pair(pair, label, seed=[1, 2])
    assert np.abs(out.numpy()[..., :3] - out.numpy()[..., 3:]).mean() > 0.5

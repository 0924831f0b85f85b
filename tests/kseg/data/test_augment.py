import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.data import Augment, center_crop_or_pad, pad_to_size

NO_PHOTOMETRIC = dict(brightness=0, contrast=0, saturation=0, hue=0)


def _example(height=12, width=16, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3)).astype(np.float32)
    label = rng.integers(0, 6, size=(height, width)).astype(np.int32)
    return image, label


def _run(augment, image, label, seed):
    out_image, out_label = augment(image, label, seed=tf.constant(seed, tf.int64))
    return out_image.numpy(), out_label.numpy()


def test_identity_settings_change_nothing():
    image, label = _example()
    augment = Augment(scale_range=(1, 1), crop_size=(12, 16), flip=False, **NO_PHOTOMETRIC)
    out_image, out_label = _run(augment, image, label, [3, 4])
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_label, label)


def test_flip_moves_image_and_label_together():
    image, label = _example()
    augment = Augment(scale_range=(1, 1), flip=True, **NO_PHOTOMETRIC)
    flipped = 0
    for seed in range(16):
        out_image, out_label = _run(augment, image, label, [seed, 0])
        if np.array_equal(out_label, label):
            np.testing.assert_array_equal(out_image, image)
        else:
            np.testing.assert_array_equal(out_label, label[:, ::-1])
            np.testing.assert_array_equal(out_image, image[:, ::-1])
            flipped += 1
    assert 3 <= flipped <= 13


def _bilinear_half_pixel(image, out_h, out_w):
    # Independent reference: half-pixel-centre bilinear resampling with edge clamping.
    h, w = image.shape[:2]

    def axis(out, size):
        src = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, size - 1)
        return low, high, (src - low)

    y0, y1, fy = axis(out_h, h)
    x0, x1, fx = axis(out_w, w)
    top = image[y0][:, x0] * (1 - fx)[None, :, None] + image[y0][:, x1] * fx[None, :, None]
    bottom = image[y1][:, x0] * (1 - fx)[None, :, None] + image[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def test_scale_resizes_image_bilinear_and_label_nearest():
    image, label = _example(6, 10)
    augment = Augment(scale_range=(2, 2), flip=False, **NO_PHOTOMETRIC)
    out_image, out_label = _run(augment, image, label, [1, 1])
    np.testing.assert_array_equal(out_label, np.repeat(np.repeat(label, 2, 0), 2, 1))
    np.testing.assert_allclose(out_image, _bilinear_half_pixel(image, 12, 20), atol=1e-3)
    # Any scale: labels keep their values (no interpolation between classes).
    augment = Augment(scale_range=(0.5, 1.7), flip=False, **NO_PHOTOMETRIC)
    for seed in range(5):
        _, out_label = _run(augment, image, label, [seed, 9])
        assert set(np.unique(out_label)) <= set(np.unique(label))


def test_small_images_are_padded_with_ignore_and_pad_colour():
    image, label = _example(5, 7)
    augment = Augment(
        scale_range=(1, 1),
        crop_size=(8, 9),
        flip=False,
        **NO_PHOTOMETRIC,
        image_pad_value=(10, 20, 30),
    )
    out_image, out_label = _run(augment, image, label, [0, 0])
    np.testing.assert_array_equal(out_label[:5, :7], label)
    np.testing.assert_array_equal(out_image[:5, :7], image)
    assert (out_label[5:] == 255).all() and (out_label[:, 7:] == 255).all()
    np.testing.assert_array_equal(out_image[5:, 0], [[10, 20, 30]] * 3)
    np.testing.assert_array_equal(out_image[0, 7:], [[10, 20, 30]] * 2)


def test_random_crop_is_a_window_of_the_input():
    image, label = _example(12, 16)
    augment = Augment(scale_range=(1, 1), crop_size=(5, 6), flip=False, **NO_PHOTOMETRIC)
    offsets = set()
    for seed in range(8):
        out_image, out_label = _run(augment, image, label, [seed, 2])
        matches = [
            (top, left)
            for top in range(12 - 5 + 1)
            for left in range(16 - 6 + 1)
            if np.array_equal(label[top : top + 5, left : left + 6], out_label)
            and np.array_equal(image[top : top + 5, left : left + 6], out_image)
        ]
        assert matches
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_photometric_jitter_touches_the_image_only():
    image, label = _example()
    image = np.clip(image, 60, 190)  # keep brightness shifts away from the clip limits
    brightness = Augment(
        scale_range=(1, 1), flip=False, brightness=0.1, contrast=0, saturation=0, hue=0
    )
    out_image, out_label = _run(brightness, image, label, [5, 6])
    np.testing.assert_array_equal(out_label, label)
    delta = out_image - image
    np.testing.assert_allclose(delta, delta.flat[0], atol=1e-3)
    assert 0 < abs(delta.flat[0]) <= 25.5

    contrast = Augment(
        scale_range=(1, 1), flip=False, brightness=0, contrast=0.2, saturation=0, hue=0
    )
    out_image, _ = _run(contrast, image, label, [5, 7])
    mean = image.mean(axis=(0, 1))
    factor = (out_image - mean) / (image - mean)
    finite = np.abs(image - mean) > 5
    np.testing.assert_allclose(factor[finite], factor[finite][0], rtol=1e-3)
    assert 0.8 <= factor[finite][0] <= 1.2

    full = Augment(
        scale_range=(1, 1), flip=False, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2
    )
    for seed in range(4):
        out_image, out_label = _run(full, image, label, [seed, 8])
        np.testing.assert_array_equal(out_label, label)
        assert out_image.min() >= 0 and out_image.max() <= 255
        assert not np.allclose(out_image, image)


def test_saturation_keeps_grey_pixels_grey():
    grey = np.full((4, 4, 3), 100.0, np.float32)
    augment = Augment(
        scale_range=(1, 1), flip=False, brightness=0, contrast=0, saturation=0.5, hue=0.3
    )
    out_image, _ = _run(augment, grey, np.zeros((4, 4), np.int32), [1, 2])
    np.testing.assert_allclose(out_image, grey, atol=1e-3)


def test_same_seed_same_result():
    image, label = _example(20, 30)
    augment = Augment(crop_size=16)
    a = _run(augment, image, label, [7, 7])
    b = _run(augment, image, label, [7, 7])
    c = _run(augment, image, label, [7, 8])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_map_is_deterministic_by_seed_and_differs_between_epochs():
    scenes = kseg.data.synthetic(4, (24, 24), seed=0)
    augment = Augment(crop_size=16, seed=123)

    def epochs(dataset):
        return [[x.numpy() for x, _ in dataset] for _ in range(2)]

    first = epochs(augment.map(scenes, deterministic=True))
    second = epochs(Augment(crop_size=16, seed=123).map(scenes, deterministic=True))
    for run_a, run_b in zip(first, second):
        for a, b in zip(run_a, run_b):
            np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first[0], first[1]))


def test_pad_to_size_and_center_crop():
    image = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    label = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    padded_image, padded_label = pad_to_size(image, label, (3, 4), image_pad_value=(0, 0, 0))
    np.testing.assert_array_equal(padded_label.numpy(), [[1, 2, 3, 255], [4, 5, 6, 255], [255] * 4])
    assert padded_image.numpy()[2].sum() == 0 and padded_image.numpy()[:2, 3].sum() == 0
    # Centre crop: the offset is (size - crop) // 2, here (3 - 2) // 2 = 0 and (5 - 2) // 2 = 1.
    _, cropped = center_crop_or_pad(image, label, (2, 2))
    np.testing.assert_array_equal(cropped.numpy(), [[1, 2], [4, 5]])
    wide = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], np.int32)
    _, cropped = center_crop_or_pad(np.zeros((2, 5, 3), np.float32), wide, (1, 2))
    np.testing.assert_array_equal(cropped.numpy(), [[2, 3]])
    _, cropped = center_crop_or_pad(image, label, (4, 3))
    np.testing.assert_array_equal(cropped.numpy(), [[1, 2, 3], [4, 5, 6], [255] * 3, [255] * 3])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(scale_range=(2.0, 1.0)),
            r"scale_range must be a pair \(min, max\) with 0 < min <= max. Received: scale_range=\(2.0, 1.0\)",
        ),
        (dict(scale_range=0.5), "scale_range"),
        (dict(crop_size=(0, 5)), r"crop_size must be .*. Received: crop_size=\(0, 5\)"),
        (dict(brightness=-0.1), "brightness must be a number >= 0. Received: brightness=-0.1"),
        (dict(contrast=1.5), r"contrast must be a number in \[0, 1\]. Received: contrast=1.5"),
        (dict(hue=0.7), r"hue must be a number in \[0, 0.5\]. Received: hue=0.7"),
        (dict(flip="yes"), "flip must be True or False. Received: flip='yes'"),
        (dict(seed=1.5), "seed must be an integer or None. Received: seed=1.5"),
        (dict(image_pad_value=(1, 2)), "image_pad_value"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Augment(**kwargs)


@pytest.mark.parametrize("scale, dtype", [(1.7, np.uint8), (0.6, np.float32)])
def test_scaled_crop_is_bit_for_bit_a_window_of_the_resized_image(scale, dtype):
    # Only the crop window is resampled; it must equal resizing everything, then cropping.
    image, label = _example(23, 31)
    image = image.astype(dtype)
    augment = Augment(scale_range=(scale, scale), crop_size=(9, 11), **NO_PHOTOMETRIC)
    size = (round(23 * scale), round(31 * scale))
    full_image = tf.image.resize(image.astype(np.float32), size).numpy()
    full_label = tf.image.resize(label[..., None], size, method="nearest").numpy()[..., 0]
    table = np.arange(6, dtype=np.int32)[::-1] * 10  # label_table maps the cropped ids
    flips = set()
    for seed in range(6):
        out_image, out_label = augment(image, label, tf.constant([seed, 5]), label_table=table)
        out_image, out_label = out_image.numpy(), out_label.numpy()
        flipped = not any(
            np.array_equal(table[full_label[y : y + 9, x : x + 11]], out_label)
            for y in range(size[0] - 8)
            for x in range(size[1] - 10)
        )
        if flipped:
            out_image, out_label = out_image[:, ::-1], out_label[:, ::-1]
        flips.add(flipped)
        windows = [
            (y, x)
            for y in range(size[0] - 8)
            for x in range(size[1] - 10)
            if np.array_equal(full_image[y : y + 9, x : x + 11], out_image)
            and np.array_equal(table[full_label[y : y + 9, x : x + 11]], out_label)
        ]
        assert windows, seed
    assert flips == {False, True}

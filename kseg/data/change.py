"""Bi-temporal change detection data: LEVIR-CD-style folders and synthetic image pairs.

A change example is ``(pair float32 [H, W, 6], label int32 [H, W])``: image A's RGB channels
then image B's (what kseg's change models take, see ``kseg.models.change``), and 1 where the
scene changed between A and B, 0 where it did not, 255 where it is not scored (padding).

Change masks on disk (LEVIR-CD, OSCD, ...) store "changed" as 255 or as 1 and "unchanged" as 0.
255 is kseg's ignore label, but in a change mask file it means change (LEVIR-CD's convention),
so the reader maps both 255 and 1 to class 1; a mask cannot mark pixels as ignored. Any other
value is an error naming the file and the value.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from kseg.data.augment import _check_size
from kseg.data.folder import _check_dir
from kseg.data.io import IMAGE_EXTENSIONS, _open, read_image
from kseg.data.palette import IGNORE_INDEX
from kseg.data.pipeline import check_pipeline_arguments, finish_pipeline
from kseg.data.synthetic import _value_noise

CHANGE_CLASSES = ("unchanged", "changed")
CHANGE_VALUES = (0, 1, 255)
"""Values a change mask file may hold: 0 unchanged, 1 or 255 changed."""


def read_change_mask(path):
    """Reads a change mask (0 unchanged; 1 or 255 changed) to ``int32 [H, W]`` of 0/1.

    Greyscale, palette or RGB files with equal channels are accepted; any value other than
    0, 1 and 255 is an error naming the file and the value.

    Example:
        >>> read_change_mask("LEVIR-CD/train/label/train_1.png")  # doctest: +SKIP
    """
    path, mask = _open(path, "change mask")
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask.convert("RGB"), dtype=np.int64)
        if not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        ):
            row, col = (int(v) for v in np.argwhere(rgb.min(-1) != rgb.max(-1))[0])
            raise ValueError(
                f"change mask {path!r} is a colour image with colour "
                f"{tuple(int(c) for c in rgb[row, col])} at (row {row}, column {col}); "
                "expected grey values 0 (unchanged) and 1 or 255 (changed)"
            )
        values = rgb[..., 0]
    else:
        if mask.mode == "LA":
            mask = mask.getchannel(0)
        values = np.asarray(mask).astype(np.int64)
    if values.ndim != 2:
        raise ValueError(f"change mask {path!r} has shape {values.shape}, expected [height, width]")
    bad = ~np.isin(values, CHANGE_VALUES)
    if bad.any():
        found = np.unique(values[bad])
        raise ValueError(
            f"change mask {path!r} holds value {int(found[0])}"
            + (f" (and {found[1:8].tolist()})" if found.size > 1 else "")
            + ", but a change mask holds 0 (unchanged) and 1 or 255 (changed). "
            f"Received: value={int(found[0])}"
        )
    return (values != 0).astype(np.int32)


def _name(path):
    return os.fspath(path.decode() if isinstance(path, bytes) else path)


def read_change_pair(path_a, path_b):
    """Reads images A and B into one pair ``float32 [H, W, 6]`` (A's RGB, then B's).

    Images of different sizes are an error naming both files and their sizes.

    Example:
        >>> pair = read_change_pair("A/1.png", "B/1.png")  # doctest: +SKIP
        >>> pair.shape  # doctest: +SKIP
        (1024, 1024, 6)
    """
    image_a, image_b = read_image(path_a), read_image(path_b)
    if image_a.shape != image_b.shape:
        raise ValueError(
            f"image pair of different sizes: {_name(path_a)!r} is "
            f"{image_a.shape[0]}x{image_a.shape[1]}, {_name(path_b)!r} is "
            f"{image_b.shape[0]}x{image_b.shape[1]} (height x width). "
            f"Received: sizes={image_a.shape[:2]}, {image_b.shape[:2]}"
        )
    return np.concatenate([image_a, image_b], axis=-1)


def read_change_example(path_a, path_b, label_path):
    """Reads images A and B and their change mask: ``(pair [H, W, 6], label [H, W])``.

    Images of different sizes, or a mask of another size, are errors naming the files.

    Example:
        >>> pair, label = read_change_example("A/1.png", "B/1.png", "label/1.png")  # doctest: +SKIP
    """
    pair = read_change_pair(path_a, path_b)
    label = read_change_mask(label_path)
    if label.shape != pair.shape[:2]:
        raise ValueError(
            f"change mask {_name(label_path)!r} is {label.shape[0]}x{label.shape[1]}, but its "
            f"images {_name(path_a)!r} are {pair.shape[0]}x{pair.shape[1]} (height x width)"
        )
    return pair, label


def change_files(root, split=None):
    """Lists ``(A paths, B paths, label paths)`` of a LEVIR-CD-style folder, sorted by name.

    The layout is ``root/<split>/A``, ``root/<split>/B`` and ``root/<split>/label`` (``split``
    None: ``root/A`` ...), the three holding files of the same stem; a missing partner is an
    error naming it.

    Example:
        >>> a, b, labels = change_files("LEVIR-CD", "train")  # doctest: +SKIP
    """
    base = (
        _check_dir("root", root) if split is None else os.path.join(_check_dir("root", root), split)
    )
    folders = [
        _check_dir(f"{part} folder", os.path.join(base, part)) for part in ("A", "B", "label")
    ]

    def stems(folder):
        found = {}
        for entry in os.listdir(folder):
            stem, extension = os.path.splitext(entry)
            if extension.lower() in IMAGE_EXTENSIONS:
                found.setdefault(stem, os.path.join(folder, entry))
        return found

    listed = [stems(f) for f in folders]
    if not listed[0]:
        raise ValueError(f"change dataset folder {folders[0]!r} holds no images")
    paths = ([], [], [])
    for stem in sorted(listed[0]):
        for part, folder, found, out in zip(("B", "label"), folders[1:], listed[1:], paths[1:]):
            if stem not in found:
                raise FileNotFoundError(
                    f"image {listed[0][stem]!r} has no {part} partner: expected "
                    f"{os.path.join(folder, stem)}.* (an image file of the same name)"
                )
            out.append(found[stem])
        paths[0].append(listed[0][stem])
    return paths


def _pad(pair, label, size):
    shape = tf.shape(label)
    paddings = [[0, tf.maximum(size[0] - shape[0], 0)], [0, tf.maximum(size[1] - shape[1], 0)]]
    pair = tf.pad(pair, paddings + [[0, 0]])
    return pair, tf.pad(label, paddings, constant_values=IGNORE_INDEX)


def augment_change_pair(pair, label, seed, crop_size=None, brightness=0.1, contrast=0.2):
    """Random joint crop, flips and transposition, and photometric jitter of A and B apart.

    The geometry is the same for both images and the mask (one tensor holds both images);
    brightness and contrast are drawn separately for A and for B, so the model learns that an
    illumination difference is not a change. Padding (to ``crop_size``): images 0, label 255.

    Example:
        >>> pair, label = augment_change_pair(tf.zeros((40, 40, 6)), tf.zeros((40, 40), tf.int32),
        ...                                   seed=[1, 2], crop_size=(32, 32))
        >>> pair.shape.as_list()
        [32, 32, 6]
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)
    if crop_size is not None:
        pair, label = _pad(pair, label, crop_size)
        shape = tf.shape(label)
        top = tf.random.stateless_uniform([], seeds[0], 0, shape[0] - crop_size[0] + 1, tf.int32)
        left = tf.random.stateless_uniform([], seeds[1], 0, shape[1] - crop_size[1] + 1, tf.int32)
        pair = pair[top : top + crop_size[0], left : left + crop_size[1]]
        label = label[top : top + crop_size[0], left : left + crop_size[1]]
    for index, axis in ((2, 1), (3, 0)):
        flip = tf.random.stateless_uniform([], seeds[index]) < 0.5
        pair = tf.where(flip, tf.reverse(pair, [axis]), pair)
        label = tf.where(flip, tf.reverse(label, [axis]), label)
    if crop_size is not None and crop_size[0] == crop_size[1]:  # a square keeps its shape
        swap = tf.random.stateless_uniform([], seeds[4]) < 0.5
        pair = tf.cond(swap, lambda: tf.transpose(pair, [1, 0, 2]), lambda: pair)
        label = tf.cond(swap, lambda: tf.transpose(label), lambda: label)
    halves = tf.split(pair, 2, axis=-1)
    jittered = []
    for half, (s_brightness, s_contrast) in zip(
        halves, ((seeds[5], seeds[6]), (seeds[7], seeds[8]))
    ):
        if brightness > 0:
            half = half + 255.0 * tf.random.stateless_uniform(
                [], s_brightness, -brightness, brightness
            )
        if contrast > 0:
            factor = tf.random.stateless_uniform([], s_contrast, 1 - contrast, 1 + contrast)
            mean = tf.reduce_mean(half, axis=(0, 1), keepdims=True)
            half = (half - mean) * factor + mean
        jittered.append(half)
    pair = tf.clip_by_value(tf.concat(jittered, -1), 0.0, 255.0)
    if crop_size is not None:
        pair.set_shape((*crop_size, None))
        label.set_shape(crop_size)
    return pair, label


def change_pipeline(
    sources,
    num_sources,
    read,
    *,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
):
    """Shuffle, read, augment (or pad/centre-crop to ``crop_size``), batch: the change pipeline.

    As :func:`kseg.data.build_pipeline`, with :func:`augment_change_pair` for ``augment=True``.
    """
    crop_size = _check_size("crop_size", crop_size, allow_none=True)
    if not isinstance(augment, bool):
        raise ValueError(f"augment must be True or False. Received: augment={augment!r}")
    seed = check_pipeline_arguments(seed, deterministic, batch_size)
    shuffle = augment if shuffle is None else shuffle
    if shuffle:
        sources = sources.shuffle(max(num_sources, 1), seed=seed, reshuffle_each_iteration=True)
    deterministic = deterministic or not shuffle
    examples = sources.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        examples = tf.data.Dataset.zip((examples, seeds)).map(
            lambda example, s: augment_change_pair(example[0], example[1], s, crop_size),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    elif crop_size is not None:

        def centre(pair, label):
            pair, label = _pad(pair, label, crop_size)
            shape = tf.shape(label)
            top, left = (shape[0] - crop_size[0]) // 2, (shape[1] - crop_size[1]) // 2
            pair = pair[top : top + crop_size[0], left : left + crop_size[1]]
            label = label[top : top + crop_size[0], left : left + crop_size[1]]
            pair.set_shape((*crop_size, None))
            label.set_shape(crop_size)
            return pair, label

        examples = examples.map(
            centre, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
    return finish_pipeline(examples, batch_size, drop_remainder, deterministic)


def change_folder(root, split=None, **pipeline_kwargs):
    """A LEVIR-CD-style change dataset (``root/<split>/{A,B,label}``) as a ``tf.data.Dataset``.

    Yields ``(pair float32 [H, W, 6], label int32 [H, W])``; see the module for the mask
    values. Keyword arguments: ``crop_size``, ``augment`` (:func:`augment_change_pair`),
    ``batch_size``, ``shuffle``, ``seed``, ``deterministic``, ``drop_remainder``.

    Example:
        >>> ds = change_folder("LEVIR-CD", "train", crop_size=256, augment=True,
        ...                    batch_size=8)  # doctest: +SKIP
    """
    paths_a, paths_b, labels = change_files(root, split)

    def read(path_a, path_b, label_path):
        pair, label = tf.numpy_function(
            read_change_example,
            [path_a, path_b, label_path],
            (tf.float32, tf.int32),
            stateful=False,
        )
        pair.set_shape((None, None, 6))
        label.set_shape((None, None))
        return pair, label

    sources = tf.data.Dataset.from_tensor_slices((paths_a, paths_b, labels))
    return change_pipeline(sources, len(paths_a), read, **pipeline_kwargs)


def write_change_dataset(pairs, labels, root, split="train", prefix="pair"):
    """Writes pairs ``[N, H, W, 6]`` and 0/1 labels as LEVIR-CD PNGs (changed = 255).

    Example:
        >>> pairs, labels = synthetic_change_numpy(4, (64, 64))
        >>> write_change_dataset(pairs, labels, "/tmp/cd", "val")  # doctest: +SKIP
    """
    base = os.path.join(os.fspath(root), split)
    for part in ("A", "B", "label"):
        os.makedirs(os.path.join(base, part), exist_ok=True)
    for index, (pair, label) in enumerate(zip(pairs, labels)):
        stem = f"{prefix}_{index:05d}.png"
        pixels = np.clip(np.round(pair), 0, 255).astype(np.uint8)
        Image.fromarray(pixels[..., :3]).save(os.path.join(base, "A", stem))
        Image.fromarray(pixels[..., 3:]).save(os.path.join(base, "B", stem))
        Image.fromarray((np.asarray(label) != 0).astype(np.uint8) * 255).save(
            os.path.join(base, "label", stem)
        )
    return base


# ----------------------------------------------------------------------------- synthetic pairs


def _object_masks(rng, height, width, count):
    """``count`` random ellipses and rectangles: boolean masks [count, H, W] and centres."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    masks, scale = [], min(height, width)
    for _ in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.06, 0.16, 2) * scale
        if rng.uniform() < 0.5:
            mask = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
        else:
            mask = (np.abs(rows - cy) <= ry) & (np.abs(cols - cx) <= rx)
        masks.append(mask)
    return masks


def _moved(rng, mask, height, width):
    """The mask shifted by a random offset of at least a third of its extent."""
    rows, cols = np.nonzero(mask)
    extent = max(np.ptp(rows), np.ptp(cols)) + 1 if rows.size else 1
    while True:
        dy, dx = (
            rng.integers(-height // 2, height // 2 + 1),
            rng.integers(-width // 2, width // 2 + 1),
        )
        if max(abs(dy), abs(dx)) >= extent / 3:
            return np.roll(mask, (dy, dx), axis=(0, 1))


def render_change_pair(index, image_size=(64, 64), seed=0, illumination=0.35, noise_std=4.0):
    """One synthetic change example: ``(pair float32 [H, W, 6], label int32 [H, W])``.

    Both images show one textured background and coloured objects; between A and B some objects
    vanish, some appear and some move, and the rest stay. The label is 1 wherever the object
    under a pixel (or its absence) differs between A and B. Image B is seen under other light:
    a global gain and offset, a colour cast and smooth shading (strength ``illumination``,
    0..1), plus independent sensor noise - none of which is change.

    Args:
        index: the example index (the same index and seed give the same example).
        image_size: ``(height, width)``.
        seed: the generator seed.
        illumination: strength of the illumination difference (0: none).
        noise_std: sensor noise in grey levels, drawn independently for A and B.

    Example:
        >>> pair, label = render_change_pair(0, (48, 48))
        >>> pair.shape, sorted(np.unique(label).tolist())
        ((48, 48, 6), [0, 1])
    """
    height, width = _check_size("image_size", image_size)
    rng = np.random.default_rng([int(seed), int(index), 0xC4A])
    base = rng.uniform(60, 190, 3)
    background = (
        base
        + 45 * _value_noise(rng, height, width, 4, 3)
        + 12 * _value_noise(rng, height, width, 16, 3)
    )
    count = int(rng.integers(4, 9))
    masks = _object_masks(rng, height, width, count)
    colours = rng.uniform(0, 255, (count, 3))
    # each object: 0 stays, 1 vanishes, 2 appears, 3 moves
    fates = rng.choice(4, size=count, p=(0.4, 0.2, 0.2, 0.2))
    ids_a = np.zeros((height, width), np.int32)
    ids_b = np.zeros((height, width), np.int32)
    for k, (mask, fate) in enumerate(zip(masks, fates), 1):
        if fate in (0, 1, 3):
            ids_a[mask] = k
        if fate in (0, 2):
            ids_b[mask] = k
        if fate == 3:
            ids_b[_moved(rng, mask, height, width)] = k
    texture = 8 * _value_noise(rng, height, width, 12, 1)

    def render(ids):
        image = background.copy()
        inside = ids > 0
        image[inside] = colours[ids[inside] - 1] + texture[inside]
        return image

    image_a, image_b = render(ids_a), render(ids_b)
    # illumination of B: gain, offset, colour cast and smooth shading; none of it is change
    s = float(illumination)
    gain = 1 + s * rng.uniform(-1, 1)
    cast = 1 + 0.3 * s * rng.uniform(-1, 1, 3)
    shading = 1 + 0.6 * s * _value_noise(rng, height, width, 2, 1)
    image_b = image_b * gain * cast * shading + 60 * s * rng.uniform(-1, 1)
    image_a = image_a + rng.normal(0, noise_std, image_a.shape)
    image_b = image_b + rng.normal(0, noise_std, image_b.shape)
    pair = np.clip(np.concatenate([image_a, image_b], -1), 0, 255).astype(np.float32)
    return pair, (ids_a != ids_b).astype(np.int32)


def synthetic_change_numpy(num_pairs, image_size=(64, 64), seed=0, first_index=0, **knobs):
    """``num_pairs`` synthetic change examples as numpy arrays ``(pairs [N, H, W, 6], labels)``.

    Example:
        >>> pairs, labels = synthetic_change_numpy(2, (32, 32))
        >>> pairs.shape, labels.dtype
        ((2, 32, 32, 6), dtype('int32'))
    """
    examples = [
        render_change_pair(first_index + i, image_size, seed, **knobs) for i in range(num_pairs)
    ]
    return np.stack([e[0] for e in examples]), np.stack([e[1] for e in examples])


def synthetic_change(num_pairs, image_size=(64, 64), seed=0, first_index=0, **kwargs):
    """Synthetic change pairs (see :func:`render_change_pair`) as a ``tf.data.Dataset``.

    Keyword arguments of :func:`render_change_pair` (``illumination``, ``noise_std``) and of
    the pipeline (``crop_size``, ``augment``, ``batch_size``, ``shuffle``, ``deterministic``,
    ``drop_remainder``) are accepted.

    Example:
        >>> ds = synthetic_change(100, (64, 64), seed=0, batch_size=8)
        >>> [tuple(t.shape) for t in next(iter(ds))]
        [(8, 64, 64, 6), (8, 64, 64)]
    """
    knobs = {k: kwargs.pop(k) for k in ("illumination", "noise_std") if k in kwargs}
    height, width = _check_size("image_size", image_size)
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, numbers.Integral) or num_pairs < 1:
        raise ValueError(f"num_pairs must be a positive integer. Received: num_pairs={num_pairs!r}")

    def read(index):
        pair, label = tf.numpy_function(
            lambda i: render_change_pair(int(i), (height, width), seed, **knobs),
            [index],
            (tf.float32, tf.int32),
            stateful=False,
        )
        pair.set_shape((height, width, 6))
        label.set_shape((height, width))
        return pair, label

    indices = tf.data.Dataset.range(first_index, first_index + num_pairs)
    kwargs.setdefault("seed", seed)
    return change_pipeline(indices, num_pairs, read, **kwargs)

"""The part every loader shares: shuffle, read, augment or size for evaluation, batch, prefetch."""

from __future__ import annotations

import numbers

import tensorflow as tf

from kseg.data.augment import Augment, _check_size, center_crop_or_pad
from kseg.data.palette import IGNORE_INDEX


def resolve_augment(augment, crop_size, seed):
    """Turns the loaders' ``augment`` / ``crop_size`` arguments into an :class:`Augment` or None."""
    crop_size = _check_size("crop_size", crop_size, allow_none=True)
    if augment is True:
        return Augment(crop_size=crop_size, seed=seed), crop_size
    if augment is False or augment is None:
        return None, crop_size
    if not isinstance(augment, Augment):
        raise ValueError(
            f"augment must be True, False or a kseg.data.Augment. Received: augment={augment!r}"
        )
    if crop_size is not None and augment.crop_size not in (None, crop_size):
        raise ValueError(
            f"crop_size {crop_size} differs from the Augment's crop_size {augment.crop_size}; give one"
        )
    if crop_size is not None and augment.crop_size is None:
        augment = Augment(
            augment.scale_range,
            crop_size,
            augment.flip,
            augment.brightness,
            augment.contrast,
            augment.saturation,
            augment.hue,
            augment.seed,
            augment.image_pad_value,
            augment.ignore_index,
        )
    return augment, crop_size


def build_pipeline(
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
    """Turns a dataset of cheap sources (file names, indices) into ``(image, label)`` examples.

    ``read`` maps one source to ``(image float32 [H, W, 3], label int32 [H, W])`` in TF ops.
    A reader with an ``augmented(source, augment, seed)`` method (such as
    :class:`kseg.data.decode.ExampleReader`) reads and augments in one step, so that it can
    crop before converting the image to float.
    Sources are shuffled (before reading, so the buffer holds names, not images) when
    ``shuffle`` is True, or when it is None and the pipeline augments. Training (``augment``)
    crops randomly; evaluation with ``crop_size`` pads/centre-crops deterministically; without
    ``crop_size``, batches of different sizes are padded (image 0, label 255).
    ``deterministic=True`` (seed 0 unless given) gives identical batches on every run.
    """
    seed = check_pipeline_arguments(seed, deterministic, batch_size)
    augment, crop_size = resolve_augment(augment, crop_size, seed)
    if shuffle is None:
        shuffle = augment is not None
    if shuffle:
        sources = sources.shuffle(max(num_sources, 1), seed=seed, reshuffle_each_iteration=True)
    # Without shuffling the order is kept, so evaluation sees the files in their listed order.
    deterministic = deterministic or not shuffle
    if augment is not None and hasattr(read, "augmented"):
        # One map: the reader decodes, then samples only the crop window (see ExampleReader).
        augment_seed = seed if augment.seed is None else augment.seed
        example_seeds = tf.data.Dataset.random(
            seed=augment_seed, rerandomize_each_iteration=True
        ).batch(2)
        examples = tf.data.Dataset.zip((sources, example_seeds)).map(
            lambda source, example_seed: read.augmented(source, augment, example_seed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    else:
        examples = sources.map(
            read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
    if augment is not None:
        if not hasattr(read, "augmented"):
            augment_seed = seed if augment.seed is None else augment.seed
            examples = augment.map(examples, seed=augment_seed, deterministic=deterministic)
    elif crop_size is not None:
        examples = examples.map(
            lambda image, label: center_crop_or_pad(image, label, crop_size),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    return finish_pipeline(examples, batch_size, drop_remainder, deterministic)


def check_pipeline_arguments(seed, deterministic, batch_size):
    """Checks the loaders' shared arguments; returns the seed (0 when deterministic and None)."""
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise ValueError(f"seed must be an integer or None. Received: seed={seed!r}")
    if not isinstance(deterministic, bool):
        raise ValueError(
            f"deterministic must be True or False. Received: deterministic={deterministic!r}"
        )
    if batch_size is not None and (
        not isinstance(batch_size, numbers.Integral)
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be a positive integer or None. Received: batch_size={batch_size!r}"
        )
    return 0 if deterministic and seed is None else seed


def finish_pipeline(examples, batch_size, drop_remainder, deterministic):
    """Batches (padding mixed sizes: image 0, label 255), sets determinism and prefetches."""
    if batch_size is not None:
        if examples.element_spec[1].shape.is_fully_defined():
            examples = examples.batch(batch_size, drop_remainder=drop_remainder)
        else:
            examples = examples.padded_batch(
                batch_size,
                padding_values=(tf.constant(0.0), tf.constant(IGNORE_INDEX, tf.int32)),
                drop_remainder=drop_remainder,
            )
    options = tf.data.Options()
    options.deterministic = deterministic
    return examples.with_options(options).prefetch(tf.data.AUTOTUNE)


def batch_by_size(dataset, batch_size):
    """Batches an unbatched ``(image, label)`` dataset, putting only same-size images together.

    For evaluation at full size: padding a smaller image to its batch's size would change the
    prediction near its border, so images of different sizes go into different batches
    (the order changes, not the set of examples). Fixed-size datasets are batched in order.

    Example:
        >>> import kseg
        >>> ds = kseg.data.synthetic(3, (32, 48)).concatenate(kseg.data.synthetic(2, (40, 40)))
        >>> sorted(tuple(x.shape) for x, _ in batch_by_size(ds, 2))
        [(1, 32, 48, 3), (2, 32, 48, 3), (2, 40, 40, 3)]
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size!r}"
        )
    if dataset.element_spec[1].shape.is_fully_defined():
        return dataset.batch(batch_size)

    def size_key(image, label):
        shape = tf.shape(label, out_type=tf.int64)
        return shape[0] * (1 << 32) + shape[1]

    return dataset.group_by_window(
        size_key, lambda _, window: window.batch(batch_size), window_size=batch_size
    )

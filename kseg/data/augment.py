"""Joint image / label-map augmentation and the deterministic evaluation resize, in TensorFlow ops.

All randomness is stateless: each example is given a ``[2]`` int seed, so a pipeline with a
fixed seed produces identical batches on every run, whatever the parallelism.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from kseg.data.palette import IGNORE_INDEX

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
"""Default padding colour of images: the ImageNet mean, which the models normalise to zero."""


def _check_size(name, size, allow_none=False):
    if size is None and allow_none:
        return None
    pair = (
        (size, size) if isinstance(size, numbers.Integral) and not isinstance(size, bool) else size
    )
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in pair
        )
    ):
        raise ValueError(
            f"{name} must be a positive integer or a pair (height, width) of positive integers. "
            f"Received: {name}={size!r}"
        )
    return int(pair[0]), int(pair[1])


def _check_amount(name, value, upper=None):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or value < 0
        or (upper is not None and value > upper)
    ):
        allowed = f"in [0, {upper}]" if upper is not None else ">= 0"
        raise ValueError(f"{name} must be a number {allowed}. Received: {name}={value!r}")
    return float(value)


def _check_pad_value(image_pad_value):
    if isinstance(image_pad_value, numbers.Real) and not isinstance(image_pad_value, bool):
        image_pad_value = (image_pad_value,) * 3
    if (
        not isinstance(image_pad_value, (tuple, list))
        or len(image_pad_value) != 3
        or not all(isinstance(v, numbers.Real) and 0 <= v <= 255 for v in image_pad_value)
    ):
        raise ValueError(
            f"image_pad_value must be a number or an RGB triple in [0, 255]. Received: image_pad_value={image_pad_value!r}"
        )
    return tuple(float(v) for v in image_pad_value)


def _pad(image, label, paddings, image_pad_value, ignore_index):
    """Pads ``[H, W]`` by ``paddings`` (``[[top, bottom], [left, right]]``), leaving pixels untouched."""
    # tf.where instead of pad(image - colour) + colour: the subtraction would round the image.
    inside = tf.pad(tf.ones_like(label, tf.bool), paddings)
    colour = tf.constant(image_pad_value, dtype=image.dtype)
    image = tf.where(inside[..., None], tf.pad(image, [*paddings, [0, 0]]), colour)
    label = tf.pad(label, paddings, constant_values=ignore_index)
    return image, label


def pad_to_size(image, label, size, image_pad_value=IMAGENET_MEAN_RGB, ignore_index=IGNORE_INDEX):
    """Pads ``image [H, W, 3]`` and ``label [H, W]`` at the bottom and right up to at least ``size``.

    The image is padded with ``image_pad_value`` (per channel), the label with ``ignore_index``.

    Example:
        >>> image, label = pad_to_size(tf.zeros((2, 3, 3)), tf.zeros((2, 3), tf.int32), (4, 3))
        >>> label.numpy()[:, 0].tolist()
        [0, 0, 255, 255]
    """
    image = tf.convert_to_tensor(image)
    label = tf.convert_to_tensor(label)
    shape = tf.shape(label)
    pad_h = tf.maximum(size[0] - shape[0], 0)
    pad_w = tf.maximum(size[1] - shape[1], 0)
    return _pad(image, label, [[0, pad_h], [0, pad_w]], image_pad_value, ignore_index)


def _bilinear_taps(in_size, out_size, start, count):
    """Source rows (or columns) and weights of output ``start .. start + count - 1``.

    The same float32 arithmetic as TensorFlow's ``ResizeBilinear`` kernel with half-pixel
    centres, so a window sampled with these equals that window of ``tf.image.resize``.
    """
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    position = (tf.cast(tf.range(start, start + count), tf.float32) + 0.5) * scale - 0.5
    floor = tf.floor(position)
    low = tf.maximum(tf.cast(floor, tf.int32), 0)
    high = tf.minimum(tf.cast(tf.math.ceil(position), tf.int32), in_size - 1)
    return low, high, position - floor


def _nearest_taps(in_size, out_size, start, count):
    """Source indices of output ``start .. start + count - 1``, as ``ResizeNearestNeighbor`` picks them."""
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    position = tf.floor((tf.cast(tf.range(start, start + count), tf.float32) + 0.5) * scale)
    return tf.clip_by_value(tf.cast(position, tf.int32), 0, in_size - 1)


def _reverse_if(flipped, *vectors):
    return [tf.where(flipped, tf.reverse(v, [0]), v) for v in vectors]


def _resize_window(image, label, scaled_size, top, left, height, width, flipped=False):
    """The window ``[top, top + height) x [left, left + width)`` of the image and label resized to ``scaled_size``.

    Equal, value for value, to ``tf.image.resize(image, scaled_size)`` (bilinear) and
    ``tf.image.resize(label, scaled_size, "nearest")`` followed by the slice (and a
    left-right flip when ``flipped``), but it computes only the window's pixels: at scale 2
    a 512x1024 crop of a 2048x1024 image costs an eighth of resizing the whole image. The image
    may be integer (decoded bytes): it is converted to float32 after sampling.

    Example:
        >>> image = tf.reshape(tf.range(48, dtype=tf.float32), (4, 4, 3))
        >>> label = tf.reshape(tf.range(16), (4, 4))
        >>> window, labels = _resize_window(image, label, (8, 8), 2, 2, 4, 4)
        >>> full = tf.image.resize(image, (8, 8))[2:6, 2:6]
        >>> bool(tf.reduce_all(window == full)), labels.numpy()[0].tolist()
        (True, [5, 5, 6, 6])
    """
    image = tf.convert_to_tensor(image)
    label = tf.convert_to_tensor(label)
    in_h, in_w = tf.shape(label)[0], tf.shape(label)[1]
    y_low, y_high, y_weight = _bilinear_taps(in_h, scaled_size[0], top, height)
    x_low, x_high, x_weight = _bilinear_taps(in_w, scaled_size[1], left, width)
    x_low, x_high, x_weight = _reverse_if(flipped, x_low, x_high, x_weight)
    # Interpolate along each needed source row once, then between rows, in the kernel's order
    # (horizontal first), so the result is bit-identical to resizing the whole image.
    first = y_low[0]
    rows = image[first : y_high[-1] + 1]
    left_taps = tf.cast(tf.gather(rows, x_low, axis=1), tf.float32)
    right_taps = tf.cast(tf.gather(rows, x_high, axis=1), tf.float32)
    along = left_taps + (right_taps - left_taps) * x_weight[None, :, None]
    upper = tf.gather(along, y_low - first)
    lower = tf.gather(along, y_high - first)
    window = upper + (lower - upper) * y_weight[:, None, None]

    rows = _nearest_taps(in_h, scaled_size[0], top, height)
    (columns,) = _reverse_if(flipped, _nearest_taps(in_w, scaled_size[1], left, width))
    labels = tf.gather(tf.gather(label, rows), columns, axis=1)
    return window, labels


def center_crop_or_pad(
    image, label, size, image_pad_value=IMAGENET_MEAN_RGB, ignore_index=IGNORE_INDEX
):
    """Deterministic evaluation sizing: pad to ``size`` (bottom/right), then crop the centre.

    Images no larger than ``size`` keep every pixel (the padding is ignored by the metrics).

    Example:
        >>> image, label = center_crop_or_pad(tf.zeros((6, 2, 3)), tf.zeros((6, 2), tf.int32), (4, 4))
        >>> label.shape.as_list(), label.numpy()[0].tolist()
        ([4, 4], [0, 0, 255, 255])
    """
    size = _check_size("size", size)
    image, label = pad_to_size(image, label, size, image_pad_value, ignore_index)
    shape = tf.shape(label)
    top = (shape[0] - size[0]) // 2
    left = (shape[1] - size[1]) // 2
    image = image[top : top + size[0], left : left + size[1]]
    label = label[top : top + size[0], left : left + size[1]]
    image.set_shape((size[0], size[1], 3))
    label.set_shape(size)
    return image, label


class Augment:
    """Random joint augmentation of an RGB image and its label map.

    In order: random scale (image bilinear, label nearest neighbour), padding to ``crop_size``
    (image with ``image_pad_value``, by default the ImageNet mean which the models normalise to 0;
    label with ``ignore_index``), random crop of ``crop_size``, horizontal flip, then photometric
    jitter of the image only (brightness, contrast, saturation, hue, in that order, clipped to
    [0, 255]). Every random draw is stateless and comes from the per-example ``seed``.

    Args:
        scale_range: (min, max) of the uniformly drawn scale factor; ``(1, 1)`` disables it.
        crop_size: output ``(height, width)`` (or one integer); ``None`` keeps the scaled size.
        flip: flip left-right with probability 0.5.
        brightness: add a delta in ``[-b, b] * 255``.
        contrast: scale the deviation from the image mean by a factor in ``[1-c, 1+c]``.
        saturation: scale the saturation by a factor in ``[1-s, 1+s]``.
        hue: rotate the hue by a fraction of the colour circle in ``[-h, h]`` (h <= 0.5).
        seed: default seed of :meth:`map` (an int); ``None`` draws a fresh one.
        image_pad_value: padding colour of images, a number or RGB triple in 0..255.
        ignore_index: padding value of label maps.

    Example:
        >>> augment = Augment(scale_range=(0.5, 2.0), crop_size=(64, 64), seed=0)
        >>> image, label = augment(tf.zeros((50, 70, 3)), tf.zeros((50, 70), tf.int32), seed=[1, 2])
        >>> image.shape.as_list(), label.dtype.name
        ([64, 64, 3], 'int32')
        >>> train = augment.map(kseg.data.synthetic(100, (80, 80)))  # doctest: +SKIP
    """

    def __init__(
        self,
        scale_range=(0.5, 2.0),
        crop_size=None,
        flip=True,
        brightness=0.1,
        contrast=0.2,
        saturation=0.2,
        hue=0.02,
        seed=None,
        image_pad_value=IMAGENET_MEAN_RGB,
        ignore_index=IGNORE_INDEX,
    ):
        if (
            not isinstance(scale_range, (tuple, list))
            or len(scale_range) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in scale_range)
            or not 0 < scale_range[0] <= scale_range[1]
        ):
            raise ValueError(
                f"scale_range must be a pair (min, max) with 0 < min <= max. Received: scale_range={scale_range!r}"
            )
        if not isinstance(flip, bool):
            raise ValueError(f"flip must be True or False. Received: flip={flip!r}")
        if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
            raise ValueError(f"seed must be an integer or None. Received: seed={seed!r}")
        if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
            raise ValueError(
                f"ignore_index must be an integer. Received: ignore_index={ignore_index!r}"
            )
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.crop_size = _check_size("crop_size", crop_size, allow_none=True)
        self.flip = flip
        self.brightness = _check_amount("brightness", brightness)
        self.contrast = _check_amount("contrast", contrast, upper=1)
        self.saturation = _check_amount("saturation", saturation, upper=1)
        self.hue = _check_amount("hue", hue, upper=0.5)
        self.seed = seed
        self.image_pad_value = _check_pad_value(image_pad_value)
        self.ignore_index = int(ignore_index)

    def __repr__(self):
        return (
            f"Augment(scale_range={self.scale_range}, crop_size={self.crop_size}, flip={self.flip}, "
            f"brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}, "
            f"hue={self.hue}, seed={self.seed})"
        )

    def __call__(self, image, label, seed, label_table=None):
        """Augments one ``image [H, W, 3]`` and ``label [H, W]`` with a ``[2]`` int seed.

        The image may be float or integer (decoded bytes, converted after cropping); the
        result is float32. ``label_table`` (int32, indexed by the stored id) maps the label
        after scaling and cropping and before padding, so a reader's id -> class mapping
        runs on the crop instead of the whole map.
        """
        image = tf.convert_to_tensor(image)
        if not image.dtype.is_integer:
            image = tf.cast(image, tf.float32)
        label = tf.cast(label, tf.int32)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)

        low, high = self.scale_range
        scaled = low != high or low != 1.0
        size = tf.shape(label)
        if scaled:
            scale = tf.random.stateless_uniform([], seeds[0], low, high)
            size = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
        flipped = tf.constant(False)
        if self.flip:
            flipped = tf.random.stateless_uniform([], seeds[3]) < 0.5

        if self.crop_size is None:
            if scaled:
                image = tf.image.resize(image, size, method="bilinear")
                label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
            image = tf.cast(image, tf.float32)
            if label_table is not None:
                label = tf.gather(label_table, label)
            image, label = tf.cond(
                flipped, lambda: (image[:, ::-1], label[:, ::-1]), lambda: (image, label)
            )
        else:
            # Same draws as padding to crop_size and cropping; only the window is computed.
            crop_h, crop_w = self.crop_size
            top = tf.random.stateless_uniform(
                [], seeds[1], 0, tf.maximum(size[0], crop_h) - crop_h + 1, dtype=tf.int32
            )
            left = tf.random.stateless_uniform(
                [], seeds[2], 0, tf.maximum(size[1], crop_w) - crop_w + 1, dtype=tf.int32
            )
            height = tf.minimum(crop_h, size[0] - top)
            width = tf.minimum(crop_w, size[1] - left)
            if scaled:
                image, label = _resize_window(image, label, size, top, left, height, width, flipped)
            else:
                image = tf.cast(image[top : top + height, left : left + width], tf.float32)
                label = label[top : top + height, left : left + width]
                image, label = tf.cond(
                    flipped, lambda: (image[:, ::-1], label[:, ::-1]), lambda: (image, label)
                )
            if label_table is not None:
                label = tf.gather(label_table, label)
            # Padding goes bottom/right before the flip, so bottom/left after it.
            pad_w = crop_w - width
            pad_left = tf.where(flipped, pad_w, 0)
            paddings = [[0, crop_h - height], [pad_left, pad_w - pad_left]]
            image, label = tf.cond(
                (height < crop_h) | (width < crop_w),
                lambda: _pad(image, label, paddings, self.image_pad_value, self.ignore_index),
                lambda: (image, label),
            )

        if self.brightness > 0:
            delta = tf.random.stateless_uniform([], seeds[4], -self.brightness, self.brightness)
            image = image + 255.0 * delta
        if self.contrast > 0:
            factor = tf.random.stateless_uniform([], seeds[5], 1 - self.contrast, 1 + self.contrast)
            # (image - channel mean) * factor + channel mean, in one kernel.
            image = tf.image.adjust_contrast(image, factor)
        if self.saturation > 0 or self.hue > 0:
            # HSV saturation and hue do not depend on the scale: no /255 and *255 passes.
            image = tf.clip_by_value(image, 0.0, 255.0)
            if self.saturation > 0:
                factor = tf.random.stateless_uniform(
                    [], seeds[6], 1 - self.saturation, 1 + self.saturation
                )
                image = tf.image.adjust_saturation(image, factor)
            if self.hue > 0:
                delta = tf.random.stateless_uniform([], seeds[7], -self.hue, self.hue)
                image = tf.image.adjust_hue(image, delta)
        image = tf.clip_by_value(image, 0.0, 255.0)

        if self.crop_size is not None:
            image.set_shape((*self.crop_size, 3))
            label.set_shape(self.crop_size)
        return image, label

    def map(self, dataset, seed=None, deterministic=False):
        """Applies the augmentation to a dataset of ``(image, label)``, one fresh draw per example and epoch.

        ``seed`` (or else ``self.seed``) fixes the draws: the same seed gives the same
        augmented examples on every run, and a different draw in each epoch of one run.

        Example:
            >>> ds = Augment(crop_size=32, seed=0).map(kseg.data.synthetic(8, (48, 48)))  # doctest: +SKIP
        """
        seed = self.seed if seed is None else seed
        example_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip((dataset, example_seeds)).map(
            lambda example, example_seed: self(example[0], example[1], example_seed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )

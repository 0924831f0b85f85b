"""Procedural scenes with exact ground truth: the embedded default dataset.

Each scene is a textured, noisy background under a smooth illumination gradient with a few
objects drawn over it, later objects occluding earlier ones. Each object class draws its
hue from a band that overlaps its neighbours' bands, so colour narrows an object down to one
or two classes and shape decides (at difficulty 1 colour says nothing): filled ellipses,
rotated rectangles, triangles, rings (the hole shows what is behind) and groups of thin
bars 2-3 pixels wide. A pixel's label is the class of the last object whose geometry
contains the pixel centre; the image uses that very same mask (no antialiasing), so the
ground truth is exact.

Scene ``i`` of seed ``s`` depends only on ``(s, i)``: any subset of indices can be drawn in
any order, and train / held-out sets are disjoint by seed or by index range.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from kseg.data.palette import SYNTHETIC_CLASSES

# Salt mixed into every scene's seed so that these streams differ from other users of (seed, i).
_STREAM_SALT = 0x6B736567


@dataclasses.dataclass(frozen=True)
class SceneOptions:
    """The knobs of the scene generator; :meth:`from_difficulty` gives the defaults.

    Attributes:
        min_objects, max_objects: number of objects per scene (uniform, inclusive).
        object_size: (min, max) object radius as a fraction of ``min(height, width)``.
        line_width: (min, max) width in pixels of the thin bars at 128 px (scaled with size).
        noise_std: standard deviation of the additive Gaussian pixel noise (0..255 units).
        texture: amplitude of the background texture (0..255 units).
        illumination: illumination varies over the image by a factor in ``[1-a, 1+a]``.
        min_contrast: RGB distance kept between an object's colour and the background's
            (the first of 32 colour draws that keeps it; in the rare case none does, the first).
        shading: objects' brightness varies linearly across them by up to this fraction.
        hue_spread: half-width in degrees of each class's hue range. Class hue centres are
            72 degrees apart, so 36 gives disjoint ranges (colour tells the class), 40.5 (the
            default) shares the outer ninth of each range with a neighbouring class, 72 makes
            every hue shared by two classes and 180 makes colour useless.

    Example:
        >>> SceneOptions.from_difficulty(0.0).noise_std < SceneOptions.from_difficulty(1.0).noise_std
        True
    """

    min_objects: int
    max_objects: int
    object_size: tuple
    line_width: tuple
    noise_std: float
    texture: float
    illumination: float
    min_contrast: float
    shading: float
    hue_spread: float

    @classmethod
    def from_difficulty(cls, difficulty: float = 0.5) -> SceneOptions:
        """Knob values for a difficulty in [0, 1] (0: few clean objects, 1: crowded, noisy).

        Example:
            >>> SceneOptions.from_difficulty(0.5).max_objects
            5
        """
        if (
            isinstance(difficulty, bool)
            or not isinstance(difficulty, numbers.Real)
            or not 0.0 <= difficulty <= 1.0
        ):
            raise ValueError(
                f"difficulty must be a number in [0, 1]. Received: difficulty={difficulty!r}"
            )
        d = float(difficulty)
        t = d * d  # clutter grows slowly at first: the default 0.5 is a quarter of the way
        return cls(
            min_objects=2 + int(2 * t),
            max_objects=3 + int(6 * t + 0.5),
            object_size=(0.16 - 0.08 * t, 0.3 - 0.04 * t),
            line_width=(2.0, 3.5),
            noise_std=3.0 + 17.0 * t,
            texture=15.0 + 45.0 * t,
            illumination=0.15 + 0.45 * t,
            min_contrast=90.0 - 60.0 * t,
            shading=0.1 + 0.3 * t,
            hue_spread=36.0 + 144.0 * t**2.5,
        )

    def validate(self):
        """Raises ``ValueError`` naming the first knob with an invalid value."""

        def pair(name, low_bound):
            value = getattr(self, name)
            if (
                not isinstance(value, (tuple, list))
                or len(value) != 2
                or not all(isinstance(v, numbers.Real) for v in value)
                or not low_bound < value[0] <= value[1]
            ):
                raise ValueError(
                    f"{name} must be a pair (min, max) with {low_bound} < min <= max. "
                    f"Received: {name}={value!r}"
                )

        for name in ("min_objects", "max_objects"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(
                    f"{name} must be a non-negative integer. Received: {name}={value!r}"
                )
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"min_objects ({self.min_objects}) must not exceed max_objects ({self.max_objects})"
            )
        pair("object_size", 0.0)
        pair("line_width", 0.0)
        for name in (
            "noise_std",
            "texture",
            "illumination",
            "min_contrast",
            "shading",
            "hue_spread",
        ):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(
                    f"{name} must be a non-negative number. Received: {name}={value!r}"
                )
        if self.illumination >= 1:
            raise ValueError(f"illumination must be below 1. Received: {self.illumination!r}")
        if self.shading >= 1:
            raise ValueError(f"shading must be below 1. Received: {self.shading!r}")
        if self.hue_spread > 180:
            raise ValueError(
                f"hue_spread must be at most 180 degrees. Received: {self.hue_spread!r}"
            )
        if self.min_contrast > 200:
            raise ValueError(
                f"min_contrast must be at most 200 (0..255 RGB distance). Received: {self.min_contrast!r}"
            )


def _check_image_size(image_size):
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in image_size)
        or min(image_size) < 8
    ):
        raise ValueError(
            f"image_size must be an integer or a pair (height, width) of integers >= 8. "
            f"Received: image_size={image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def _check_nonnegative_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer. Received: {name}={value!r}")
    return int(value)


def _check_num_classes(num_classes):
    if (
        not isinstance(num_classes, numbers.Integral)
        or isinstance(num_classes, bool)
        or not 2 <= num_classes <= len(SYNTHETIC_CLASSES)
    ):
        raise ValueError(
            f"num_classes must be an integer in [2, {len(SYNTHETIC_CLASSES)}] "
            f"(background + up to {len(SYNTHETIC_CLASSES) - 1} shapes). Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def scene_options(difficulty=0.5, **knobs) -> SceneOptions:
    """Options for ``difficulty`` with any knob of :class:`SceneOptions` overridden.

    Example:
        >>> scene_options(0.5, noise_std=0.0).noise_std
        0.0
    """
    options = SceneOptions.from_difficulty(difficulty)
    fields = {f.name for f in dataclasses.fields(SceneOptions)}
    unknown = sorted(set(knobs) - fields)
    if unknown:
        raise TypeError(
            f"unknown scene option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(fields))}"
        )
    options = dataclasses.replace(options, **knobs)
    options.validate()
    return options


def _interpolate_axis(grid, size, axis):
    """Bilinear interpolation of a coarse grid (cells + 1 samples) to ``size`` pixel centres."""
    cells = grid.shape[axis] - 1
    position = (np.arange(size) + 0.5) * (cells / size)
    lower = np.floor(position).astype(np.intp)
    fraction = (position - lower).astype(np.float32)
    shape = [1] * grid.ndim
    shape[axis] = size
    fraction = fraction.reshape(shape)
    return np.take(grid, lower, axis) * (1.0 - fraction) + np.take(grid, lower + 1, axis) * fraction


def _value_noise(rng, height, width, cells, channels):
    """Smooth noise in [-1, 1]: a random coarse grid, bilinearly interpolated."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1, channels)).astype(np.float32)
    return _interpolate_axis(_interpolate_axis(grid, height, 0), width, 1)


def _hsv_to_rgb(hue_degrees, saturation, value):
    """[N] hue (degrees), saturation, value in [0, 1] -> [N, 3] RGB in 0..255."""
    sector = np.mod(hue_degrees, 360.0) / 60.0
    channel_offsets = np.array([5.0, 3.0, 1.0])  # R, G, B
    k = np.mod(channel_offsets + sector[:, None], 6.0)
    weight = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return 255.0 * value[:, None] * (1.0 - saturation[:, None] * weight)


def _ellipse(rng, u, v, radius, line_width):
    b = radius * rng.uniform(0.45, 1.0)
    return (u / radius) ** 2 + (v / b) ** 2 <= 1.0


def _rectangle(rng, u, v, radius, line_width):
    b = radius * rng.uniform(0.4, 1.0)
    return (np.abs(u) <= radius) & (np.abs(v) <= b)


def _triangle(rng, u, v, radius, line_width):
    # Corners roughly 120 degrees apart, so every angle stays above ~30 degrees and the
    # corners keep counter-clockwise order.
    angles = np.array([0.0, 2.0 * math.pi / 3.0, 4.0 * math.pi / 3.0]) + rng.uniform(-0.4, 0.4, 3)
    lengths = radius * rng.uniform(0.85, 1.15, 3)
    xs, ys = lengths * np.cos(angles), lengths * np.sin(angles)
    inside = np.ones(u.shape, dtype=bool)
    for k in range(3):
        x0, y0, x1, y1 = xs[k], ys[k], xs[(k + 1) % 3], ys[(k + 1) % 3]
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0.0
    return inside


def _ring(rng, u, v, radius, line_width):
    b = radius * rng.uniform(0.7, 1.0)
    hole = rng.uniform(0.45, 0.7)
    rho = (u / radius) ** 2 + (v / b) ** 2
    return (rho <= 1.0) & (rho >= hole * hole)


def _bars(rng, u, v, radius, line_width):
    count = int(rng.integers(1, 4))
    width = rng.uniform(*line_width)
    gap = width * rng.uniform(2.5, 4.5)
    offsets = (np.arange(count) - (count - 1) / 2.0) * gap
    inside = np.abs(v[..., None] - offsets) <= width / 2.0
    return inside.any(axis=-1) & (np.abs(u) <= radius * rng.uniform(1.0, 1.5))


def render_scene(
    index: int,
    image_size=(128, 128),
    seed: int = 0,
    *,
    num_classes: int = 6,
    options: SceneOptions | None = None,
):
    """Renders scene ``index`` of ``seed``: ``(image float32 [H, W, 3] in 0..255, label int32 [H, W])``.

    Pixel values are whole numbers in [0, 255]; labels are in ``[0, num_classes)``.

    Example:
        >>> image, label = render_scene(3, (64, 96), seed=1)
        >>> image.shape, label.shape, image.dtype, label.dtype
        ((64, 96, 3), (64, 96), dtype('float32'), dtype('int32'))
    """
    image, label, _, _ = _render(index, image_size, seed, num_classes, options, touching=0.0)
    return image, label


def _render(index, image_size, seed, num_classes, options, touching):
    """The scene, its label, a map of object numbers (0: background) and each object's class.

    With ``touching > 0`` each object after the first, with that probability, copies the class
    of an earlier object and is placed against it (centres 0.5-1.0 radii sums apart); at 0 no
    extra random number is drawn, so :func:`render_scene` is unchanged.
    """
    height, width = _check_image_size(image_size)
    num_classes = _check_num_classes(num_classes)
    if options is None:
        options = SceneOptions.from_difficulty()
    elif not isinstance(options, SceneOptions):
        raise ValueError(f"options must be a SceneOptions or None. Received: options={options!r}")
    seed = _check_nonnegative_int("seed", seed)
    index = _check_nonnegative_int("index", index)
    rng = np.random.default_rng([seed, index, _STREAM_SALT])
    scale = min(height, width)

    # Background: a base colour, low- and high-frequency texture.
    background_colour = rng.uniform(40.0, 215.0, size=3)
    texture = 0.6 * _value_noise(rng, height, width, 3, 3) + 0.4 * _value_noise(
        rng, height, width, max(4, scale // 10), 1
    )
    image = (background_colour + options.texture * texture).astype(np.float32)
    label = np.zeros((height, width), dtype=np.int32)
    objects = np.zeros((height, width), dtype=np.int32)
    placed = []  # (class index, cy, cx, radius) of each drawn object

    # Pixel centres, as columns (x) and rows (y).
    ys = np.arange(height, dtype=np.float64) + 0.5
    xs = np.arange(width, dtype=np.float64) + 0.5
    line_width = (
        options.line_width[0] * max(1.0, scale / 128.0),
        options.line_width[1] * max(1.0, scale / 128.0),
    )
    shapes = (_ellipse, _rectangle, _triangle, _ring, _bars)[: num_classes - 1]

    num_objects = int(rng.integers(options.min_objects, options.max_objects + 1))
    for _ in range(num_objects):
        kind = int(rng.integers(len(shapes)))
        radius = rng.uniform(*options.object_size) * scale
        cy = rng.uniform(0.05, 0.95) * height
        cx = rng.uniform(0.05, 0.95) * width
        if touching > 0.0 and rng.uniform() < touching and placed:
            kind, py, px, pr = placed[int(rng.integers(len(placed)))]
            angle = rng.uniform(0.0, 2.0 * math.pi)
            distance = (pr + radius) * rng.uniform(0.5, 1.0)
            cy = float(np.clip(py + distance * math.sin(angle), 0.0, height))
            cx = float(np.clip(px + distance * math.cos(angle), 0.0, width))
        placed.append((kind, cy, cx, radius))
        theta = rng.uniform(0.0, math.pi)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        # Colours from the class's hue band (bands of neighbouring classes overlap), away
        # from the background colour.
        hue = kind * 72.0 + rng.uniform(-options.hue_spread, options.hue_spread, size=32)
        candidates = _hsv_to_rgb(
            hue, rng.uniform(0.5, 1.0, size=32), rng.uniform(0.45, 1.0, size=32)
        )
        far = np.linalg.norm(candidates - background_colour, axis=1) >= options.min_contrast
        colour = candidates[int(np.argmax(far))]
        shade_angle = rng.uniform(0.0, 2.0 * math.pi)
        shade = rng.uniform(0.0, options.shading)

        # Bounding radius of every shape: rectangles reach sqrt(2) r, bars 1.5 r along and
        # up to 4.5 widths across (the outer bars of a group).
        reach = 1.6 * radius + 5.0 * line_width[1]
        y0, y1 = max(0, int(cy - reach)), min(height, int(math.ceil(cy + reach)) + 1)
        x0, x1 = max(0, int(cx - reach)), min(width, int(math.ceil(cx + reach)) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = ys[y0:y1, None] - cy
        dx = xs[None, x0:x1] - cx
        u = dx * cos_t + dy * sin_t
        v = dy * cos_t - dx * sin_t
        inside = shapes[kind](rng, u, v, radius, line_width)
        ramp = (dx * math.cos(shade_angle) + dy * math.sin(shade_angle))[inside] / radius
        brightness = 1.0 + shade * np.clip(ramp, -1.0, 1.0)
        image[y0:y1, x0:x1][inside] = colour * brightness[:, None]
        label[y0:y1, x0:x1][inside] = kind + 1
        objects[y0:y1, x0:x1][inside] = len(placed)

    # Illumination: a linear ramp in a random direction, as a multiplicative factor.
    direction = rng.uniform(0.0, 2.0 * math.pi)
    ramp_x = (xs - width / 2) * math.cos(direction)
    ramp_y = (ys - height / 2) * math.sin(direction)
    extent = max(np.abs(ramp_x).max() + np.abs(ramp_y).max(), 1e-9)
    gain_x = (options.illumination / extent * ramp_x).astype(np.float32)
    gain_y = (1.0 + options.illumination / extent * ramp_y).astype(np.float32)
    image *= (gain_y[:, None] + gain_x[None, :])[..., None]
    image += np.float32(options.noise_std) * rng.standard_normal(
        (height, width, 3), dtype=np.float32
    )
    image = np.clip(np.round(image), 0.0, 255.0, out=image)
    return image, label, objects, [kind + 1 for kind, *_ in placed]


def _resolve(num_images, image_size, seed, num_classes, difficulty, first_index, knobs):
    num_images = _check_nonnegative_int("num_images", num_images)
    seed = _check_nonnegative_int("seed", seed)
    first_index = _check_nonnegative_int("first_index", first_index)
    image_size = _check_image_size(image_size)
    num_classes = _check_num_classes(num_classes)
    options = scene_options(difficulty, **knobs)
    return num_images, image_size, seed, num_classes, options, first_index


def synthetic_numpy(
    num_images: int,
    image_size=(128, 128),
    seed: int = 0,
    *,
    num_classes: int = 6,
    difficulty: float = 0.5,
    first_index: int = 0,
    **knobs,
):
    """The scenes of :func:`synthetic` as arrays: ``images [N, H, W, 3] float32``, ``labels [N, H, W] int32``.

    Example:
        >>> images, labels = synthetic_numpy(4, image_size=(32, 48), seed=7)
        >>> images.shape, labels.shape, int(labels.max()) < 6
        ((4, 32, 48, 3), (4, 32, 48), True)
    """
    num_images, image_size, seed, num_classes, options, first_index = _resolve(
        num_images, image_size, seed, num_classes, difficulty, first_index, knobs
    )
    images = np.empty((num_images, *image_size, 3), dtype=np.float32)
    labels = np.empty((num_images, *image_size), dtype=np.int32)
    for n in range(num_images):
        images[n], labels[n] = render_scene(
            first_index + n, image_size, seed, num_classes=num_classes, options=options
        )
    return images, labels


def synthetic(
    num_images: int,
    image_size=(128, 128),
    seed: int = 0,
    *,
    num_classes: int = 6,
    difficulty: float = 0.5,
    first_index: int = 0,
    **knobs,
):
    """The embedded default dataset: ``tf.data.Dataset`` of ``(image, label)`` scenes.

    Args:
        num_images: number of scenes; scene ``n`` of the dataset is scene ``first_index + n``.
        image_size: ``(height, width)`` (or one integer for a square), any size >= 8.
        seed: non-negative integer; scene ``i`` depends only on ``(seed, i)``.
        num_classes: background plus the first ``num_classes - 1`` of
            :data:`SYNTHETIC_CLASSES` (ellipse, rectangle, triangle, ring, bars); 2..6.
        difficulty: 0 (few, clean, high-contrast objects) .. 1 (crowded, noisy, low contrast).
            A 1.9 M-parameter U-Net trained 10 epochs on 1,500 scenes of 96x96 at the
            default 0.5 reaches about 0.74 held-out mIoU (0.87 at difficulty 0): in that
            budget it learns colour and outlines; shape needs longer training.
        first_index: index of the first scene, to cut disjoint sets from one seed.
        **knobs: any field of :class:`SceneOptions` overriding the difficulty's value.

    Returns:
        A dataset of ``(image float32 [H, W, 3] in 0..255, label int32 [H, W])``.

    Example:
        >>> train = synthetic(1000, image_size=(96, 128), seed=0)
        >>> held_out = synthetic(200, image_size=(96, 128), seed=1)
        >>> image, label = next(iter(train))
        >>> image.shape, label.dtype.name
        (TensorShape([96, 128, 3]), 'int32')
    """
    import tensorflow as tf

    num_images, image_size, seed, num_classes, options, first_index = _resolve(
        num_images, image_size, seed, num_classes, difficulty, first_index, knobs
    )
    indices = tf.data.Dataset.range(first_index, first_index + num_images)
    return indices.map(scene_reader(image_size, seed, num_classes, options))


def scene_reader(image_size, seed, num_classes, options):
    """A TF function mapping a scene index (int64 scalar) to its ``(image, label)`` tensors.

    Example:
        >>> read = scene_reader((32, 32), 0, 6, SceneOptions.from_difficulty(0.5))
        >>> image, label = read(tf.constant(5, tf.int64))  # doctest: +SKIP
    """
    import tensorflow as tf

    height, width = image_size

    def render(index):
        return render_scene(int(index), image_size, seed, num_classes=num_classes, options=options)

    def read(index):
        image, label = tf.numpy_function(render, [index], (tf.float32, tf.int32), stateful=False)
        image.set_shape((height, width, 3))
        label.set_shape((height, width))
        return image, label

    return read


def _check_instance_args(touching, min_area):
    if (
        isinstance(touching, bool)
        or not isinstance(touching, numbers.Real)
        or not 0.0 <= touching <= 1.0
    ):
        raise ValueError(f"touching must be a number in [0, 1]. Received: touching={touching!r}")
    return float(touching), _check_nonnegative_int("min_area", min_area)


def render_instance_scene(
    index: int,
    image_size=(128, 128),
    seed: int = 0,
    *,
    num_classes: int = 6,
    options: SceneOptions | None = None,
    touching: float = 0.5,
    min_area: int = 1,
):
    """Renders scene ``index`` of ``seed`` with every object's own mask.

    The scenes are those of :func:`render_scene` except that, with probability ``touching``,
    an object copies the class of an earlier one and is placed against it, so objects of one
    class touch and overlap (the semantic label merges them; the masks do not).

    Returns:
        A dict of numpy arrays: ``image`` float32 ``[H, W, 3]`` in 0..255; ``boxes`` float32
        ``[N, 4]`` as ``(ymin, xmin, ymax, xmax)`` pixel edges of the visible mask (``max`` is
        exclusive); ``classes`` int32 ``[N]`` in ``1..num_classes-1``; ``masks`` uint8
        ``[N, H, W]`` (the visible pixels, occlusion applied; no two overlap); ``panoptic`` int32
        ``[H, W]``, ``class * 1000 + instance`` (instances numbered from 1 per class in drawing
        order; background is 0; objects smaller than ``min_area`` visible pixels are dropped
        from the masks and are void, ``255 * 1000``, in the panoptic map).

    Example:
        >>> scene = render_instance_scene(0, (64, 64), seed=0)
        >>> scene["masks"].shape[1:], scene["boxes"].shape[1], scene["panoptic"].dtype
        ((64, 64), 4, dtype('int32'))
    """
    from kseg.constants import PANOPTIC_LABEL_DIVISOR, PANOPTIC_VOID

    height, width = _check_image_size(image_size)
    num_classes = _check_num_classes(num_classes)
    if options is None:
        options = SceneOptions.from_difficulty()
    touching, min_area = _check_instance_args(touching, min_area)
    image, _, objects, kinds = _render(index, (height, width), seed, num_classes, options, touching)
    panoptic = np.zeros((height, width), dtype=np.int32)
    masks, classes, boxes = [], [], []
    counts = {}
    for number, kind in enumerate(kinds, start=1):
        mask = objects == number
        area = int(mask.sum())
        if area == 0:
            continue
        if area < min_area:
            panoptic[mask] = PANOPTIC_VOID
            continue
        counts[kind] = counts.get(kind, 0) + 1
        panoptic[mask] = kind * PANOPTIC_LABEL_DIVISOR + counts[kind]
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        boxes.append((rows[0], cols[0], rows[-1] + 1, cols[-1] + 1))
        masks.append(mask)
        classes.append(kind)
    return {
        "image": image,
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "classes": np.asarray(classes, dtype=np.int32),
        "masks": np.asarray(masks, dtype=np.uint8).reshape(-1, height, width),
        "panoptic": panoptic,
    }


INSTANCE_KEYS = ("image", "boxes", "classes", "masks", "panoptic")
"""Keys of the instance samples of :func:`synthetic_instances` and the COCO-format loaders."""


def synthetic_instances(
    num_images: int,
    image_size=(128, 128),
    seed: int = 0,
    *,
    num_classes: int = 6,
    difficulty: float = 0.5,
    first_index: int = 0,
    touching: float = 0.5,
    min_area: int = 1,
    **knobs,
):
    """Synthetic scenes for instance and panoptic segmentation: a ``tf.data.Dataset`` of dicts.

    Args:
        num_images, image_size, seed, num_classes, difficulty, first_index, **knobs: as in
            :func:`synthetic`.
        touching: probability that an object is placed against an earlier object of its class.
        min_area: objects with fewer visible pixels are left out (void in the panoptic map).

    Returns:
        A dataset of the dicts of :func:`render_instance_scene` as tensors: ``image`` float32
        ``[H, W, 3]``, ``boxes`` float32 ``[N, 4]`` (ymin, xmin, ymax, xmax in pixels),
        ``classes`` int32 ``[N]``, ``masks`` uint8 ``[N, H, W]``, ``panoptic`` int32 ``[H, W]``
        (``class * 1000 + instance``; background 0). ``N`` varies per scene: batch with
        ``padded_batch`` or ``ragged_batch``.

    Example:
        >>> ds = synthetic_instances(4, image_size=(64, 64), seed=0)
        >>> sample = next(iter(ds))
        >>> sample["masks"].shape[1:].as_list(), sample["panoptic"].dtype.name
        ([64, 64], 'int32')
    """
    import tensorflow as tf

    num_images, image_size, seed, num_classes, options, first_index = _resolve(
        num_images, image_size, seed, num_classes, difficulty, first_index, knobs
    )
    touching, min_area = _check_instance_args(touching, min_area)
    height, width = image_size

    def render(index):
        scene = render_instance_scene(
            int(index),
            image_size,
            seed,
            num_classes=num_classes,
            options=options,
            touching=touching,
            min_area=min_area,
        )
        return tuple(scene[key] for key in INSTANCE_KEYS)

    def read(index):
        values = tf.numpy_function(
            render, [index], (tf.float32, tf.float32, tf.int32, tf.uint8, tf.int32), stateful=False
        )
        shapes = ((height, width, 3), (None, 4), (None,), (None, height, width), (height, width))
        for value, shape in zip(values, shapes):
            value.set_shape(shape)
        return dict(zip(INSTANCE_KEYS, values))

    indices = tf.data.Dataset.range(first_index, first_index + num_images)
    return indices.map(read)

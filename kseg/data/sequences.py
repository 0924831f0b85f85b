"""Synthetic video: objects moving across frames, some frames occluded, exact labels."""

from __future__ import annotations

import numpy as np

SEQUENCE_CLASSES = ("background", "disc", "square")


def _check_int(argument, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"synthetic_sequences: {argument} must be an int >= {minimum}. "
            f"Received: {argument}={value!r}"
        )


def synthetic_sequences(
    count,
    sequence_length=6,
    image_size=(48, 48),
    seed=0,
    *,
    num_objects=2,
    occlusion_rate=0.3,
    noise_std=12.0,
):
    """Short clips of discs and squares moving in straight lines, some frames occluded.

    Each clip has ``num_objects`` objects (class 1 disc, 2 square; both drawn from the same
    colour range, so only the shape tells them apart) moving 1-3 pixels a frame and bouncing
    off the borders, on a noisy textured background. After the first frame, each frame is
    occluded with probability ``occlusion_rate``: a flat grey panel covers every object (and
    a margin around them). The labels are the objects' true positions in every frame, occluded
    or not (amodal truth), so an occluded frame can only be segmented from the frames before
    it, which is what a temporal model adds over a per-frame one.

    Args:
        count: the number of clips.
        sequence_length: frames per clip.
        image_size: ``(H, W)`` of each frame.
        seed: the same seed gives the same clips.
        num_objects: objects per clip.
        occlusion_rate: probability that a frame after the first is occluded.
        noise_std: per-pixel noise of the frames, in 0..255 units.

    Returns:
        ``frames`` float32 ``[N, T, H, W, 3]`` in 0..255, ``labels`` int32 ``[N, T, H, W]``
        and ``occluded`` bool ``[N, T]``.

    Example:
        >>> frames, labels, occluded = synthetic_sequences(2, sequence_length=4, seed=1)
        >>> frames.shape, labels.shape, occluded.shape, bool(occluded[:, 0].any())
        ((2, 4, 48, 48, 3), (2, 4, 48, 48), (2, 4), False)
    """
    _check_int("count", count, 1)
    _check_int("sequence_length", sequence_length, 1)
    _check_int("num_objects", num_objects, 1)
    height, width = image_size
    _check_int("image_size[0]", height, 16)
    _check_int("image_size[1]", width, 16)
    if not 0 <= occlusion_rate <= 1:
        raise ValueError(
            "synthetic_sequences: occlusion_rate must be in [0, 1]. "
            f"Received: occlusion_rate={occlusion_rate!r}"
        )
    rng = np.random.default_rng(seed)
    frames = np.empty((count, sequence_length, height, width, 3), np.float32)
    labels = np.zeros((count, sequence_length, height, width), np.int32)
    occluded = np.zeros((count, sequence_length), bool)
    rows, cols = np.mgrid[0:height, 0:width]
    size = min(height, width)
    for n in range(count):
        background = rng.uniform(40, 110, 3)
        texture = rng.normal(0, 10, (height // 4 + 1, width // 4 + 1, 1))
        texture = np.repeat(np.repeat(texture, 4, 0), 4, 1)[:height, :width]
        radius = rng.uniform(0.1, 0.16, num_objects) * size
        kind = rng.integers(1, 3, num_objects)
        colour = rng.uniform(150, 240, (num_objects, 3))
        position = np.stack(
            [rng.uniform(r, d - r, num_objects) for r, d in ((radius, height), (radius, width))],
            axis=1,
        )
        velocity = rng.uniform(1, 3, (num_objects, 2)) * rng.choice([-1, 1], (num_objects, 2))
        for t in range(sequence_length):
            image = background + texture + np.zeros((height, width, 3))
            label = labels[n, t]
            for k in range(num_objects):
                dy, dx = rows - position[k, 0], cols - position[k, 1]
                if kind[k] == 1:
                    inside = dy**2 + dx**2 <= radius[k] ** 2
                else:
                    inside = (np.abs(dy) <= radius[k]) & (np.abs(dx) <= radius[k])
                image[inside] = colour[k]
                label[inside] = kind[k]
            if t > 0 and rng.random() < occlusion_rate:
                occluded[n, t] = True
                top, left = np.maximum(position.min(0) - radius.max() - rng.uniform(2, 8), 0)
                bottom, right = position.max(0) + radius.max() + rng.uniform(2, 8)
                image[int(top) : int(bottom) + 1, int(left) : int(right) + 1] = rng.uniform(90, 160)
            image = image + rng.normal(0, noise_std, image.shape)
            frames[n, t] = np.clip(image, 0, 255)
            position += velocity
            for axis, limit in ((0, height), (1, width)):
                low, high = radius, limit - radius
                below, above = position[:, axis] < low, position[:, axis] > high
                velocity[below | above, axis] *= -1
                position[:, axis] = np.clip(position[:, axis], low, high)
    return frames, labels, occluded

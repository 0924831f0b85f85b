"""Pictures of segmentations: colour-coded masks, overlays, side-by-side panels, confusion matrices.

Example:
    >>> import numpy as np, kseg
    >>> labels = np.array([[0, 1], [2, 255]])
    >>> kseg.viz.colorize(labels)[0, 1].tolist()
    [128, 0, 0]
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from kseg import fileio
from kseg.data.palette import IGNORE_INDEX, voc_colormap

__all__ = [
    "colorize",
    "overlay",
    "enlarge",
    "scale_for",
    "panel",
    "save_png",
    "plot_confusion_matrix",
]


def colorize(labels, palette=None):
    """Maps a label map ``[H, W]`` to RGB ``uint8 [H, W, 3]`` (VOC colours by default).

    Labels must be integers in ``[0, 256)``; 255 (ignore) gets the VOC border colour.

    Example:
        >>> colorize(np.zeros((2, 3), int)).shape
        (2, 3, 3)
    """
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D label map. Received: shape={labels.shape}")
    palette = voc_colormap() if palette is None else np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must have shape [K, 3]. Received: palette.shape={palette.shape}")
    labels = labels.astype(np.int64)
    bad = (labels < 0) | ((labels >= len(palette)) & (labels != IGNORE_INDEX))
    if np.any(bad):
        raise ValueError(
            f"label {int(labels[bad][0])} has no colour in a palette of {len(palette)} entries"
        )
    full = voc_colormap() if len(palette) < 256 else palette
    lookup = full.copy()
    lookup[: len(palette)] = palette
    return lookup[labels]


def _as_uint8_image(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be [H, W, 3] or [H, W]. Received: shape={image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.dtype != np.uint8:
        image = np.clip(np.nan_to_num(image.astype(np.float64)), 0, 255).round().astype(np.uint8)
    return image


def overlay(image, labels, alpha=0.5, palette=None):
    """Blends the colour-coded ``labels`` over ``image`` (RGB, 0..255); background (0) stays clear.

    Example:
        >>> overlay(np.full((2, 2, 3), 200, np.uint8), np.ones((2, 2), int)).dtype
        dtype('uint8')
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha!r}")
    image = _as_uint8_image(image)
    colors = colorize(labels, palette)
    if colors.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"labels have size {colors.shape[:2]} but the image has size {image.shape[:2]}"
        )
    labels = np.asarray(labels).reshape(colors.shape[:2])
    weight = np.where(labels[..., None] == 0, 0.0, alpha)
    return (image * (1 - weight) + colors * weight).round().astype(np.uint8)


def enlarge(array, scale):
    """Enlarges ``array`` ``[H, W, ...]`` by the integer ``scale`` (nearest neighbour).

    Each source pixel becomes a ``scale`` x ``scale`` block of the same value, so label
    boundaries stay sharp (no blended colours).

    Example:
        >>> enlarge(np.array([[1, 2]]), 2).tolist()
        [[1, 1, 2, 2], [1, 1, 2, 2]]
    """
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive int, received {scale!r}")
    array = np.asarray(array)
    if array.ndim < 2:
        raise ValueError(f"array must have at least 2 dimensions, received shape {array.shape}")
    if scale == 1:
        return array
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)


def scale_for(size, min_size=256):
    """The smallest integer scale that enlarges ``size`` (an int or ``(H, W)``) to ``min_size``.

    Example:
        >>> scale_for((96, 128)), scale_for(64), scale_for(300)
        (3, 4, 1)
    """
    smallest = min(np.atleast_1d(size))
    if smallest < 1:
        raise ValueError(f"size must be positive, received {size!r}")
    return max(1, -(-int(min_size) // int(smallest)))


def panel(image, truth=None, prediction=None, palette=None, scale=1):
    """Image | ground truth | prediction | overlay, side by side, as one RGB ``uint8`` array.

    ``scale`` enlarges each tile by that integer factor (nearest neighbour, see ``enlarge``).

    Example:
        >>> panel(np.zeros((4, 4, 3)), np.zeros((4, 4), int), np.zeros((4, 4), int)).shape
        (4, 16, 3)
        >>> panel(np.zeros((4, 4, 3)), np.zeros((4, 4), int), scale=3).shape
        (12, 24, 3)
    """
    tiles = [_as_uint8_image(image)]
    if truth is not None:
        tiles.append(colorize(truth, palette))
    if prediction is not None:
        tiles.append(colorize(prediction, palette))
        tiles.append(overlay(image, prediction, palette=palette))
    return enlarge(np.concatenate(tiles, axis=1), scale)


def save_png(array, path):
    """Writes an RGB ``uint8`` array to ``path`` as PNG and returns the path."""
    with fileio.atomic_path(path) as temporary:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(temporary, format="PNG")
    return path


def plot_confusion_matrix(cm, path, class_names=None, normalize=True, title="Confusion matrix"):
    """Draws the confusion matrix (rows truth, columns prediction) to a PNG file.

    Uses matplotlib's object API (no global backend switch).

    Example:
        >>> plot_confusion_matrix([[5, 1], [0, 4]], "/tmp/cm.png", ["bg", "fg"])  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C]. Received: shape={cm.shape}")
    num_classes = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for a {num_classes}-class matrix")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = max(4.0, 0.5 * num_classes + 2)
    figure = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(num_classes), names, rotation=45, ha="right")
    axes.set_yticks(range(num_classes), names)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title(title)
    if num_classes <= 30:
        for i in range(num_classes):
            for j in range(num_classes):
                text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                axes.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black",
                )
    figure.tight_layout()
    with fileio.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return path

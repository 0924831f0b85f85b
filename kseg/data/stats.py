"""Dataset statistics (``kseg data stats``): images, sizes, class pixel frequencies, class weights."""

from __future__ import annotations

import collections
import re

import numpy as np

from kseg.data.palette import IGNORE_INDEX

_ERROR_LINE = re.compile(r"\b(?:ValueError|FileNotFoundError|OSError|KeyError): (.+)")
_OUTSIDE_MAPPING = re.compile(
    r"mapping does not list|not in the palette|holds value|holds id|num_classes is"
)


def error_message(error):
    """The user-facing line of an error raised while reading an example (tf.data wraps it).

    Example:
        >>> error_message(ValueError("label map 'a.png' holds id 40"))
        "label map 'a.png' holds id 40"
    """
    text = getattr(error, "message", None) or str(error)
    match = _ERROR_LINE.search(text)
    if match:
        return match.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def dataset_stats(dataset, num_classes, *, power=0.5, ignore_index=IGNORE_INDEX):
    """Counts over an unbatched ``(image, label)`` dataset; unreadable examples are listed.

    Reading goes on past an example that fails (a label id outside the dataset's mapping, a
    corrupt file): its message is kept in ``errors`` (and, for label values, in
    ``outside_mapping``) and the other examples are counted.

    Returns a dict: ``images`` (read), ``sizes`` (``"HxW"`` -> count), ``pixels``,
    ``ignored_pixels``, ``class_pixels`` and ``class_frequency`` (share of the scored pixels,
    one per class), ``class_weights`` (:func:`kseg.losses.class_weights_from_frequency` with
    ``power``; None without scored pixels), ``values_outside`` (label value -> pixels, for
    values neither a class nor ``ignore_index``), ``outside_mapping`` and ``errors``
    (messages).

    Example:
        >>> import kseg
        >>> stats = dataset_stats(kseg.data.synthetic(4, (16, 16), seed=0), 6)
        >>> stats["images"], stats["sizes"], sum(stats["class_pixels"]) == 4 * 16 * 16
        (4, {'16x16': 4}, True)
    """
    import tensorflow as tf

    from kseg.losses import class_weights_from_frequency

    counts = np.zeros(num_classes, np.int64)
    sizes = collections.Counter()
    outside = collections.Counter()
    errors = []
    totals = {"images": 0, "pixels": 0, "ignored": 0}

    def labels():
        iterator = iter(dataset)
        while True:
            try:
                _, label = next(iterator)
            except StopIteration:
                return
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
                errors.append(error_message(error))
                continue
            label = np.asarray(label)
            if label.ndim == 3 and label.shape[-1] == 1:
                label = label[..., 0]
            totals["images"] += 1
            totals["pixels"] += label.size
            sizes[f"{label.shape[0]}x{label.shape[1]}"] += 1
            ignored = label == ignore_index
            totals["ignored"] += int(ignored.sum())
            bad = ~ignored & ((label < 0) | (label >= num_classes))
            if bad.any():
                values, number = np.unique(label[bad], return_counts=True)
                outside.update(dict(zip(values.tolist(), number.tolist())))
                label = np.where(bad, ignore_index, label)
            counts[:] += np.bincount(
                label[label != ignore_index].astype(np.int64), minlength=num_classes
            )
            yield label

    try:
        weights = class_weights_from_frequency(labels(), num_classes, power, ignore_index)
    except ValueError as error:
        if "no pixel to count" not in str(error):
            raise
        weights = None
    scored = counts.sum()
    return {
        "images": totals["images"],
        "sizes": dict(sorted(sizes.items(), key=lambda item: -item[1])),
        "pixels": totals["pixels"],
        "ignored_pixels": totals["ignored"],
        "class_pixels": counts.tolist(),
        "class_frequency": (counts / scored).tolist() if scored else [0.0] * num_classes,
        "class_weights": weights,
        "power": power,
        "values_outside": {int(k): int(v) for k, v in sorted(outside.items())},
        "outside_mapping": [m for m in errors if _OUTSIDE_MAPPING.search(m)],
        "errors": errors,
    }


def format_stats(stats, class_names):
    """The statistics as a text table (one row per class).

    Example:
        >>> import kseg
        >>> stats = dataset_stats(kseg.data.synthetic(2, (8, 8), seed=0), 6)
        >>> print(format_stats(stats, kseg.data.SYNTHETIC_CLASSES).splitlines()[0])
        images: 2 (sizes: 8x8 x2)
    """
    sizes = ", ".join(f"{size} x{count}" for size, count in stats["sizes"].items())
    lines = [f"images: {stats['images']} (sizes: {sizes or 'none'})"]
    share = stats["ignored_pixels"] / stats["pixels"] if stats["pixels"] else 0.0
    lines.append(f"pixels: {stats['pixels']:,}, ignored: {stats['ignored_pixels']:,} ({share:.2%})")
    width = max([len(str(n)) for n in class_names] + [5])
    lines.append(
        f"{'class':<{width}}  {'pixels':>12}  {'frequency':>9}  weight (power {stats['power']})"
    )
    weights = stats["class_weights"] or [float("nan")] * len(class_names)
    for name, pixels, frequency, weight in zip(
        class_names, stats["class_pixels"], stats["class_frequency"], weights
    ):
        lines.append(f"{name:<{width}}  {pixels:>12,}  {frequency:>9.4%}  {weight:.4f}")
    if stats["values_outside"]:
        lines.append(f"label values outside the classes: {stats['values_outside']}")
    if stats["errors"]:
        lines.append(f"examples that could not be read: {len(stats['errors'])}")
        lines.extend(f"  {message}" for message in stats["errors"][:20])
    return "\n".join(lines)

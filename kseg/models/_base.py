"""Argument checks shared by the model classes."""

from __future__ import annotations


def check_num_classes(model, num_classes):
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"{model}: num_classes must be a positive int, received {num_classes!r}")


def check_input_shape(model, input_shape, channels=None):
    """Validates ``(H, W, C)`` with H/W positive ints or None; returns it as a tuple."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) != 3
        or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0)
            for d in shape[:2]
        )
        or not isinstance(shape[2], int)
        or isinstance(shape[2], bool)
        or shape[2] < 1
    ):
        raise ValueError(
            f"{model}: input_shape must be (height, width, channels) with positive ints "
            f"(height/width may be None), received {input_shape!r}"
        )
    if channels is not None and shape[2] not in channels:
        raise ValueError(
            f"{model}: input_shape must have {' or '.join(map(str, channels))} channels, "
            f"received {input_shape!r}"
        )
    return shape


def check_choice(model, argument, value, allowed):
    if value not in allowed:
        raise ValueError(f"{model}: {argument} must be one of {tuple(allowed)}, received {value!r}")

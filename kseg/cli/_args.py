"""argparse value types shared by the ``kseg`` commands: bad values are errors, not defaults."""

import argparse


def _number_type(convert, accept, requirement):
    """An argparse type: ``convert(text)`` that ``accept`` holds for, else the requirement named.

    Bad values are errors, not silent defaults (0 iterations, a sparsity of 1, ...).
    """

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {requirement}. Received: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}. Received: {text}")
        return value

    return parse


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number_type(float, lambda v: 0 < v < float("inf"), "a positive number")
_sparsity = _number_type(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
_fraction = _number_type(float, lambda v: 0.0 <= v <= 1.0, "a fraction in [0, 1]")


def _layer_ratio(text):
    """``PATTERN=RATIO`` (a layer name or glob pattern, a number in [0, 1)) as a pair."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern:
        raise argparse.ArgumentTypeError(f"must be PATTERN=RATIO. Received: {text!r}")
    return pattern, _sparsity(value)

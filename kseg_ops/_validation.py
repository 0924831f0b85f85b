"""Argument checks shared by the kseg_ops wrappers: errors name the argument and the value."""

import math
import numbers
import re

import numpy as np
import tensorflow as tf


def check_positive(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a positive finite number. Received: {name}={value!r}")
    return float(value)


def check_finite_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number. Received: {name}={value!r}")
    return float(value)


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def to_tensor(name, value):
    """Converts to a tensor, turning conversion failures into a TypeError naming the argument."""
    if isinstance(value, (tf.Tensor, tf.Variable)) or tf.is_symbolic_tensor(value):
        return tf.convert_to_tensor(value)
    try:
        array = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(
            f"{name} must be an array or tensor ({e}). Received: {name} of type {type(value).__name__}"
        ) from e
    if array.dtype == object or array.dtype.kind in "USV":
        raise TypeError(f"{name} must hold numbers. Received: an array of dtype {array.dtype}")
    return tf.convert_to_tensor(array)


def check_rank(name, tensor, rank, layout):
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(
            f"{name} must have rank {rank} {layout}. Received: shape={tuple(tensor.shape)}"
        )


def value_errors_from_kernel(call):
    """Runs ``call()``; eagerly, turns the kernel's InvalidArgumentError into a ValueError."""
    if not tf.executing_eagerly():
        return call()
    try:
        return call()
    except tf.errors.InvalidArgumentError as e:
        # Drop TF's "{{function_node ...}}" prefix and " [Op:...]" suffix: keep the kernel's words.
        message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", e.message)
        raise ValueError(re.sub(r"\s*\[Op:[^\]]*\].*$", "", message, flags=re.S)) from None


def check_finite_values(name, tensor):
    """In eager mode, rejects NaN/Inf (in graphs the kernel checks and raises)."""
    if tf.executing_eagerly() and tensor.dtype.is_floating:
        finite = tf.math.is_finite(tensor)
        if not bool(tf.reduce_all(finite)):
            index = tuple(int(i) for i in tf.where(tf.logical_not(finite))[0])
            raise ValueError(
                f"{name} holds a non-finite value {float(tensor[index])} at index {index}"
            )

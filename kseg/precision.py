"""Mixed precision: the Keras dtype policy under which kseg builds and trains its models.

``"mixed_float16"`` and ``"mixed_bfloat16"`` keep the weights in float32 and compute in half
precision. Every kseg model built under such a policy still returns float32 logits (its base,
``SegmentationModel``, appends a float32 cast to each half-precision output), and the layers
that run a compiled ``kseg_ops`` op (``DenseCRF``, ``CRFRNN``, ``FFTConv2D``) compute in
float32 inside the layer. ``compile`` wraps the optimizer in Keras's ``LossScaleOptimizer``
under ``"mixed_float16"`` (float16 gradients underflow without loss scaling); bfloat16 has
float32's exponent range and needs none.

Nothing here changes the global policy at import: :func:`use_precision` sets it for a block
and restores the previous one.

Example:
    >>> import kseg
    >>> with kseg.precision.use_precision("mixed_bfloat16"):
    ...     model = kseg.models.create("unet", num_classes=3, input_shape=(32, 32, 3),
    ...                                base_filters=4, depth=2)
    >>> model.dtype_policy.name, model.output.dtype
    ('mixed_bfloat16', 'float32')
"""

from __future__ import annotations

import contextlib

import keras

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
"""The values of ``kseg train --precision`` and of ``precision=`` arguments."""


def check_precision(precision):
    """Returns ``precision`` if it is one of :data:`PRECISIONS`, else raises ``ValueError``.

    Example:
        >>> check_precision("mixed_bfloat16")
        'mixed_bfloat16'
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}"
        )
    return precision


@contextlib.contextmanager
def use_precision(precision):
    """Sets the global Keras dtype policy to ``precision`` for a block, then restores it.

    Models and layers take the policy when they are built, so build them inside the block;
    they keep it afterwards (training and saving can happen outside). ``None`` leaves the
    policy as it is.

    Example:
        >>> import keras
        >>> with use_precision("mixed_float16"):
        ...     keras.config.dtype_policy().name
        'mixed_float16'
        >>> keras.config.dtype_policy().name
        'float32'
    """
    if precision is None:
        yield
        return
    check_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


__all__ = ["PRECISIONS", "check_precision", "use_precision"]

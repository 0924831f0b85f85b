"""The base of the layers that are made of other Keras layers (the real-time blocks)."""

from __future__ import annotations

import keras


def check_int(layer, argument, value, minimum=1):
    """Raises unless ``value`` is an int >= ``minimum`` (the Keras wording).

    Example:
        >>> check_int("ENetBottleneck", "filters", 64)
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"{layer}: {argument} must be an int >= {minimum}. Received: {argument}={value!r}"
        )


def check_rate(layer, argument, value):
    """Raises unless ``value`` is a number in ``[0, 1)`` (a dropout rate).

    Example:
        >>> check_rate("ENetBottleneck", "dropout", 0.1)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"{layer}: {argument} must be a number in [0, 1). Received: {argument}={value!r}"
        )


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int) for d in value)


class CompositeLayer(keras.layers.Layer):
    """A layer whose work is done by Keras sublayers.

    Subclasses create their sublayers in ``__init__`` (or, where a width follows from the input
    channels, in ``_create(shapes)``), with ``dtype=self.dtype_policy`` so a policy reaches
    them. ``build`` checks the input shapes (``_check_shapes``), calls ``_create`` and then
    traces ``call`` once on symbolic inputs: every sublayer is built with the shape it really
    receives, also when a ``.keras`` file is loaded (``build_from_config``). The graph of a
    model holding such a layer is made of the sublayers' ordinary ops, so TFLite conversion
    and ``kseg.bench`` multiply-add counting see every convolution.

    Example:
        >>> import numpy as np
        >>> class Twice(CompositeLayer):
        ...     def __init__(self, **kwargs):
        ...         super().__init__(**kwargs)
        ...         self.conv = keras.layers.Conv2D(2, 1, dtype=self.dtype_policy)
        ...     def call(self, x):
        ...         return 2 * self.conv(x)
        ...     def compute_output_shape(self, input_shape):
        ...         return (*input_shape[:-1], 2)
        >>> layer = Twice()
        >>> layer.build((None, 4, 4, 3))
        >>> [tuple(w.shape) for w in layer.weights]
        [(1, 1, 3, 2), (2,)]
    """

    # dtype of each input ("float" is the compute dtype), e.g. ("float", "int32", "float")
    _input_dtypes = None

    def _check_shapes(self, shapes):
        """Raises a ``ValueError`` naming the problem when the input shapes cannot work."""
        for shape in shapes:
            if len(shape) != 4 or shape[-1] is None:
                raise ValueError(
                    f"{type(self).__name__}: expects [batch, height, width, channels] inputs with "
                    f"a known channel count. Received: input_shape={self._shape_repr(shapes)}"
                )

    def _create(self, shapes):
        """Creates the sublayers whose widths follow from the input shapes (default: none)."""

    def _shape_repr(self, shapes):
        return tuple(shapes[0]) if len(shapes) == 1 else [tuple(s) for s in shapes]

    def _shapes(self, input_shape):
        if _is_shape(input_shape):
            return [tuple(input_shape)], False
        return [tuple(s) for s in input_shape], True

    def build(self, input_shape):
        shapes, multiple = self._shapes(input_shape)
        self._check_shapes(shapes)
        self._create(shapes)
        dtypes = self._input_dtypes or ("float",) * len(shapes)
        specs = [
            keras.KerasTensor(shape, dtype=self.compute_dtype if dtype == "float" else dtype)
            for shape, dtype in zip(shapes, dtypes)
        ]
        # building by tracing call, as Keras does for layers without a build method
        keras.Operation.compute_output_spec(self, specs if multiple else specs[0])

    def compute_output_shape(self, input_shape):
        shapes, _ = self._shapes(input_shape)
        self._check_shapes(shapes)
        return self._output_shape(shapes)

    def _output_shape(self, shapes):
        raise NotImplementedError

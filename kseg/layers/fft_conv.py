"""FFTConv2D: a drop-in for ``keras.layers.Conv2D`` that convolves by FFT where that is faster.

The cost model behind ``algorithm="auto"`` (``fft_plan``, ``estimate_seconds``,
``choose_algorithm`` and the calibrated constants) lives beside the op in
:mod:`kseg_ops.fft_conv`; the names stay importable from here.
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf

# Re-exported: these were defined here before the cost model moved next to the op.
from kseg_ops.fft_conv import (  # noqa: F401
    DIRECT_SECONDS_FIXED,
    DIRECT_SECONDS_PER_MADD,
    DIRECT_TRAINING_FACTOR,
    DIRECT_TRAINING_FACTOR_LARGE_ONEDNN,
    FFT_SECONDS_FIXED,
    FFT_SECONDS_PER_PRODUCT_UNIT,
    FFT_SECONDS_PER_TRANSFORM_UNIT,
    FFT_TRAINING_FACTOR,
    NOMINAL_SIZE,
    ONEDNN_SLOW_BACKPROP_AREA,
    choose_algorithm,
    direct_seconds_per_madd,
    estimate_seconds,
    fft_plan,
)

ALGORITHMS = ("auto", "fft", "direct")


def _pair(name, value):
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair
    ):
        raise ValueError(
            f"FFTConv2D: {name} must be an int or a pair of ints. Received: {name}={value!r}"
        )
    return tuple(int(v) for v in pair)


@keras.saving.register_keras_serializable(package="kseg")
class FFTConv2D(keras.layers.Layer):
    """2D convolution that runs by FFT (``kseg_ops.fft_conv2d``) where that is faster.

    A drop-in for ``keras.layers.Conv2D`` with unit strides: same arguments, same weight names
    and shapes (``kernel [kh, kw, in, filters]``, ``bias [filters]``), so weights move between
    the two with ``set_weights``. The result equals Conv2D's up to float rounding.

    ``algorithm``:
        - "auto": per call shape, the faster of FFT and ``tf.nn.conv2d`` by a cost model
          calibrated with ``benchmarks/fft_conv.py`` (``choose_algorithm`` shows the choice):
          for the forward pass, or, when the layer is called with ``training=True`` (as
          ``fit`` does), for forward + backward. With height/width unknown when the layer is
          traced, it chooses for 256x256.
        - "fft": always the FFT op.
        - "direct": always ``tf.nn.conv2d``.

    Mixed precision: the FFT op has float32 and float64 kernels only, so under a
    float16/bfloat16 policy the layer casts the input and kernel to float32 inside, runs the
    FFT in float32 and casts the result back to the compute dtype (the "direct" path runs in
    the compute dtype). The result then differs from float32 by the rounding of the input,
    kernel and output to the half format (``tests/kseg/layers/test_fft_conv_layer.py`` bounds it).

    The FFT op refuses NaN/inf inputs (it would spread them over a whole tile) and has no XLA
    kernel, so the layer sets ``supports_jit = False``.

    Args:
        filters, kernel_size, padding ("valid" or "same"), activation, use_bias,
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        activity_regularizer, kernel_constraint, bias_constraint: as in Conv2D.
        strides, dilation_rate: must be 1 (accepted for drop-in compatibility).
        data_format: only "channels_last" (or None).
        algorithm: "auto", "fft" or "direct".

    Example:
        >>> import numpy as np
        >>> layer = FFTConv2D(8, 15, padding="same", algorithm="fft")
        >>> layer(np.zeros((1, 32, 32, 4), "float32")).shape
        TensorShape([1, 32, 32, 8])
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        algorithm="auto",
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if not isinstance(filters, numbers.Integral) or isinstance(filters, bool) or filters < 1:
            raise ValueError(
                f"FFTConv2D: filters must be a positive int. Received: filters={filters!r}"
            )
        kernel_size = _pair("kernel_size", kernel_size)
        if min(kernel_size) < 1:
            raise ValueError(
                f"FFTConv2D: kernel_size must be positive. Received: kernel_size={kernel_size!r}"
            )
        if _pair("strides", strides) != (1, 1):
            raise ValueError(
                f"FFTConv2D: only strides=1 is supported (an FFT computes every output position); use "
                f"keras.layers.Conv2D for strided convolutions. Received: strides={strides!r}"
            )
        if _pair("dilation_rate", dilation_rate) != (1, 1):
            raise ValueError(
                f"FFTConv2D: only dilation_rate=1 is supported. Received: dilation_rate={dilation_rate!r}"
            )
        if data_format not in (None, "channels_last"):
            raise ValueError(
                f"FFTConv2D: only data_format='channels_last' is supported. Received: data_format={data_format!r}"
            )
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(
                f"FFTConv2D: padding must be 'valid' or 'same'. Received: padding={padding!r}"
            )
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"FFTConv2D: algorithm must be one of {ALGORITHMS}. Received: algorithm={algorithm!r}"
            )
        self.filters = int(filters)
        self.kernel_size = kernel_size
        self.padding = padding.lower()
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.algorithm = algorithm
        self.input_spec = keras.layers.InputSpec(ndim=4)
        self.supports_jit = False

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"FFTConv2D: the channel dimension of the input must be known. Received: shape={input_shape}"
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def _fft(self, x, kernel):
        import kseg_ops

        if x.dtype in (tf.float32, tf.float64):
            return kseg_ops.fft_conv2d(x, tf.cast(kernel, x.dtype), padding=self.padding.upper())
        y = kseg_ops.fft_conv2d(
            tf.cast(x, tf.float32), tf.cast(kernel, tf.float32), padding=self.padding.upper()
        )
        return tf.cast(y, x.dtype)

    def _direct(self, x, kernel):
        return tf.nn.conv2d(x, tf.cast(kernel, x.dtype), strides=1, padding=self.padding.upper())

    def call(self, inputs, training=None):
        x = inputs
        kernel = self.kernel
        if self.algorithm == "direct":
            y = self._direct(x, kernel)
        elif self.algorithm == "fft":
            y = self._fft(x, kernel)
        else:
            y = self._auto(x, kernel, bool(training))
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.bias, y.dtype))
        if self.activation is not None:
            y = self.activation(y)
        return y

    def _auto(self, x, kernel, training):
        kh, kw = self.kernel_size
        cin, cout = int(kernel.shape[2]), self.filters
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            # Sizes unknown while tracing (e.g. a model built for any image size): choose for a
            # nominal 256x256 image so the graph holds one op and exports cleanly.
            height = height or NOMINAL_SIZE
            width = width or NOMINAL_SIZE
        if self.padding == "valid" and (kh > height or kw > width):
            return self._direct(x, kernel)  # let tf.nn.conv2d report the error
        # Unknown batch: the choice barely depends on it; assume 1.
        choice = choose_algorithm(
            x.shape[0] or 1, height, width, cin, kh, kw, cout, self.padding, training
        )
        return self._fft(x, kernel) if choice == "fft" else self._direct(x, kernel)

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[0], input_shape[1], input_shape[2]
        if self.padding == "valid":
            height = None if height is None else height - self.kernel_size[0] + 1
            width = None if width is None else width - self.kernel_size[1] + 1
        return (batch, height, width, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=(1, 1),
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=(1, 1),
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
            algorithm=self.algorithm,
        )
        return config

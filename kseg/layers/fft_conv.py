"""FFTConv2D: a drop-in for ``keras.layers.Conv2D`` that convolves by FFT where that is faster."""

from __future__ import annotations

import functools
import math
import numbers
import os

import keras
import tensorflow as tf

ALGORITHMS = ("auto", "fft", "direct")

# Cost model of "auto", fitted by `benchmarks/fft_conv.py --calibrate` (see benchmarks/RESULTS.md
# for the run): forward seconds of tf.nn.conv2d per multiply-add by kernel size (oneDNN's speed
# per MAdd varies with the kernel: Winograd-like 3x3 paths, blocking of large kernels), linear
# in k between the calibrated sizes; FFT seconds per transform unit and per product unit of
# `fft_plan` (transforms of the input/output tiles and kernel, and the per-frequency channel
# contraction); fixed per-call overheads.
DIRECT_SECONDS_PER_MADD = {
    3: 1.09e-11,
    5: 7.77e-12,
    7: 8.75e-12,
    11: 1.05e-11,
    15: 8.78e-12,
    21: 7.55e-12,
    31: 7.08e-12,
}
DIRECT_SECONDS_FIXED = 5.0e-5
FFT_SECONDS_PER_TRANSFORM_UNIT = 1.89e-10
FFT_SECONDS_PER_PRODUCT_UNIT = 1.06e-10
FFT_SECONDS_FIXED = 2.0e-4
# Forward + backward over forward (training: gradients for the input and the kernel). The FFT
# backward runs two FFT convolutions of about the forward's cost. TensorFlow's oneDNN
# Conv2DBackpropFilter is pathologically slow from 13x13 kernels up (80 s against 0.05 s at
# 11x11 for 2x128x128x32), hence the separate factor there.
FFT_TRAINING_FACTOR = 3.66
DIRECT_TRAINING_FACTOR = 3.08
DIRECT_TRAINING_FACTOR_LARGE_ONEDNN = 1000.0
ONEDNN_SLOW_BACKPROP_AREA = 13 * 13
# Image size "auto" assumes when height/width are unknown while tracing.
NOMINAL_SIZE = 256


def _fast_size(n, even):
    m = max(n, 2 if even else 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1 and (not even or m % 2 == 0):
            return m
        m += 1


@functools.lru_cache(maxsize=1024)
def fft_plan(
    batch, height, width, in_channels, kernel_height, kernel_width, out_channels, padding="SAME"
):
    """The tiling the FFT kernel chooses (a mirror of ``ChooseTilePlan`` in fft_conv_core.h).

    Returns a dict with the FFT size ``(nh, nw)``, tile counts and the model cost in FFT units
    (``cost`` = ``transform_units`` + ``product_units``).

    Example:
        >>> fft_plan(2, 256, 256, 32, 15, 15, 32)["fft_size"]
        (40, 100)
    """
    if padding.upper() == "SAME":
        out_h, out_w = height, width
    else:
        out_h, out_w = height - kernel_height + 1, width - kernel_width + 1
    max_h = _fast_size(out_h + kernel_height - 1, False)
    max_w = _fast_size(out_w + kernel_width - 1, True)
    budget = 512 << 20
    best = None
    nh = _fast_size(kernel_height, False)
    while nh <= max_h:
        nw = _fast_size(kernel_width, True)
        while nw <= max_w:
            tiles_y = -(-out_h // (nh - kernel_height + 1))
            tiles_x = -(-out_w // (nw - kernel_width + 1))
            tiles = tiles_y * tiles_x
            freqs = nh * (nw // 2 + 1)
            logs = math.log2(nh) + math.log2(nw)
            b = max(batch, 1)
            fft = (
                (1.7 * b * tiles * (in_channels + out_channels) + 2.2 * in_channels * out_channels)
                * freqs
                * logs
            )
            product = b * tiles * freqs * in_channels * out_channels
            cost = fft + product
            kernel_bytes = 8.0 * freqs * in_channels * out_channels
            fits = kernel_bytes <= budget
            key = (not fits, cost if fits else kernel_bytes)
            if best is None or key < best[0]:
                best = (
                    key,
                    {
                        "fft_size": (nh, nw),
                        "tiles": (tiles_y, tiles_x),
                        "cost": cost,
                        "transform_units": fft,
                        "product_units": product,
                    },
                )
            nw = _fast_size(nw + 1, True)
        nh = _fast_size(nh + 1, False)
    return best[1]


def _onednn_enabled():
    # TensorFlow's own switch: on by default for x86-64 Linux builds.
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def direct_seconds_per_madd(kernel_height, kernel_width):
    """Calibrated forward seconds per MAdd of ``tf.nn.conv2d``, interpolated linearly in k."""
    k = math.sqrt(kernel_height * kernel_width)
    sizes = sorted(DIRECT_SECONDS_PER_MADD)
    if k <= sizes[0]:
        return DIRECT_SECONDS_PER_MADD[sizes[0]]
    for lo, hi in zip(sizes, sizes[1:]):
        if k <= hi:
            t = (k - lo) / (hi - lo)
            return (1 - t) * DIRECT_SECONDS_PER_MADD[lo] + t * DIRECT_SECONDS_PER_MADD[hi]
    return DIRECT_SECONDS_PER_MADD[sizes[-1]]


def estimate_seconds(
    batch,
    height,
    width,
    in_channels,
    kernel_height,
    kernel_width,
    out_channels,
    padding="SAME",
    training=False,
):
    """Model times of one call: ``{"fft": seconds, "direct": seconds}``.

    ``training=True`` estimates forward + backward (gradients for input and kernel).

    Example:
        >>> t = estimate_seconds(2, 256, 256, 32, 15, 15, 32)
        >>> t["fft"] < t["direct"]
        True
    """
    if padding.upper() == "SAME":
        out_h, out_w = height, width
    else:
        out_h, out_w = height - kernel_height + 1, width - kernel_width + 1
    madds = batch * out_h * out_w * in_channels * out_channels * kernel_height * kernel_width
    direct = DIRECT_SECONDS_FIXED + madds * direct_seconds_per_madd(kernel_height, kernel_width)
    plan = fft_plan(
        batch, height, width, in_channels, kernel_height, kernel_width, out_channels, padding
    )
    fft = (
        FFT_SECONDS_FIXED
        + plan["transform_units"] * FFT_SECONDS_PER_TRANSFORM_UNIT
        + plan["product_units"] * FFT_SECONDS_PER_PRODUCT_UNIT
    )
    if training:
        slow = _onednn_enabled() and kernel_height * kernel_width >= ONEDNN_SLOW_BACKPROP_AREA
        direct *= DIRECT_TRAINING_FACTOR_LARGE_ONEDNN if slow else DIRECT_TRAINING_FACTOR
        fft *= FFT_TRAINING_FACTOR
    return {"fft": fft, "direct": direct}


def choose_algorithm(
    batch,
    height,
    width,
    in_channels,
    kernel_height,
    kernel_width,
    out_channels,
    padding="SAME",
    training=False,
):
    """What ``algorithm="auto"`` runs for these static sizes: "fft" or "direct".

    Example:
        >>> choose_algorithm(2, 256, 256, 32, 3, 3, 32)
        'direct'
        >>> choose_algorithm(2, 256, 256, 32, 31, 31, 32)
        'fft'
    """
    t = estimate_seconds(
        batch,
        height,
        width,
        in_channels,
        kernel_height,
        kernel_width,
        out_channels,
        padding,
        training,
    )
    return "fft" if t["fft"] < t["direct"] else "direct"


def _pair(name, value):
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair
    ):
        raise ValueError(f"FFTConv2D: {name} must be an int or a pair of ints, received {value!r}")
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
        - "fft": always the FFT op (float16/bfloat16 inputs are computed in float32).
        - "direct": always ``tf.nn.conv2d``.

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
            raise ValueError(f"FFTConv2D: filters must be a positive int, received {filters!r}")
        kernel_size = _pair("kernel_size", kernel_size)
        if min(kernel_size) < 1:
            raise ValueError(f"FFTConv2D: kernel_size must be positive, received {kernel_size!r}")
        if _pair("strides", strides) != (1, 1):
            raise ValueError(
                f"FFTConv2D: only strides=1 is supported (an FFT computes every output position), "
                f"received strides={strides!r}; use keras.layers.Conv2D for strided convolutions"
            )
        if _pair("dilation_rate", dilation_rate) != (1, 1):
            raise ValueError(
                f"FFTConv2D: only dilation_rate=1 is supported, received {dilation_rate!r}"
            )
        if data_format not in (None, "channels_last"):
            raise ValueError(
                f"FFTConv2D: only data_format='channels_last' is supported, received {data_format!r}"
            )
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f"FFTConv2D: padding must be 'valid' or 'same', received {padding!r}")
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"FFTConv2D: algorithm must be one of {ALGORITHMS}, received {algorithm!r}"
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
                f"FFTConv2D: the channel dimension of the input must be known, received shape {input_shape}"
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

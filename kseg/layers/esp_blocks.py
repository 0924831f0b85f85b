"""ESPNet's and ESPNetV2's blocks.

* **ESP module** (Mehta, Rastegari, Caspi, Shapiro, Hajishirzi, "ESPNet: Efficient Spatial
  Pyramid of Dilated Convolutions for Semantic Segmentation", ECCV 2018): *reduce* the input
  with a 1×1 convolution (3×3 stride 2 when down-sampling) to ``n = C/5`` channels, *split*
  into 5 parallel 3×3 convolutions dilated 1, 2, 4, 8, 16, fuse them *hierarchically*
  (each branch adds the sum of the less dilated ones: no gridding artefacts) and concatenate;
  a residual connection when the shapes allow; BN + PReLU.
* **EESP unit** (Mehta, Rastegari, Shapiro, Hajishirzi, "ESPNetv2: A Light-weight, Power
  Efficient, and General Purpose Convolutional Neural Network", CVPR 2019): the reduction is a
  group point-wise convolution (``K = 4`` groups), the branches are *depth-wise* dilated 3×3
  convolutions (dilations chosen up to a receptive-field limit), the merge a group point-wise
  convolution; the strided variant (``eesp_downsampler``) concatenates it with an average
  pooling and adds a projection of the (pooled) input image.
* ESPNetV2's segmentation decoder blocks from the authors' EdgeNets code: the efficient
  pyramid pooling (projection, depth-wise convolutions at 5 scales, channel shuffle, grouped
  merge) and the efficient point-wise convolution (grouped 3×3 gated by a global context).

Strided convolutions and poolings are zero-padded by ``k // 2`` on every side, as in the
authors' PyTorch code, so every branch samples the same grid. TensorFlow has no depth-wise
convolution that is both strided and dilated: the strided EESP unit computes its branches at
stride 1 and subsamples once (the same values; its depth-wise multiply-adds count 4 times).
The blocks are serializable layers (``ESPModule``, ``EESPUnit``, ``EESPDownsampler``,
``EfficientPyramidPooling``, ``EfficientPWConv``) made of Keras layers, ``GroupedConv2D``,
``ChannelShuffle`` and ``ScaleResize``; the lower-case functions apply them to Keras tensors.
"""

from __future__ import annotations

import math
import numbers

import keras
import tensorflow as tf
from keras import layers

from kseg.layers._composite import CompositeLayer, check_int
from kseg.layers.channel_shuffle import ChannelShuffle, GroupedConv2D  # noqa: F401 (re-export)
from kseg.layers.enet_blocks import prelu
from kseg.layers.resize import Resize


@keras.saving.register_keras_serializable(package="kseg")
class ScaleResize(keras.layers.Layer):
    """Bilinear resize to ``max(ceil(H * scale), min_size) × max(ceil(W * scale), min_size)``.

    The sizes of ESPNetV2's efficient pyramid pooling (EdgeNets: ``ceil(h * s)``, at least 5).

    Args:
        scale: positive factor.
        min_size: the smallest output height/width.

    Example:
        >>> import numpy as np
        >>> ScaleResize(0.1)(np.ones((1, 20, 64, 2), "float32")).shape
        TensorShape([1, 5, 7, 2])
    """

    def __init__(self, scale, min_size=5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or scale <= 0:
            raise ValueError(f"ScaleResize: scale must be > 0. Received: scale={scale!r}")
        if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1:
            raise ValueError(
                f"ScaleResize: min_size must be a positive int. Received: min_size={min_size!r}"
            )
        self.scale = float(scale)
        self.min_size = min_size

    def _size(self, n):
        return None if n is None else max(math.ceil(n * self.scale), self.min_size)

    def call(self, x):
        hw = tf.cast(tf.shape(x)[1:3], tf.float64)
        size = tf.cast(tf.math.ceil(hw * self.scale), tf.int32)
        size = tf.maximum(size, self.min_size)
        return tf.cast(tf.image.resize(x, size), x.dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, self._size(h), self._size(w), c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_size": self.min_size}


def _conv_layers(
    channels,
    filters,
    kernel_size,
    name,
    *,
    strides=1,
    dilation_rate=1,
    groups=1,
    use_bias=False,
    dtype=None,
):
    """The layers of PyTorch's ``Conv2d(padding=k // 2 * d, groups=groups)`` on ``channels``
    input channels: ``[conv]`` or, strided, ``[zero padding, conv]``."""
    out = []
    if strides != 1:
        pad = (kernel_size // 2) * dilation_rate
        out.append(layers.ZeroPadding2D(pad, name=f"{name}_pad", dtype=dtype))
    padding = "same" if strides == 1 else "valid"
    options = dict(strides=strides, padding=padding, dilation_rate=dilation_rate, use_bias=use_bias)
    if groups == 1:
        out.append(layers.Conv2D(filters, kernel_size, name=name, dtype=dtype, **options))
    elif groups == channels == filters:
        out.append(layers.DepthwiseConv2D(kernel_size, name=name, dtype=dtype, **options))
    elif strides != 1:
        raise ValueError(f"{name}: strided grouped convolutions are not used here")
    else:
        out.append(
            GroupedConv2D(
                filters,
                kernel_size,
                groups=groups,
                dilation_rate=dilation_rate,
                use_bias=use_bias,
                name=name,
                dtype=dtype,
            )
        )
    return out


def _conv(x, filters, kernel_size, name, *, strides=1, dilation_rate=1, groups=1, use_bias=False):
    """A convolution as PyTorch's ``Conv2d(padding=k // 2 * d, groups=groups)``."""
    for layer in _conv_layers(
        x.shape[-1],
        filters,
        kernel_size,
        name,
        strides=strides,
        dilation_rate=dilation_rate,
        groups=groups,
        use_bias=use_bias,
    ):
        x = layer(x)
    return x


def _bn(name, dtype=None):
    return layers.BatchNormalization(epsilon=1e-3, name=name, dtype=dtype)


def bn_prelu(x, name):
    """BN → PReLU (the authors' ``BR``).

    Example:
        >>> tuple(bn_prelu(keras.Input((4, 4, 8)), "br").shape)
        (None, 4, 4, 8)
    """
    return prelu(f"{name}_prelu")(_bn(f"{name}_bn")(x))


def conv_bn_prelu(x, filters, kernel_size, name, *, strides=1, groups=1, act=True):
    """Convolution (no bias) → BN → PReLU (the authors' ``CBR``; ``act=False``: ``CB``).

    Example:
        >>> tuple(conv_bn_prelu(keras.Input((15, 9, 3)), 16, 3, "level1", strides=2).shape)
        (None, 8, 5, 16)
    """
    y = _bn(f"{name}_bn")(_conv(x, filters, kernel_size, name, strides=strides, groups=groups))
    return prelu(f"{name}_prelu")(y) if act else y


def avg_pool_3x3_s2(x, name):
    """PyTorch's ``AvgPool2d(3, stride=2, padding=1)`` (zeros counted): ``ceil(H/2)``.

    Example:
        >>> tuple(avg_pool_3x3_s2(keras.Input((15, 8, 3)), "pool").shape)
        (None, 8, 4, 3)
    """
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.AveragePooling2D(3, strides=2, name=name)(x)


def _split_widths(filters, branches):
    n = filters // branches
    return n, filters - (branches - 1) * n


def _ceil2(n):
    return None if n is None else -(-n // 2)


def _cbr(layer, channels, filters, kernel_size, name, *, strides=1, groups=1, act=True):
    """The layers of ``conv_bn_prelu`` owned by ``layer`` (its dtype policy)."""
    policy = layer.dtype_policy
    bn = _bn(f"{name}_bn", policy)  # created first, as in conv_bn_prelu
    convs = _conv_layers(
        channels, filters, kernel_size, name, strides=strides, groups=groups, dtype=policy
    )
    return [*convs, bn, *([prelu(f"{name}_prelu", policy)] if act else [])]


def _run(sublayers, x, training):
    for sub in sublayers:
        if isinstance(sub, layers.BatchNormalization):
            x = sub(x, training=training)
        else:
            x = sub(x)
    return x


def _subsample(x):
    """``x[:, ::2, ::2]`` as ops TFLite's XNNPACK delegate runs (float32 and int8): padded to
    even sizes, ``space_to_depth(2)``, whose first ``C`` channels are the even rows and
    columns. A 1×1 max pooling of stride 2 or a stride-2 slice (the obvious spellings) are
    not delegated and cut the graph."""
    channels = x.shape[-1]
    height = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
    width = x.shape[2] if x.shape[2] is not None else tf.shape(x)[2]
    if not (isinstance(height, int) and isinstance(width, int) and height % 2 == width % 2 == 0):
        x = tf.pad(x, [[0, 0], [0, height % 2], [0, width % 2], [0, 0]])
    return tf.nn.space_to_depth(x, 2)[..., :channels]


def _br(layer, name):
    return [_bn(f"{name}_bn", layer.dtype_policy), prelu(f"{name}_prelu", layer.dtype_policy)]


@keras.saving.register_keras_serializable(package="kseg")
class ESPModule(CompositeLayer):
    """ESPNet's efficient spatial pyramid module (Mehta et al. 2018, Fig. 1b): reduce → split
    → dilated 1..16 → hierarchical feature fusion → concat.

    The input is reduced by a 1×1 convolution (a 3×3 stride-2 one with ``downsample``) to
    ``n = filters // 5`` channels; five 3×3 convolutions dilated 1, 2, 4, 8, 16 (the first one
    with the remaining ``filters - 4n`` channels) run on it; each dilated branch adds the sum of
    the less dilated ones (no gridding artefacts); the concatenation, plus the input when
    ``residual`` and the shapes agree, goes through BN → PReLU.

    Args:
        filters: output channels (>= 5).
        downsample: reduce with a 3×3 stride-2 convolution (the module halves the size; no
            residual connection).
        residual: add the input when the shapes agree (ESPNet's decoder uses one without).

    Example:
        >>> import numpy as np
        >>> ESPModule(64, downsample=True)(np.zeros((1, 15, 9, 19), "float32")).shape
        TensorShape([1, 8, 5, 64])
    """

    def __init__(self, filters, downsample=False, residual=True, **kwargs):
        super().__init__(**kwargs)
        check_int("ESPModule", "filters", filters, minimum=5)
        self.filters = filters
        self.downsample = bool(downsample)
        self.residual = bool(residual)

    def _create(self, shapes):
        channels, policy = shapes[0][-1], self.dtype_policy
        n, n1 = _split_widths(self.filters, 5)
        self.reduce = _conv_layers(
            channels,
            n,
            3 if self.downsample else 1,
            "reduce",
            strides=2 if self.downsample else 1,
            dtype=policy,
        )
        self.branches = _conv_layers(n, n1, 3, "d1", dtype=policy)
        for rate in (2, 4, 8, 16):
            self.branches += _conv_layers(n, n, 3, f"d{rate}", dilation_rate=rate, dtype=policy)
        self.out = _br(self, "out")

    def call(self, x, training=None):
        reduced = _run(self.reduce, x, training)
        outputs, total = [self.branches[0](reduced)], None
        for conv in self.branches[1:]:
            y = conv(reduced)
            total = y if total is None else total + y
            outputs.append(total)
        y = tf.concat(outputs, axis=-1)
        if self.residual and not self.downsample and x.shape[-1] == self.filters:
            y = x + y
        return _run(self.out, y, training)

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        if self.downsample:
            h, w = _ceil2(h), _ceil2(w)
        return (b, h, w, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "downsample": self.downsample,
            "residual": self.residual,
        }


def esp_module(x, filters, name, *, downsample=False, residual=True):
    """Applies ``ESPModule(filters, downsample, residual, name=name)`` to ``x``.

    Example:
        >>> tuple(esp_module(keras.Input((15, 9, 19)), 64, "esp", downsample=True).shape)
        (None, 8, 5, 64)
    """
    return ESPModule(filters, downsample=downsample, residual=residual, name=name)(x)


def _eesp_dilations(branches, receptive_limit):
    sizes = sorted(3 + 2 * i if 3 + 2 * i <= receptive_limit else 3 for i in range(branches))
    return [(k - 1) // 2 for k in sizes]


@keras.saving.register_keras_serializable(package="kseg")
class EESPUnit(CompositeLayer):
    """ESPNetV2's EESP unit (Mehta et al. 2019, Fig. 1c, d): group 1×1 reduce → depth-wise
    dilated 3×3 → hierarchical fusion → group 1×1.

    ``n = filters / branches`` channels per branch; branch ``i`` is a depth-wise 3×3 convolution
    dilated to a receptive field ``3 + 2i`` (falling back to 3 past ``receptive_limit``; sorted),
    each adding the previous branch's output (hierarchical feature fusion). The concatenation is
    BN + PReLU-ed and merged by a group point-wise convolution + BN. With ``strides=1`` the input
    is added when the shapes agree and a PReLU follows; with ``strides=2`` the merged map is
    returned as it is (``EESPDownsampler`` adds and activates it). TensorFlow has no strided
    dilated depth-wise convolution: the strided unit runs its branches at stride 1 and
    subsamples once (the same values).

    Args:
        filters: output channels; ``filters / branches`` and the input channels must be
            multiples of ``branches``.
        strides: 1 or 2.
        branches: ``K``, the number of groups and branches (paper: 4).
        receptive_limit: the largest receptive field of a branch.

    Example:
        >>> import numpy as np
        >>> EESPUnit(64)(np.zeros((1, 16, 12, 64), "float32")).shape
        TensorShape([1, 16, 12, 64])
    """

    def __init__(self, filters, strides=1, branches=4, receptive_limit=7, **kwargs):
        super().__init__(**kwargs)
        check_int("EESPUnit", "filters", filters)
        if strides not in (1, 2):
            raise ValueError(f"EESPUnit: strides must be 1 or 2. Received: strides={strides!r}")
        check_int("EESPUnit", "branches", branches)
        check_int("EESPUnit", "receptive_limit", receptive_limit, minimum=3)
        self.filters = filters
        self.strides = strides
        self.branches = branches
        self.receptive_limit = receptive_limit

    def _check_shapes(self, shapes):
        super()._check_shapes(shapes)
        k, channels = self.branches, shapes[0][-1]
        n, n1 = _split_widths(self.filters, k)
        if n != n1 or n % k or channels % k:
            raise ValueError(
                f"EESPUnit: filters ({self.filters}) must divide into {k} branches whose width, "
                f"like the input channels ({channels}), is a multiple of {k}. "
                f"Received: filters={self.filters!r}"
            )

    def _create(self, shapes):
        channels, policy, k = shapes[0][-1], self.dtype_policy, self.branches
        n = self.filters // k
        self.reduce = _cbr(self, channels, n, 1, "reduce", groups=k)
        self.dws = [
            layers.DepthwiseConv2D(
                3,
                padding="same",
                dilation_rate=rate,
                use_bias=False,
                name=f"dw{i}_d{rate}",
                dtype=policy,
            )
            for i, rate in enumerate(_eesp_dilations(k, self.receptive_limit))
        ]
        self.concat_act = _br(self, "concat")
        self.expand = _cbr(self, self.filters, self.filters, 1, "expand", groups=k, act=False)
        self.prelu = prelu("prelu", policy) if self.strides == 1 else None

    def call(self, x, training=None):
        reduced = _run(self.reduce, x, training)
        outputs = []
        subsampled = _subsample(reduced) if self.strides == 2 else None
        for dw in self.dws:
            y = dw(reduced) if subsampled is None else self._strided_branch(dw, reduced, subsampled)
            outputs.append(y if not outputs else outputs[-1] + y)
        y = tf.concat(outputs, axis=-1)
        y = _run(self.expand, _run(self.concat_act, y, training), training)
        if self.strides == 2:
            return y
        if x.shape[-1] == self.filters:
            y = x + y
        return self.prelu(y)

    @staticmethod
    def _strided_branch(dw, reduced, subsampled):
        """The stride-1 branch ``dw(reduced)`` at rows/columns 0, 2, 4... (TensorFlow has no
        strided dilated depth-wise convolution), computed where it can be at the output
        resolution: rate 1 as a stride-2 convolution of the input padded by 1, an even rate
        ``2r`` as rate ``r`` on ``subsampled`` (every tap falls on an even row and column);
        an odd rate > 1 (taps on both parities) at stride 1, then subsampled. The same values
        with a quarter of the work for all but the odd rates."""
        if not dw.built:  # built where calling it built it, so weights keep their order
            dw.build(tuple(reduced.shape))
        kernel = tf.cast(dw.kernel, reduced.dtype)
        rate = dw.dilation_rate[0]
        if rate == 1:
            padded = tf.pad(reduced, [[0, 0], [1, 1], [1, 1], [0, 0]])
            return tf.nn.depthwise_conv2d(padded, kernel, (1, 2, 2, 1), "VALID")
        if rate % 2 == 0:
            return tf.nn.depthwise_conv2d(
                subsampled, kernel, (1, 1, 1, 1), "SAME", dilations=(rate // 2, rate // 2)
            )
        return _subsample(dw(reduced))

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        if self.strides == 2:
            h, w = _ceil2(h), _ceil2(w)
        return (b, h, w, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "branches": self.branches,
            "receptive_limit": self.receptive_limit,
        }


def eesp_unit(x, filters, name, *, strides=1, branches=4, receptive_limit=7):
    """Applies ``EESPUnit(filters, strides, branches, receptive_limit, name=name)`` to ``x``.

    Example:
        >>> tuple(eesp_unit(keras.Input((16, 12, 64)), 64, "eesp").shape)
        (None, 16, 12, 64)
    """
    return EESPUnit(
        filters, strides=strides, branches=branches, receptive_limit=receptive_limit, name=name
    )(x)


@keras.saving.register_keras_serializable(package="kseg")
class EESPDownsampler(CompositeLayer):
    """ESPNetV2's strided EESP (Mehta et al. 2019, Fig. 1e): ``concat(avgpool3×3/2(x),
    EESP/2(x))``, plus a projection of the pooled input image, → PReLU.

    Called on ``x`` or on ``[x, image]``, where ``image`` is the input image average-pooled to
    the output size (input reinforcement: ``CBR 3×3 → CB 1×1`` to ``filters`` channels, added).

    Args:
        filters: output channels (``filters - C`` from the strided ``EESPUnit``).
        branches, receptive_limit: of the EESP unit.

    Example:
        >>> import numpy as np
        >>> EESPDownsampler(128)(np.zeros((1, 16, 12, 32), "float32")).shape
        TensorShape([1, 8, 6, 128])
    """

    def __init__(self, filters, branches=4, receptive_limit=9, **kwargs):
        super().__init__(**kwargs)
        check_int("EESPDownsampler", "filters", filters)
        check_int("EESPDownsampler", "branches", branches)
        check_int("EESPDownsampler", "receptive_limit", receptive_limit, minimum=3)
        self.filters = filters
        self.branches = branches
        self.receptive_limit = receptive_limit

    def _check_shapes(self, shapes):
        if len(shapes) not in (1, 2):
            raise ValueError(
                "EESPDownsampler: expects x or [x, image]. "
                f"Received: input_shape={self._shape_repr(shapes)}"
            )
        super()._check_shapes(shapes)
        if self.filters <= shapes[0][-1]:
            raise ValueError(
                f"EESPDownsampler: filters must be more than the input channels "
                f"({shapes[0][-1]}). Received: filters={self.filters!r}"
            )

    def _create(self, shapes):
        policy = self.dtype_policy
        self.pool = [
            layers.ZeroPadding2D(1, name="avg_pad", dtype=policy),
            layers.AveragePooling2D(3, strides=2, name="avg", dtype=policy),
        ]
        self.eesp = EESPUnit(
            self.filters - shapes[0][-1],
            strides=2,
            branches=self.branches,
            receptive_limit=self.receptive_limit,
            name="eesp",
            dtype=policy,
        )
        # built here so its layers are created (and seeded) before the reinforcement's
        self.eesp.build(shapes[0])
        self.reinforcement = []
        if len(shapes) == 2:
            image = shapes[1][-1]
            self.reinforcement = _cbr(self, image, image, 3, "reinf1") + _cbr(
                self, image, self.filters, 1, "reinf2", act=False
            )
        self.prelu = prelu("prelu", policy)

    def call(self, inputs, training=None):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        y = tf.concat([_run(self.pool, x, training), self.eesp(x, training=training)], axis=-1)
        if self.reinforcement:
            y = y + _run(self.reinforcement, inputs[1], training)
        return self.prelu(y)

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, _ceil2(h), _ceil2(w), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "branches": self.branches,
            "receptive_limit": self.receptive_limit,
        }


def eesp_downsampler(x, filters, name, *, image=None, branches=4, receptive_limit=9):
    """Applies ``EESPDownsampler(filters, branches, receptive_limit, name=name)`` to ``x``
    (and ``image``, the input image average-pooled to the output size, when given).

    Example:
        >>> tuple(eesp_downsampler(keras.Input((16, 12, 32)), 128, "down").shape)
        (None, 8, 6, 128)
    """
    layer = EESPDownsampler(filters, branches=branches, receptive_limit=receptive_limit, name=name)
    return layer(x if image is None else [x, image])


PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)


@keras.saving.register_keras_serializable(package="kseg")
class EfficientPyramidPooling(CompositeLayer):
    """ESPNetV2's efficient pyramid pooling (Mehta et al. 2019; the authors' EdgeNets
    ``EfficientPyrPool``).

    ``CBR 1×1`` to ``projection`` channels; at each scale of 2.0, 1.5, 1.0, 0.5, 0.1 (sizes
    ``ceil(h·s)``, at least 5) a depth-wise 3×3 convolution, brought back to the input size;
    concatenation → BN → PReLU → channel shuffle (5 groups) → grouped 3×3 CBR (``projection``
    groups) back to ``projection`` channels (run as the equal depth-wise convolution summed over
    the scales, see ``_fuse_conv``) → 1×1
    convolution to ``filters`` (→ BN → PReLU unless ``last_bn_act`` is False). The authors
    resample with adaptive average pooling where a map shrinks and bilinearly where it grows;
    here every resampling is bilinear (``tf.image.resize``: any size, one TFLite built-in op),
    with the same weights and multiply-adds.

    Args:
        projection: channels of the pyramid.
        filters: output channels.
        last_bn_act: end with BN → PReLU (False: the output convolution has a bias instead).

    Example:
        >>> import numpy as np
        >>> EfficientPyramidPooling(9, 32)(np.zeros((1, 8, 6, 64), "float32")).shape
        TensorShape([1, 8, 6, 32])
    """

    def __init__(self, projection, filters, last_bn_act=True, **kwargs):
        super().__init__(**kwargs)
        check_int("EfficientPyramidPooling", "projection", projection)
        check_int("EfficientPyramidPooling", "filters", filters)
        self.projection = projection
        self.filters = filters
        self.last_bn_act = bool(last_bn_act)

    def _create(self, shapes):
        policy, projection = self.dtype_policy, self.projection
        self.project = _cbr(self, shapes[0][-1], projection, 1, "project")
        self.dws, self.resizes, self.restores = [], [], []
        for i, scale in enumerate(PYRAMID_SCALES):
            self.dws.append(
                layers.DepthwiseConv2D(
                    3, padding="same", use_bias=False, name=f"dw{i}", dtype=policy
                )
            )
            if scale != 1.0:
                self.resizes.append(ScaleResize(scale, name=f"resize{i}", dtype=policy))
                self.restores.append(Resize(name=f"restore{i}", dtype=policy))
            else:
                self.resizes.append(None)
                self.restores.append(None)
        self.merge = _br(self, "merge")
        pyramid = len(PYRAMID_SCALES) * projection
        self.fuse = _cbr(self, pyramid, projection, 3, "fuse", groups=projection)
        self.out = [
            layers.Conv2D(self.filters, 1, use_bias=not self.last_bn_act, name="out", dtype=policy)
        ] + (_br(self, "out") if self.last_bn_act else [])

    def call(self, x, training=None):
        x = _run(self.project, x, training)
        scaled = []
        for dw, resize, restore in zip(self.dws, self.resizes, self.restores):
            scaled.append(dw(x) if resize is None else restore([dw(resize(x)), x]))
        y = _run(self.merge, tf.concat(scaled, axis=-1), training)
        y = _run(self.fuse[1:], self._fuse_conv(y), training)
        return _run(self.out, y, training)

    def _fuse_conv(self, y):
        """The authors' channel shuffle (5 groups) + grouped 3×3 convolution (``projection``
        groups of 5 channels: output ``j`` reads channel ``j`` of every scale), written as a
        depth-wise 3×3 convolution of the unshuffled channels summed over the scales: the
        same weights (``fuse``'s kernel) and multiply-adds, but TFLite/XNNPACK run a
        depth-wise convolution and a sum ~8x faster than the TRANSPOSE and the grouped
        convolution of 1 output channel per group (benchmarks/RESULTS.md, issue 15)."""
        scales, projection, conv = len(PYRAMID_SCALES), self.projection, self.fuse[0]
        if not conv.built:  # built where calling it built it, so weights keep their order
            conv.build(tuple(y.shape))
        kernel = tf.reshape(tf.cast(conv.kernel, y.dtype), (3, 3, scales * projection, 1))
        y = tf.nn.depthwise_conv2d(y, kernel, (1, 1, 1, 1), "SAME")
        shape = tf.shape(y)
        y = tf.reshape(y, tf.stack([shape[0], shape[1], shape[2], scales, projection]))
        return tf.reduce_sum(y, axis=3)

    def _output_shape(self, shapes):
        return (*shapes[0][:3], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "projection": self.projection,
            "filters": self.filters,
            "last_bn_act": self.last_bn_act,
        }


def efficient_pyramid_pooling(x, projection, filters, name, *, last_bn_act=True):
    """Applies ``EfficientPyramidPooling(projection, filters, last_bn_act, name=name)`` to ``x``.

    Example:
        >>> tuple(efficient_pyramid_pooling(keras.Input((8, 6, 64)), 9, 32, "epp").shape)
        (None, 8, 6, 32)
    """
    return EfficientPyramidPooling(projection, filters, last_bn_act=last_bn_act, name=name)(x)


@keras.saving.register_keras_serializable(package="kseg")
class EfficientPWConv(CompositeLayer):
    """ESPNetV2's efficient point-wise convolution (the authors' EdgeNets ``EfficientPWConv``).

    A grouped 3×3 CBR (``gcd(C, filters)`` groups) multiplied by a per-channel gate
    ``sigmoid(1×1 conv(global average))``.

    Args:
        filters: output channels.

    Example:
        >>> import numpy as np
        >>> EfficientPWConv(64)(np.zeros((1, 8, 6, 256), "float32")).shape
        TensorShape([1, 8, 6, 64])
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        check_int("EfficientPWConv", "filters", filters)
        self.filters = filters

    def _create(self, shapes):
        channels = shapes[0][-1]
        self.gate = layers.Conv2D(
            self.filters, 1, use_bias=False, name="gate", dtype=self.dtype_policy
        )
        groups = math.gcd(int(channels), self.filters)
        self.expand = _cbr(self, channels, self.filters, 3, "expand", groups=groups)

    def call(self, x, training=None):
        gate = tf.sigmoid(self.gate(tf.reduce_mean(x, axis=[1, 2], keepdims=True)))
        return _run(self.expand, x, training) * gate

    def _output_shape(self, shapes):
        return (*shapes[0][:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def efficient_pw_conv(x, filters, name):
    """Applies ``EfficientPWConv(filters, name=name)`` to ``x``.

    Example:
        >>> tuple(efficient_pw_conv(keras.Input((8, 6, 256)), 64, "pw").shape)
        (None, 8, 6, 64)
    """
    return EfficientPWConv(filters, name=name)(x)

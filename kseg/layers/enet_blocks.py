"""ENet's blocks (Paszke, Chaurasia, Kim, Culurciello, "ENet: A Deep Neural Network
Architecture for Real-Time Semantic Segmentation", 2016).

ENet is a ResNet-like stack of bottlenecks on an early-downsampled input:

* the **initial block** concatenates a 3×3 stride-2 convolution (13 filters) with a 2×2 max
  pooling of the image (3 channels) into 16 channels at half resolution;
* a **bottleneck** adds to its input a branch ``1×1 projection (C/4) → conv → 1×1 expansion`` (BN
  after each, PReLU after the first two, spatial dropout at the end) and applies a PReLU to the
  sum. The middle convolution is a plain 3×3 (*regular*), a dilated 3×3 (*dilated*), or a 5×1
  followed by a 1×5 (*asymmetric*);
* the **down-sampling** bottleneck's projection is a 2×2 stride-2 convolution, and its shortcut
  a max pooling (whose argmax indices it keeps) zero-padded to the output channels;
* the **up-sampling** bottleneck's middle convolution is a 3×3 stride-2 transposed convolution;
  its shortcut is a 1×1 convolution + BN unpooled with the indices of the matching
  down-sampling bottleneck (``kseg.layers.MaxUnpooling2D``, as SegNet).

Each block is a serializable layer (``ENetInitialBlock``, ``ENetBottleneck``,
``ENetDownsamplingBottleneck``, ``ENetUpsamplingBottleneck``); the lower-case functions apply
them to a Keras tensor. Pooling works in ceil mode and the unpooling takes the pre-pool tensor's
size, so any input size works.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers._composite import CompositeLayer, check_int, check_rate
from kseg.layers.crop import CropLike
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D


def prelu(name, dtype=None):
    """A PReLU with one slope per channel, initialised to 0.25 (as Torch/PyTorch's ``PReLU``).

    Example:
        >>> import numpy as np
        >>> prelu("act")(np.array([[[[-4.0, 2.0]]]], "float32")).numpy().tolist()
        [[[[-1.0, 2.0]]]]
    """
    return layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25),
        shared_axes=[1, 2],
        name=name,
        dtype=dtype,
    )


@keras.saving.register_keras_serializable(package="kseg")
class ChannelZeroPad(keras.layers.Layer):
    """Appends ``extra`` all-zero channels: ENet's down-sampling shortcut (``[x, 0]``).

    Args:
        extra: the number of zero channels appended (>= 0).

    Example:
        >>> import numpy as np
        >>> ChannelZeroPad(2)(np.ones((1, 1, 1, 1), "float32")).numpy().ravel().tolist()
        [1.0, 0.0, 0.0]
    """

    def __init__(self, extra, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(extra, int) or isinstance(extra, bool) or extra < 0:
            raise ValueError(
                f"ChannelZeroPad: extra must be an int >= 0. Received: extra={extra!r}"
            )
        self.extra = extra

    def call(self, x):
        if not self.extra:
            return x
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra]])

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else channels + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


def _ceil2(n):
    return None if n is None else -(-n // 2)


class _ENetBlock(CompositeLayer):
    """Shared arguments and sublayer factories of the ENet bottlenecks."""

    def __init__(self, filters, dropout=0.1, projection_ratio=4, **kwargs):
        super().__init__(**kwargs)
        block = type(self).__name__
        check_int(block, "projection_ratio", projection_ratio)
        check_int(block, "filters", filters, minimum=projection_ratio)
        check_rate(block, "dropout", dropout)
        self.filters = filters
        self.dropout = dropout
        self.projection_ratio = projection_ratio
        self.internal = filters // projection_ratio

    def _conv(self, filters, kernel_size, name, **kwargs):
        return layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            use_bias=False,
            name=name,
            dtype=self.dtype_policy,
            **kwargs,
        )

    def _bn(self, name):
        return layers.BatchNormalization(epsilon=1e-3, name=name, dtype=self.dtype_policy)

    def _prelu(self, name):
        return prelu(name, dtype=self.dtype_policy)

    def _dropout(self):
        return layers.SpatialDropout2D(self.dropout, name="dropout", dtype=self.dtype_policy)

    def _create_tail(self, filters):
        """The layers after the middle convolution, created in this order (seeded weights)."""
        self.conv_prelu = self._prelu("conv_prelu")
        self.conv_bn = self._bn("conv_bn")
        self.expand = self._conv(filters, 1, "expand")
        self.expand_bn = self._bn("expand_bn")
        self.dropout_layer = self._dropout()
        self.prelu = self._prelu("prelu")

    def _expand(self, y, training):
        """The shared tail: middle BN → PReLU → 1×1 expansion → BN → spatial dropout."""
        y = self.conv_prelu(self.conv_bn(y, training=training))
        y = self.expand_bn(self.expand(y), training=training)
        return self.dropout_layer(y, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "dropout": self.dropout,
            "projection_ratio": self.projection_ratio,
        }


class ConvPoolDownsampler(CompositeLayer):
    """``concat(conv3×3/2 (filters - C), maxpool2×2(x)) → BN → activation``, ceil mode: ENet's
    initial block and, with a ReLU, ERFNet's down-sampler. Subclasses set ``_activate``.
    """

    def __init__(self, filters=16, **kwargs):
        super().__init__(**kwargs)
        check_int(type(self).__name__, "filters", filters, minimum=2)
        self.filters = filters
        policy = self.dtype_policy
        self.pool = layers.MaxPooling2D(2, padding="same", name="pool", dtype=policy)
        self.bn = layers.BatchNormalization(epsilon=1e-3, name="bn", dtype=policy)

    def _check_shapes(self, shapes):
        super()._check_shapes(shapes)
        if self.filters <= shapes[0][-1]:
            raise ValueError(
                f"{type(self).__name__}: filters must be more than the input channels "
                f"({shapes[0][-1]}). Received: filters={self.filters!r}"
            )

    def _create(self, shapes):
        self.conv = layers.Conv2D(
            self.filters - shapes[0][-1],
            3,
            strides=2,
            padding="same",
            name="conv",
            dtype=self.dtype_policy,
        )

    def _activate(self, y):
        raise NotImplementedError

    def call(self, x, training=None):
        y = tf.concat([self.conv(x), self.pool(x)], axis=-1)
        return self._activate(self.bn(y, training=training))

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, _ceil2(h), _ceil2(w), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="kseg")
class ENetInitialBlock(ConvPoolDownsampler):
    """ENet's initial block (Paszke et al. 2016, Fig. 2a): ``concat(conv3×3/2, maxpool2×2)``
    → BN → PReLU.

    The convolution has ``filters - C`` filters (paper: 13 for an RGB image), the max pooling
    keeps the ``C`` input channels; both work in ceil mode.

    Args:
        filters: output channels, more than the input's (paper: 16).

    Example:
        >>> import numpy as np
        >>> ENetInitialBlock(16)(np.zeros((1, 15, 9, 3), "float32")).shape
        TensorShape([1, 8, 5, 16])
    """

    def __init__(self, filters=16, **kwargs):
        super().__init__(filters, **kwargs)
        self.prelu = prelu("prelu", dtype=self.dtype_policy)

    def _activate(self, y):
        return self.prelu(y)


ENET_KINDS = ("regular", "dilated", "asymmetric")


@keras.saving.register_keras_serializable(package="kseg")
class ENetBottleneck(_ENetBlock):
    """ENet's regular, dilated or asymmetric bottleneck (Paszke et al. 2016, Fig. 2b).

    ``PReLU(x + dropout(BN(1×1(PReLU(BN(conv(PReLU(BN(1×1(x))))))))))``: the branch projects to
    ``filters // projection_ratio`` channels; ``conv`` is a 3×3 (*regular*), a 3×3 dilated by
    ``dilation_rate`` (*dilated*) or a ``k×1`` then ``1×k`` pair (*asymmetric*, ``k =
    asymmetric_size``). Same size and channels in and out.

    Args:
        filters: channels (the input's).
        kind: "regular", "dilated" or "asymmetric".
        dilation_rate: of the dilated kind (> 1; 1 for the others).
        asymmetric_size: ``k`` of the asymmetric kind (paper: 5).
        dropout: spatial dropout rate (paper: 0.01 in stage 1, 0.1 after).
        projection_ratio: the branch works at ``filters // projection_ratio`` channels (4).

    Example:
        >>> import numpy as np
        >>> block = ENetBottleneck(64, kind="asymmetric")
        >>> block(np.zeros((1, 32, 32, 64), "float32")).shape
        TensorShape([1, 32, 32, 64])
    """

    def __init__(
        self,
        filters,
        kind="regular",
        dilation_rate=1,
        asymmetric_size=5,
        dropout=0.1,
        projection_ratio=4,
        **kwargs,
    ):
        super().__init__(filters, dropout=dropout, projection_ratio=projection_ratio, **kwargs)
        if kind not in ENET_KINDS:
            raise ValueError(
                f"ENetBottleneck: kind must be one of {ENET_KINDS}. Received: kind={kind!r}"
            )
        check_int("ENetBottleneck", "dilation_rate", dilation_rate)
        check_int("ENetBottleneck", "asymmetric_size", asymmetric_size)
        if (kind == "dilated") != (dilation_rate > 1):
            raise ValueError(
                "ENetBottleneck: dilation_rate must be > 1 for kind='dilated' and 1 otherwise. "
                f"Received: kind={kind!r}, dilation_rate={dilation_rate!r}"
            )
        self.kind = kind
        self.dilation_rate = dilation_rate
        self.asymmetric_size = asymmetric_size
        n, k = self.internal, asymmetric_size
        # created in the order of the original builder, so seeded weights stay the same
        self.project = self._conv(n, 1, "project")
        self.project_prelu = self._prelu("project_prelu")
        self.project_bn = self._bn("project_bn")
        if kind == "asymmetric":
            self.convs = [
                self._conv(n, (k, 1), f"conv_{k}x1"),
                self._conv(n, (1, k), f"conv_1x{k}"),
            ]
        else:
            self.convs = [self._conv(n, 3, "conv", dilation_rate=dilation_rate)]
        self._create_tail(filters)

    def _check_shapes(self, shapes):
        super()._check_shapes(shapes)
        if shapes[0][-1] != self.filters:
            raise ValueError(
                f"ENetBottleneck: the input has {shapes[0][-1]} channels, the block keeps them. "
                f"Received: filters={self.filters!r}"
            )

    def call(self, x, training=None):
        y = self.project_prelu(self.project_bn(self.project(x), training=training))
        for conv in self.convs:
            y = conv(y)
        return self.prelu(x + self._expand(y, training))

    def _output_shape(self, shapes):
        return shapes[0]

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "dilation_rate": self.dilation_rate,
            "asymmetric_size": self.asymmetric_size,
        }


@keras.saving.register_keras_serializable(package="kseg")
class ENetDownsamplingBottleneck(_ENetBlock):
    """ENet's down-sampling bottleneck (Paszke et al. 2016, Fig. 2b); returns
    ``[output, indices]``.

    Shortcut: 2×2 max pooling (ceil mode, argmax kept: ``MaxPoolingWithArgmax2D``) zero-padded
    to ``filters`` channels; branch: 2×2 stride-2 projection → 3×3 → 1×1 expansion. ``indices``
    (int32, the pooled input's shape) and the block's input feed the matching
    ``ENetUpsamplingBottleneck``.

    Args:
        filters: output channels, at least the input's.
        dropout: spatial dropout rate.
        projection_ratio: the branch works at ``filters // projection_ratio`` channels (4).

    Example:
        >>> import numpy as np
        >>> y, idx = ENetDownsamplingBottleneck(64)(np.zeros((1, 15, 20, 16), "float32"))
        >>> tuple(y.shape), tuple(idx.shape), idx.dtype.name
        ((1, 8, 10, 64), (1, 8, 10, 16), 'int32')
    """

    def __init__(self, filters, dropout=0.1, projection_ratio=4, **kwargs):
        super().__init__(filters, dropout=dropout, projection_ratio=projection_ratio, **kwargs)
        n = self.internal
        self.pool = MaxPoolingWithArgmax2D(2, name="pool", dtype=self.dtype_policy)
        self.project = self._conv(n, 2, "project", strides=2)
        self.project_prelu = self._prelu("project_prelu")
        self.project_bn = self._bn("project_bn")
        self.conv = self._conv(n, 3, "conv")
        self._create_tail(filters)

    def _check_shapes(self, shapes):
        super()._check_shapes(shapes)
        if self.filters < shapes[0][-1]:
            raise ValueError(
                f"ENetDownsamplingBottleneck: filters must be >= the input channels "
                f"({shapes[0][-1]}). Received: filters={self.filters!r}"
            )

    def _create(self, shapes):
        self.pad = ChannelZeroPad(self.filters - shapes[0][-1], name="pad", dtype=self.dtype_policy)

    def call(self, x, training=None):
        pooled, indices = self.pool(x)
        y = self.project_prelu(self.project_bn(self.project(x), training=training))
        y = self._expand(self.conv(y), training)
        return [self.prelu(self.pad(pooled) + y), indices]

    def _output_shape(self, shapes):
        b, h, w, c = shapes[0]
        return [(b, _ceil2(h), _ceil2(w), self.filters), (b, _ceil2(h), _ceil2(w), c)]

    def compute_output_spec(self, x):
        output, indices = self.compute_output_shape(tuple(x.shape))
        return [
            keras.KerasTensor(output, dtype=self.compute_dtype),
            keras.KerasTensor(indices, dtype="int32"),
        ]


@keras.saving.register_keras_serializable(package="kseg")
class ENetUpsamplingBottleneck(_ENetBlock):
    """ENet's up-sampling bottleneck (Paszke et al. 2016, Table 1): called on
    ``[x, indices, reference]``, back to ``reference``'s size.

    ``indices`` and ``reference`` are the indices and the input of the matching
    ``ENetDownsamplingBottleneck``. Shortcut: 1×1 convolution + BN to ``filters`` channels,
    unpooled to the argmax positions (``MaxUnpooling2D``: every other position is zero);
    branch: 1×1 projection → 3×3 stride-2 transposed convolution (cropped to ``reference``) →
    1×1 expansion.

    Args:
        filters: output channels (the pooled tensor's channels).
        dropout: spatial dropout rate.
        projection_ratio: the branch works at ``filters // projection_ratio`` channels (4).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(1, 15, 20, 16)).astype("float32")
        >>> y, idx = ENetDownsamplingBottleneck(64)(x)
        >>> ENetUpsamplingBottleneck(16)([y, idx, x]).shape
        TensorShape([1, 15, 20, 16])
    """

    _input_dtypes = ("float", "int32", "float")

    def __init__(self, filters, dropout=0.1, projection_ratio=4, **kwargs):
        super().__init__(filters, dropout=dropout, projection_ratio=projection_ratio, **kwargs)
        n, policy = self.internal, self.dtype_policy
        self.shortcut = self._conv(filters, 1, "shortcut")
        self.shortcut_bn = self._bn("shortcut_bn")
        self.unpool = MaxUnpooling2D(2, name="unpool", dtype=policy)
        self.project = self._conv(n, 1, "project")
        self.project_prelu = self._prelu("project_prelu")
        self.project_bn = self._bn("project_bn")
        self.upconv = layers.Conv2DTranspose(
            n, 3, strides=2, padding="same", use_bias=False, name="upconv", dtype=policy
        )
        self.crop = CropLike(name="crop", dtype=policy)
        self._create_tail(filters)

    def _check_shapes(self, shapes):
        if len(shapes) != 3:
            raise ValueError(
                "ENetUpsamplingBottleneck: expects [x, indices, reference]. "
                f"Received: input_shape={self._shape_repr(shapes)}"
            )
        super()._check_shapes(shapes)
        if shapes[1][-1] != self.filters:
            raise ValueError(
                f"ENetUpsamplingBottleneck: filters must equal the pooled channels "
                f"({shapes[1][-1]}). Received: filters={self.filters!r}"
            )

    def call(self, inputs, training=None):
        x, indices, reference = inputs
        shortcut = self.shortcut_bn(self.shortcut(x), training=training)
        shortcut = self.unpool([shortcut, indices, reference])
        y = self.project_prelu(self.project_bn(self.project(x), training=training))
        y = self.crop([self.upconv(y), reference])
        return self.prelu(shortcut + self._expand(y, training))

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[2]
        return (shapes[0][0], h, w, self.filters)


def enet_initial_block(x, name="initial", filters=16):
    """Applies ``ENetInitialBlock(filters, name=name)`` to ``x``.

    Example:
        >>> y = enet_initial_block(keras.Input((None, None, 3)))
        >>> tuple(y.shape)
        (None, None, None, 16)
    """
    return ENetInitialBlock(filters, name=name)(x)


def enet_bottleneck(
    x,
    filters,
    name,
    *,
    dilation_rate=1,
    asymmetric=0,
    dropout=0.1,
    projection_ratio=4,
):
    """Applies an ``ENetBottleneck`` to ``x``: asymmetric with ``k = asymmetric`` when that is
    > 0, dilated when ``dilation_rate`` > 1, regular otherwise.

    Example:
        >>> y = enet_bottleneck(keras.Input((32, 32, 64)), 64, "b1", asymmetric=5)
        >>> tuple(y.shape)
        (None, 32, 32, 64)
    """
    if asymmetric:
        kind, options = "asymmetric", {"asymmetric_size": asymmetric}
    elif dilation_rate != 1:
        kind, options = "dilated", {"dilation_rate": dilation_rate}
    else:
        kind, options = "regular", {}
    return ENetBottleneck(
        filters,
        kind=kind,
        dropout=dropout,
        projection_ratio=projection_ratio,
        name=name,
        **options,
    )(x)


def enet_downsampling_bottleneck(x, filters, name, *, dropout=0.1, projection_ratio=4):
    """Applies an ``ENetDownsamplingBottleneck`` to ``x``; returns ``(output, indices)``.

    Example:
        >>> y, idx = enet_downsampling_bottleneck(keras.Input((15, 20, 16)), 64, "down")
        >>> tuple(y.shape), tuple(idx.shape)
        ((None, 8, 10, 64), (None, 8, 10, 16))
    """
    layer = ENetDownsamplingBottleneck(
        filters, dropout=dropout, projection_ratio=projection_ratio, name=name
    )
    y, indices = layer(x)
    return y, indices


def enet_upsampling_bottleneck(
    x, indices, pre_pool, filters, name, *, dropout=0.1, projection_ratio=4
):
    """Applies an ``ENetUpsamplingBottleneck`` to ``[x, indices, pre_pool]``.

    Example:
        >>> inp = keras.Input((15, 20, 16))
        >>> y, idx = enet_downsampling_bottleneck(inp, 64, "down")
        >>> tuple(enet_upsampling_bottleneck(y, idx, inp, 16, "up").shape)
        (None, 15, 20, 16)
    """
    layer = ENetUpsamplingBottleneck(
        filters, dropout=dropout, projection_ratio=projection_ratio, name=name
    )
    return layer([x, indices, pre_pool])

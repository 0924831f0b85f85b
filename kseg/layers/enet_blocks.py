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

The blocks are functions on Keras tensors (like ``kseg.layers.conv_bn_relu``) building plain
Keras layers named after ``name``; the only ENet-specific layer is ``ChannelZeroPad``. Pooling
works in ceil mode and the unpooling takes the pre-pool tensor's size, so any input size works.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers.crop import CropLike
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D


def prelu(name):
    """A PReLU with one slope per channel, initialised to 0.25 (as Torch/PyTorch's ``PReLU``).

    Example:
        >>> import numpy as np
        >>> prelu("act")(np.array([[[[-4.0, 2.0]]]], "float32")).numpy().tolist()
        [[[[-1.0, 2.0]]]]
    """
    return layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name
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


def _check_filters(block, filters, ratio):
    if not isinstance(filters, int) or isinstance(filters, bool) or filters < ratio:
        raise ValueError(
            f"{block}: filters must be an int >= projection_ratio={ratio}. Received: "
            f"filters={filters!r}"
        )


def _conv(filters, kernel_size, name, **kwargs):
    return layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=name, **kwargs)


def _bn(name):
    return layers.BatchNormalization(epsilon=1e-3, name=name)


def enet_initial_block(x, name="initial", filters=16):
    """ENet's initial block: ``concat(conv3×3/2 (filters - C), maxpool2×2(x))`` → BN → PReLU.

    Args:
        x: the (normalised) image tensor ``[B, H, W, C]``.
        name: prefix of the layer names.
        filters: output channels (paper: 16 = 13 convolution filters + 3 image channels).

    Returns:
        ``[B, ceil(H/2), ceil(W/2), filters]``.

    Example:
        >>> y = enet_initial_block(keras.Input((None, None, 3)))
        >>> tuple(y.shape)
        (None, None, None, 16)
    """
    channels = x.shape[-1]
    if not isinstance(filters, int) or channels is None or filters <= channels:
        raise ValueError(
            f"enet_initial_block: filters must be an int > the input channels ({channels}). "
            f"Received: filters={filters!r}"
        )
    conv = layers.Conv2D(filters - channels, 3, strides=2, padding="same", name=f"{name}_conv")(x)
    pool = layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)
    y = layers.Concatenate(name=f"{name}_concat")([conv, pool])
    return prelu(f"{name}_prelu")(_bn(f"{name}_bn")(y))


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
    """ENet's regular, dilated or asymmetric bottleneck (same size and channels in and out).

    Args:
        x: input ``[B, H, W, filters]``.
        filters: channels (the input's).
        name: prefix of the layer names.
        dilation_rate: > 1 gives the *dilated* bottleneck.
        asymmetric: kernel length ``k`` > 0 gives the *asymmetric* bottleneck (``k×1`` then
            ``1×k``; paper: 5).
        dropout: spatial dropout rate (paper: 0.01 in stage 1, 0.1 after).
        projection_ratio: the branch works at ``filters // projection_ratio`` channels (4).

    Example:
        >>> y = enet_bottleneck(keras.Input((32, 32, 64)), 64, "b1", asymmetric=5)
        >>> tuple(y.shape)
        (None, 32, 32, 64)
    """
    _check_filters("enet_bottleneck", filters, projection_ratio)
    if x.shape[-1] != filters:
        raise ValueError(
            f"enet_bottleneck: the input has {x.shape[-1]} channels, the block keeps them. "
            f"Received: filters={filters!r}"
        )
    internal = filters // projection_ratio
    y = _conv(internal, 1, f"{name}_project")(x)
    y = prelu(f"{name}_project_prelu")(_bn(f"{name}_project_bn")(y))
    if asymmetric:
        y = _conv(internal, (asymmetric, 1), f"{name}_conv_{asymmetric}x1")(y)
        y = _conv(internal, (1, asymmetric), f"{name}_conv_1x{asymmetric}")(y)
    else:
        y = _conv(internal, 3, f"{name}_conv", dilation_rate=dilation_rate)(y)
    y = prelu(f"{name}_conv_prelu")(_bn(f"{name}_conv_bn")(y))
    y = _conv(filters, 1, f"{name}_expand")(y)
    y = _bn(f"{name}_expand_bn")(y)
    y = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(y)
    y = layers.Add(name=f"{name}_add")([x, y])
    return prelu(f"{name}_prelu")(y)


def enet_downsampling_bottleneck(x, filters, name, *, dropout=0.1, projection_ratio=4):
    """ENet's down-sampling bottleneck; returns ``(output, indices)``.

    Shortcut: 2×2 max pooling (ceil mode, argmax kept) zero-padded to ``filters`` channels;
    branch: 2×2 stride-2 projection → 3×3 → 1×1 expansion. ``indices`` (with ``x``, the
    pre-pool tensor) feed the matching ``enet_upsampling_bottleneck``.

    Example:
        >>> y, idx = enet_downsampling_bottleneck(keras.Input((15, 20, 16)), 64, "down")
        >>> tuple(y.shape), tuple(idx.shape)
        ((None, 8, 10, 64), (None, 8, 10, 16))
    """
    _check_filters("enet_downsampling_bottleneck", filters, projection_ratio)
    channels = x.shape[-1]
    if channels is None or filters < channels:
        raise ValueError(
            f"enet_downsampling_bottleneck: filters must be >= the input channels ({channels}). "
            f"Received: filters={filters!r}"
        )
    internal = filters // projection_ratio
    pooled, indices = MaxPoolingWithArgmax2D(2, name=f"{name}_pool")(x)
    shortcut = ChannelZeroPad(filters - channels, name=f"{name}_pad")(pooled)
    y = _conv(internal, 2, f"{name}_project", strides=2)(x)
    y = prelu(f"{name}_project_prelu")(_bn(f"{name}_project_bn")(y))
    y = _conv(internal, 3, f"{name}_conv")(y)
    y = prelu(f"{name}_conv_prelu")(_bn(f"{name}_conv_bn")(y))
    y = _conv(filters, 1, f"{name}_expand")(y)
    y = _bn(f"{name}_expand_bn")(y)
    y = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return prelu(f"{name}_prelu")(y), indices


def enet_upsampling_bottleneck(
    x, indices, pre_pool, filters, name, *, dropout=0.1, projection_ratio=4
):
    """ENet's up-sampling bottleneck: back to the size of ``pre_pool``.

    Shortcut: 1×1 convolution + BN to ``filters`` channels, unpooled to the argmax positions in
    ``indices`` (``MaxUnpooling2D``); branch: 1×1 projection → 3×3 stride-2 transposed
    convolution → 1×1 expansion.

    Args:
        x: input ``[B, h, w, C]``.
        indices: the indices of the matching down-sampling bottleneck (``[B, h, w, filters]``).
        pre_pool: that bottleneck's input (its size is the output's).
        filters: output channels (the pooled tensor's channels).

    Example:
        >>> inp = keras.Input((15, 20, 16))
        >>> y, idx = enet_downsampling_bottleneck(inp, 64, "down")
        >>> tuple(enet_upsampling_bottleneck(y, idx, inp, 16, "up").shape)
        (None, 15, 20, 16)
    """
    _check_filters("enet_upsampling_bottleneck", filters, projection_ratio)
    if indices.shape[-1] != filters:
        raise ValueError(
            f"enet_upsampling_bottleneck: filters must equal the pooled channels "
            f"({indices.shape[-1]}). Received: filters={filters!r}"
        )
    internal = filters // projection_ratio
    shortcut = _bn(f"{name}_shortcut_bn")(_conv(filters, 1, f"{name}_shortcut")(x))
    shortcut = MaxUnpooling2D(2, name=f"{name}_unpool")([shortcut, indices, pre_pool])
    y = _conv(internal, 1, f"{name}_project")(x)
    y = prelu(f"{name}_project_prelu")(_bn(f"{name}_project_bn")(y))
    y = layers.Conv2DTranspose(
        internal, 3, strides=2, padding="same", use_bias=False, name=f"{name}_upconv"
    )(y)
    y = CropLike(name=f"{name}_crop")([y, pre_pool])
    y = prelu(f"{name}_conv_prelu")(_bn(f"{name}_conv_bn")(y))
    y = _conv(filters, 1, f"{name}_expand")(y)
    y = _bn(f"{name}_expand_bn")(y)
    y = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return prelu(f"{name}_prelu")(y)

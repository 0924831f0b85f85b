"""ERFNet's blocks (Romera, Álvarez, Bergasa, Arroyo, "ERFNet: Efficient Residual Factorized
ConvNet for Real-time Semantic Segmentation", IEEE T-ITS 2017).

* the **down-sampler** (from ENet's initial block): ``concat(conv3×3/2, maxpool2×2) → BN → ReLU``;
* **non-bottleneck-1D**: a residual block whose two 3×3 convolutions are each factorised into a
  3×1 and a 1×3 convolution (ReLU between, BN after each pair); the second pair is dilated.
  With 33 % fewer weights than a 3×3 pair it keeps the full width (no bottleneck);
* the **up-sampler**: a 3×3 stride-2 transposed convolution → BN → ReLU.

Functions on Keras tensors building plain Keras layers named after ``name`` (biases on every
convolution, as the authors' PyTorch code).
"""

from __future__ import annotations

from keras import layers


def _bn(name):
    return layers.BatchNormalization(epsilon=1e-3, name=name)


def erfnet_downsampler(x, filters, name):
    """``concat(conv3×3 stride 2 (filters - C), maxpool2×2(x)) → BN → ReLU``.

    Example:
        >>> import keras
        >>> tuple(erfnet_downsampler(keras.Input((15, 20, 3)), 16, "down").shape)
        (None, 8, 10, 16)
    """
    channels = x.shape[-1]
    if not isinstance(filters, int) or channels is None or filters <= channels:
        raise ValueError(
            f"erfnet_downsampler: filters must be an int > the input channels ({channels}). "
            f"Received: filters={filters!r}"
        )
    conv = layers.Conv2D(filters - channels, 3, strides=2, padding="same", name=f"{name}_conv")(x)
    pool = layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)
    y = layers.Concatenate(name=f"{name}_concat")([conv, pool])
    return layers.ReLU(name=f"{name}_relu")(_bn(f"{name}_bn")(y))


def non_bottleneck_1d(x, name, *, dilation_rate=1, dropout=0.0):
    """ERFNet's non-bottleneck-1D residual block (channels kept).

    ``3×1 → ReLU → 1×3 → BN → ReLU → 3×1 (dilated) → ReLU → 1×3 (dilated) → BN → dropout``,
    added to the input, then ReLU.

    Args:
        x: input ``[B, H, W, C]``.
        name: prefix of the layer names.
        dilation_rate: dilation of the second pair (paper: 1, or 2, 4, 8, 16 at 1/8).
        dropout: spatial dropout rate (paper: 0.03 at 1/4, 0.3 at 1/8, 0 in the decoder).

    Example:
        >>> import keras
        >>> tuple(non_bottleneck_1d(keras.Input((8, 8, 16)), "nb", dilation_rate=2).shape)
        (None, 8, 8, 16)
    """
    channels = x.shape[-1]
    y = x
    for part, rate in ((1, 1), (2, dilation_rate)):
        y = layers.Conv2D(
            channels, (3, 1), padding="same", dilation_rate=(rate, 1), name=f"{name}_conv3x1_{part}"
        )(y)
        y = layers.ReLU(name=f"{name}_relu3x1_{part}")(y)
        y = layers.Conv2D(
            channels, (1, 3), padding="same", dilation_rate=(1, rate), name=f"{name}_conv1x3_{part}"
        )(y)
        y = _bn(f"{name}_bn{part}")(y)
        if part == 1:
            y = layers.ReLU(name=f"{name}_relu1x3_1")(y)
    if dropout:
        y = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(y)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.ReLU(name=f"{name}_relu")(y)


def erfnet_upsampler(x, filters, name):
    """A 3×3 stride-2 transposed convolution → BN → ReLU (output ``2H × 2W``).

    Example:
        >>> import keras
        >>> tuple(erfnet_upsampler(keras.Input((4, 5, 16)), 8, "up").shape)
        (None, 8, 10, 8)
    """
    y = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"{name}_conv")(x)
    return layers.ReLU(name=f"{name}_relu")(_bn(f"{name}_bn")(y))

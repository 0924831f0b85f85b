"""The convolution → batch norm → ReLU block that the models and backbones share.

Weights of a saved model are matched to the layers by their order and class, and users (and
``keras.applications`` weight transfer) find layers by name, so the block's layer names are
chosen by the caller and stay what each architecture has always used:

- plain: ``name``, ``{name}_bn``, ``{name}_relu`` (``bn_name`` and ``relu_name`` override the
  last two, e.g. VGG16-BN's ``block1_conv1``, ``block1_bn1``, ``block1_relu1``);
- ``separable=True``: ``{name}_depthwise``, ``{name}_depthwise_bn``, ``{name}_depthwise_relu``,
  ``{name}_pointwise``, ``{name}_pointwise_bn``, ``{name}_pointwise_relu`` (BN and ReLU after
  both parts, as DeepLab's separable convolutions);
- ``padding="symmetric"`` with a stride: a ``{name}_pad`` zero padding first.
"""

from __future__ import annotations

from keras import layers

from kseg.layers.batch_norm import BatchNormalization

PADDINGS = ("same", "valid", "symmetric")


def _check(name, filters, kernel_size, strides, padding, separable, transposed):
    if not isinstance(name, str) or not name:
        raise ValueError(f"conv_bn_relu: name must be a non-empty string. Received: name={name!r}")
    if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
        raise ValueError(
            f"conv_bn_relu: filters must be a positive int. Received: filters={filters!r}"
        )
    if padding not in PADDINGS:
        raise ValueError(
            f"conv_bn_relu: padding must be one of {PADDINGS}. Received: padding={padding!r}"
        )
    if separable and transposed:
        raise ValueError(
            "conv_bn_relu: separable and transposed cannot be combined. "
            f"Received: separable={separable!r}, transposed={transposed!r}"
        )
    if padding == "symmetric" and transposed:
        raise ValueError(
            "conv_bn_relu: symmetric padding applies to strided convolutions, not transposed "
            f"ones. Received: padding={padding!r}, transposed={transposed!r}"
        )
    del kernel_size, strides  # checked by the Keras layers themselves


def conv_block_layers(
    filters,
    kernel_size,
    name,
    *,
    strides=1,
    dilation_rate=1,
    padding="same",
    separable=False,
    transposed=False,
    use_bias=False,
    kernel_initializer="glorot_uniform",
    epsilon=1e-3,
    bn_name=None,
    dtype=None,
):
    """The block's weighted layers, without ReLU: ``[conv, bn]`` or, separable,
    ``[depthwise, depthwise_bn, pointwise, pointwise_bn]``.

    For layers that own their sub-layers and apply the activation themselves (``ASPP``);
    models use ``conv_bn_relu``. ``padding="symmetric"`` gives "valid" convolutions here: the
    caller pads (``conv_bn_relu`` does). Arguments as ``conv_bn_relu``; ``dtype`` (a dtype
    policy) is given to every layer, so an owning layer's policy reaches them.

    Example:
        >>> [layer.name for layer in conv_block_layers(8, 3, "aspp1", separable=True)]
        ['aspp1_depthwise', 'aspp1_depthwise_bn', 'aspp1_pointwise', 'aspp1_pointwise_bn']
    """
    _check(name, filters, kernel_size, strides, padding, separable, transposed)
    conv_padding = "same" if padding == "same" else "valid"
    if padding == "symmetric" and strides in (1, (1, 1)):
        conv_padding = "same"  # nothing to align without a stride
    if separable:
        return [
            layers.DepthwiseConv2D(
                kernel_size,
                strides=strides,
                padding=conv_padding,
                dilation_rate=dilation_rate,
                use_bias=False,
                name=f"{name}_depthwise",
                dtype=dtype,
            ),
            BatchNormalization(epsilon=epsilon, name=f"{name}_depthwise_bn", dtype=dtype),
            layers.Conv2D(
                filters,
                1,
                padding="same",
                use_bias=use_bias,
                kernel_initializer=kernel_initializer,
                name=f"{name}_pointwise",
                dtype=dtype,
            ),
            BatchNormalization(epsilon=epsilon, name=f"{name}_pointwise_bn", dtype=dtype),
        ]
    conv = layers.Conv2DTranspose if transposed else layers.Conv2D
    return [
        conv(
            filters,
            kernel_size,
            strides=strides,
            padding=conv_padding,
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            name=name,
            dtype=dtype,
        ),
        BatchNormalization(epsilon=epsilon, name=bn_name or f"{name}_bn", dtype=dtype),
    ]


def conv_bn_relu(
    x,
    filters,
    kernel_size,
    name,
    *,
    strides=1,
    dilation_rate=1,
    padding="same",
    separable=False,
    transposed=False,
    use_bias=False,
    kernel_initializer="glorot_uniform",
    epsilon=1e-3,
    relu=True,
    bn_name=None,
    relu_name=None,
    track=None,
):
    """Convolution, batch normalisation and ReLU on a Keras tensor ``x``.

    Args:
        x: input tensor ``[B, H, W, C]``.
        filters: output channels.
        kernel_size: kernel of the (depthwise) convolution.
        name: name of the convolution; the other layers' names derive from it (module doc).
        strides, dilation_rate: of the (depthwise) convolution.
        padding: "same", "valid" or "symmetric" (DeepLab's fixed padding: a strided
            convolution is preceded by a ``{name}_pad`` zero padding of ``k_eff - 1`` split
            evenly, so its outputs stay aligned with the input grid; "same" when unstrided).
        separable: depthwise convolution then 1×1 pointwise convolution, each with BN (+ReLU).
        transposed: a ``Conv2DTranspose`` instead of a ``Conv2D``.
        use_bias: bias in the (pointwise) convolution (batch norm usually makes it redundant).
        kernel_initializer: of the (pointwise) convolution.
        epsilon: batch norm epsilon.
        relu: add the ReLU(s); False gives convolution + BN only.
        bn_name, relu_name: names of the (plain) block's BN and ReLU layers.
        track: optional callable given each convolution layer before it is applied (e.g. a
            ``LayerRecorder``, to copy pretrained weights by name later).

    Returns:
        The output tensor.

    Example:
        >>> import keras
        >>> y = conv_bn_relu(keras.Input((32, 32, 3)), 16, 3, "stem", strides=2,
        ...                  padding="symmetric")
        >>> tuple(y.shape)
        (None, 16, 16, 16)
    """
    block = conv_block_layers(
        filters,
        kernel_size,
        name,
        strides=strides,
        dilation_rate=dilation_rate,
        padding=padding,
        separable=separable,
        transposed=transposed,
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
        epsilon=epsilon,
        bn_name=bn_name,
    )
    if padding == "symmetric" and strides not in (1, (1, 1)):
        size = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
        rate = dilation_rate if isinstance(dilation_rate, int) else dilation_rate[0]
        total = size + (size - 1) * (rate - 1) - 1
        x = layers.ZeroPadding2D(((total // 2, total - total // 2),) * 2, name=f"{name}_pad")(x)
    relu_names = (
        [f"{name}_depthwise_relu", f"{name}_pointwise_relu"]
        if separable
        else [relu_name or f"{name}_relu"]
    )
    for conv, bn, relu_layer_name in zip(block[::2], block[1::2], relu_names):
        if track is not None:
            conv = track(conv)
        x = bn(conv(x))
        if relu:
            x = layers.ReLU(name=relu_layer_name)(x)
    return x

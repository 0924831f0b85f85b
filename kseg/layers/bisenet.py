"""The blocks of BiSeNet (V1) and BiSeNet V2, as builder functions on Keras tensors.

- BiSeNet V1: Yu, Wang, Peng, Gao, Yu, Sang, "BiSeNet: Bilateral Segmentation Network for
  Real-time Semantic Segmentation", ECCV 2018: ``attention_refinement`` (ARM) and
  ``feature_fusion`` (FFM), as in the authors' code (TorchSeg ``seg_oprs.py``).
- BiSeNet V2: Yu, Gao, Wang, Yu, Shen, Sang, "BiSeNet V2: Bilateral Network with Guided
  Aggregation for Real-time Semantic Segmentation", IJCV 2021 (arXiv 2004.02147):
  ``stem_block``, ``gather_expand`` (GE layer, stride 1 and 2), ``context_embedding`` (CE) and
  ``bilateral_guided_aggregation`` (BGA), with the ReLU after the depthwise convolutions that
  the common reimplementations add (not drawn in the paper's Fig. 5).

Each builder creates plain Keras layers named ``{name}_...`` (so the model's graph, profile and
TFLite conversion see ordinary convolutions), and works at any spatial size: upsampling resizes to a
reference tensor, never by a fixed factor.
"""

from __future__ import annotations

from keras import layers

from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.resize import Resize


def _check_filters(block, filters):
    if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
        raise ValueError(f"{block}: filters must be a positive int. Received: filters={filters!r}")


def attention_refinement(x, filters, name):
    """BiSeNet's attention refinement module: a 3×3 convolution, then channel attention.

    ``y = conv3×3-BN-ReLU(x)``; ``y · sigmoid(BN(conv1×1(mean_HW(y))))``. (The paper's Fig. 2
    draws the attention only; the authors' code puts the 3×3 convolution in front to reduce the
    context-path channels to ``filters``.)

    Example:
        >>> import keras
        >>> tuple(attention_refinement(keras.Input((8, 10, 32)), 16, "arm").shape)
        (None, 8, 10, 16)
    """
    _check_filters("attention_refinement", filters)
    y = conv_bn_relu(x, filters, 3, f"{name}_conv")
    attention = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(y)
    attention = conv_bn_relu(attention, filters, 1, f"{name}_attention", relu=False)
    attention = layers.Activation("sigmoid", name=f"{name}_sigmoid")(attention)
    return layers.Multiply(name=f"{name}_scale")([y, attention])


def feature_fusion(spatial, context, filters, name, reduction=1):
    """BiSeNet's feature fusion module: concatenation, 1×1 convolution, SE-style reweighting.

    ``y = conv1×1-BN-ReLU([spatial, context])``; ``a = sigmoid(W2 · relu(W1 · mean_HW(y)))``
    (bias-free 1×1 convolutions, ``filters // reduction`` hidden channels); output ``y + y · a``.
    ``spatial`` and ``context`` must have the same height and width.

    Example:
        >>> import keras
        >>> s, c = keras.Input((8, 8, 16)), keras.Input((8, 8, 16))
        >>> tuple(feature_fusion(s, c, 32, "ffm").shape)
        (None, 8, 8, 32)
    """
    _check_filters("feature_fusion", filters)
    if (
        not isinstance(reduction, int)
        or isinstance(reduction, bool)
        or not 1 <= reduction <= filters
    ):
        raise ValueError(
            "feature_fusion: reduction must be an int in [1, filters]. "
            f"Received: reduction={reduction!r}"
        )
    y = layers.Concatenate(name=f"{name}_concat")([spatial, context])
    y = conv_bn_relu(y, filters, 1, f"{name}_conv")
    attention = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(y)
    attention = layers.Conv2D(
        filters // reduction, 1, use_bias=False, activation="relu", name=f"{name}_attention1"
    )(attention)
    attention = layers.Conv2D(
        filters, 1, use_bias=False, activation="sigmoid", name=f"{name}_attention2"
    )(attention)
    weighted = layers.Multiply(name=f"{name}_scale")([y, attention])
    return layers.Add(name=f"{name}_add")([y, weighted])


def stem_block(x, filters, name):
    """BiSeNet V2's stem: 3×3/2 convolution, then a convolutional and a max-pooling branch
    (both stride 2) concatenated and fused by a 3×3 convolution; stride 4 in all.

    Example:
        >>> import keras
        >>> tuple(stem_block(keras.Input((32, 48, 3)), 16, "stem").shape)
        (None, 8, 12, 16)
    """
    _check_filters("stem_block", filters)
    x = conv_bn_relu(x, filters, 3, f"{name}_conv", strides=2)
    left = conv_bn_relu(x, max(1, filters // 2), 1, f"{name}_left1")
    left = conv_bn_relu(left, filters, 3, f"{name}_left2", strides=2)
    right = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    x = layers.Concatenate(name=f"{name}_concat")([left, right])
    return conv_bn_relu(x, filters, 3, f"{name}_fuse")


def _depthwise_bn(x, stride, multiplier, name, relu):
    x = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", depth_multiplier=multiplier, use_bias=False, name=name
    )(x)
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def gather_expand(x, filters, name, stride=1, expansion=6):
    """BiSeNet V2's gather-and-expand layer (Fig. 5 b, c).

    Stride 1 (``filters`` must equal the input channels): ``x + proj(dw3×3×e(conv3×3(x)))``,
    then ReLU. Stride 2: the depthwise 3×3 expansion is strided and followed by a second
    depthwise 3×3; the shortcut is a strided depthwise 3×3 + BN and a 1×1 convolution + BN.
    ``e`` = ``expansion`` (paper: 6) is the depthwise channel multiplier.

    Example:
        >>> import keras
        >>> x = keras.Input((16, 16, 16))
        >>> tuple(gather_expand(x, 32, "ge", stride=2).shape)
        (None, 8, 8, 32)
    """
    _check_filters("gather_expand", filters)
    if stride not in (1, 2):
        raise ValueError(f"gather_expand: stride must be 1 or 2. Received: stride={stride!r}")
    if not isinstance(expansion, int) or isinstance(expansion, bool) or expansion < 1:
        raise ValueError(
            f"gather_expand: expansion must be a positive int. Received: expansion={expansion!r}"
        )
    channels = x.shape[-1]
    if stride == 1 and channels != filters:
        raise ValueError(
            "gather_expand: a stride-1 layer keeps its channels (identity shortcut); "
            f"the input has {channels}. Received: filters={filters!r}"
        )
    y = conv_bn_relu(x, channels, 3, f"{name}_conv")
    if stride == 1:
        y = _depthwise_bn(y, 1, expansion, f"{name}_dw", relu=True)
        shortcut = x
    else:
        y = _depthwise_bn(y, 2, expansion, f"{name}_dw1", relu=False)
        y = _depthwise_bn(y, 1, 1, f"{name}_dw2", relu=True)
        shortcut = _depthwise_bn(x, 2, 1, f"{name}_shortcut_dw", relu=False)
        shortcut = conv_bn_relu(shortcut, filters, 1, f"{name}_shortcut_conv", relu=False)
    y = conv_bn_relu(y, filters, 1, f"{name}_project", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def context_embedding(x, filters, name):
    """BiSeNet V2's context embedding block: global average pooling + BN, a 1×1 convolution,
    broadcast-added to the input, then a 3×3 convolution to ``filters`` channels.

    Example:
        >>> import keras
        >>> tuple(context_embedding(keras.Input((4, 6, 32)), 16, "ce").shape)
        (None, 4, 6, 16)
    """
    _check_filters("context_embedding", filters)
    y = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    y = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_pool_bn")(y)
    y = conv_bn_relu(y, x.shape[-1], 1, f"{name}_gap")
    y = layers.Add(name=f"{name}_add")([x, y])
    return conv_bn_relu(y, filters, 3, f"{name}_last")


def bilateral_guided_aggregation(detail, semantic, name):
    """BiSeNet V2's bilateral guided aggregation layer (Fig. 6).

    Detail (stride 8) and semantic (stride 32) features, both with C channels, guide each
    other: ``left = dw3×3-BN-1×1(detail) · sigmoid(up(BN(conv3×3(semantic))))`` at stride 8,
    ``right = avgpool3×3/2(BN(conv3×3/2(detail))) · sigmoid(dw3×3-BN-1×1(semantic))`` at
    stride 32, then ``conv3×3-BN-ReLU(left + up(right))``.

    Example:
        >>> import keras
        >>> d, s = keras.Input((16, 24, 32)), keras.Input((4, 6, 32))
        >>> tuple(bilateral_guided_aggregation(d, s, "bga").shape)
        (None, 16, 24, 32)
    """
    channels = detail.shape[-1]
    if semantic.shape[-1] != channels:
        raise ValueError(
            "bilateral_guided_aggregation: the detail and semantic features must have the same "
            f"channels. Received: detail channels={channels}, semantic channels={semantic.shape[-1]}"
        )

    def depthwise_pointwise(x, prefix):
        x = _depthwise_bn(x, 1, 1, f"{prefix}_dw", relu=False)
        return layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_pw")(x)

    detail_keep = depthwise_pointwise(detail, f"{name}_detail")
    detail_down = conv_bn_relu(detail, channels, 3, f"{name}_detail_down", strides=2, relu=False)
    detail_down = layers.AveragePooling2D(3, strides=2, padding="same", name=f"{name}_detail_pool")(
        detail_down
    )
    semantic_up = conv_bn_relu(semantic, channels, 3, f"{name}_semantic_conv", relu=False)
    semantic_up = Resize(name=f"{name}_semantic_up")([semantic_up, detail])
    semantic_up = layers.Activation("sigmoid", name=f"{name}_semantic_sigmoid")(semantic_up)
    semantic_keep = depthwise_pointwise(semantic, f"{name}_semantic")
    semantic_keep = layers.Activation("sigmoid", name=f"{name}_semantic_keep_sigmoid")(
        semantic_keep
    )
    left = layers.Multiply(name=f"{name}_left")([detail_keep, semantic_up])
    right = layers.Multiply(name=f"{name}_right")([detail_down, semantic_keep])
    right = Resize(name=f"{name}_right_up")([right, detail])
    fused = layers.Add(name=f"{name}_add")([left, right])
    return conv_bn_relu(fused, channels, 3, f"{name}_out")

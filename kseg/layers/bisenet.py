"""The blocks of BiSeNet (V1) and BiSeNet V2, as serializable layers.

- BiSeNet V1: Yu, Wang, Peng, Gao, Yu, Sang, "BiSeNet: Bilateral Segmentation Network for
  Real-time Semantic Segmentation", ECCV 2018: ``AttentionRefinementModule`` (ARM) and
  ``FeatureFusionModule`` (FFM), as in the authors' code (TorchSeg ``seg_oprs.py``).
- BiSeNet V2: Yu, Gao, Wang, Yu, Shen, Sang, "BiSeNet V2: Bilateral Network with Guided
  Aggregation for Real-time Semantic Segmentation", IJCV 2021 (arXiv 2004.02147):
  ``StemBlock``, ``GatherExpand`` (GE layer, stride 1 and 2), ``ContextEmbedding`` (CE) and
  ``BilateralGuidedAggregation`` (BGA), with the ReLU after the depthwise convolutions that
  the common reimplementations add (not drawn in the paper's Fig. 5).

The layers are made of ordinary Keras convolutions (so a model's graph, profile and TFLite
conversion see them) and work at any spatial size: upsampling resizes to a reference tensor,
never by a fixed factor. The lower-case functions apply them to Keras tensors.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers._composite import CompositeLayer, check_int
from kseg.layers.conv_block import conv_block_layers
from kseg.layers.resize import Resize


def _ceil(n, stride):
    return None if n is None else -(-n // stride)


def _apply(block, x, training, relu=True):
    """Runs ``[conv, bn]`` from ``conv_block_layers``, then a ReLU."""
    conv, bn = block
    x = bn(conv(x), training=training)
    return tf.nn.relu(x) if relu else x


def _bn(name, policy):
    return layers.BatchNormalization(epsilon=1e-3, name=name, dtype=policy)


def _check_pair(layer, shapes, names):
    if len(shapes) != 2:
        raise ValueError(f"{layer}: expects [{', '.join(names)}]. Received: input_shape={shapes!r}")


@keras.saving.register_keras_serializable(package="kseg")
class AttentionRefinementModule(CompositeLayer):
    """BiSeNet's attention refinement module (Yu et al. 2018, Fig. 2b): a 3×3 convolution,
    then channel attention.

    ``y = conv3×3-BN-ReLU(x)``; ``y · sigmoid(BN(conv1×1(mean_HW(y))))``. (The paper's Fig. 2
    draws the attention only; the authors' code puts the 3×3 convolution in front to reduce the
    context-path channels to ``filters``.)

    Args:
        filters: output channels.

    Example:
        >>> import numpy as np
        >>> AttentionRefinementModule(16)(np.zeros((1, 8, 10, 32), "float32")).shape
        TensorShape([1, 8, 10, 16])
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        check_int("AttentionRefinementModule", "filters", filters)
        self.filters = filters
        self.conv = conv_block_layers(filters, 3, "conv", dtype=self.dtype_policy)
        self.attention = conv_block_layers(filters, 1, "attention", dtype=self.dtype_policy)

    def call(self, x, training=None):
        y = _apply(self.conv, x, training)
        pooled = tf.reduce_mean(y, axis=[1, 2], keepdims=True)
        return y * tf.sigmoid(_apply(self.attention, pooled, training, relu=False))

    def _output_shape(self, shapes):
        return (*shapes[0][:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="kseg")
class FeatureFusionModule(CompositeLayer):
    """BiSeNet's feature fusion module (Yu et al. 2018, Fig. 2c), called on
    ``[spatial, context]``: concatenation, 1×1 convolution, SE-style reweighting.

    ``y = conv1×1-BN-ReLU([spatial, context])``; ``a = sigmoid(W2 · relu(W1 · mean_HW(y)))``
    (bias-free 1×1 convolutions, ``filters // reduction`` hidden channels); output ``y + y · a``.
    ``spatial`` and ``context`` must have the same height and width.

    Args:
        filters: output channels.
        reduction: the attention's hidden channels are ``filters // reduction`` (1 to filters).

    Example:
        >>> import numpy as np
        >>> ffm = FeatureFusionModule(32)
        >>> ffm([np.zeros((1, 8, 8, 16), "float32"), np.zeros((1, 8, 8, 16), "float32")]).shape
        TensorShape([1, 8, 8, 32])
    """

    def __init__(self, filters, reduction=1, **kwargs):
        super().__init__(**kwargs)
        check_int("FeatureFusionModule", "filters", filters)
        if (
            not isinstance(reduction, int)
            or isinstance(reduction, bool)
            or not 1 <= reduction <= filters
        ):
            raise ValueError(
                "FeatureFusionModule: reduction must be an int in [1, filters]. "
                f"Received: reduction={reduction!r}"
            )
        self.filters = filters
        self.reduction = reduction
        policy = self.dtype_policy
        self.conv = conv_block_layers(filters, 1, "conv", dtype=policy)
        self.attention1 = layers.Conv2D(
            filters // reduction, 1, use_bias=False, name="attention1", dtype=policy
        )
        self.attention2 = layers.Conv2D(filters, 1, use_bias=False, name="attention2", dtype=policy)

    def _check_shapes(self, shapes):
        _check_pair("FeatureFusionModule", shapes, ("spatial", "context"))
        super()._check_shapes(shapes)

    def call(self, inputs, training=None):
        y = _apply(self.conv, tf.concat(list(inputs), axis=-1), training)
        attention = tf.nn.relu(self.attention1(tf.reduce_mean(y, axis=[1, 2], keepdims=True)))
        return y + y * tf.sigmoid(self.attention2(attention))

    def _output_shape(self, shapes):
        return (*shapes[0][:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="kseg")
class StemBlock(CompositeLayer):
    """BiSeNet V2's stem block (Yu et al. 2021, Fig. 4a): a 3×3/2 convolution, then a
    convolutional (1×1 to ``filters // 2``, 3×3/2) and a 3×3/2 max-pooling branch concatenated
    and fused by a 3×3 convolution (BN and ReLU after each convolution); stride 4 in all.

    Args:
        filters: output channels (paper: 16).

    Example:
        >>> import numpy as np
        >>> StemBlock(16)(np.zeros((1, 32, 48, 3), "float32")).shape
        TensorShape([1, 8, 12, 16])
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        check_int("StemBlock", "filters", filters)
        self.filters = filters
        policy = self.dtype_policy
        self.conv = conv_block_layers(filters, 3, "conv", strides=2, dtype=policy)
        self.left1 = conv_block_layers(max(1, filters // 2), 1, "left1", dtype=policy)
        self.left2 = conv_block_layers(filters, 3, "left2", strides=2, dtype=policy)
        self.pool = layers.MaxPooling2D(3, strides=2, padding="same", name="pool", dtype=policy)
        self.fuse = conv_block_layers(filters, 3, "fuse", dtype=policy)

    def call(self, x, training=None):
        x = _apply(self.conv, x, training)
        left = _apply(self.left2, _apply(self.left1, x, training), training)
        return _apply(self.fuse, tf.concat([left, self.pool(x)], axis=-1), training)

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, _ceil(_ceil(h, 2), 2), _ceil(_ceil(w, 2), 2), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def _depthwise(stride, multiplier, name, policy):
    return layers.DepthwiseConv2D(
        3,
        strides=stride,
        padding="same",
        depth_multiplier=multiplier,
        use_bias=False,
        name=name,
        dtype=policy,
    )


@keras.saving.register_keras_serializable(package="kseg")
class GatherExpand(CompositeLayer):
    """BiSeNet V2's gather-and-expand layer (Yu et al. 2021, Fig. 5b, c).

    Stride 1 (``filters`` must equal the input channels): ``x + proj(dw3×3×e(conv3×3(x)))``,
    then ReLU. Stride 2: the depthwise 3×3 expansion is strided and followed by a second
    depthwise 3×3; the shortcut is a strided depthwise 3×3 + BN and a 1×1 convolution + BN.
    ``e`` = ``expansion`` (paper: 6) is the depthwise channel multiplier.

    Args:
        filters: output channels.
        stride: 1 or 2.
        expansion: the depthwise expansion ``e``.

    Example:
        >>> import numpy as np
        >>> GatherExpand(32, stride=2)(np.zeros((1, 16, 16, 16), "float32")).shape
        TensorShape([1, 8, 8, 32])
    """

    def __init__(self, filters, stride=1, expansion=6, **kwargs):
        super().__init__(**kwargs)
        check_int("GatherExpand", "filters", filters)
        if stride not in (1, 2):
            raise ValueError(f"GatherExpand: stride must be 1 or 2. Received: stride={stride!r}")
        check_int("GatherExpand", "expansion", expansion)
        self.filters = filters
        self.stride = stride
        self.expansion = expansion

    def _check_shapes(self, shapes):
        super()._check_shapes(shapes)
        if self.stride == 1 and shapes[0][-1] != self.filters:
            raise ValueError(
                "GatherExpand: a stride-1 layer keeps its channels (identity shortcut); "
                f"the input has {shapes[0][-1]}. Received: filters={self.filters!r}"
            )

    def _create(self, shapes):
        channels, policy = shapes[0][-1], self.dtype_policy
        self.conv = conv_block_layers(channels, 3, "conv", dtype=policy)
        if self.stride == 1:
            self.dws = [_depthwise(1, self.expansion, "dw", policy)]
            self.dw_bns = [_bn("dw_bn", policy)]
        else:
            self.dws = [_depthwise(2, self.expansion, "dw1", policy)]
            self.dw_bns = [_bn("dw1_bn", policy)]
            self.dws.append(_depthwise(1, 1, "dw2", policy))
            self.dw_bns.append(_bn("dw2_bn", policy))
            self.shortcut_dw = _depthwise(2, 1, "shortcut_dw", policy)
            self.shortcut_dw_bn = _bn("shortcut_dw_bn", policy)
            self.shortcut_conv = conv_block_layers(self.filters, 1, "shortcut_conv", dtype=policy)
        self.project = conv_block_layers(self.filters, 1, "project", dtype=policy)

    def call(self, x, training=None):
        y = _apply(self.conv, x, training)
        for dw, bn in zip(self.dws, self.dw_bns):
            y = bn(dw(y), training=training)
        y = tf.nn.relu(y)
        if self.stride == 1:
            shortcut = x
        else:
            shortcut = self.shortcut_dw_bn(self.shortcut_dw(x), training=training)
            shortcut = _apply(self.shortcut_conv, shortcut, training, relu=False)
        y = _apply(self.project, y, training, relu=False)
        return tf.nn.relu(shortcut + y)

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[0]
        return (b, _ceil(h, self.stride), _ceil(w, self.stride), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "stride": self.stride,
            "expansion": self.expansion,
        }


@keras.saving.register_keras_serializable(package="kseg")
class ContextEmbedding(CompositeLayer):
    """BiSeNet V2's context embedding block (Yu et al. 2021, Fig. 4b): global average pooling
    + BN, a 1×1 convolution (+ BN, ReLU), broadcast-added to the input, then a 3×3 convolution
    (+ BN, ReLU) to ``filters`` channels.

    Args:
        filters: output channels.

    Example:
        >>> import numpy as np
        >>> ContextEmbedding(16)(np.zeros((1, 4, 6, 32), "float32")).shape
        TensorShape([1, 4, 6, 16])
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        check_int("ContextEmbedding", "filters", filters)
        self.filters = filters

    def _create(self, shapes):
        policy = self.dtype_policy
        self.pool_bn = _bn("pool_bn", policy)
        self.gap = conv_block_layers(shapes[0][-1], 1, "gap", dtype=policy)
        self.last = conv_block_layers(self.filters, 3, "last", dtype=policy)

    def call(self, x, training=None):
        y = self.pool_bn(tf.reduce_mean(x, axis=[1, 2], keepdims=True), training=training)
        return _apply(self.last, x + _apply(self.gap, y, training), training)

    def _output_shape(self, shapes):
        return (*shapes[0][:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="kseg")
class BilateralGuidedAggregation(CompositeLayer):
    """BiSeNet V2's bilateral guided aggregation layer (Yu et al. 2021, Fig. 6), called on
    ``[detail, semantic]``.

    Detail (stride 8) and semantic (stride 32) features, both with C channels, guide each
    other: ``left = dw3×3-BN-1×1(detail) · sigmoid(up(BN(conv3×3(semantic))))`` at stride 8,
    ``right = avgpool3×3/2(BN(conv3×3/2(detail))) · sigmoid(dw3×3-BN-1×1(semantic))`` at
    stride 32, then ``conv3×3-BN-ReLU(left + up(right))`` (C channels, the detail's size).

    Example:
        >>> import numpy as np
        >>> bga = BilateralGuidedAggregation()
        >>> bga([np.zeros((1, 16, 24, 32), "float32"), np.zeros((1, 4, 6, 32), "float32")]).shape
        TensorShape([1, 16, 24, 32])
    """

    def _check_shapes(self, shapes):
        _check_pair("BilateralGuidedAggregation", shapes, ("detail", "semantic"))
        super()._check_shapes(shapes)
        if shapes[0][-1] != shapes[1][-1]:
            raise ValueError(
                "BilateralGuidedAggregation: the detail and semantic features must have the same "
                f"channels. Received: detail channels={shapes[0][-1]}, "
                f"semantic channels={shapes[1][-1]}"
            )

    def _create(self, shapes):
        channels, policy = shapes[0][-1], self.dtype_policy

        def depthwise_pointwise(prefix):
            return [
                _depthwise(1, 1, f"{prefix}_dw", policy),
                _bn(f"{prefix}_dw_bn", policy),
                layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_pw", dtype=policy),
            ]

        self.detail_keep = depthwise_pointwise("detail")
        self.detail_down = conv_block_layers(channels, 3, "detail_down", strides=2, dtype=policy)
        self.detail_pool = layers.AveragePooling2D(
            3, strides=2, padding="same", name="detail_pool", dtype=policy
        )
        self.semantic_conv = conv_block_layers(channels, 3, "semantic_conv", dtype=policy)
        self.semantic_up = Resize(name="semantic_up", dtype=policy)
        self.semantic_keep = depthwise_pointwise("semantic")
        self.right_up = Resize(name="right_up", dtype=policy)
        self.out = conv_block_layers(channels, 3, "out", dtype=policy)

    @staticmethod
    def _depthwise_pointwise(block, x, training):
        dw, bn, pw = block
        return pw(bn(dw(x), training=training))

    def call(self, inputs, training=None):
        detail, semantic = inputs
        detail_keep = self._depthwise_pointwise(self.detail_keep, detail, training)
        detail_down = self.detail_pool(_apply(self.detail_down, detail, training, relu=False))
        semantic_up = _apply(self.semantic_conv, semantic, training, relu=False)
        semantic_up = tf.sigmoid(self.semantic_up([semantic_up, detail]))
        semantic_keep = tf.sigmoid(
            self._depthwise_pointwise(self.semantic_keep, semantic, training)
        )
        left = detail_keep * semantic_up
        right = self.right_up([detail_down * semantic_keep, detail])
        return _apply(self.out, left + right, training)

    def _output_shape(self, shapes):
        return shapes[0]


def attention_refinement(x, filters, name):
    """Applies ``AttentionRefinementModule(filters, name=name)`` to ``x``.

    Example:
        >>> tuple(attention_refinement(keras.Input((8, 10, 32)), 16, "arm").shape)
        (None, 8, 10, 16)
    """
    return AttentionRefinementModule(filters, name=name)(x)


def feature_fusion(spatial, context, filters, name, reduction=1):
    """Applies ``FeatureFusionModule(filters, reduction, name=name)`` to ``[spatial, context]``.

    Example:
        >>> s, c = keras.Input((8, 8, 16)), keras.Input((8, 8, 16))
        >>> tuple(feature_fusion(s, c, 32, "ffm").shape)
        (None, 8, 8, 32)
    """
    return FeatureFusionModule(filters, reduction=reduction, name=name)([spatial, context])


def stem_block(x, filters, name):
    """Applies ``StemBlock(filters, name=name)`` to ``x``.

    Example:
        >>> tuple(stem_block(keras.Input((32, 48, 3)), 16, "stem").shape)
        (None, 8, 12, 16)
    """
    return StemBlock(filters, name=name)(x)


def gather_expand(x, filters, name, stride=1, expansion=6):
    """Applies ``GatherExpand(filters, stride, expansion, name=name)`` to ``x``.

    Example:
        >>> tuple(gather_expand(keras.Input((16, 16, 16)), 32, "ge", stride=2).shape)
        (None, 8, 8, 32)
    """
    return GatherExpand(filters, stride=stride, expansion=expansion, name=name)(x)


def context_embedding(x, filters, name):
    """Applies ``ContextEmbedding(filters, name=name)`` to ``x``.

    Example:
        >>> tuple(context_embedding(keras.Input((4, 6, 32)), 16, "ce").shape)
        (None, 4, 6, 16)
    """
    return ContextEmbedding(filters, name=name)(x)


def bilateral_guided_aggregation(detail, semantic, name):
    """Applies ``BilateralGuidedAggregation(name=name)`` to ``[detail, semantic]``.

    Example:
        >>> d, s = keras.Input((16, 24, 32)), keras.Input((4, 6, 32))
        >>> tuple(bilateral_guided_aggregation(d, s, "bga").shape)
        (None, 16, 24, 32)
    """
    return BilateralGuidedAggregation(name=name)([detail, semantic])

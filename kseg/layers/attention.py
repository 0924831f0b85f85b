"""Attention blocks of the attention segmenters (issue 19).

- ``PositionAttention`` and ``ChannelAttention``: DANet's two modules (Fu et al., CVPR 2019).
- ``FeaturePyramidAttention`` and ``GlobalAttentionUpsample``: PAN's FPA and GAU (Li, Xiong,
  An, Wang, BMVC 2018).
- ``ScaleAttention``: the per-pixel softmax over scales of Attention-to-Scale (Chen, Yang,
  Wang, Xu, Yuille, CVPR 2016).
- ``L2Normalization``: ParseNet's per-position L2 normalisation with a learned per-channel scale
  (Liu, Rabinovich, Berg, 2015).

All are made of TFLite built-in ops (reshape, batch matmul, softmax, pooling, convolutions).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers._composite import CompositeLayer, check_int
from kseg.layers.conv_block import conv_block_layers
from kseg.layers.resize import Resize


def _flatten(x):
    """``[B, H, W, C] -> [B, H*W, C]`` with the sizes known only at run time."""
    return tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]])


def _apply(block, x, training, relu=True):
    for layer in block:
        x = layer(x, training=training) if "Normalization" in type(layer).__name__ else layer(x)
    return tf.nn.relu(x) if relu else x


@keras.saving.register_keras_serializable(package="kseg")
class PositionAttention(CompositeLayer):
    """DANet's position attention module: every position attends to every other position.

    ``q, k = conv1x1(x)`` with ``C // reduction`` channels, ``v = conv1x1(x)`` with C;
    ``A = softmax_j(q_i · k_j)`` over the ``H·W`` positions and ``out = gamma · (A v) + x``,
    ``gamma`` a learned scalar initialised to 0 (as the authors' ``PAM_Module``).

    Args:
        reduction: channel reduction of the query and key (paper: 8).

    Example:
        >>> import numpy as np
        >>> PositionAttention()(np.ones((1, 4, 5, 16), "float32")).shape
        TensorShape([1, 4, 5, 16])
    """

    def __init__(self, reduction=8, **kwargs):
        super().__init__(**kwargs)
        check_int("PositionAttention", "reduction", reduction)
        self.reduction = reduction

    def _create(self, shapes):
        channels = shapes[0][-1]
        inner = max(1, channels // self.reduction)
        policy = self.dtype_policy
        self.query = layers.Conv2D(inner, 1, name="query", dtype=policy)
        self.key = layers.Conv2D(inner, 1, name="key", dtype=policy)
        self.value = layers.Conv2D(channels, 1, name="value", dtype=policy)
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, x):
        q, k, v = _flatten(self.query(x)), _flatten(self.key(x)), _flatten(self.value(x))
        attention = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1)
        out = tf.reshape(tf.matmul(attention, v), tf.shape(x))
        return tf.cast(self.gamma, x.dtype) * out + x

    def _output_shape(self, shapes):
        return tuple(shapes[0])

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="kseg")
class ChannelAttention(CompositeLayer):
    """DANet's channel attention module: every channel attends to every other channel.

    With ``X`` the ``[H·W, C]`` features, ``E = Xᵀ X`` (``C × C``); as the authors' code
    (``CAM_Module``), the attention is ``softmax(max_row(E) - E)`` and
    ``out = gamma · (X Aᵀ) + x``, ``gamma`` a learned scalar initialised to 0.

    Example:
        >>> import numpy as np
        >>> ChannelAttention()(np.ones((1, 4, 5, 8), "float32")).shape
        TensorShape([1, 4, 5, 8])
    """

    def _create(self, shapes):
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, x):
        flat = _flatten(x)
        energy = tf.matmul(flat, flat, transpose_a=True)
        energy = tf.reduce_max(energy, axis=-1, keepdims=True) - energy
        attention = tf.nn.softmax(energy, axis=-1)
        out = tf.reshape(tf.matmul(flat, attention, transpose_b=True), tf.shape(x))
        return tf.cast(self.gamma, x.dtype) * out + x

    def _output_shape(self, shapes):
        return tuple(shapes[0])


@keras.saving.register_keras_serializable(package="kseg")
class FeaturePyramidAttention(CompositeLayer):
    """PAN's Feature Pyramid Attention on the last backbone features.

    A U-shaped pyramid of 7×7, 5×5 and 3×3 convolutions (each level after a 2×2 max pool;
    one channel, as segmentation_models_pytorch's ``FPABlock``: the pyramid is a pixel
    attention map) is upsampled and summed back to full size, multiplies a 1×1 convolution
    of the input (``filters`` channels) and is added to a global-average-pooling branch.
    Every convolution has a bias, batch normalisation and ReLU. The pools round up ("same"
    padding), so any feature size works; for sizes divisible by 8 that is the floor pooling
    of segmentation_models_pytorch.

    Args:
        filters: output channels.

    Example:
        >>> import numpy as np
        >>> FeaturePyramidAttention(8)(np.ones((1, 16, 12, 32), "float32")).shape
        TensorShape([1, 16, 12, 8])
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        check_int("FeaturePyramidAttention", "filters", filters)
        self.filters = filters
        policy = self.dtype_policy

        def block(width, kernel, name):
            return conv_block_layers(width, kernel, name, use_bias=True, dtype=policy)

        self.global_branch = block(filters, 1, "global")
        self.middle = block(filters, 1, "middle")
        self.down1 = block(1, 7, "down1")
        self.down2 = block(1, 5, "down2")
        self.down3a = block(1, 3, "down3a")
        self.down3b = block(1, 3, "down3b")
        self.up2 = block(1, 5, "up2")
        self.up1 = block(1, 7, "up1")
        self.pool = layers.MaxPooling2D(2, padding="same", name="pool", dtype=policy)
        self.resize = Resize(name="resize", dtype=policy)

    def call(self, x, training=None):
        pooled = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        glob = self.resize([_apply(self.global_branch, pooled, training), x])
        middle = _apply(self.middle, x, training)
        x1 = _apply(self.down1, self.pool(x), training)
        x2 = _apply(self.down2, self.pool(x1), training)
        x3 = _apply(self.down3a, self.pool(x2), training)
        x3 = _apply(self.down3b, x3, training)
        y = self.resize([x3, x2]) + _apply(self.up2, x2, training)
        y = self.resize([y, x1]) + _apply(self.up1, x1, training)
        return self.resize([y, x]) * middle + glob

    def _output_shape(self, shapes):
        return (*shapes[0][:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="kseg")
class GlobalAttentionUpsample(CompositeLayer):
    """PAN's Global Attention Upsample, called on ``[low, high]``.

    The low-level features go through a 3×3 convolution (``filters``, BN, ReLU); the global
    average of the high-level features, through a 1×1 convolution, BN and a sigmoid (as
    segmentation_models_pytorch's ``GAUBlock``), weights them channel by channel; the
    high-level features, upsampled bilinearly to the low-level size, are added. ``high`` must
    have ``filters`` channels.

    Args:
        filters: output channels.

    Example:
        >>> import numpy as np
        >>> gau = GlobalAttentionUpsample(8)
        >>> gau([np.ones((1, 16, 16, 4), "float32"), np.ones((1, 8, 8, 8), "float32")]).shape
        TensorShape([1, 16, 16, 8])
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        check_int("GlobalAttentionUpsample", "filters", filters)
        self.filters = filters
        policy = self.dtype_policy
        self.low_conv = conv_block_layers(filters, 3, "low", use_bias=True, dtype=policy)
        self.gate = conv_block_layers(filters, 1, "gate", use_bias=True, dtype=policy)
        self.resize = Resize(name="resize", dtype=policy)

    def _check_shapes(self, shapes):
        super()._check_shapes(shapes)
        if len(shapes) != 2 or shapes[1][-1] != self.filters:
            raise ValueError(
                f"GlobalAttentionUpsample: expects [low, high] with high of {self.filters} "
                f"channels. Received: input_shape={self._shape_repr(shapes)}"
            )

    def call(self, inputs, training=None):
        low, high = inputs
        pooled = tf.reduce_mean(high, axis=[1, 2], keepdims=True)
        gate = tf.sigmoid(_apply(self.gate, pooled, training, relu=False))
        return self.resize([high, low]) + _apply(self.low_conv, low, training) * gate

    def _output_shape(self, shapes):
        return (*shapes[0][:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="kseg")
class ScaleAttention(keras.layers.Layer):
    """Attention-to-Scale's merge: ``Σ_s softmax_s(h)_s · score_s`` at every pixel.

    Called on ``[h, score_1, ..., score_S]``: ``h`` is ``[B, H, W, S]`` (one attention logit
    per scale), each score ``[B, H, W, K]`` (already at a common size).

    Example:
        >>> import numpy as np
        >>> h = np.zeros((1, 2, 2, 2), "float32")
        >>> a, b = np.ones((1, 2, 2, 3), "float32"), 3 * np.ones((1, 2, 2, 3), "float32")
        >>> float(ScaleAttention()([h, a, b])[0, 0, 0, 0])
        2.0
    """

    def call(self, inputs):
        logits, scores = inputs[0], inputs[1:]
        if logits.shape[-1] is not None and logits.shape[-1] != len(scores):
            raise ValueError(
                f"ScaleAttention: the attention has {logits.shape[-1]} channels for "
                f"{len(scores)} scales. Received: input_shape={[tuple(t.shape) for t in inputs]}"
            )
        weights = tf.nn.softmax(logits, axis=-1)
        return tf.add_n([weights[..., s : s + 1] * score for s, score in enumerate(scores)])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])


@keras.saving.register_keras_serializable(package="kseg")
class L2Normalization(keras.layers.Layer):
    """ParseNet's normalisation: ``x / ||x||₂`` over channels at each position, times a learned
    per-channel scale (initialised to ``scale``; the paper's remedy for the mismatched norms of
    local and global features).

    Args:
        scale: initial value of every channel's scale (ParseNet: 10).
        epsilon: added to the squared norm.

    Example:
        >>> import numpy as np
        >>> out = L2Normalization(scale=2.0)(np.array([[[[3.0, 4.0]]]], "float32"))
        >>> out.numpy().round(3).tolist()
        [[[[1.2, 1.6]]]]
    """

    def __init__(self, scale=10.0, epsilon=1e-10, **kwargs):
        super().__init__(**kwargs)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(
                f"L2Normalization: scale must be a positive number. Received: scale={scale!r}"
            )
        self.scale = float(scale)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "L2Normalization: the channel count must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.scale),
        )

    def call(self, x):
        norm = tf.math.rsqrt(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True) + self.epsilon)
        return x * norm * tf.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "epsilon": self.epsilon}

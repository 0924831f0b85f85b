"""The Mix Transformer (MiT) blocks of SegFormer (Xie, Wang, Yu, Anandkumar, Alvarez, Luo,
NeurIPS 2021).

- ``OverlapPatchEmbedding``: a strided convolution (7×7 stride 4, then 3×3 stride 2) with
  zero padding ``k // 2`` and layer normalisation: overlapping patches.
- ``EfficientSelfAttention``: multi-head self-attention whose keys and values come from the
  features reduced by a ``sr × sr`` stride-``sr`` convolution (sequence reduction).
- ``MixFFN``: ``fc → 3×3 depth-wise conv → GELU → fc``; the depth-wise convolution gives the
  positional information (no positional encoding).
- ``MixTransformerBlock``: ``x + attn(LN(x))``, ``+ MixFFN(LN(x))``, with stochastic depth.

The tensors stay ``[B, H, W, C]`` between blocks (the attention flattens inside), so any input
size works; keras-hub's version assumes square images.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers._composite import CompositeLayer, check_int, check_rate


@keras.saving.register_keras_serializable(package="kseg")
class OverlapPatchEmbedding(CompositeLayer):
    """Overlapping patch embedding: ``LN(conv_k×k/stride(pad(x, k // 2)))``.

    Args:
        filters: embedding width.
        patch_size: kernel size (MiT: 7 for the first stage, 3 after).
        stride: stride (MiT: 4, then 2).

    Example:
        >>> import numpy as np
        >>> OverlapPatchEmbedding(8, 7, 4)(np.ones((1, 30, 17, 3), "float32")).shape
        TensorShape([1, 8, 5, 8])
    """

    def __init__(self, filters, patch_size=7, stride=4, **kwargs):
        super().__init__(**kwargs)
        check_int("OverlapPatchEmbedding", "filters", filters)
        check_int("OverlapPatchEmbedding", "patch_size", patch_size)
        check_int("OverlapPatchEmbedding", "stride", stride)
        self.filters, self.patch_size, self.stride = filters, patch_size, stride
        policy = self.dtype_policy
        self.pad = layers.ZeroPadding2D(patch_size // 2, name="pad", dtype=policy)
        self.proj = layers.Conv2D(filters, patch_size, strides=stride, name="proj", dtype=policy)
        self.norm = layers.LayerNormalization(epsilon=1e-5, name="norm", dtype=policy)

    def call(self, x):
        return self.norm(self.proj(self.pad(x)))

    def _output_shape(self, shapes):
        pad = 2 * (self.patch_size // 2)

        def size(d):
            return None if d is None else (d + pad - self.patch_size) // self.stride + 1

        b, h, w, _ = shapes[0]
        return (b, size(h), size(w), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "patch_size": self.patch_size,
            "stride": self.stride,
        }


@keras.saving.register_keras_serializable(package="kseg")
class EfficientSelfAttention(CompositeLayer):
    """SegFormer's efficient self-attention on ``[B, H, W, C]`` features.

    Queries from every position; keys and values from the features reduced by a
    ``sr_ratio × sr_ratio`` convolution of stride ``sr_ratio`` ("same" padding, so small
    maps work; the authors' code has no padding) and a layer normalisation, which divides the
    cost by ``sr_ratio²``. ``num_heads`` heads of ``C / num_heads`` channels, an output
    projection. Parameters equal the authors' ``Attention`` (q, kv, proj, sr, norm).

    Args:
        num_heads: attention heads (must divide the channels).
        sr_ratio: sequence-reduction ratio (MiT: 8, 4, 2, 1 by stage).

    Example:
        >>> import numpy as np
        >>> EfficientSelfAttention(2, 2)(np.ones((1, 6, 5, 8), "float32")).shape
        TensorShape([1, 6, 5, 8])
    """

    def __init__(self, num_heads, sr_ratio=1, **kwargs):
        super().__init__(**kwargs)
        check_int("EfficientSelfAttention", "num_heads", num_heads)
        check_int("EfficientSelfAttention", "sr_ratio", sr_ratio)
        self.num_heads, self.sr_ratio = num_heads, sr_ratio

    def _check_shapes(self, shapes):
        super()._check_shapes(shapes)
        if shapes[0][-1] % self.num_heads:
            raise ValueError(
                f"EfficientSelfAttention: num_heads={self.num_heads} must divide the "
                f"{shapes[0][-1]} channels. Received: input_shape={tuple(shapes[0])}"
            )

    def _create(self, shapes):
        channels = shapes[0][-1]
        policy = self.dtype_policy
        self.query = layers.Dense(channels, name="query", dtype=policy)
        self.key = layers.Dense(channels, name="key", dtype=policy)
        self.value = layers.Dense(channels, name="value", dtype=policy)
        self.proj = layers.Dense(channels, name="proj", dtype=policy)
        if self.sr_ratio > 1:
            self.sr = layers.Conv2D(
                channels, self.sr_ratio, self.sr_ratio, padding="same", name="sr", dtype=policy
            )
            self.norm = layers.LayerNormalization(epsilon=1e-5, name="sr_norm", dtype=policy)

    def _heads(self, x):
        # [B, H, W, C] -> [B, heads, N, C / heads]
        channels = x.shape[-1]
        x = tf.reshape(x, [tf.shape(x)[0], -1, self.num_heads, channels // self.num_heads])
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, x):
        channels = x.shape[-1]
        q = self._heads(self.query(x))
        context = self.norm(self.sr(x)) if self.sr_ratio > 1 else x
        k, v = self._heads(self.key(context)), self._heads(self.value(context))
        scale = float(channels // self.num_heads) ** -0.5
        attention = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * scale, axis=-1)
        out = tf.transpose(tf.matmul(attention, v), [0, 2, 1, 3])
        return self.proj(tf.reshape(out, tf.shape(x)))

    def _output_shape(self, shapes):
        return tuple(shapes[0])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "sr_ratio": self.sr_ratio}


@keras.saving.register_keras_serializable(package="kseg")
class MixFFN(CompositeLayer):
    """Mix-FFN: ``fc2(GELU(dwconv3×3(fc1(x))))``, hidden width ``mlp_ratio × C``.

    Args:
        mlp_ratio: hidden expansion (MiT: 4).

    Example:
        >>> import numpy as np
        >>> MixFFN(2)(np.ones((1, 3, 4, 8), "float32")).shape
        TensorShape([1, 3, 4, 8])
    """

    def __init__(self, mlp_ratio=4, **kwargs):
        super().__init__(**kwargs)
        check_int("MixFFN", "mlp_ratio", mlp_ratio)
        self.mlp_ratio = mlp_ratio

    def _create(self, shapes):
        channels = shapes[0][-1]
        policy = self.dtype_policy
        self.fc1 = layers.Dense(channels * self.mlp_ratio, name="fc1", dtype=policy)
        self.dwconv = layers.DepthwiseConv2D(3, padding="same", name="dwconv", dtype=policy)
        self.fc2 = layers.Dense(channels, name="fc2", dtype=policy)

    def call(self, x):
        return self.fc2(keras.activations.gelu(self.dwconv(self.fc1(x)), approximate=False))

    def _output_shape(self, shapes):
        return tuple(shapes[0])

    def get_config(self):
        return {**super().get_config(), "mlp_ratio": self.mlp_ratio}


@keras.saving.register_keras_serializable(package="kseg")
class MixTransformerBlock(CompositeLayer):
    """One MiT encoder block: ``x += attn(LN(x)); x += MixFFN(LN(x))`` (layer-norm eps 1e-6).

    During training each residual branch is dropped per sample with probability
    ``drop_path`` (stochastic depth, the survivors scaled by ``1 / (1 - drop_path)``).

    Args:
        num_heads: attention heads.
        sr_ratio: sequence-reduction ratio of the attention.
        mlp_ratio: Mix-FFN expansion.
        drop_path: stochastic-depth rate in [0, 1).
        seed: seed of the stochastic depth.

    Example:
        >>> import numpy as np
        >>> MixTransformerBlock(1, 2)(np.ones((2, 4, 4, 8), "float32")).shape
        TensorShape([2, 4, 4, 8])
    """

    def __init__(self, num_heads, sr_ratio=1, mlp_ratio=4, drop_path=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        check_rate("MixTransformerBlock", "drop_path", drop_path)
        self.num_heads, self.sr_ratio, self.mlp_ratio = num_heads, sr_ratio, mlp_ratio
        self.drop_path, self.seed = float(drop_path), seed
        policy = self.dtype_policy
        self.norm1 = layers.LayerNormalization(epsilon=1e-6, name="norm1", dtype=policy)
        self.attn = EfficientSelfAttention(num_heads, sr_ratio, name="attn", dtype=policy)
        self.norm2 = layers.LayerNormalization(epsilon=1e-6, name="norm2", dtype=policy)
        self.mlp = MixFFN(mlp_ratio, name="mlp", dtype=policy)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _drop(self, x, training):
        if not training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = keras.random.uniform(
            tf.stack([tf.shape(x)[0], 1, 1, 1]), seed=self.seed_generator, dtype=x.dtype
        )
        return x * tf.cast(mask < keep, x.dtype) / keep

    def call(self, x, training=None):
        x = x + self._drop(self.attn(self.norm1(x)), training)
        return x + self._drop(self.mlp(self.norm2(x)), training)

    def _output_shape(self, shapes):
        return tuple(shapes[0])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "sr_ratio": self.sr_ratio,
            "mlp_ratio": self.mlp_ratio,
            "drop_path": self.drop_path,
            "seed": self.seed,
        }

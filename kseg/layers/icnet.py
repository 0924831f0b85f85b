"""ICNet's cascade feature fusion unit (Zhao, Qi, Shen, Shi, Jia, "ICNet for Real-Time
Semantic Segmentation on High-Resolution Images", ECCV 2018, Fig. 3)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from kseg.layers._composite import CompositeLayer, check_int
from kseg.layers.conv_block import conv_block_layers
from kseg.layers.resize import Resize


@keras.saving.register_keras_serializable(package="kseg")
class CascadeFeatureFusion(CompositeLayer):
    """ICNet's cascade feature fusion unit (Zhao et al. 2018, Fig. 3), called on
    ``[small, large]``: fuses a coarse map into a finer one (usually twice its size).

    ``small`` is upsampled bilinearly to ``large``'s size and passed through a 3×3 convolution
    with dilation 2 + BN; ``large`` through a 1×1 convolution + BN; the sum goes through a ReLU.
    With ``num_classes`` it also returns the cascade label guidance: a 1×1 classifier on the
    upsampled ``small`` (ICNet's auxiliary loss at ``large``'s resolution), as ``[fused,
    logits]``.

    Args:
        filters: output channels of the fused map.
        num_classes: classes of the auxiliary classifier, or None (no classifier).

    Example:
        >>> import numpy as np
        >>> cff = CascadeFeatureFusion(24, num_classes=5)
        >>> fused, logits = cff([np.zeros((1, 4, 6, 32), "float32"),
        ...                      np.zeros((1, 8, 12, 16), "float32")])
        >>> tuple(fused.shape), tuple(logits.shape)
        ((1, 8, 12, 24), (1, 8, 12, 5))
    """

    def __init__(self, filters, num_classes=None, **kwargs):
        super().__init__(**kwargs)
        check_int("CascadeFeatureFusion", "filters", filters)
        if num_classes is not None:
            check_int("CascadeFeatureFusion", "num_classes", num_classes)
        self.filters = filters
        self.num_classes = num_classes
        policy = self.dtype_policy
        self.upsample = Resize(name="upsample", dtype=policy)
        self.small_conv, self.small_bn = conv_block_layers(
            filters, 3, "small_conv", dilation_rate=2, dtype=policy
        )
        self.large_conv, self.large_bn = conv_block_layers(filters, 1, "large_conv", dtype=policy)
        self.classifier = (
            None
            if num_classes is None
            else layers.Conv2D(num_classes, 1, name="classifier", dtype=policy)
        )

    def _check_shapes(self, shapes):
        if len(shapes) != 2:
            raise ValueError(
                "CascadeFeatureFusion: expects [small, large]. "
                f"Received: input_shape={self._shape_repr(shapes)}"
            )
        super()._check_shapes(shapes)

    def call(self, inputs, training=None):
        small, large = inputs
        upsampled = self.upsample([small, large])
        y = self.small_bn(self.small_conv(upsampled), training=training)
        z = self.large_bn(self.large_conv(large), training=training)
        fused = tf.nn.relu(y + z)
        if self.classifier is None:
            return fused
        return [fused, self.classifier(upsampled)]

    def _output_shape(self, shapes):
        b, h, w, _ = shapes[1]
        fused = (shapes[0][0], h, w, self.filters)
        if self.num_classes is None:
            return fused
        return [fused, (shapes[0][0], h, w, self.num_classes)]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "num_classes": self.num_classes}


def cascade_feature_fusion(small, large, filters, name, num_classes=None):
    """Applies ``CascadeFeatureFusion(filters, num_classes, name=name)`` to ``[small, large]``.

    Returns:
        The fused tensor ``[B, H_large, W_large, filters]``, or ``(fused, logits)`` with
        ``num_classes``.

    Example:
        >>> s, l = keras.Input((4, 6, 32)), keras.Input((8, 12, 16))
        >>> fused, logits = cascade_feature_fusion(s, l, 24, "cff", num_classes=5)
        >>> tuple(fused.shape), tuple(logits.shape)
        ((None, 8, 12, 24), (None, 8, 12, 5))
    """
    outputs = CascadeFeatureFusion(filters, num_classes=num_classes, name=name)([small, large])
    return outputs if num_classes is None else tuple(outputs)

"""ICNet's cascade feature fusion unit (Zhao, Qi, Shen, Shi, Jia, "ICNet for Real-Time
Semantic Segmentation on High-Resolution Images", ECCV 2018, Fig. 3), as a builder function."""

from __future__ import annotations

from keras import layers

from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.resize import Resize


def cascade_feature_fusion(small, large, filters, name, num_classes=None):
    """Fuses a coarse feature map ``small`` into a finer one ``large`` (twice its size).

    ``small`` is upsampled bilinearly to ``large``'s size and passed through a 3×3
    convolution with dilation 2 + BN; ``large`` through a 1×1 convolution + BN; the sum goes
    through a ReLU. With ``num_classes``, also returns the cascade label guidance: a 1×1
    classifier on the upsampled ``small`` (ICNet's auxiliary loss at ``large``'s resolution).

    Returns:
        The fused tensor ``[B, H_large, W_large, filters]``, or ``(fused, logits)`` with
        ``num_classes``.

    Example:
        >>> import keras
        >>> s, l = keras.Input((4, 6, 32)), keras.Input((8, 12, 16))
        >>> fused, logits = cascade_feature_fusion(s, l, 24, "cff", num_classes=5)
        >>> tuple(fused.shape), tuple(logits.shape)
        ((None, 8, 12, 24), (None, 8, 12, 5))
    """
    if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
        raise ValueError(
            f"cascade_feature_fusion: filters must be a positive int. Received: filters={filters!r}"
        )
    upsampled = Resize(name=f"{name}_upsample")([small, large])
    y = conv_bn_relu(upsampled, filters, 3, f"{name}_small_conv", dilation_rate=2, relu=False)
    z = conv_bn_relu(large, filters, 1, f"{name}_large_conv", relu=False)
    fused = layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([y, z]))
    if num_classes is None:
        return fused
    logits = layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(upsampled)
    return fused, logits

"""VGG16 (Simonyan & Zisserman 2015), the encoder of FCN, SegNet and DeepLab v1.

Layer names equal ``keras.applications.VGG16`` (``block{i}_conv{j}``), so its ImageNet weights
load by name. Inputs must be normalised in "caffe" mode. Pooling uses "same" padding, so any
input size works (a stride-2 pool of an odd size rounds up); pooling has no weights, so this
does not affect weight loading.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.backbones._pretrained import (
    LayerRecorder,
    check_output_stride,
    load_application_weights,
    stage_strides_and_rates,
)
from kseg.registry import BACKBONES

PREPROCESSING = "caffe"
_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


@BACKBONES.register("vgg16")
def vgg16(inputs, output_stride=32, weights=None, pool_size=2):
    """Builds VGG16's 13 convolutions on ``inputs`` and returns ``{"P1".."P5"}``.

    Args:
        inputs: Keras tensor ``[B, H, W, C]`` normalised in "caffe" mode.
        output_stride: 8, 16 or 32. Pools past it keep stride 1 (3×3 window, as in
            DeepLab) and the convolutions after them are dilated (OS 8: block5 rate 2).
        weights: None, "imagenet" or a path to a keras.applications VGG16 weights file.
        pool_size: window of the stride-2 max pools: 2 (VGG, FCN) or 3 (DeepLab v1's
            3×3 pools with padding 1).

    Returns:
        dict: ``P{i}`` = ``block{i}_pool`` (strides 2, 4, 8, 16, 32 before dilation).

    Example:
        >>> import keras
        >>> feats = vgg16(keras.Input((100, 60, 3)))
        >>> tuple(feats["P5"].shape[1:])
        (4, 2, 512)
    """
    check_output_stride("vgg16", output_stride)
    if pool_size not in (2, 3):
        raise ValueError(f"vgg16: pool_size must be 2 or 3, received {pool_size!r}")
    track = LayerRecorder()
    schedule = stage_strides_and_rates(output_stride, [2] * 5)
    x = inputs
    features = {}
    conv_rate = 1
    for block, ((filters, convs), (stride, rate_after)) in enumerate(zip(_BLOCKS, schedule), 1):
        for conv in range(1, convs + 1):
            x = track(
                layers.Conv2D(
                    filters,
                    3,
                    padding="same",
                    dilation_rate=conv_rate,
                    activation="relu",
                    name=f"block{block}_conv{conv}",
                )
            )(x)
        window = pool_size if stride == 2 else 3
        x = layers.MaxPooling2D(window, strides=stride, padding="same", name=f"block{block}_pool")(
            x
        )
        features[f"P{block}"] = x
        conv_rate = rate_after
    load_application_weights(
        "vgg16", track.layers, keras.applications.VGG16, weights, inputs.shape[-1]
    )
    return features


vgg16.preprocessing = PREPROCESSING

"""VGG16 (Simonyan & Zisserman 2015), the encoder of FCN, SegNet, DeconvNet and DeepLab v1.

``vgg16`` is the registered backbone (feature-level dict); ``vgg16_bn_encoder`` is the
batch-normalised variant with argmax-remembering pools that SegNet and DeconvNet unpool with.

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
from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.unpooling import MaxPoolingWithArgmax2D
from kseg.registry import BACKBONES

PREPROCESSING = "caffe"
_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
VGG16_FILTERS = tuple(filters for filters, _ in _BLOCKS)
VGG16_CONVS = tuple(convs for _, convs in _BLOCKS)


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
        raise ValueError(f"vgg16: pool_size must be 2 or 3. Received: pool_size={pool_size!r}")
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


def check_stage_filters(model, stage_filters):
    """Validates five positive ints (the width of VGG16's five stages); returns a tuple.

    Example:
        >>> check_stage_filters("SegNet", [8, 8, 16, 16, 16])
        (8, 8, 16, 16, 16)
    """
    try:
        filters = tuple(stage_filters)
    except TypeError:
        filters = None
    if (
        filters is None
        or len(filters) != 5
        or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters)
    ):
        raise ValueError(
            f"{model}: stage_filters must be 5 positive ints (VGG16: {VGG16_FILTERS}). "
            f"Received: stage_filters={stage_filters!r}"
        )
    return filters


def vgg_bn_names(conv_name):
    """BN and ReLU names of a VGG16-BN block, as SegNet and DeconvNet have always named them.

    Example:
        >>> vgg_bn_names("decoder5_conv3")
        {'bn_name': 'decoder5_bn3', 'relu_name': 'decoder5_relu3'}
    """
    return {
        "bn_name": conv_name.replace("conv", "bn"),
        "relu_name": conv_name.replace("conv", "relu"),
    }


def vgg16_bn_encoder(x, stage_filters, weights, model):
    """VGG16's convolutions with BN + ReLU and index-remembering ceil-mode 2×2 pools.

    The encoder of SegNet and DeconvNet. Convolutions are named ``block{i}_conv{j}`` as in
    ``keras.applications.VGG16``, so its ImageNet convolution weights load by name (the BN
    layers, ``block{i}_bn{j}``, keep their initial values).

    Args:
        x: Keras tensor ``[B, H, W, 3]`` normalised in "caffe" mode.
        stage_filters: widths of the five stages (``VGG16_FILTERS`` for pretrained weights).
        weights: None, "imagenet" or a path to a keras.applications VGG16 weights file.
        model: name used in error messages.

    Returns:
        ``(pooled, skips)``; ``skips[i] = (pre_pool_tensor, indices)`` for stage ``i+1``.

    Example:
        >>> import keras
        >>> x, skips = vgg16_bn_encoder(keras.Input((40, 40, 3)), (4, 4, 8, 8, 8), None, "demo")
        >>> tuple(x.shape[1:]), len(skips)
        ((2, 2, 8), 5)
    """
    recorder = LayerRecorder()
    skips = []
    for stage, (filters, convs) in enumerate(zip(stage_filters, VGG16_CONVS), 1):
        for index in range(1, convs + 1):
            name = f"block{stage}_conv{index}"
            x = conv_bn_relu(
                x, filters, 3, name, use_bias=True, track=recorder, **vgg_bn_names(name)
            )
        pre_pool = x
        x, indices = MaxPoolingWithArgmax2D(2, name=f"block{stage}_pool")(x)
        skips.append((pre_pool, indices))
    if weights is not None and tuple(stage_filters) != VGG16_FILTERS:
        raise ValueError(
            f"{model}: pretrained weights need stage_filters={VGG16_FILTERS}. "
            f"Received: stage_filters={tuple(stage_filters)}"
        )
    load_application_weights(model, recorder.layers, keras.applications.VGG16, weights, 3)
    return x, skips

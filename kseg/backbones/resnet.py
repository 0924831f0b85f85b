"""ResNet-50/101 (v1, He et al. 2016) with dilation and DeepLab's multi-grid.

Layer names and structure equal ``keras.applications.ResNet50/ResNet101`` (stride on the first
1×1 convolution of a stage, convolutions with biases, BatchNorm epsilon 1.001e-5), so their
ImageNet weights load by name. Inputs must be normalised in "caffe" mode
(``kseg.layers.ImageNormalization("caffe")``).
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
_BN_EPSILON = 1.001e-5
_DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
_APPLICATIONS = {"resnet50": "ResNet50", "resnet101": "ResNet101"}


def _bottleneck(x, filters, stride, rate, projection, name, track):
    if projection:
        shortcut = track(layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv"))(x)
        shortcut = track(layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_0_bn"))(
            shortcut
        )
    else:
        shortcut = x
    x = track(layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv"))(x)
    x = track(layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_1_bn"))(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = track(layers.Conv2D(filters, 3, padding="same", dilation_rate=rate, name=f"{name}_2_conv"))(
        x
    )
    x = track(layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_2_bn"))(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = track(layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv"))(x)
    x = track(layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_3_bn"))(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def resnet(inputs, depth_name, output_stride=32, weights=None, multi_grid=None, stem="standard"):
    """Builds ResNet-50 or -101 on ``inputs`` and returns ``{"P1".."P5"}``.

    Args:
        inputs: Keras tensor ``[B, H, W, C]`` normalised in "caffe" mode.
        depth_name: "resnet50" or "resnet101".
        output_stride: 8, 16 or 32. Stages past it use stride 1 and dilation instead
            (OS 16: conv5 rate 2; OS 8: conv4 rate 2, conv5 rate 4).
        weights: None, "imagenet" or a path to a keras.applications ResNet weights file.
        multi_grid: None or a sequence of 3 positive ints multiplying the dilation rate of
            the three conv5 blocks (DeepLab v3 uses (1, 2, 4)).
        stem: "standard" (7×7/64 convolution, keras.applications) or "deep" (three 3×3
            convolutions 64, 64, 128: the "ResNet-v1-beta" stem of DeepLab's released
            ResNet-101 and of PSPNet; about 7 B more multiply-adds at 513×513 and 124 k more
            parameters; no keras.applications weights, so ``weights`` must be None).

    Returns:
        dict: P1 = ``conv1_relu`` (stride 2), P2..P5 = outputs of conv2..conv5 (strides
        4, 8, 16, 32 before dilation).

    Example:
        >>> import keras
        >>> x = keras.Input((None, None, 3))
        >>> feats = resnet(x, "resnet50", output_stride=16, multi_grid=(1, 2, 4))
        >>> feats["P5"].shape[-1]
        2048
    """
    check_output_stride(depth_name, output_stride)
    if multi_grid is not None:
        multi_grid = tuple(multi_grid)
        if len(multi_grid) != 3 or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in multi_grid
        ):
            raise ValueError(
                f"{depth_name}: multi_grid must be 3 positive ints (one per conv5 block). "
                f"Received: multi_grid={multi_grid!r}"
            )
    if stem not in ("standard", "deep"):
        raise ValueError(
            f"{depth_name}: stem must be 'standard' or 'deep'. Received: stem={stem!r}"
        )
    if stem == "deep" and weights is not None:
        raise ValueError(
            f"{depth_name}: keras.applications has no weights for the deep stem; use weights=None "
            f"with stem='deep'. Received: weights={weights!r}"
        )
    track = LayerRecorder()
    if stem == "standard":
        x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
        x = track(layers.Conv2D(64, 7, strides=2, name="conv1_conv"))(x)
        x = track(layers.BatchNormalization(epsilon=_BN_EPSILON, name="conv1_bn"))(x)
        features = {"P1": layers.Activation("relu", name="conv1_relu")(x)}
    else:
        x = inputs
        for index, (filters, stride) in enumerate(((64, 2), (64, 1), (128, 1)), 1):
            x = layers.Conv2D(
                filters,
                3,
                strides=stride,
                padding="same",
                use_bias=False,
                name=f"conv1_{index}_conv",
            )(x)
            x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"conv1_{index}_bn")(x)
            x = layers.Activation("relu", name=f"conv1_{index}_relu")(x)
        features = {"P1": x}
    x = layers.ZeroPadding2D(1, name="pool1_pad")(features["P1"])
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    # conv2 keeps stride 4 (after the stem); conv3..conv5 each halve unless dilated.
    schedule = stage_strides_and_rates(output_stride, [4, 2, 2, 2])[1:]
    stage_strides = [1] + [stride for stride, _ in schedule]
    stage_rates = [1] + [rate for _, rate in schedule]
    for index, (filters, blocks) in enumerate(zip((64, 128, 256, 512), _DEPTHS[depth_name])):
        stage = index + 2
        for block in range(blocks):
            rate = stage_rates[index]
            if stage == 5 and multi_grid is not None:
                rate *= multi_grid[block]
            x = _bottleneck(
                x,
                filters,
                stride=stage_strides[index] if block == 0 else 1,
                rate=rate,
                projection=block == 0,
                name=f"conv{stage}_block{block + 1}",
                track=track,
            )
        features[f"P{stage}"] = x

    load_application_weights(
        depth_name,
        track.layers,
        getattr(keras.applications, _APPLICATIONS[depth_name]),
        weights,
        inputs.shape[-1],
    )
    return features


@BACKBONES.register("resnet50")
def resnet50(inputs, output_stride=32, weights=None, multi_grid=None, stem="standard"):
    """ResNet-50 backbone; see ``resnet``.

    Example:
        >>> import keras
        >>> feats = resnet50(keras.Input((64, 96, 3)), output_stride=8)
        >>> tuple(feats["P5"].shape[1:3])
        (8, 12)
    """
    return resnet(inputs, "resnet50", output_stride, weights, multi_grid, stem)


@BACKBONES.register("resnet101")
def resnet101(inputs, output_stride=32, weights=None, multi_grid=None, stem="standard"):
    """ResNet-101 backbone; see ``resnet``.

    Example:
        >>> import keras
        >>> feats = resnet101(keras.Input((64, 64, 3)), output_stride=16)
        >>> tuple(feats["P5"].shape[1:3])
        (4, 4)
    """
    return resnet(inputs, "resnet101", output_stride, weights, multi_grid, stem)


resnet50.preprocessing = PREPROCESSING
resnet101.preprocessing = PREPROCESSING

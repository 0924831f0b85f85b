"""Xception-65, the "aligned" Xception of DeepLab v3+ (Chen et al., ECCV 2018).

Differences from Chollet's Xception, as in DeepLab: a deeper middle flow (16 units), every
max pooling replaced by a strided depthwise-separable convolution (so dilation can replace
strides), and batch normalisation + ReLU after every depthwise and pointwise convolution
of the separable convolutions. Strided layers pad explicitly and symmetrically, as DeepLab
does. No ``keras.applications`` model has these weights: ``weights`` only accepts None or a
file saved from this backbone (e.g. ``keras.Model(inputs, features).save_weights(...)``).
Inputs must be normalised in "tf" mode ([-1, 1]).
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kseg.backbones._pretrained import check_output_stride
from kseg.layers.conv_block import conv_bn_relu
from kseg.registry import BACKBONES

PREPROCESSING = "tf"
_BN_EPSILON = 1e-3


def separable_unit(x, filters, name, stride=1, rate=1, relu_inside=False):
    """Depthwise 3×3 + BN (+ReLU), pointwise 1×1 + BN (+ReLU): DeepLab's separable conv.

    Strided units pad symmetrically first (``{name}_pad``), as DeepLab does.

    Example:
        >>> import keras
        >>> y = separable_unit(keras.Input((9, 9, 4)), 8, "unit", stride=2)
        >>> tuple(y.shape[1:])
        (5, 5, 8)
    """
    return conv_bn_relu(
        x,
        filters,
        3,
        name,
        strides=stride,
        dilation_rate=rate,
        padding="symmetric",
        separable=True,
        epsilon=_BN_EPSILON,
        relu=relu_inside,
    )


separable_conv_bn = separable_unit  # the name before the shared block


def _xception_module(x, depths, skip, stride, rate, name, relu_inside=False, unit_rates=(1, 1, 1)):
    """Three separable convs (the last one strided) and a conv / sum / no shortcut.

    Returns the module output and the output of its second separable convolution (the last
    feature before the module's stride, used as a decoder skip).
    """
    residual = x
    second = None
    for i, depth in enumerate(depths):
        if not relu_inside:
            residual = layers.Activation("relu", name=f"{name}_sepconv{i + 1}_pre_relu")(residual)
        residual = separable_unit(
            residual,
            depth,
            name=f"{name}_sepconv{i + 1}",
            stride=stride if i == 2 else 1,
            rate=rate * unit_rates[i],
            relu_inside=relu_inside,
        )
        if i == 1:
            second = residual
    if skip == "conv":
        shortcut = layers.Conv2D(
            depths[-1], 1, strides=stride, use_bias=False, name=f"{name}_shortcut"
        )(x)
        shortcut = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_shortcut_bn")(
            shortcut
        )
        residual = layers.Add(name=f"{name}_add")([residual, shortcut])
    elif skip == "sum":
        residual = layers.Add(name=f"{name}_add")([residual, x])
    return residual, second


# (name, depths, skip, stride, separable convs with BN+ReLU inside)
_ENTRY = (
    ("entry_block1", (128, 128, 128), "conv", 2, False),
    ("entry_block2", (256, 256, 256), "conv", 2, False),
    ("entry_block3", (728, 728, 728), "conv", 2, False),
)
_MIDDLE = tuple((f"middle_block{i}", (728, 728, 728), "sum", 1, False) for i in range(1, 17))
_EXIT = (
    ("exit_block1", (728, 1024, 1024), "conv", 2, False),
    ("exit_block2", (1536, 1536, 2048), "none", 1, True),
)


@BACKBONES.register("xception65", "xception_65")
def xception65(inputs, output_stride=32, weights=None, multi_grid=None):
    """Builds the aligned Xception-65 on ``inputs`` and returns ``{"P1".."P5"}``.

    Args:
        inputs: Keras tensor ``[B, H, W, C]`` normalised in "tf" mode.
        output_stride: 8, 16 or 32. The module whose stride would pass it keeps stride 1;
            every later module is dilated by the strides dropped (OS 16: exit_block2 rate 2).
        weights: None or a path to weights saved from this backbone (there are no
            keras.applications weights for Xception-65; "imagenet" raises an error).
        multi_grid: None or 3 ints multiplying the rates of exit_block2's separable convs.

    Returns:
        dict: P1 = stem (stride 2, 64 channels); P2, P3, P4 = second separable convolution of
        entry_block2, entry_block3 and exit_block1 (the last features before their stride:
        4, 8, 16; 256, 728, 1024 channels; P2 is DeepLab v3+'s decoder input); P5 =
        exit_block2 (32, 2048 channels).

    Example:
        >>> import keras
        >>> feats = xception65(keras.Input((65, 65, 3)), output_stride=16)
        >>> tuple(feats["P5"].shape[1:]), tuple(feats["P2"].shape[1:])
        ((5, 5, 2048), (17, 17, 256))
    """
    check_output_stride("xception65", output_stride)
    if multi_grid is not None:
        multi_grid = tuple(multi_grid)
        if len(multi_grid) != 3 or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in multi_grid
        ):
            raise ValueError(
                f"xception65: multi_grid must be 3 positive ints. Received: multi_grid={multi_grid!r}"
            )
    if weights == "imagenet":
        raise ValueError(
            "xception65: keras.applications has no weights for DeepLab's aligned Xception-65; "
            "use weights=None or a path to weights saved from this backbone"
        )
    x = conv_bn_relu(
        inputs, 32, 3, "entry_conv1", strides=2, padding="symmetric", epsilon=_BN_EPSILON
    )
    x = conv_bn_relu(x, 64, 3, "entry_conv2", epsilon=_BN_EPSILON)
    features = {"P1": x}
    current_stride, rate = 2, 1
    for name, depths, skip, stride, relu_inside in _ENTRY + _MIDDLE + _EXIT:
        module_rate = rate
        if current_stride * stride > output_stride:
            rate *= stride
            stride = 1
        else:
            current_stride *= stride
        unit_rates = multi_grid if (multi_grid and name == "exit_block2") else (1, 1, 1)
        x, second = _xception_module(
            x, depths, skip, stride, module_rate, name, relu_inside, unit_rates
        )
        level = {"entry_block2": "P2", "entry_block3": "P3", "exit_block1": "P4"}.get(name)
        if level:
            features[level] = second
    features["P5"] = x

    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
            raise FileNotFoundError(
                f"xception65: the weights file does not exist. Received: weights={weights!r}"
            )
        backbone = keras.Model(inputs, features)
        try:
            backbone.load_weights(os.fspath(weights))
        except Exception as error:  # noqa: BLE001 - re-raised naming the file
            raise ValueError(f"xception65: could not load weights {weights!r}: {error}") from error
    return features


xception65.preprocessing = PREPROCESSING

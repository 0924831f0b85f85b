"""MobileNetV3-Large and -Small (Howard et al., "Searching for MobileNetV3", ICCV 2019).

Layer names equal ``keras.applications.MobileNetV3Large`` / ``MobileNetV3Small`` (``conv``,
``expanded_conv_{i}_*``, ``conv_1``), so their ImageNet weights load by name. The backbone
ends at the last 1×1 convolution (``conv_1``: 960 channels for Large, 576 for Small, with
hard-swish), as DeepLab's MobileNetV3 feature extractor (``layer_17``); the classifier
(pooling, ``conv_2``, ``logits``) is left out. As in keras, the 16-channel stem is not scaled
by ``alpha``. Strided depthwise convolutions use "same" padding instead of keras'
explicit ``ZeroPadding2D`` (identical for even sizes, correct for odd ones).

Normalisation: keras.applications' MobileNetV3 carries its own ``Rescaling`` layer
(``x / 127.5 - 1``, its ``include_preprocessing``); here the model normalises in "tf" mode
(``ImageNormalization("tf")``, the same [-1, 1] mapping) in front of the backbone, as for every
kseg backbone, and the weights are read from the application built without its rescaling.

``reduced_tail=True`` is the segmentation variant of the paper (§6.4, "RF2": "reduce the
number of channels of the last block by a factor of 2"): every width of the last (stride-32)
stage and of the final 1×1 convolution is halved, the expansion of the stage's first block
included. That reproduces the paper's LR-ASPP parameter counts (Large 1.51 M, Small 0.47 M,
Table 7) to 0.5 %. torchvision's ``reduced_tail`` and TF slim's ``_reduce_consecutive_layers``
halve the outputs only, so the first block keeps its 672 (Large) / 288 (Small) expanded
channels, which gives 1.75 M / 0.52 M with the same head (+16 % / +10 % over the paper).
The halved layers have no ImageNet weights (the rest loads).

The "minimalistic" variants (``mobilenetv3_large_minimalistic``,
``mobilenetv3_small_minimalistic``; keras.applications' ``minimalistic=True``, TF slim's
``mobilenet_v3_*_minimalistic``) keep every width and stride but use no hard-swish (ReLU
everywhere), no squeeze-and-excite and only 3×3 depthwise kernels. They exist for hardware
and runtimes that do not run those ops well: TFLite's XNNPACK delegate (TF 2.21) has no int8
``HARD_SWISH``, so every hard-swish of the full networks runs on TFLite's reference kernel
in int8 and splits the graph, while the minimalistic networks run entirely in XNNPACK.
ImageNet weights exist for ``alpha=1.0`` only.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from kseg.backbones._pretrained import LayerRecorder, check_output_stride, load_application_weights
from kseg.backbones.mobilenet_v2 import make_divisible
from kseg.registry import BACKBONES

PREPROCESSING = "tf"

# (expansion, output channels, kernel, stride, squeeze-excite, activation) per block, from the
# paper's Tables 1 and 2 (keras.applications' spelling of the expansion factors).
_LARGE = (
    (1, 16, 3, 1, False, "relu"),
    (4, 24, 3, 2, False, "relu"),
    (3, 24, 3, 1, False, "relu"),
    (3, 40, 5, 2, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (6, 80, 3, 2, False, "hard_swish"),
    (2.5, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 160, 5, 2, True, "hard_swish"),
    (6, 160, 5, 1, True, "hard_swish"),
    (6, 160, 5, 1, True, "hard_swish"),
)
_SMALL = (
    (1, 16, 3, 2, True, "relu"),
    (72.0 / 16, 24, 3, 2, False, "relu"),
    (88.0 / 24, 24, 3, 1, False, "relu"),
    (4, 40, 5, 2, True, "hard_swish"),
    (6, 40, 5, 1, True, "hard_swish"),
    (6, 40, 5, 1, True, "hard_swish"),
    (3, 48, 5, 1, True, "hard_swish"),
    (3, 48, 5, 1, True, "hard_swish"),
    (6, 96, 5, 2, True, "hard_swish"),
    (6, 96, 5, 1, True, "hard_swish"),
    (6, 96, 5, 1, True, "hard_swish"),
)
# The block whose output is each feature level ("stem" is the first convolution, "top" conv_1).
_LEVELS = {
    "large": {"P1": 0, "P2": 2, "P3": 5, "P4": 11, "P5": "top"},
    "small": {"P1": "stem", "P2": 0, "P3": 2, "P4": 7, "P5": "top"},
}
_TAIL_START = {"large": 12, "small": 8}  # first block of the last (stride-32) stage
_ALPHAS_WITH_WEIGHTS = (0.75, 1.0)
_MINIMALISTIC_ALPHAS_WITH_WEIGHTS = (1.0,)


def _minimalistic(blocks):
    """The minimalistic blocks: same expansions, widths and strides; 3×3, ReLU, no SE."""
    return tuple((e, filters, 3, stride, False, "relu") for e, filters, _, stride, _, _ in blocks)


def _bn(name, track):
    return track(layers.BatchNormalization(epsilon=1e-3, momentum=0.999, name=name))


def _activation(kind, name):
    return layers.ReLU(name=name) if kind == "relu" else layers.Activation("hard_swish", name=name)


def _mobilenet_v3(
    variant,
    inputs,
    output_stride,
    weights,
    alpha,
    reduced_tail,
    name,
    application,
    minimalistic=False,
):
    check_output_stride(name, output_stride)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"{name}: alpha must be a positive number. Received: alpha={alpha!r}")
    alphas = _MINIMALISTIC_ALPHAS_WITH_WEIGHTS if minimalistic else _ALPHAS_WITH_WEIGHTS
    if weights is not None and alpha not in alphas:
        raise ValueError(
            f"{name}: keras.applications has weights for alpha in {alphas}. "
            f"Received: alpha={alpha!r}"
        )
    if not isinstance(reduced_tail, bool):
        raise ValueError(
            f"{name}: reduced_tail must be a bool. Received: reduced_tail={reduced_tail!r}"
        )
    blocks = _LARGE if variant == "large" else _SMALL
    if minimalistic:
        blocks = _minimalistic(blocks)
    top_activation = "relu" if minimalistic else "hard_swish"
    tail_start = _TAIL_START[variant]
    levels = _LEVELS[variant]
    track = LayerRecorder()
    tail_layers = []  # layers whose shapes reduced_tail changes (no pretrained weights)

    x = track(layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv"))(inputs)
    x = _bn("conv_bn", track)(x)
    x = _activation(top_activation, f"conv_{top_activation}")(x)
    features = {"P1": x} if levels["P1"] == "stem" else {}

    current_stride, rate = 2, 1
    for block_id, (expansion, filters, kernel, stride, se, act) in enumerate(blocks):
        block_rate = rate
        if current_stride * stride > output_stride:
            rate *= stride
            stride = 1
        else:
            current_stride *= stride
        divisor = 2 if reduced_tail and block_id >= tail_start else 1
        out_channels = make_divisible(filters * alpha / divisor)
        prefix = f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"
        in_channels = x.shape[-1]
        # The first block of the halved stage halves its expansion too (its input is not
        # halved yet): the paper's 1.51 M / 0.47 M parameters (module docstring).
        expanded = make_divisible(
            in_channels * expansion / (divisor if block_id == tail_start else 1)
        )
        first_layer = len(track.layers)
        y = x
        if block_id:
            y = track(layers.Conv2D(expanded, 1, use_bias=False, name=f"{prefix}expand"))(y)
            y = _bn(f"{prefix}expand_bn", track)(y)
            y = _activation(act, f"{prefix}expand_{act}")(y)
        y = track(
            layers.DepthwiseConv2D(
                kernel,
                strides=stride,
                padding="same",
                dilation_rate=block_rate,
                use_bias=False,
                name=f"{prefix}depthwise",
            )
        )(y)
        y = _bn(f"{prefix}depthwise_bn", track)(y)
        y = _activation(act, f"{prefix}depthwise_{act}")(y)
        if se:
            s = layers.GlobalAveragePooling2D(
                keepdims=True, name=f"{prefix}squeeze_excite_avg_pool"
            )(y)
            s = track(
                layers.Conv2D(
                    make_divisible(expanded * 0.25), 1, name=f"{prefix}squeeze_excite_conv"
                )
            )(s)
            s = layers.ReLU(name=f"{prefix}squeeze_excite_relu")(s)
            s = track(layers.Conv2D(expanded, 1, name=f"{prefix}squeeze_excite_conv_1"))(s)
            s = layers.Activation("hard_sigmoid", name=f"{prefix}squeeze_excite_hard_sigmoid")(s)
            y = layers.Multiply(name=f"{prefix}squeeze_excite_mul")([y, s])
        y = track(layers.Conv2D(out_channels, 1, use_bias=False, name=f"{prefix}project"))(y)
        y = _bn(f"{prefix}project_bn", track)(y)
        if in_channels == out_channels and blocks[block_id][3] == 1:
            y = layers.Add(name=f"{prefix}add")([x, y])
        if divisor == 2:
            tail_layers.extend(track.layers[first_layer:])
        x = y
        for level, level_block in levels.items():
            if level_block == block_id:
                features[level] = x

    top_channels = make_divisible(x.shape[-1] * 6)
    x = track(layers.Conv2D(top_channels, 1, use_bias=False, name="conv_1"))(x)
    x = _bn("conv_1_bn", track)(x)
    if reduced_tail:
        tail_layers.extend(track.layers[-2:])
    features["P5"] = _activation(top_activation, f"conv_1_{top_activation}")(x)

    tail_names = {layer.name for layer in tail_layers}
    load_application_weights(
        name,
        [layer for layer in track.layers if layer.name not in tail_names],
        application,
        weights,
        inputs.shape[-1],
        unused=tuple(sorted(tail_names)),
        alpha=alpha,
        include_preprocessing=False,
        input_shape=(224, 224, 3),
    )
    return features


@BACKBONES.register("mobilenetv3_large", "mobilenet_v3_large")
def mobilenet_v3_large(inputs, output_stride=32, weights=None, alpha=1.0, reduced_tail=False):
    """Builds MobileNetV3-Large on ``inputs`` and returns ``{"P1".."P5"}``.

    Args:
        inputs: Keras tensor ``[B, H, W, C]`` normalised in "tf" mode ([-1, 1]).
        output_stride: 8, 16 or 32. The block whose stride would pass it keeps stride 1 and
            the later depthwise convolutions are dilated (OS 16: blocks 13–14 rate 2, the
            LR-ASPP paper's "atrous convolution in the last block").
        weights: None, "imagenet" or a path to a keras.applications MobileNetV3Large weights
            file of the same ``alpha`` (ImageNet weights exist for 0.75 and 1.0).
        alpha: width multiplier of the blocks (channels rounded to multiples of 8).
        reduced_tail: halve the last stage and the final 1×1 convolution (segmentation).

    Returns:
        dict: P1 = block 0 (stride 2, 16 channels), P2 = block 2 (4, 24), P3 = block 5
        (8, 40), P4 = block 11 (16, 112), P5 = ``conv_1`` after hard-swish (32, 960; 480
        with ``reduced_tail``).

    Example:
        >>> import keras
        >>> feats = mobilenet_v3_large(keras.Input((64, 96, 3)), output_stride=16)
        >>> tuple(feats["P5"].shape[1:]), tuple(feats["P3"].shape[1:])
        ((4, 6, 960), (8, 12, 40))
    """
    return _mobilenet_v3(
        "large",
        inputs,
        output_stride,
        weights,
        alpha,
        reduced_tail,
        "mobilenet_v3_large",
        keras.applications.MobileNetV3Large,
    )


@BACKBONES.register("mobilenetv3_small", "mobilenet_v3_small")
def mobilenet_v3_small(inputs, output_stride=32, weights=None, alpha=1.0, reduced_tail=False):
    """Builds MobileNetV3-Small on ``inputs`` and returns ``{"P1".."P5"}``.

    Args: as :func:`mobilenet_v3_large` (OS 16 dilates blocks 9–10).

    Returns:
        dict: P1 = the stem (stride 2, 16 channels), P2 = block 0 (4, 16), P3 = block 2
        (8, 24), P4 = block 7 (16, 48), P5 = ``conv_1`` after hard-swish (32, 576; 288 with
        ``reduced_tail``).

    Example:
        >>> import keras
        >>> feats = mobilenet_v3_small(keras.Input((64, 96, 3)), reduced_tail=True)
        >>> tuple(feats["P5"].shape[1:])
        (2, 3, 288)
    """
    return _mobilenet_v3(
        "small",
        inputs,
        output_stride,
        weights,
        alpha,
        reduced_tail,
        "mobilenet_v3_small",
        keras.applications.MobileNetV3Small,
    )


mobilenet_v3_large.preprocessing = PREPROCESSING
mobilenet_v3_small.preprocessing = PREPROCESSING


def _minimalistic_application(application):
    """``application`` with ``minimalistic=True``, keeping its name for error messages."""
    built = functools.partial(application, minimalistic=True)
    built.__name__ = f"{application.__name__}(minimalistic=True)"
    return built


@BACKBONES.register("mobilenetv3_large_minimalistic", "mobilenet_v3_large_minimalistic")
def mobilenet_v3_large_minimalistic(
    inputs, output_stride=32, weights=None, alpha=1.0, reduced_tail=False
):
    """Builds MobileNetV3-Large-minimalistic on ``inputs`` and returns ``{"P1".."P5"}``.

    MobileNetV3-Large's widths and strides with ReLU instead of hard-swish, no
    squeeze-and-excite and 3×3 depthwise kernels (keras.applications'
    ``MobileNetV3Large(minimalistic=True)``, whose ImageNet weights load for ``alpha=1.0``);
    every op of it runs in XNNPACK in int8. Arguments and levels as
    :func:`mobilenet_v3_large`.

    Example:
        >>> import keras
        >>> feats = mobilenet_v3_large_minimalistic(keras.Input((64, 96, 3)), output_stride=16)
        >>> tuple(feats["P5"].shape[1:]), tuple(feats["P3"].shape[1:])
        ((4, 6, 960), (8, 12, 40))
    """
    return _mobilenet_v3(
        "large",
        inputs,
        output_stride,
        weights,
        alpha,
        reduced_tail,
        "mobilenet_v3_large_minimalistic",
        _minimalistic_application(keras.applications.MobileNetV3Large),
        minimalistic=True,
    )


@BACKBONES.register("mobilenetv3_small_minimalistic", "mobilenet_v3_small_minimalistic")
def mobilenet_v3_small_minimalistic(
    inputs, output_stride=32, weights=None, alpha=1.0, reduced_tail=False
):
    """Builds MobileNetV3-Small-minimalistic on ``inputs`` and returns ``{"P1".."P5"}``.

    MobileNetV3-Small's widths and strides with ReLU instead of hard-swish, no
    squeeze-and-excite and 3×3 depthwise kernels (keras.applications'
    ``MobileNetV3Small(minimalistic=True)``, ImageNet weights for ``alpha=1.0``). Arguments
    and levels as :func:`mobilenet_v3_small`.

    Example:
        >>> import keras
        >>> feats = mobilenet_v3_small_minimalistic(keras.Input((64, 96, 3)), reduced_tail=True)
        >>> tuple(feats["P5"].shape[1:])
        (2, 3, 288)
    """
    return _mobilenet_v3(
        "small",
        inputs,
        output_stride,
        weights,
        alpha,
        reduced_tail,
        "mobilenet_v3_small_minimalistic",
        _minimalistic_application(keras.applications.MobileNetV3Small),
        minimalistic=True,
    )


mobilenet_v3_large_minimalistic.preprocessing = PREPROCESSING
mobilenet_v3_small_minimalistic.preprocessing = PREPROCESSING

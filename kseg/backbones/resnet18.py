"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The basic-block ResNet of the paper's Table 1 (two 3×3 convolutions per block, [2, 2, 2, 2]
blocks of 64, 128, 256, 512 channels), as torchvision builds it: a 7×7/2 stem convolution and
3×3/2 max pooling, the stride on the first 3×3 convolution of a stage, a 1×1 convolution + BN
projection where the shape changes, convolutions without biases, BatchNorm epsilon 1e-5.
11,176,512 parameters without the classifier. ``keras.applications`` has no ResNet-18, so
there are no pretrained weights here (``weights`` must be None). Inputs are normalised in
"torch" mode (ImageNet mean and std), as torchvision's ResNet-18 expects. BiSeNet (V1) uses it
as its context path.
"""

from __future__ import annotations

from keras import layers

from kseg.backbones._pretrained import check_output_stride, stage_strides_and_rates
from kseg.registry import BACKBONES

PREPROCESSING = "torch"
_BN_EPSILON = 1e-5
_DEPTHS = {"resnet18": (2, 2, 2, 2)}


def _conv_bn(x, filters, kernel_size, stride, rate, name, relu):
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        dilation_rate=rate,
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def basic_block(x, filters, stride, rate, name):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut, then ReLU.

    Example:
        >>> import keras
        >>> y = basic_block(keras.Input((16, 16, 8)), 16, 2, 1, "block")
        >>> tuple(y.shape)
        (None, 8, 8, 16)
    """
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, 1, f"{name}_0", relu=False)
    y = _conv_bn(x, filters, 3, stride, rate, f"{name}_1", relu=True)
    y = _conv_bn(y, filters, 3, 1, rate, f"{name}_2", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


@BACKBONES.register("resnet18")
def resnet18(inputs, output_stride=32, weights=None):
    """Builds ResNet-18 on ``inputs`` and returns ``{"P1".."P5"}``.

    Args:
        inputs: Keras tensor ``[B, H, W, C]`` normalised in "torch" mode.
        output_stride: 8, 16 or 32; stages past it keep stride 1 and dilate their
            convolutions instead (OS 16: conv5 rate 2; OS 8: conv4 rate 2, conv5 rate 4).
        weights: must be None (keras.applications has no ResNet-18).

    Returns:
        dict: P1 = ``conv1_relu`` (stride 2, 64 channels), P2..P5 = outputs of conv2..conv5
        (strides 4, 8, 16, 32 before dilation; 64, 128, 256, 512 channels).

    Example:
        >>> import keras
        >>> feats = resnet18(keras.Input((64, 96, 3)))
        >>> [tuple(feats[k].shape[1:]) for k in ("P3", "P5")]
        [(8, 12, 128), (2, 3, 512)]
    """
    check_output_stride("resnet18", output_stride)
    if weights is not None:
        raise ValueError(
            "resnet18: no pretrained ResNet-18 weights are available (keras.applications has "
            f"none); use weights=None. Received: weights={weights!r}"
        )
    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="conv1_conv")(inputs)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="conv1_bn")(x)
    features = {"P1": layers.ReLU(name="conv1_relu")(x)}
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(features["P1"])
    schedule = stage_strides_and_rates(output_stride, [4, 2, 2, 2])[1:]
    strides = [1] + [stride for stride, _ in schedule]
    rates = [1] + [rate for _, rate in schedule]
    for index, (filters, blocks) in enumerate(zip((64, 128, 256, 512), _DEPTHS["resnet18"])):
        stage = index + 2
        for block in range(blocks):
            x = basic_block(
                x,
                filters,
                stride=strides[index] if block == 0 else 1,
                rate=rates[index],
                name=f"conv{stage}_block{block + 1}",
            )
        features[f"P{stage}"] = x
    return features


resnet18.preprocessing = PREPROCESSING

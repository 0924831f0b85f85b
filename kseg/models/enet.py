"""ENet (Paszke, Chaurasia, Kim, Culurciello, 2016): real-time segmentation by early
downsampling and a large encoder / small decoder of bottlenecks (blocks: the
``kseg.layers.ENet*`` layers)."""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.crop import CropLike
from kseg.layers.enet_blocks import (
    ENetBottleneck,
    ENetDownsamplingBottleneck,
    ENetInitialBlock,
    ENetUpsamplingBottleneck,
)
from kseg.layers.image_normalization import ImageNormalization
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_positive_number,
    check_rate,
)
from kseg.registry import MODELS

# stage 2 and 3 (stage 3 lacks the down-sampling bottleneck): (kind, dilation or kernel size)
_STAGE_2_3 = (
    ("regular", 1),
    ("dilated", 2),
    ("asymmetric", 5),
    ("dilated", 4),
    ("regular", 1),
    ("dilated", 8),
    ("asymmetric", 5),
    ("dilated", 16),
)


def _width(channels, alpha):
    return max(8, int(round(channels * alpha / 4)) * 4)


@MODELS.register("enet")
@keras.saving.register_keras_serializable(package="kseg")
class ENet(SegmentationModel):
    """ENet: initial block, 5 stages of bottlenecks, a 2×2 stride-2 transposed convolution.

    Stage 1 down-samples to 1/4 (64 channels, 4 more bottlenecks, dropout 0.01), stage 2 to
    1/8 (128 channels) and stages 2-3 alternate regular, dilated (2, 4, 8, 16) and asymmetric
    5×1/1×5 bottlenecks (dropout 0.1); stages 4-5 up-sample with the max-unpooling indices of
    stages 2 and 1 (64, then 16 channels). Good for: the smallest, fastest classic real-time
    model (embedded boards, phones), where accuracy may give way to speed.

    Any input size works: pooling is in ceil mode, unpooling returns to the pre-pool size and
    the transposed convolutions' outputs are cropped (top-left) to it, so a size not divisible
    by 8 needs no padding by the caller.

    Parameters (Cityscapes, 19 classes): 363,967 trainable (PyTorch's count: BN weight and bias,
    not the running statistics), 372,319 in all; the paper says 0.37 M ([?] in
    REFERENCE_NUMBERS: 1.6 % apart), a PyTorch reimplementation counts 0.352 M (3.4 %; it has
    one PReLU slope per layer and no biases). Multiply-adds at 640×360: 1.72 G (3.45 GFLOPs;
    the [?] figure is 3.83 GFLOPs). The structure follows the authors' Torch code (biases on the
    initial convolution and the final transposed convolution only; PReLU per channel, also in
    the decoder).

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, C)``; H and W may be None or any size.
        alpha: width multiplier on every stage's channels (paper: 1.0), rounded to multiples of
            4 (at least 8).
        dropout: spatial dropout after stage 1 (paper: 0.1; stage 1 uses a tenth of it).

    Example:
        >>> model = ENet(num_classes=19, input_shape=(64, 96, 3))
        >>> tuple(model.output_shape)
        (None, 64, 96, 19)
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        alpha=1.0,
        dropout=0.1,
        name=None,
        **kwargs,
    ):
        check_num_classes("ENet", num_classes)
        input_shape = check_input_shape("ENet", input_shape)
        check_positive_number("ENet", "alpha", alpha)
        check_rate("ENet", "dropout", dropout)
        c1, c2, c3 = (_width(c, alpha) for c in (16, 64, 128))
        if c1 <= input_shape[2]:
            raise ValueError(
                f"ENet: the initial block needs more than {input_shape[2]} filters; "
                f"alpha={alpha!r} gives {c1}. Received: alpha={alpha!r}"
            )

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("unit", name="normalize")(images)
        x0 = ENetInitialBlock(c1, name="initial")(x)
        x, indices1 = ENetDownsamplingBottleneck(c2, dropout=dropout / 10, name="bottleneck1_0")(x0)
        for i in range(1, 5):
            x = ENetBottleneck(c2, dropout=dropout / 10, name=f"bottleneck1_{i}")(x)
        x1 = x
        x, indices2 = ENetDownsamplingBottleneck(c3, dropout=dropout, name="bottleneck2_0")(x1)
        for stage in (2, 3):
            for i, (kind, arg) in enumerate(_STAGE_2_3, start=1):
                x = ENetBottleneck(
                    c3,
                    kind=kind,
                    dilation_rate=arg if kind == "dilated" else 1,
                    asymmetric_size=arg if kind == "asymmetric" else 5,
                    dropout=dropout,
                    name=f"bottleneck{stage}_{i}",
                )(x)
        x = ENetUpsamplingBottleneck(c2, dropout=dropout, name="bottleneck4_0")([x, indices2, x1])
        for i in (1, 2):
            x = ENetBottleneck(c2, dropout=dropout, name=f"bottleneck4_{i}")(x)
        x = ENetUpsamplingBottleneck(c1, dropout=dropout, name="bottleneck5_0")([x, indices1, x0])
        x = ENetBottleneck(c1, dropout=dropout, name="bottleneck5_1")(x)
        x = layers.Conv2DTranspose(num_classes, 2, strides=2, name="fullconv")(x)
        logits = CropLike(name="crop")([x, images])
        super().__init__(images, logits, name=name or "enet", **kwargs)
        self._store_config(
            num_classes=num_classes, input_shape=input_shape, alpha=alpha, dropout=dropout
        )

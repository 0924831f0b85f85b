"""ERFNet (Romera, Álvarez, Bergasa, Arroyo, IEEE T-ITS 2017): an ENet-like encoder-decoder
of factorised residual blocks (blocks in ``kseg.layers.erfnet_blocks``)."""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.crop import CropLike
from kseg.layers.erfnet_blocks import ERFNetDownsampler, ERFNetUpsampler, NonBottleneck1D
from kseg.layers.image_normalization import ImageNormalization
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_positive_number,
    check_rate,
)
from kseg.registry import MODELS


def _width(channels, alpha):
    return max(4, int(round(channels * alpha)))


@MODELS.register("erfnet")
@keras.saving.register_keras_serializable(package="kseg")
class ERFNet(SegmentationModel):
    """ERFNet: three down-samplers and 13 non-bottleneck-1D blocks, a small up-sampling decoder.

    Encoder: down-sampler to 16 channels (1/2), to 64 (1/4), 5 non-bt-1D (dropout 0.03),
    down-sampler to 128 (1/8), 2 × non-bt-1D with dilations 2, 4, 8, 16 (dropout 0.3). Decoder:
    up-sampler to 64, 2 non-bt-1D, up-sampler to 16, 2 non-bt-1D, a 2×2 stride-2 transposed
    convolution to the classes. Good for: real-time driving scenes where accuracy matters more
    than with ENet (≈ 70 % Cityscapes mIoU at 2 M parameters); plain convolutions that every
    runtime executes fast.

    Any input size works: down-sampling is in ceil mode and the logits are cropped (top-left) to
    the input size.

    Parameters (Cityscapes, 19 classes): 2,064,191 trainable (PyTorch's count: BN weight and
    bias, not the running statistics), 2,070,783 in all; published ≈2.06 M ([?], 0.2 % apart).
    The authors' PyTorch code (biases on every convolution, as here) also holds the encoder-only
    1×1 classifier (2,451 more for 19 classes), unused by the full network and left out here.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, C)``; H and W may be None or any size.
        alpha: width multiplier on every layer's channels (paper: 1.0).
        dropout: dropout of the 1/8 blocks (paper: 0.3; the 1/4 blocks use a tenth of it).

    Example:
        >>> model = ERFNet(num_classes=19, input_shape=(64, 96, 3))
        >>> tuple(model.output_shape)
        (None, 64, 96, 19)
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        alpha=1.0,
        dropout=0.3,
        name=None,
        **kwargs,
    ):
        check_num_classes("ERFNet", num_classes)
        input_shape = check_input_shape("ERFNet", input_shape)
        check_positive_number("ERFNet", "alpha", alpha)
        check_rate("ERFNet", "dropout", dropout)
        c1, c2, c3 = (_width(c, alpha) for c in (16, 64, 128))
        if c1 <= input_shape[2] or c2 <= c1 or c3 <= c2:
            raise ValueError(
                f"ERFNet: alpha={alpha!r} gives widths {(c1, c2, c3)}, which must grow from the "
                f"{input_shape[2]} input channels. Received: alpha={alpha!r}"
            )

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("unit", name="normalize")(images)
        x = ERFNetDownsampler(c1, name="down1")(x)
        x = ERFNetDownsampler(c2, name="down2")(x)
        for i in range(1, 6):
            x = NonBottleneck1D(dropout=dropout / 10, name=f"enc64_{i}")(x)
        x = ERFNetDownsampler(c3, name="down3")(x)
        for i, rate in enumerate((2, 4, 8, 16, 2, 4, 8, 16), start=1):
            x = NonBottleneck1D(dilation_rate=rate, dropout=dropout, name=f"enc128_{i}")(x)
        x = ERFNetUpsampler(c2, name="up1")(x)
        for i in (1, 2):
            x = NonBottleneck1D(name=f"dec64_{i}")(x)
        x = ERFNetUpsampler(c1, name="up2")(x)
        for i in (1, 2):
            x = NonBottleneck1D(name=f"dec16_{i}")(x)
        x = layers.Conv2DTranspose(num_classes, 2, strides=2, name="output_conv")(x)
        logits = CropLike(name="crop")([x, images])
        super().__init__(images, logits, name=name or "erfnet", **kwargs)
        self._store_config(
            num_classes=num_classes, input_shape=input_shape, alpha=alpha, dropout=dropout
        )

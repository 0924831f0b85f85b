"""U-Net: Convolutional Networks for Biomedical Image Segmentation (Ronneberger et al., MICCAI 2015).

Two variants:

- ``"paper"``: the paper's network. Unpadded ("valid") 3×3 convolutions with ReLU, 2×2 max
  pooling, 2×2 up-convolutions halving the channels, the contracting path's maps centre-cropped
  and concatenated, no normalisation layers, dropout at the end of the contracting path, He
  initialisation. The output is smaller than the input (572 → 388) and only some input sizes
  give integral crops: others are rejected with the nearest valid sizes.
- ``"same"`` (default): "same"-padded convolutions with BatchNorm. It takes any input size: the
  input is zero-padded at the bottom/right to a multiple of ``2 ** depth`` inside the model and
  the logits are cropped back, so the output always has the input's size.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.crop import CropLike, PadToMultiple
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.pixel_shuffle import DepthToSpace, SpaceToDepth
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_rate,
)
from kseg.registry import MODELS

VARIANTS = ("same", "paper")


def paper_output_size(size, depth=4):
    """Output size of the paper U-Net for input ``size``, or None when the crops do not fit.

    Every map entering a 2×2 pooling must have an even size and every map must stay positive.

    Example:
        >>> paper_output_size(572)
        388
        >>> paper_output_size(570) is None
        True
    """
    skips = []
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        skips.append(size)
        size //= 2
    size -= 4
    if size <= 0:
        return None
    for skip in reversed(skips):
        size *= 2
        if (skip - size) % 2 or skip < size:
            return None
        size -= 4
        if size <= 0:
            return None
    return size


def nearest_paper_sizes(size, depth=4):
    """The valid paper-variant input sizes just below and just above ``size``.

    Example:
        >>> nearest_paper_sizes(570)
        [556, 572]
    """
    below = next((s for s in range(size - 1, 0, -1) if paper_output_size(s, depth)), None)
    above = size + 1
    while paper_output_size(above, depth) is None:
        above += 1
    return [s for s in (below, above) if s is not None]


def _conv(x, filters, variant, name):
    if variant == "paper":
        return layers.Conv2D(
            filters, 3, activation="relu", kernel_initializer="he_normal", name=name
        )(x)
    return conv_bn_relu(x, filters, 3, name, kernel_initializer="he_normal")


@MODELS.register("unet")
@keras.saving.register_keras_serializable(package="kseg")
class UNet(SegmentationModel):
    """U-Net, the paper's version or a same-padding BatchNorm version.

    ``UNet(num_classes=2, input_shape=(572, 572, 1), variant="paper")`` has exactly
    31,030,658 parameters and a 388×388 output, like the paper's figure. The paper's weight
    map for touching objects is ``kseg.models.unet_weight_map``.

    Args:
        num_classes: number of classes (logits channels).
        input_shape: ``(H, W, C)``, H/W may be None. Images are in [0, 255] and scaled to
            [0, 1] inside the model; any channel count.
        variant: "same" (any size, output at input size) or "paper" (valid convolutions,
            output smaller than the input; see ``paper_output_size``).
        base_filters: channels of the first level, doubled at each level (paper: 64).
        depth: number of poolings (paper: 4).
        dropout: dropout rate at the end of the contracting path; None means 0.5 for the
            paper variant (as in the paper) and 0 for "same".
        space_to_depth: block size ``b``; above 1 ("same" variant only) the image's
            ``b × b`` pixel blocks are folded into channels (``SpaceToDepth``) so that every
            level runs at ``1/b`` resolution, and the logits are ``b²·num_classes`` sub-pixel
            channels spread back by ``DepthToSpace`` (ESPCN's sub-pixel layer): the output
            keeps the input's size. On a CPU ``b = 2`` makes a training step about 1.6×
            cheaper for the same parameter count (``kseg demo`` uses it).

    Raises:
        ValueError: for a paper-variant input size whose crops do not fit; the message lists
            the nearest valid sizes.

    Example:
        >>> model = UNet(num_classes=3, input_shape=(90, 70, 3), base_filters=8)
        >>> tuple(model.output_shape)
        (None, 90, 70, 3)
        >>> UNet(num_classes=2, input_shape=(572, 572, 1), variant="paper").output_shape
        (None, 388, 388, 2)
    """

    def __init__(
        self,
        num_classes=2,
        input_shape=(None, None, 3),
        variant="same",
        base_filters=64,
        depth=4,
        dropout=None,
        space_to_depth=1,
        name=None,
        **kwargs,
    ):
        check_num_classes("UNet", num_classes)
        input_shape = check_input_shape("UNet", input_shape)
        check_choice("UNet", "variant", variant, VARIANTS)
        check_positive_int("UNet", "base_filters", base_filters)
        check_positive_int("UNet", "depth", depth)
        if dropout is not None:
            check_rate("UNet", "dropout", dropout)
        check_positive_int("UNet", "space_to_depth", space_to_depth)
        if space_to_depth > 1 and variant == "paper":
            raise ValueError(
                "UNet: space_to_depth > 1 needs variant='same' (the paper variant's valid "
                f"convolutions crop the output). Received: space_to_depth={space_to_depth}"
            )
        rate = (0.5 if variant == "paper" else 0.0) if dropout is None else dropout
        if variant == "paper":
            for axis, size in zip(("height", "width"), input_shape[:2]):
                if size is not None and paper_output_size(size, depth) is None:
                    raise ValueError(
                        f"UNet(variant='paper'): input {axis} {size} does not give integral "
                        f"crops at depth {depth}; nearest valid sizes: "
                        f"{nearest_paper_sizes(size, depth)}"
                    )

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("unit", name="normalize")(images)
        if variant == "same":
            x = PadToMultiple(2**depth * space_to_depth, name="pad")(x)
        if space_to_depth > 1:
            x = SpaceToDepth(space_to_depth, name="space_to_depth")(x)
        skips = []
        for level in range(depth):
            filters = base_filters * 2**level
            x = _conv(x, filters, variant, f"down{level + 1}_conv1")
            x = _conv(x, filters, variant, f"down{level + 1}_conv2")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"down{level + 1}_pool")(x)
        filters = base_filters * 2**depth
        x = _conv(x, filters, variant, "bottom_conv1")
        x = _conv(x, filters, variant, "bottom_conv2")
        if rate:
            x = layers.Dropout(rate, name="bottom_dropout")(x)
        for level in reversed(range(depth)):
            filters = base_filters * 2**level
            x = layers.Conv2DTranspose(
                filters, 2, strides=2, kernel_initializer="he_normal", name=f"up{level + 1}_upconv"
            )(x)
            skip = skips[level]
            if variant == "paper":
                skip = CropLike("center", name=f"up{level + 1}_crop")([skip, x])
            x = layers.Concatenate(name=f"up{level + 1}_concat")([skip, x])
            x = _conv(x, filters, variant, f"up{level + 1}_conv1")
            x = _conv(x, filters, variant, f"up{level + 1}_conv2")
        if space_to_depth > 1:
            x = layers.Conv2D(num_classes * space_to_depth**2, 1, name="subpixel_logits")(x)
            logits = DepthToSpace(space_to_depth, name="logits")(x)
        else:
            logits = layers.Conv2D(num_classes, 1, name="logits")(x)
        if variant == "same":
            logits = CropLike("top_left", name="crop_to_input")([logits, images])
        super().__init__(images, logits, name=name or "unet", **kwargs)

        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            variant=variant,
            base_filters=base_filters,
            depth=depth,
            dropout=dropout,
            space_to_depth=space_to_depth,
        )

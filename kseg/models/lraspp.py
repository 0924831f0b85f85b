"""LR-ASPP: MobileNetV3 with the Lite Reduced ASPP head (Howard et al., ICCV 2019, §6.4)."""

from __future__ import annotations

import keras

from kseg import backbones
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.lraspp import LiteRASPP
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_options,
    check_positive_int,
    check_weights,
)
from kseg.registry import MODELS

_BACKBONES = (
    "mobilenetv3_large",
    "mobilenetv3_small",
    "mobilenetv3_large_minimalistic",
    "mobilenetv3_small_minimalistic",
)


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


@MODELS.register("lraspp", "lr_aspp")
@keras.saving.register_keras_serializable(package="kseg")
class LRASPP(SegmentationModel):
    """MobileNetV3 + Lite R-ASPP: the paper's mobile semantic segmentation model.

    "Searching for MobileNetV3" (Howard et al., ICCV 2019), §6.4: the last stage of a
    MobileNetV3 runs dilated at output stride 16 with its channels halved ("RF2",
    ``reduced_tail``); the head (``kseg.layers.LiteRASPP``) gates a 1×1 / 128 convolution of
    the stride-16 features by the sigmoid of their average-pooled projection, upsamples it to
    stride 8 and adds 1×1 classifications of both; the sum is upsampled bilinearly to the
    input. Good for real-time segmentation on phones and CPUs: a few GMAdds at Cityscapes
    resolution, TFLite built-in ops only, hard-swish and sigmoid quantise to int8 (but
    XNNPACK, TFLite's CPU delegate, runs no int8 hard-swish: for int8 on CPUs take a
    minimalistic backbone).

    Paper configuration (Cityscapes, 19 classes, 1024×2048, RF2, F = 128), Table 7:
    MobileNetV3-Large 1.51 M parameters / 9.74 B MAdds, -Small 0.47 M / 2.90 B (marked [?] in
    REFERENCE_NUMBERS; the paper counts multiply-adds). Here, trainable parameters and
    ``kseg.bench.profile`` MAdds at 1024×2048: Large 1,505,550 / 9.32 B (-0.3 % / -4.3 %),
    Small 467,486 / 2.69 B (-0.5 % / -7.3 %). We follow the paper's counts: its "RF2" halves
    the whole last stage, the first block's expansion included (see
    ``kseg.backbones.mobilenet_v3``); torchvision's ``lraspp_mobilenet_v3_large`` (with
    ``reduced_tail``) and TF slim keep that block's 672 / 288 expanded channels, which gives
    1.75 M / 0.52 M and 9.92 B / 2.83 B. The head follows torchvision's ``LRASPPHead``: the
    low-level features are the stride-8 block output (40 / 24 channels; DeepLab's TF code
    takes a depthwise output there), the pooling is global by default (``LiteRASPP``).

    Args:
        num_classes: number of classes (19 for Cityscapes).
        input_shape: ``(H, W, 3)``; any size (H and W may be None).
        backbone: "mobilenetv3_large" (default), "mobilenetv3_small", or their
            minimalistic variants "mobilenetv3_large_minimalistic" /
            "mobilenetv3_small_minimalistic" (ReLU, no squeeze-excite, 3×3 kernels: no
            int8 hard-swish, which TFLite's XNNPACK does not run, so the whole int8 model runs
            in XNNPACK; ImageNet weights for ``alpha=1.0``).
        output_stride: 16 (paper) or 32 (no dilation, cheaper); 8 also works.
        weights: None, "imagenet" or a keras.applications MobileNetV3 weights file (the
            halved tail has no ImageNet weights and starts random).
        alpha: width multiplier of the backbone (ImageNet weights for 0.75 and 1.0).
        reduced_tail: halve the last stage (paper: True).
        filters: width of the head's high branch (paper: 128).
        pool_size, pool_strides: the head's pooling window in stride-16 feature pixels;
            None is global average pooling. The paper's 49×49 / (16, 20) on 1024×2048.
        backbone_options: extra backbone arguments.

    Example:
        >>> model = LRASPP(num_classes=19, backbone="mobilenetv3_small", input_shape=(64, 96, 3))
        >>> tuple(model.output_shape)
        (None, 64, 96, 19)
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        backbone="mobilenetv3_large",
        output_stride=16,
        weights=None,
        alpha=1.0,
        reduced_tail=True,
        filters=128,
        pool_size=None,
        pool_strides=None,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("LRASPP", num_classes)
        input_shape = check_input_shape("LRASPP", input_shape, channels=(3,))
        check_choice("LRASPP", "backbone", backbone, _BACKBONES)
        check_choice("LRASPP", "output_stride", output_stride, (8, 16, 32))
        check_positive_int("LRASPP", "filters", filters)
        check_options("LRASPP", "backbone_options", backbone_options)
        weights = check_weights("LRASPP", weights)
        builder = backbones.BACKBONES.get(backbone)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization(builder.preprocessing, name="normalize")(images)
        features = backbones.build(
            backbone,
            x,
            output_stride=output_stride,
            weights=weights,
            alpha=alpha,
            reduced_tail=reduced_tail,
            **(backbone_options or {}),
        )
        x = LiteRASPP(
            num_classes, filters, pool_size=pool_size, pool_strides=pool_strides, name="head"
        )([features["P5"], features["P3"]])
        logits = Resize(name="upsample")([x, images])
        super().__init__(images, logits, name=name or "lraspp", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            output_stride=output_stride,
            weights=weights,
            alpha=alpha,
            reduced_tail=reduced_tail,
            filters=filters,
            pool_size=_as_tuple(pool_size),
            pool_strides=_as_tuple(pool_strides),
            backbone_options=backbone_options,
        )

"""ESPNet (Mehta et al., ECCV 2018) and ESPNetV2 (Mehta et al., CVPR 2019): real-time
segmentation from efficient spatial pyramids of dilated convolutions (blocks in
``kseg.layers.esp_blocks``)."""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.crop import CropLike
from kseg.layers.esp_blocks import (
    EESPDownsampler,
    EESPUnit,
    EfficientPWConv,
    EfficientPyramidPooling,
    ESPModule,
    avg_pool_3x3_s2,
    bn_prelu,
    conv_bn_prelu,
)
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
)
from kseg.registry import MODELS


def _up2(x, filters, name):
    """The authors' 2×2 stride-2 transposed convolution without bias."""
    return layers.Conv2DTranspose(filters, 2, strides=2, use_bias=False, name=name)(x)


@MODELS.register("espnet")
@keras.saving.register_keras_serializable(package="kseg")
class ESPNet(SegmentationModel):
    """ESPNet (v1): the ESPNet-C encoder of ESP modules and its light decoder.

    Encoder (ESPNet-C): a 3×3 stride-2 CBR (16 channels) joined with the image average-pooled to
    1/2; an ESP down-sampler to 64 channels (1/4), ``p`` ESP modules, joined with the 1/4 image
    and the down-sampler's output; an ESP down-sampler to 128 (1/8), ``q`` ESP modules, joined
    with that down-sampler's output; a 1×1 classifier. Decoder: the 1/8 class map (BN) is
    up-sampled (2×2 transposed convolution), concatenated with a 1×1 class projection of the
    1/4 features, fused by an ESP module without residual, up-sampled to 1/2, concatenated with
    the 1/2 features, fused by a 3×3 CBR and up-sampled to the input. Follows the authors'
    PyTorch code (``ESPNet`` in ``train/Model.py``). Good for: very small, fast models on
    embedded GPUs (0.36 M parameters, 112 fps on a TitanX at 1024×512 in the paper).

    Any input size works: the up-sampled maps are cropped (top-left) to the skip features.
    The decoder's maps have ``num_classes`` channels, but at least 5 (its ESP module has 5
    branches): below 5 classes only the last transposed convolution has ``num_classes``.

    Parameters (Cityscapes, 19 classes, p = 2, q = 8 as the authors' released models):
    363,462 trainable (the PyTorch ``parameters()`` count: BN weight and bias, not the running
    statistics), 367,222 in all; published 0.364 M (0.2 % apart). The code's default ``q = 3``
    gives 201,542.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, C)``; H and W may be None or any size.
        p: ESP modules at 1/4 (paper: 2).
        q: ESP modules at 1/8 (paper: 8; the code's default 3 gives a smaller model).

    Example:
        >>> model = ESPNet(num_classes=19, input_shape=(64, 96, 3))
        >>> tuple(model.output_shape)
        (None, 64, 96, 19)
    """

    def __init__(self, num_classes=19, input_shape=(None, None, 3), p=2, q=8, name=None, **kwargs):
        check_num_classes("ESPNet", num_classes)
        input_shape = check_input_shape("ESPNet", input_shape)
        check_positive_int("ESPNet", "p", p)
        check_positive_int("ESPNet", "q", q)
        # the decoder works at the class count (its ESP module needs 5 channels or more)
        width = max(num_classes, 5)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("torch", name="normalize")(images)
        image2 = avg_pool_3x3_s2(x, "image_pool1")
        image4 = avg_pool_3x3_s2(image2, "image_pool2")
        level1 = conv_bn_prelu(x, 16, 3, "level1", strides=2)
        level1 = layers.Concatenate(name="level1_concat")([level1, image2])
        level1 = bn_prelu(level1, "level1_cat")
        down2 = ESPModule(64, downsample=True, name="level2_0")(level1)
        y = down2
        for i in range(1, p + 1):
            y = ESPModule(64, name=f"level2_{i}")(y)
        level2 = layers.Concatenate(name="level2_concat")([y, down2, image4])
        level2 = bn_prelu(level2, "level2_cat")
        down3 = ESPModule(128, downsample=True, name="level3_0")(level2)
        y = down3
        for i in range(1, q + 1):
            y = ESPModule(128, name=f"level3_{i}")(y)
        level3 = layers.Concatenate(name="level3_concat")([down3, y])
        level3 = bn_prelu(level3, "level3_cat")
        y = layers.Conv2D(width, 1, use_bias=False, name="encoder_classifier")(level3)
        y = layers.BatchNormalization(epsilon=1e-3, name="encoder_classifier_bn")(y)
        y = _up2(y, width, "up_l3")
        skip2 = layers.Conv2D(width, 1, use_bias=False, name="level2_classifier")(level2)
        y = CropLike(name="up_l3_crop")([y, skip2])
        y = layers.Concatenate(name="merge_l2_concat")([skip2, y])
        y = bn_prelu(y, "merge_l2")
        y = ESPModule(width, residual=False, name="merge_l2_esp")(y)
        y = _up2(y, width, "up_l2")
        y = CropLike(name="up_l2_crop")([y, level1])
        y = bn_prelu(y, "up_l2")
        y = layers.Concatenate(name="merge_l1_concat")([y, level1])
        y = conv_bn_prelu(y, width, 3, "merge_l1")
        y = _up2(y, num_classes, "classifier")
        logits = CropLike(name="crop")([y, images])
        super().__init__(images, logits, name=name or "espnet", **kwargs)
        self._store_config(num_classes=num_classes, input_shape=input_shape, p=p, q=q)


# EdgeNets' channels per scale s: level1..level4 (level5 is classification only)
_ESPNETV2_CHANNELS = {
    0.5: (16, 32, 64, 128),
    1.0: (32, 64, 128, 256),
    1.25: (32, 80, 160, 320),
    1.5: (32, 96, 192, 384),
    2.0: (32, 128, 256, 512),
}
_REPEATS = (3, 7)  # EESP units at 1/8 and 1/16
_RECEPTIVE_LIMITS = (13, 11, 9, 7)


@MODELS.register("espnetv2")
@keras.saving.register_keras_serializable(package="kseg")
class ESPNetV2(SegmentationModel):
    """ESPNetV2's segmentation network: the EESPNet encoder and its pyramid-pooling decoder.

    Encoder (ImageNet EESPNet without level 5): a 3×3 stride-2 CBR, strided EESP down-samplers
    to 1/4, 1/8 and 1/16 (each with input reinforcement from the pooled image), 3 EESP units at
    1/8 and 7 at 1/16 (4 branches, receptive-field limits 13, 11, 9, 7). Decoder (the authors'
    EdgeNets ``ESPNetv2Segmentation``): an efficient pyramid pooling on the 1/16 features, then
    three times: bilinear ×2, add an efficient point-wise projection of the encoder's skip,
    BN + PReLU, efficient pyramid pooling (64, 48, 32 channels, then the classes); bilinear
    up-sampling to the input. Good for: the accuracy of ERFNet-class models at a tenth of their
    operations (depth-wise and group convolutions for mobile CPUs).

    ``s`` is the width scale (one of 0.5, 1.0, 1.25, 1.5, 2.0, the authors' configurations);
    any input size works (bilinear resizes to the skip features' sizes).

    Parameters (Cityscapes, 19 classes, s = 2.0): 787,488 trainable (PyTorch's count: BN weight
    and bias, not the running statistics), 812,474 in all; published 0.79 M (0.3 % apart).
    Multiply-adds at 1024×512: 2.697 G by ``kseg.bench.profile`` vs the published "2.7 GFLOPs"
    (EdgeNets' 2,699 M), which are in fact multiply-adds of the convolutions (its
    ``compute_flops`` counts 2 FLOPs per multiply-add, then divides by 2). The strided EESP
    units' depth-wise branches of odd dilation > 1 run at stride 1 before subsampling (TF has
    no strided dilated depth-wise convolution); the others run at the output resolution.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, C)``; H and W may be None or any size.
        s: width scale.
        decoder_channels: base width of the decoder (EdgeNets: 16 for Cityscapes and VOC, 32
            for COCO); its stages have 4×, 3×, 2× this.

    Example:
        >>> model = ESPNetV2(num_classes=19, input_shape=(64, 96, 3), s=0.5)
        >>> tuple(model.output_shape)
        (None, 64, 96, 19)
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        s=2.0,
        decoder_channels=16,
        name=None,
        **kwargs,
    ):
        check_num_classes("ESPNetV2", num_classes)
        input_shape = check_input_shape("ESPNetV2", input_shape)
        check_choice("ESPNetV2", "s", s, tuple(_ESPNETV2_CHANNELS))
        check_positive_int("ESPNetV2", "decoder_channels", decoder_channels)
        c1, c2, c3, c4 = _ESPNETV2_CHANNELS[s]
        projection = max(1, min(num_classes // 2, decoder_channels))

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("torch", name="normalize")(images)
        out1 = conv_bn_prelu(x, c1, 3, "level1", strides=2)
        image = avg_pool_3x3_s2(x, "image_pool1")
        pooled_images = []
        for level in range(2, 5):
            image = avg_pool_3x3_s2(image, f"image_pool{level}")
            pooled_images.append(image)
        out2 = EESPDownsampler(c2, receptive_limit=_RECEPTIVE_LIMITS[0], name="level2_0")(
            [out1, pooled_images[0]]
        )
        y = EESPDownsampler(c3, receptive_limit=_RECEPTIVE_LIMITS[1], name="level3_0")(
            [out2, pooled_images[1]]
        )
        for i in range(1, _REPEATS[0] + 1):
            y = EESPUnit(c3, receptive_limit=_RECEPTIVE_LIMITS[2], name=f"level3_{i}")(y)
        out3 = y
        y = EESPDownsampler(c4, receptive_limit=_RECEPTIVE_LIMITS[2], name="level4_0")(
            [out3, pooled_images[2]]
        )
        for i in range(1, _REPEATS[1] + 1):
            y = EESPUnit(c4, receptive_limit=_RECEPTIVE_LIMITS[3], name=f"level4_{i}")(y)

        widths = (4 * decoder_channels, 3 * decoder_channels, 2 * decoder_channels)
        y = EfficientPyramidPooling(projection, widths[0], name="decoder1")(y)
        for stage, (skip, width) in enumerate(
            ((out3, widths[0]), (out2, widths[1]), (out1, widths[2])), start=2
        ):
            y = Resize(name=f"decoder{stage}_upsample")([y, skip])
            skip = EfficientPWConv(width, name=f"decoder{stage}_skip")(skip)
            y = bn_prelu(layers.Add(name=f"decoder{stage}_add")([skip, y]), f"decoder{stage}")
            last = stage == 4
            y = EfficientPyramidPooling(
                projection,
                num_classes if last else widths[stage - 1],
                last_bn_act=not last,
                name=f"decoder{stage}_epp",
            )(y)
        logits = Resize(name="upsample")([y, images])
        super().__init__(images, logits, name=name or "espnetv2", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            s=s,
            decoder_channels=decoder_channels,
        )

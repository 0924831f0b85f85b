"""BiSeNet (V1) and BiSeNet V2: two-branch real-time segmenters.

A shallow, wide *spatial* (detail) branch keeps stride 8 and fine detail; a fast, narrow
*context* (semantic) branch goes to stride 32 for a large receptive field; a fusion layer
joins them.

- ``BiSeNetV1``: Yu, Wang, Peng, Gao, Yu, Sang, "BiSeNet: Bilateral Segmentation Network for
  Real-time Semantic Segmentation", ECCV 2018.
- ``BiSeNetV2``: Yu, Gao, Wang, Yu, Shen, Sang, "BiSeNet V2: Bilateral Network with Guided
  Aggregation for Real-time Semantic Segmentation", IJCV 2021 (arXiv 2004.02147).

Both train with auxiliary ("booster") heads as extra outputs, like ``PSPNet``: every output is
``[B, H, W, num_classes]`` at the input size, so the same labels serve them all; compile with
``loss_weights=model.loss_weights_for_outputs`` and predict with ``model.inference_model()``.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg import backbones
from kseg.layers.bisenet import (
    AttentionRefinementModule,
    BilateralGuidedAggregation,
    ContextEmbedding,
    FeatureFusionModule,
    GatherExpand,
    StemBlock,
)
from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_rate,
)
from kseg.registry import MODELS

_V1_BACKBONES = ("xception39", "resnet18")
# Mid channels of the auxiliary heads in the authors' code (TorchSeg BiSeNetHead).
_V1_AUX_CHANNELS = {"xception39": 128, "resnet18": 256}


def _check_weight(model, argument, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{model}: {argument} must be >= 0. Received: {argument}={value!r}")


def _check_positive(model, argument, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"{model}: {argument} must be a positive number. Received: {argument}={value!r}"
        )


def segmentation_head(x, mid_channels, num_classes, reference, name, dropout=0.0):
    """conv3×3-BN-ReLU, optional dropout, 1×1 classifier, bilinear resize to ``reference``.

    Example:
        >>> import keras
        >>> images = keras.Input((32, 48, 3))
        >>> x = keras.Input((4, 6, 16))
        >>> tuple(segmentation_head(x, 8, 5, images, "head").shape)
        (None, 32, 48, 5)
    """
    x = conv_bn_relu(x, mid_channels, 3, f"{name}_conv")
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Conv2D(num_classes, 1, name=f"{name}_logits")(x)
    return Resize(name=f"{name}_upsample")([x, reference])


class _AuxiliaryOutputs:
    """``loss_weights_for_outputs`` and ``inference_model`` of a model whose first output is
    the main logits and whose other outputs are auxiliary heads."""

    @property
    def loss_weights_for_outputs(self):
        """``[1.0, aux_loss_weight, ...]`` (one per output): for ``compile(loss_weights=...)``."""
        return [1.0] + [float(self.aux_loss_weight)] * (len(self.outputs) - 1)

    def inference_model(self):
        """A single-output ``keras.Model`` (the main logits) sharing this model's weights."""
        return keras.Model(self.input, self.outputs[0], name=f"{self.name}_inference")


@MODELS.register("bisenetv1", "bisenet")
@keras.saving.register_keras_serializable(package="kseg")
class BiSeNetV1(_AuxiliaryOutputs, SegmentationModel):
    """BiSeNet: spatial path + context path (Xception39 or ResNet-18) fused by the FFM.

    Spatial path: 7×7/2 (64), 3×3/2 (64), 3×3/2 (64), 1×1 (128) convolutions with BN and ReLU,
    stride 8. Context path: the backbone to stride 32; a global-average context vector (1×1
    convolution to 128) is added to the attention refinement module's output on the stride-32
    features, upsampled, refined by a 3×3 convolution, added to the ARM output on the stride-16
    features, upsampled to stride 8 and refined again. The feature fusion module joins the two
    paths (256 channels); the head is a 3×3 convolution to 64 channels and a 1×1 classifier.
    With ``auxiliary_heads`` the two refined context features (strides 16 and 8) get heads of
    their own (3×3 convolution to 128 / 256 channels for Xception39 / ResNet-18, 1×1
    classifier) as outputs 2 and 3, loss weight 1 each (the paper's α = 1).

    Structure as in the authors' released code (TorchSeg ``cityscapes.bisenet.R18`` and
    ``.X39``), where the paper leaves details open (the 3×3 convolution inside the ARM, the
    128-channel context, the head widths).

    Parameters at 19 classes (trainable, ``inference_model()``; the auxiliary heads add
    0.60 M / 0.30 M for training): ResNet-18 12,894,163, Xception39 1,548,779. The paper's
    figures, 49.0 M and 5.8 M ([?], second-hand), fit neither this network nor any reading
    of the paper: ResNet-18 alone has 11.2 M convolution weights and 49.0 M would be four
    times the whole model, and Xception39 (0.31 M, as released) leaves no room for 5.8 M.
    We follow the authors' released code. Multiply-adds at 360×640 (the paper's speed
    setting, ``kseg.bench.profile``): ResNet-18 11.58 B, Xception39 3.07 B; the paper's speed
    table is quoted as 10.8 G / 2.9 G "FLOPs" (not in REFERENCE_NUMBERS, unchecked), which
    would make those multiply-adds.

    Good for: real-time street scenes on a GPU or a phone; the ResNet-18 path is the accurate
    one (Cityscapes test 74.7 in the paper), Xception39 the fast one (68.4 at 105 fps).

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size (H and W may be None).
        backbone: "xception39" or "resnet18" (context path; no pretrained weights).
        auxiliary_heads: add the two context-path heads as outputs 2 and 3 (training).
        aux_loss_weight: loss weight of each auxiliary head (paper: 1).

    Example:
        >>> model = BiSeNetV1(num_classes=4, input_shape=(64, 96, 3))
        >>> [tuple(shape) for shape in model.output_shape]
        [(None, 64, 96, 4), (None, 64, 96, 4), (None, 64, 96, 4)]
        >>> tuple(model.inference_model().output_shape)
        (None, 64, 96, 4)
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        backbone="xception39",
        auxiliary_heads=True,
        aux_loss_weight=1.0,
        name=None,
        **kwargs,
    ):
        check_num_classes("BiSeNetV1", num_classes)
        input_shape = check_input_shape("BiSeNetV1", input_shape, channels=(3,))
        check_choice("BiSeNetV1", "backbone", backbone, _V1_BACKBONES)
        _check_weight("BiSeNetV1", "aux_loss_weight", aux_loss_weight)
        context_channels = 128

        # 1. layers
        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("torch", name="normalize")(images)
        spatial = conv_bn_relu(x, 64, 7, "spatial_conv1", strides=2)
        spatial = conv_bn_relu(spatial, 64, 3, "spatial_conv2", strides=2)
        spatial = conv_bn_relu(spatial, 64, 3, "spatial_conv3", strides=2)
        spatial = conv_bn_relu(spatial, context_channels, 1, "spatial_conv4")

        features = backbones.build(backbone, x)
        c4, c5 = features["P4"], features["P5"]
        glob = layers.GlobalAveragePooling2D(keepdims=True, name="global_pool")(c5)
        glob = conv_bn_relu(glob, context_channels, 1, "global_context")
        glob = Resize(name="global_context_upsample")([glob, c5])
        y = layers.Add(name="context32_add")(
            [AttentionRefinementModule(context_channels, name="arm32")(c5), glob]
        )
        y = Resize(name="context32_upsample")([y, c4])
        context16 = conv_bn_relu(y, context_channels, 3, "context32_refine")
        y = layers.Add(name="context16_add")(
            [AttentionRefinementModule(context_channels, name="arm16")(c4), context16]
        )
        y = Resize(name="context16_upsample")([y, spatial])
        context8 = conv_bn_relu(y, context_channels, 3, "context16_refine")

        fused = FeatureFusionModule(2 * context_channels, name="ffm")([spatial, context8])
        outputs = [segmentation_head(fused, 64, num_classes, images, "head")]
        if auxiliary_heads:
            mid = _V1_AUX_CHANNELS[backbone]
            outputs.append(segmentation_head(context16, mid, num_classes, images, "aux16"))
            outputs.append(segmentation_head(context8, mid, num_classes, images, "aux8"))
        # 2. wiring
        super().__init__(
            images, outputs if auxiliary_heads else outputs[0], name=name or "bisenetv1", **kwargs
        )
        # 3. config
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            auxiliary_heads=auxiliary_heads,
            aux_loss_weight=aux_loss_weight,
        )


def _channels(value):
    return max(1, int(round(value)))


@MODELS.register("bisenetv2")
@keras.saving.register_keras_serializable(package="kseg")
class BiSeNetV2(_AuxiliaryOutputs, SegmentationModel):
    """BiSeNet V2: detail branch + semantic branch joined by bilateral guided aggregation.

    Detail branch (paper Table 1): 3×3 convolutions 64/2, 64 | 64/2, 64, 64 | 128/2, 128, 128
    (stride 8). Semantic branch, ``λ`` = 1/4 of the detail widths per stride: the stem block
    (16, stride 4), gather-and-expand layers 32/2, 32 | 64/2, 64 | 128/2, 128 × 3 (expansion
    ``e`` = 6), and the context embedding block. The bilateral guided aggregation layer fuses
    them at stride 8; the head is a 3×3 convolution to ``head_channels`` (1024, as the widely
    used reimplementations and MMSegmentation; the paper does not print it), dropout and a 1×1
    classifier. With ``auxiliary_heads`` the booster heads on the stem (stride 4) and on
    stages 3, 4 and 5 of the semantic branch (3×3 convolution to 128, 1×1 classifier) are
    outputs 2–5, loss weight 1 each as in the paper.

    Parameters at 19 classes (trainable, ``inference_model()``): 3,358,627 (paper ≈3.4 M,
    [?]: -1.2 %); the four booster heads add 0.29 M for training. Multiply-adds at
    512×1024 (``kseg.bench.profile``): 24.60 B, 16 % above the paper's "21.15 GFLOPs"
    (Table 8). The paper counts multiply-adds: without its head the network is already 14.79 B,
    so 2·MAdds would be above 29.6 G. Everything but the head follows Table 1 and the text; the
    head's 3×3 width is the one size the paper leaves open, each channel costing 9.59 M MAdds
    and 1,173 parameters. 21.15 B needs a 663-wide head, which has 2.94 M parameters (-14 %);
    widths 770–883 would land both figures within 10 %, but no released code uses them and
    they follow no rule: BiSeNetV2-Large (``alpha=2, depth_multiplier=3``, 118.51 GFLOPs in
    the same table) has a 63.6 B body and would need a ≈2,900-wide head (1024: 83.1 B,
    2048: 102.6 B), so no head width, fixed or scaled with ``alpha``, fits both of the paper's
    FLOP figures. We keep the 1024 of the reimplementations (CoinCheung's BiSeNet and
    MMSegmentation's FCN head), which gives the parameter count, and leave the MAdds 16 % above;
    ``head_channels`` changes it (``head_channels=663`` for the paper's MAdds).

    Width and depth: ``alpha`` multiplies every channel count (the paper's width multiplier,
    2.0 for BiSeNetV2-Large), ``depth_multiplier`` the number of stride-1 GE layers of the
    semantic branch (3.0 for -Large), ``semantic_ratio`` is ``λ`` (Table 4: 1/2 … 1/16).

    Good for: the best accuracy per millisecond of the two-branch family on a GPU (Cityscapes
    test 72.6 at 156 fps on a 1080 Ti, 1024×2048 input resized to 512×1024).

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size (H and W may be None).
        alpha: width multiplier of both branches (paper: 1.0).
        semantic_ratio: ``λ``, semantic-branch width relative to the detail branch (1/4).
        depth_multiplier: multiplies the number of stride-1 GE layers per stage (1.0).
        expansion: expansion ratio ``e`` of the GE layers (6).
        head_channels: width of the main head's 3×3 convolution (1024).
        auxiliary_heads: add the four booster heads as outputs 2–5 (training).
        aux_loss_weight: loss weight of each booster head (paper: 1).
        dropout: dropout before the classifiers (0.1).

    Example:
        >>> model = BiSeNetV2(num_classes=3, input_shape=(64, 96, 3), alpha=0.25,
        ...                   head_channels=32, auxiliary_heads=False)
        >>> tuple(model.output_shape)
        (None, 64, 96, 3)
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        alpha=1.0,
        semantic_ratio=0.25,
        depth_multiplier=1.0,
        expansion=6,
        head_channels=1024,
        auxiliary_heads=True,
        aux_loss_weight=1.0,
        dropout=0.1,
        name=None,
        **kwargs,
    ):
        check_num_classes("BiSeNetV2", num_classes)
        input_shape = check_input_shape("BiSeNetV2", input_shape, channels=(3,))
        _check_positive("BiSeNetV2", "alpha", alpha)
        _check_positive("BiSeNetV2", "semantic_ratio", semantic_ratio)
        _check_positive("BiSeNetV2", "depth_multiplier", depth_multiplier)
        check_positive_int("BiSeNetV2", "expansion", expansion)
        check_positive_int("BiSeNetV2", "head_channels", head_channels)
        _check_weight("BiSeNetV2", "aux_loss_weight", aux_loss_weight)
        check_rate("BiSeNetV2", "dropout", dropout)

        # 1. layers
        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("torch", name="normalize")(images)
        detail = x
        for stage, (filters, repeats) in enumerate(((64, 2), (64, 3), (128, 3)), 1):
            for index in range(repeats):
                detail = conv_bn_relu(
                    detail,
                    _channels(filters * alpha),
                    3,
                    f"detail{stage}_conv{index + 1}",
                    strides=2 if index == 0 else 1,
                )
        widths = [_channels(c * alpha * semantic_ratio) for c in (64, 128, 256, 512)]
        stem = StemBlock(widths[0], name="semantic_stem")(x)
        taps = {"stem": stem}
        y = stem
        for stage, (width, repeats) in enumerate(zip(widths[1:], (1, 1, 3)), 3):
            y = GatherExpand(width, stride=2, expansion=expansion, name=f"semantic{stage}_ge1")(y)
            for index in range(max(1, int(round(repeats * depth_multiplier)))):
                y = GatherExpand(width, expansion=expansion, name=f"semantic{stage}_ge{index + 2}")(
                    y
                )
            taps[f"stage{stage}"] = y
        semantic = ContextEmbedding(detail.shape[-1], name="semantic_ce")(y)
        fused = BilateralGuidedAggregation(name="bga")([detail, semantic])
        outputs = [segmentation_head(fused, head_channels, num_classes, images, "head", dropout)]
        if auxiliary_heads:
            for key, tap in taps.items():
                outputs.append(
                    segmentation_head(
                        tap, _channels(128 * alpha), num_classes, images, f"aux_{key}", dropout
                    )
                )
        # 2. wiring
        super().__init__(
            images, outputs if auxiliary_heads else outputs[0], name=name or "bisenetv2", **kwargs
        )
        # 3. config
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            alpha=alpha,
            semantic_ratio=semantic_ratio,
            depth_multiplier=depth_multiplier,
            expansion=expansion,
            head_channels=head_channels,
            auxiliary_heads=auxiliary_heads,
            aux_loss_weight=aux_loss_weight,
            dropout=dropout,
        )

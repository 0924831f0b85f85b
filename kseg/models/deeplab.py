"""The DeepLab family (Chen, Papandreou, Kokkinos, Murphy, Yuille, Schroff, Adam, Zhu).

- ``DeepLabV1`` — "Semantic Image Segmentation with Deep Convolutional Nets and Fully
  Connected CRFs" (ICLR 2015): VGG16 at output stride 8 (pool4/pool5 stride 1, block5
  dilated by 2), fc6 dilated ("LargeFOV": 3×3 rate 12, 1024 wide; "7x7": 7×7 rate 4, 4096).
- ``DeepLabV2`` — "DeepLab: ... Atrous Convolution, and Fully Connected CRFs" (TPAMI 2017):
  ResNet-101 at output stride 8 with ASPP-L, four 3×3 classifiers at rates 6/12/18/24 summed.
- ``DeepLabV3`` — "Rethinking Atrous Convolution for Semantic Image Segmentation" (2017):
  multi-grid ResNet block 4, ASPP with image pooling, output stride 16 or 8; ``aspp=False``
  gives the Mobile DeepLab v3 head of the MobileNetV2 paper (1×1 + image pooling only).
- ``DeepLabV3Plus`` — "Encoder-Decoder with Atrous Separable Convolution" (ECCV 2018): v3's
  ASPP plus a decoder that fuses the stride-4 features; Xception-65 uses separable ASPP and
  decoder convolutions.

All take RGB in [0, 255] (normalised inside as the backbone expects) and return logits at the
input resolution (bilinear upsampling of the stride-8/16 predictions).

Parameter counts: the DeepLab papers count trainable variables, i.e. without BatchNorm's
moving mean and variance. Keras' ``count_params()`` includes them; compare published
figures with the trainable count (``trainable_parameter_count``).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg import backbones
from kseg.layers.aspp import ASPP
from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_options,
    check_positive_ints,
    check_rate,
    check_weights,
)
from kseg.registry import MODELS


def trainable_parameter_count(model):
    """Number of trainable scalars (the convention of the DeepLab and MobileNetV2 papers).

    Example:
        >>> import keras
        >>> trainable_parameter_count(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        10
    """
    return int(sum(int(keras.ops.size(w)) for w in model.trainable_weights))


def _check_backbone(model, backbone, allowed):
    check_choice(model, "backbone", backbone, allowed)
    return backbones.BACKBONES.get(backbone)


def _backbone_features(images, model, backbone, allowed, output_stride, weights, options):
    builder = _check_backbone(model, backbone, allowed)
    check_options(model, "backbone_options", options)
    x = ImageNormalization(builder.preprocessing, name="normalize")(images)
    return backbones.build(
        backbone, x, output_stride=output_stride, weights=weights, **(options or {})
    )


@keras.saving.register_keras_serializable(package="kseg")
class _ProbabilitiesToLogits(keras.layers.Layer):
    """log(p), clipped away from 0: logits whose softmax gives back the probabilities."""

    def call(self, probabilities):
        return keras.ops.log(keras.ops.maximum(probabilities, 1e-12))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


def _maybe_crf(images, logits, crf, model):
    # DenseCRF returns probabilities; the model keeps returning logits (log-probabilities).
    if crf is None:
        return logits
    try:
        from kseg.layers.crf import DenseCRF
    except ImportError as error:
        raise ValueError(
            f"{model}: crf= needs kseg.layers.DenseCRF, which is not available: {error}"
        ) from error
    if not isinstance(crf, dict):
        raise ValueError(
            f"{model}: crf must be None or a dict of DenseCRF arguments. Received: crf={crf!r}"
        )
    # Under a mixed policy the CRF and log(p) stay float32: 1e-12 underflows to 0 in float16.
    half = keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16")
    dtype = {"dtype": "float32"} if half else {}
    probabilities = DenseCRF(name="crf", **{**dtype, **crf})([images, logits])
    return _ProbabilitiesToLogits(name="crf_logits", **dtype)(probabilities)


@MODELS.register("deeplabv1", "deeplab_v1")
@keras.saving.register_keras_serializable(package="kseg")
class DeepLabV1(SegmentationModel):
    """DeepLab v1 on VGG16, "LargeFOV" or "7x7".

    DeepLab's VGG16 uses 3×3 stride-2 max pools (padding 1) and stride-1 3×3 pool4/pool5,
    block5 dilated by 2, then fc6/fc7/fc8 as convolutions with dropout 0.5. LargeFOV also
    averages 3×3 after pool5 (``pool5a``). Parameters with 21 classes: LargeFOV 20,505,429
    (paper: 20.5 M), 7x7 134,346,581 (paper: 134.3 M). The optional dense CRF
    (``crf=dict(...)``, ``kseg.layers.DenseCRF`` arguments) refines the logits at input size.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size.
        variant: "largefov" or "7x7".
        weights: None, "imagenet" or a keras.applications VGG16 weights file (encoder).
        dropout: rate after fc6 and fc7.
        crf: None or a dict of ``DenseCRF`` arguments appended as post-processing; the
            output is then the log of the refined probabilities (still logits). Building
            and loading need no compiled op; running does (``kseg_ops``).

    Example:
        >>> model = DeepLabV1(num_classes=5, input_shape=(67, 90, 3))
        >>> tuple(model.output_shape)
        (None, 67, 90, 5)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        variant="largefov",
        weights=None,
        dropout=0.5,
        crf=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("DeepLabV1", num_classes)
        input_shape = check_input_shape("DeepLabV1", input_shape, channels=(3,))
        check_choice("DeepLabV1", "variant", variant, ("largefov", "7x7"))
        check_rate("DeepLabV1", "dropout", dropout)
        weights = check_weights("DeepLabV1", weights)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        x = backbones.build("vgg16", x, output_stride=8, weights=weights, pool_size=3)["P5"]
        if variant == "largefov":
            x = layers.AveragePooling2D(3, strides=1, padding="same", name="pool5a")(x)
            width, kernel, rate = 1024, 3, 12
        else:
            width, kernel, rate = 4096, 7, 4
        x = layers.Conv2D(
            width, kernel, padding="same", dilation_rate=rate, activation="relu", name="fc6"
        )(x)
        x = layers.Dropout(dropout, name="drop6")(x)
        x = layers.Conv2D(width, 1, activation="relu", name="fc7")(x)
        x = layers.Dropout(dropout, name="drop7")(x)
        x = layers.Conv2D(num_classes, 1, name="fc8")(x)
        logits = Resize(name="upsample")([x, images])
        logits = _maybe_crf(images, logits, crf, "DeepLabV1")
        super().__init__(images, logits, name=name or f"deeplabv1_{variant}", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            variant=variant,
            weights=weights,
            dropout=dropout,
            crf=crf,
        )


@MODELS.register("deeplabv2", "deeplab_v2")
@keras.saving.register_keras_serializable(package="kseg")
class DeepLabV2(SegmentationModel):
    """DeepLab v2: ResNet (output stride 8) or VGG16 with ASPP-L.

    ResNet: four 3×3 classifiers on the conv5 features at rates 6/12/18/24, summed (the
    paper's ``fc1_c0..c3``). VGG16: each of the four branches is fc6 (3×3, 1024, rate r) →
    fc7 (1×1, 1024) → fc8, with dropout 0.5, summed. The multi-scale input fusion (MSC) of
    the paper's best model is a training/inference procedure, not part of this network.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size.
        backbone: "resnet101" (paper), "resnet50" or "vgg16".
        weights: None, "imagenet" or a keras.applications weights file for the backbone.
        rates: the ASPP-L dilation rates.
        crf: None or a dict of ``DenseCRF`` arguments appended as post-processing.

    Example:
        >>> model = DeepLabV2(num_classes=3, backbone="resnet50", input_shape=(65, 50, 3))
        >>> tuple(model.output_shape)
        (None, 65, 50, 3)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        backbone="resnet101",
        weights=None,
        rates=(6, 12, 18, 24),
        crf=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("DeepLabV2", num_classes)
        input_shape = check_input_shape("DeepLabV2", input_shape, channels=(3,))
        rates = check_positive_ints("DeepLabV2", "rates", rates)
        weights = check_weights("DeepLabV2", weights)

        images = keras.Input(input_shape, name="images")
        if backbone == "vgg16":
            x = ImageNormalization("caffe", name="normalize")(images)
            x = backbones.build("vgg16", x, output_stride=8, weights=weights, pool_size=3)["P5"]
        else:
            x = _backbone_features(
                images, "DeepLabV2", backbone, ("resnet101", "resnet50", "vgg16"), 8, weights, None
            )["P5"]
        branches = []
        for index, rate in enumerate(rates):
            if backbone == "vgg16":
                y = layers.Conv2D(
                    1024,
                    3,
                    padding="same",
                    dilation_rate=rate,
                    activation="relu",
                    name=f"fc6_{index}",
                )(x)
                y = layers.Dropout(0.5, name=f"drop6_{index}")(y)
                y = layers.Conv2D(1024, 1, activation="relu", name=f"fc7_{index}")(y)
                y = layers.Dropout(0.5, name=f"drop7_{index}")(y)
                y = layers.Conv2D(num_classes, 1, name=f"fc8_{index}")(y)
            else:
                y = layers.Conv2D(
                    num_classes,
                    3,
                    padding="same",
                    dilation_rate=rate,
                    name=f"aspp_classifier_{index}",
                )(x)
            branches.append(y)
        x = layers.Add(name="aspp_sum")(branches) if len(branches) > 1 else branches[0]
        logits = Resize(name="upsample")([x, images])
        logits = _maybe_crf(images, logits, crf, "DeepLabV2")
        super().__init__(images, logits, name=name or "deeplabv2", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            weights=weights,
            rates=rates,
            crf=crf,
        )


def _default_rates(output_stride):
    # The paper's rates are for output stride 16; they scale with the feature resolution.
    return {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[output_stride]


def _backbone_options(backbone, multi_grid, options):
    options = dict(options or {})
    if multi_grid is not None:
        if backbone not in ("resnet50", "resnet101", "xception65"):
            raise ValueError(
                f"multi_grid applies to ResNet and Xception-65 backbones. "
                f"Received: backbone={backbone!r}"
            )
        options["multi_grid"] = tuple(multi_grid)
    return options


_V3_BACKBONES = ("resnet50", "resnet101", "mobilenetv2", "xception65")


@MODELS.register("deeplabv3", "deeplab_v3")
@keras.saving.register_keras_serializable(package="kseg")
class DeepLabV3(SegmentationModel):
    """DeepLab v3: backbone + ASPP with image pooling + 1×1 classifier, upsampled ×OS.

    Paper configuration: ResNet-101 with DeepLab's "beta" stem (three 3×3 convolutions,
    ``backbone_options={"stem": "deep"}``, the ResNet of DeepLab's released models), output
    stride 16, multi-grid (1, 2, 4), 21 classes: 58,217,045 trainable parameters (paper
    58.16 M; the keras-style ResNet keeps its 52,672 convolution biases, slim's has none) and
    77.38 B multiply-adds at 513×513 (``kseg.bench.profile``; paper 81.02 B, -4.5 %). With the
    default keras.applications stem (7×7, so ImageNet weights load): 58,093,333 parameters and
    70.24 B multiply-adds; the 7×7 stem costs 7.1 B less at 257×257 than the three 3×3
    convolutions. The remaining gap comes from the ResNet layout: slim puts each stage's stride
    in the last unit's 3×3 convolution, keras in the first unit's 1×1, and the count convention
    (we count convolutions only, not BatchNorm or resizes).
    Mobile DeepLab v3 (MobileNetV2 width 1.0, OS 16, ``aspp=False``): 2,113,557 trainable
    parameters (paper 2.11 M) and 2.74 B multiply-adds (paper 2.75 B); with ``alpha=0.5``
    0.91 B (paper 0.88 B). With ASPP: 4,523,541 parameters (paper 4.52 M) and 5.36 B
    multiply-adds (paper 5.8 B: our three 3×3 branches on the 320-channel, 33×33 map cost
    2.3 B; the paper does not say how its ASPP variant was built).

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size.
        backbone: "resnet101" (paper), "resnet50", "mobilenetv2" or "xception65".
        output_stride: 8 or 16 (32 also accepted).
        weights: None, "imagenet" or a backbone weights file.
        aspp: False keeps only the 1×1 and image-pooling branches (Mobile DeepLab v3).
        aspp_rates: None for the paper's rates at this output stride ((6, 12, 18) at 16,
            doubled at 8).
        multi_grid: rates multiplying ResNet block 4 (paper: (1, 2, 4)); None for plain.
            Defaults to (1, 2, 4) for ResNet backbones.
        filters: ASPP width (256).
        backbone_options: extra backbone arguments, e.g. ``{"alpha": 0.5}`` for MobileNetV2.

    Example:
        >>> model = DeepLabV3(num_classes=4, backbone="mobilenetv2", aspp=False, input_shape=(70, 50, 3))
        >>> tuple(model.output_shape)
        (None, 70, 50, 4)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        backbone="resnet101",
        output_stride=16,
        weights=None,
        aspp=True,
        aspp_rates=None,
        multi_grid="default",
        filters=256,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("DeepLabV3", num_classes)
        input_shape = check_input_shape("DeepLabV3", input_shape, channels=(3,))
        _check_backbone("DeepLabV3", backbone, _V3_BACKBONES)
        check_choice("DeepLabV3", "output_stride", output_stride, (8, 16, 32))
        weights = check_weights("DeepLabV3", weights)
        if multi_grid == "default":
            multi_grid = (1, 2, 4) if backbone.startswith("resnet") else None
        rates = (
            (_default_rates(output_stride) if aspp_rates is None else tuple(aspp_rates))
            if aspp
            else ()
        )

        images = keras.Input(input_shape, name="images")
        options = _backbone_options(backbone, multi_grid, backbone_options)
        features = _backbone_features(
            images, "DeepLabV3", backbone, _V3_BACKBONES, output_stride, weights, options
        )
        x = ASPP(filters=filters, rates=rates, image_pooling=True, name="aspp")(features["P5"])
        x = layers.Conv2D(num_classes, 1, name="logits")(x)
        logits = Resize(name="upsample")([x, images])
        super().__init__(images, logits, name=name or "deeplabv3", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            output_stride=output_stride,
            weights=weights,
            aspp=aspp,
            aspp_rates=None if aspp_rates is None else tuple(aspp_rates),
            multi_grid=None if multi_grid is None else tuple(multi_grid),
            filters=filters,
            backbone_options=backbone_options,
        )


@MODELS.register("deeplabv3plus", "deeplab_v3plus", "deeplabv3+")
@keras.saving.register_keras_serializable(package="kseg")
class DeepLabV3Plus(SegmentationModel):
    """DeepLab v3+: v3's ASPP encoder and a decoder on the stride-4 features.

    Decoder: the ASPP output (dropout 0.1) is upsampled bilinearly to the stride-4 feature
    map ("P2"), concatenated with a 1×1 / 48-channel reduction of it, refined by two 3×3 /
    256 convolutions (+BN+ReLU), classified by a 1×1 convolution and upsampled ×4. With
    Xception-65 the ASPP and decoder convolutions are depthwise-separable, as in the paper.
    Multiply-adds at 513×513, output stride 16, 21 classes (``kseg.bench.profile``):
    ResNet-101 with the deep stem (``backbone_options={"stem": "deep"}``) 99.14 B (paper
    101.28 B; 92.00 B with the keras.applications 7×7 stem, see ``DeepLabV3``), Xception-65
    54.04 B (paper 54.17 B). Trainable parameters: ResNet-101 59,396,981, Xception-65
    41,055,413.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size.
        backbone: "resnet50" (default), "resnet101", "mobilenetv2" or "xception65".
        output_stride: 8, 16 or 32.
        weights: None, "imagenet" or a backbone weights file.
        aspp_rates: None for the paper's rates at this output stride.
        multi_grid: rates multiplying the last block (None: plain, the v3+ paper's setting).
        separable: separable ASPP/decoder convolutions; None means True for Xception-65.
        filters: ASPP and decoder width (256).
        decoder_filters: channels of the low-level reduction (48).
        backbone_options: extra backbone arguments, e.g. ``{"alpha": 0.5}``.

    Example:
        >>> model = DeepLabV3Plus(num_classes=6, backbone="mobilenetv2", input_shape=(75, 60, 3))
        >>> tuple(model.output_shape)
        (None, 75, 60, 6)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        backbone="resnet50",
        output_stride=16,
        weights=None,
        aspp_rates=None,
        multi_grid=None,
        separable=None,
        filters=256,
        decoder_filters=48,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("DeepLabV3Plus", num_classes)
        input_shape = check_input_shape("DeepLabV3Plus", input_shape, channels=(3,))
        _check_backbone("DeepLabV3Plus", backbone, _V3_BACKBONES)
        check_choice("DeepLabV3Plus", "output_stride", output_stride, (8, 16, 32))
        weights = check_weights("DeepLabV3Plus", weights)
        use_separable = (backbone == "xception65") if separable is None else bool(separable)
        rates = _default_rates(output_stride) if aspp_rates is None else tuple(aspp_rates)

        images = keras.Input(input_shape, name="images")
        options = _backbone_options(backbone, multi_grid, backbone_options)
        features = _backbone_features(
            images, "DeepLabV3Plus", backbone, _V3_BACKBONES, output_stride, weights, options
        )
        x = ASPP(
            filters=filters,
            rates=rates,
            image_pooling=True,
            separable=use_separable,
            dropout=0.1,
            name="aspp",
        )(features["P5"])
        low = conv_bn_relu(features["P2"], decoder_filters, 1, "decoder_reduce")
        x = Resize(name="decoder_upsample")([x, low])
        x = layers.Concatenate(name="decoder_concat")([x, low])
        x = conv_bn_relu(x, filters, 3, "decoder_conv1", separable=use_separable)
        x = conv_bn_relu(x, filters, 3, "decoder_conv2", separable=use_separable)
        x = layers.Conv2D(num_classes, 1, name="logits")(x)
        logits = Resize(name="upsample")([x, images])
        super().__init__(images, logits, name=name or "deeplabv3plus", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            output_stride=output_stride,
            weights=weights,
            aspp_rates=None if aspp_rates is None else tuple(aspp_rates),
            multi_grid=None if multi_grid is None else tuple(multi_grid),
            separable=separable,
            filters=filters,
            decoder_filters=decoder_filters,
            backbone_options=backbone_options,
        )

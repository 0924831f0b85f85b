"""FCN: Fully Convolutional Networks for Semantic Segmentation (Long, Shelhamer, Darrell, CVPR 2015).

VGG16 with its fully connected layers turned into convolutions (fc6: 7×7×4096, fc7: 1×1×4096),
a 1×1 class scorer, and upsampling by transposed convolutions initialised to bilinear
interpolation. FCN-16s and FCN-8s fuse scores predicted from pool4 and pool3 (skip layers,
zero-initialised as in the paper) before the final upsampling.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg import backbones
from kseg.layers.crop import CropLike
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import BilinearKernel
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_rate,
    check_weights,
)
from kseg.models.convolutionalize import dense_kernel_as_conv
from kseg.registry import MODELS

VARIANTS = ("32s", "16s", "8s")
FC_CHANNELS = 4096  # VGG16's fc1/fc2 width: fc6/fc7 of this width take their weights
_VGG16_CONVS = [
    f"block{b}_conv{c}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for c in range(1, n + 1)
]


def load_vgg16_classifier_weights(model, weights):
    """Loads VGG16's 13 convolutions and its fc1/fc2, convolutionalised, into FCN's fc6/fc7.

    ``fc1`` (Dense on the flattened 7x7x512 pool5) becomes the 7x7x512x4096 kernel of ``fc6``
    and ``fc2`` the 1x1x4096x4096 kernel of ``fc7`` (the paper's "convolutionalization").
    A file without the classifier (a ``include_top=False`` weights file) still initialises
    the convolutions; ``fc6``/``fc7`` then keep their random start and a warning says so.

    Args:
        model: an ``FCN`` with ``fc_channels=4096``.
        weights: ``"imagenet"`` or a ``keras.applications.VGG16`` weights file.

    Example:
        >>> model = FCN(num_classes=21, weights="vgg16_full.weights.h5")  # doctest: +SKIP
    """
    import warnings

    from kseg.backbones._pretrained import load_application_weights

    try:
        source = keras.applications.VGG16(include_top=True, weights=weights)
    except Exception as error:  # noqa: BLE001 - a file without the top: convolutions only
        convs = [model.get_layer(n) for n in _VGG16_CONVS]
        load_application_weights("vgg16", convs, keras.applications.VGG16, weights, 3)
        warnings.warn(
            f"FCN: {weights!r} holds no VGG16 classifier (fc1/fc2) ({type(error).__name__}); "
            "fc6/fc7 keep their random initialisation",
            stacklevel=3,
        )
        return
    for name in _VGG16_CONVS:
        model.get_layer(name).set_weights(source.get_layer(name).get_weights())
    pool5 = tuple(source.get_layer("block5_pool").output.shape[1:])  # (7, 7, 512)
    fc1_kernel, fc1_bias = source.get_layer("fc1").get_weights()
    model.get_layer("fc6").set_weights([dense_kernel_as_conv(fc1_kernel, pool5), fc1_bias])
    fc2_kernel, fc2_bias = source.get_layer("fc2").get_weights()
    model.get_layer("fc7").set_weights([fc2_kernel[None, None], fc2_bias])


def _upsample(x, num_classes, factor, name, trainable=True):
    return layers.Conv2DTranspose(
        num_classes,
        2 * factor - factor % 2,
        strides=factor,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearKernel(),
        trainable=trainable,
        name=name,
    )(x)


@MODELS.register("fcn")
@keras.saving.register_keras_serializable(package="kseg")
class FCN(SegmentationModel):
    """FCN-32s / 16s / 8s on VGG16.

    Differences from the Caffe model, and why: convolutions and pools use "same" padding
    instead of padding the input by 100 pixels and cropping, so every input size works and
    the outputs line up with the input by construction (a "same" transposed convolution with a
    bilinear kernel is half-pixel-centred bilinear upsampling). Parameter counts with 21
    classes: 8s 134,489,759 and 16s 134,815,994 (the paper's ≈134 M); 32s 136,152,917, the
    extra 1.8 M being its 64×64×21×21 final transposed convolution, counted although fixed. The final upsampling is fixed bilinear by default,
    as in the paper's released models (``learn_final_upsampling=True`` makes it learnable);
    the intermediate ×2 upsamplings are learned from a bilinear start.

    Args:
        num_classes: number of classes (logits channels).
        input_shape: ``(H, W, 3)``, H/W may be None. Any size ≥ 1 works.
        variant: "32s", "16s" or "8s".
        weights: None, "imagenet" or a path to a keras.applications VGG16 weights file. With
            ``fc_channels=4096`` fc6/fc7 start from VGG16's fc1/fc2, convolutionalised
            (see :func:`load_vgg16_classifier_weights`; "imagenet" then downloads the VGG16
            file with its top); narrower fc6/fc7 take the convolution weights only.
        learn_final_upsampling: make the last transposed convolution trainable.
        dropout: dropout rate after fc6 and fc7.
        fc_channels: width of fc6 and fc7 (the paper: 4096; smaller is much cheaper and
            still loads the VGG16 convolution weights).

    Example:
        >>> model = FCN(num_classes=5, input_shape=(100, 70, 3), variant="8s")
        >>> tuple(model.output_shape)
        (None, 100, 70, 5)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        variant="8s",
        weights=None,
        learn_final_upsampling=False,
        dropout=0.5,
        fc_channels=4096,
        name=None,
        **kwargs,
    ):
        check_num_classes("FCN", num_classes)
        input_shape = check_input_shape("FCN", input_shape, channels=(3,))
        check_choice("FCN", "variant", variant, VARIANTS)
        check_rate("FCN", "dropout", dropout)
        check_positive_int("FCN", "fc_channels", fc_channels)
        weights = check_weights("FCN", weights)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        # fc6/fc7 come with the convolutions from one VGG16 (with its top) after the wiring
        full_width = fc_channels == FC_CHANNELS
        features = backbones.build(
            "vgg16", x, output_stride=32, weights=None if full_width else weights
        )
        x = layers.Conv2D(fc_channels, 7, padding="same", activation="relu", name="fc6")(
            features["P5"]
        )
        x = layers.Dropout(dropout, name="drop6")(x)
        x = layers.Conv2D(fc_channels, 1, activation="relu", name="fc7")(x)
        x = layers.Dropout(dropout, name="drop7")(x)
        scores = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_fr")(x)
        final_factor = 32
        for level, factor in (("P4", 16), ("P3", 8)):
            if variant == "32s" or (variant == "16s" and level == "P3"):
                break
            pool = level.replace("P", "pool")
            skip = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"score_{pool}")(
                features[level]
            )
            up = _upsample(scores, num_classes, 2, name=f"upscore_to_{pool}")
            up = CropLike("top_left", name=f"crop_to_{pool}")([up, skip])
            scores = layers.Add(name=f"fuse_{pool}")([up, skip])
            final_factor = factor
        logits = _upsample(
            scores,
            num_classes,
            final_factor,
            name=f"upscore{final_factor}",
            trainable=learn_final_upsampling,
        )
        logits = CropLike("top_left", name="crop_to_input")([logits, images])
        super().__init__(images, logits, name=name or f"fcn{variant}", **kwargs)
        if weights is not None and full_width:
            load_vgg16_classifier_weights(self, weights)

        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            variant=variant,
            weights=weights,
            learn_final_upsampling=learn_final_upsampling,
            dropout=dropout,
            fc_channels=fc_channels,
        )

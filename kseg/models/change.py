"""Change detection: FC-EF, FC-Siam-conc and FC-Siam-diff (Daudt, Le Saux, Boulch, ICIP 2018).

Three U-Net-like fully convolutional networks that take two co-registered images of one place
and label each pixel "no change" (0) or "change" (1). FC-EF stacks the two images as one input
(early fusion); FC-Siam-conc and FC-Siam-diff run one encoder with shared weights on each image
and feed the decoder the concatenation, or the absolute difference, of the two encoders' skip
features. Layer widths (16-32-64-128, 2-2-3-3 convolutions), batch normalisation and 2-D dropout
0.2 after every convolution, and the decoder follow the authors' code
(github.com/rcdaudt/fully_convolutional_change_detection).

Input: one tensor ``[B, H, W, 2C]``, image A's channels then image B's (RGB pairs: 6 channels),
float 0..255. One input rather than two keeps the pair one "image" for the rest of kseg: the
``(image, label)`` pipelines, ``fit``, ``kseg.engine.evaluate``, SavedModel signatures and TFLite
export (a single input tensor, no model-specific plumbing). ``np.concatenate([a, b], -1)`` builds
it; ``kseg.data.load("change", ...)`` yields it.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.crop import CropLike
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.image_pair import AbsoluteDifference, SplitImagePair
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_rate,
)
from kseg.registry import MODELS

# (width multiplier of base_filters, convolutions) of the four encoder stages
_STAGES = ((1, 2), (2, 2), (4, 3), (8, 3))


def _conv_bn_relu(filters, dropout, name):
    """Conv 3x3 + BN + ReLU + 2-D dropout as one callable (applied once or, Siamese, twice)."""
    conv = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")
    bn = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")
    relu = layers.ReLU(name=f"{name}_relu")
    drop = layers.SpatialDropout2D(dropout, name=f"{name}_dropout") if dropout else None

    def apply(x):
        x = relu(bn(conv(x)))
        return drop(x) if drop is not None else x

    return apply


def _encoder(base_filters, dropout):
    """The encoder's layers, built once; returns ``run(x) -> (pooled, [skip1..skip4])``."""
    stages = []
    for stage, (multiplier, convs) in enumerate(_STAGES, 1):
        blocks = [
            _conv_bn_relu(base_filters * multiplier, dropout, f"enc{stage}{index}")
            for index in range(1, convs + 1)
        ]
        pool = layers.MaxPooling2D(2, padding="same", name=f"pool{stage}")
        stages.append((blocks, pool))

    def run(x):
        skips = []
        for blocks, pool in stages:
            for block in blocks:
                x = block(x)
            skips.append(x)
            x = pool(x)
        return x, skips

    return run


class ChangeDetectionNet(SegmentationModel):
    """The shared builder of FC-EF / FC-Siam-conc / FC-Siam-diff; use one of the subclasses.

    Differences from the authors' code, and why: pools use "same" padding and the upsampled
    maps are cropped to the skip's size (the code floors in the pool and pads the upsampled map
    by replication), so odd sizes keep every pixel; the decoder's stride-1 3x3 transposed
    convolutions are written as 3x3 convolutions (the same function class and parameter count).
    Trainable parameters with RGB pairs and 2 classes equal the code's: FC-EF 1,350,578,
    FC-Siam-conc 1,545,986, FC-Siam-diff 1,350,146 (``count_params`` adds the batch-norm
    moving statistics, 2,432).

    Example:
        >>> FCSiamDiff(input_shape=(64, 64, 6)).output_shape
        (None, 64, 64, 2)
    """

    fusion = None  # "early", "concat" or "diff", set by the subclasses
    image_pair = True  # takes two images stacked on the channel axis (kseg.bench reads this)
    model_name = None

    def __init__(
        self,
        num_classes=2,
        input_shape=(None, None, 6),
        base_filters=16,
        dropout=0.2,
        name=None,
        **kwargs,
    ):
        model = type(self).__name__
        check_num_classes(model, num_classes)
        input_shape = check_input_shape(model, input_shape)
        if input_shape[2] % 2:
            raise ValueError(
                f"{model}: input_shape must hold two images of the same channel count (image A's "
                f"channels, then image B's; 6 for RGB pairs). Received: input_shape={input_shape!r}"
            )
        check_positive_int(model, "base_filters", base_filters)
        check_rate(model, "dropout", dropout)

        # 1. layers
        pair = keras.Input(input_shape, name="image_pair")
        x = ImageNormalization("tf", name="normalize")(pair)
        encode = _encoder(base_filters, dropout)
        if self.fusion == "early":
            x, skips = encode(x)
            fused = skips
        else:
            image_a, image_b = SplitImagePair(name="split_pair")(x)
            x_a, skips_a = encode(image_a)
            _, skips_b = encode(image_b)
            x = x_a  # the authors' decoder starts from image A's bottleneck (their code)
            if self.fusion == "concat":
                fused = [
                    layers.Concatenate(name=f"skip{i}_concat")([a, b])
                    for i, (a, b) in enumerate(zip(skips_a, skips_b), 1)
                ]
            else:
                fused = [
                    AbsoluteDifference(name=f"skip{i}_diff")([a, b])
                    for i, (a, b) in enumerate(zip(skips_a, skips_b), 1)
                ]
        for stage in range(len(_STAGES), 0, -1):
            multiplier, convs = _STAGES[stage - 1]
            filters = base_filters * multiplier
            x = layers.Conv2DTranspose(
                filters, 3, strides=2, padding="same", name=f"upconv{stage}"
            )(x)
            x = CropLike("top_left", name=f"crop{stage}")([x, fused[stage - 1]])
            x = layers.Concatenate(name=f"dec{stage}_concat")([x, fused[stage - 1]])
            widths = [filters] * (convs - 1) + [filters // 2 if stage > 1 else filters]
            if stage == 1:
                widths = [filters]  # the last stage's second convolution is the classifier
            for index, width in zip(range(convs, 0, -1), widths):
                x = _conv_bn_relu(width, dropout, f"dec{stage}{index}")(x)
        logits = layers.Conv2D(num_classes, 3, padding="same", name="classifier")(x)
        # 2. wiring
        super().__init__(pair, logits, name=name or self.model_name, **kwargs)
        # 3. config
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            base_filters=base_filters,
            dropout=dropout,
        )


@MODELS.register("fc_ef", "fcef")
@keras.saving.register_keras_serializable(package="kseg")
class FCEarlyFusion(ChangeDetectionNet):
    """FC-EF: the two images stacked as one input to a U-Net (Daudt et al. 2018).

    Args:
        num_classes: 2 (no change, change) for binary change detection.
        input_shape: ``(H, W, 2C)``, image A's channels then image B's; H/W may be None.
        base_filters: width of the first stage (the paper: 16; stages are 1, 2, 4, 8 times it).
        dropout: 2-D dropout rate after every convolution (the paper: 0.2).

    Example:
        >>> import numpy as np
        >>> model = FCEarlyFusion(input_shape=(32, 32, 6))
        >>> pair = np.concatenate([np.zeros((1, 32, 32, 3)), np.ones((1, 32, 32, 3))], -1)
        >>> model.predict(pair, verbose=0).shape
        (1, 32, 32, 2)
    """

    fusion = "early"
    model_name = "fc_ef"


@MODELS.register("fc_siam_conc", "fcsiamconc")
@keras.saving.register_keras_serializable(package="kseg")
class FCSiamConc(ChangeDetectionNet):
    """FC-Siam-conc: a shared encoder on each image, skips concatenated (Daudt et al. 2018).

    Args: as :class:`FCEarlyFusion`.

    Example:
        >>> FCSiamConc(input_shape=(32, 32, 6)).output_shape
        (None, 32, 32, 2)
    """

    fusion = "concat"
    model_name = "fc_siam_conc"


@MODELS.register("fc_siam_diff", "fcsiamdiff")
@keras.saving.register_keras_serializable(package="kseg")
class FCSiamDiff(ChangeDetectionNet):
    """FC-Siam-diff: a shared encoder on each image, skips as ``|A - B|`` (Daudt et al. 2018).

    Args: as :class:`FCEarlyFusion`.

    Example:
        >>> FCSiamDiff(input_shape=(32, 32, 6)).output_shape
        (None, 32, 32, 2)
    """

    fusion = "diff"
    model_name = "fc_siam_diff"

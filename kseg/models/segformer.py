"""SegFormer (Xie, Wang, Yu, Anandkumar, Alvarez, Luo, "SegFormer: Simple and Efficient Design
for Semantic Segmentation with Transformers", NeurIPS 2021).

A Mix Transformer encoder (MiT-B0..B5, ``kseg.backbones.mit``) and the all-MLP decoder: each
of the four levels is projected by a linear layer to ``decoder_channels``, upsampled to
stride 4, the four are concatenated (deepest first) and fused by a 1×1 convolution with
batch normalisation and ReLU; dropout 0.1 and a 1×1 classifier give stride-4 logits,
upsampled bilinearly to the input size.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg import backbones
from kseg.backbones.mit import MIT_CONFIGS
from kseg.layers.batch_norm import BatchNormalization
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_rate,
    check_weights,
)
from kseg.registry import MODELS

# The authors' decoder widths: 256 for B0/B1, 768 for B2..B5.
DECODER_CHANNELS = {"mit_b0": 256, "mit_b1": 256}


@MODELS.register("segformer")
@keras.saving.register_keras_serializable(package="kseg")
class SegFormer(SegmentationModel):
    """SegFormer with a MiT-B0..B5 encoder and the all-MLP decoder.

    Parameters (trainable, the papers' convention): B0 with 150 classes 3,752,694 (paper
    3.8 M); B5 with 150 classes 84,708,694 (paper 84.7 M). keras-hub's
    ``SegFormerImageSegmenter`` on MiT-B0 with 21 classes and projection 256 counts
    3,720,053 with ``count_params`` (which includes batch norm's 512 moving statistics): the
    same as this model's 3,719,541 trainable + 512. Differences from keras-hub: any input size
    (keras-hub's attention assumes square inputs); logits instead of softmax probabilities;
    normalisation inside the model. As the authors' code: the patch embeddings pad by
    ``k // 2`` (keras-hub too); the sequence-reduction convolution pads "same" (the
    authors' has no padding; the same for sizes divisible by the ratio).

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; any size (at least 32 × 32 for four stages).
        backbone: "mit_b0" .. "mit_b5".
        decoder_channels: width of the MLP decoder (default 256 for B0/B1, 768 for B2-B5).
        dropout: before the classifier (paper: 0.1).
        drop_path_rate: stochastic depth of the encoder's last block (paper: 0.1).
        weights: None or an encoder weights file (no ImageNet weights are bundled).

    Example:
        >>> model = SegFormer(num_classes=4, input_shape=(64, 96, 3), backbone="mit_b0",
        ...                   decoder_channels=32)
        >>> tuple(model.output_shape)
        (None, 64, 96, 4)
    """

    def __init__(
        self,
        num_classes=150,
        input_shape=(None, None, 3),
        backbone="mit_b0",
        decoder_channels=None,
        dropout=0.1,
        drop_path_rate=0.1,
        weights=None,
        name=None,
        **kwargs,
    ):
        check_num_classes("SegFormer", num_classes)
        input_shape = check_input_shape("SegFormer", input_shape, channels=(3,))
        check_choice("SegFormer", "backbone", backbone, tuple(MIT_CONFIGS))
        if decoder_channels is not None:
            check_positive_int("SegFormer", "decoder_channels", decoder_channels)
        width = decoder_channels or DECODER_CHANNELS.get(backbone, 768)
        check_rate("SegFormer", "dropout", dropout)
        check_rate("SegFormer", "drop_path_rate", drop_path_rate)
        weights = check_weights("SegFormer", weights)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("torch", name="normalize")(images)
        features = backbones.build(backbone, x, weights=weights, drop_path_rate=drop_path_rate)
        levels = ["P2", "P3", "P4", "P5"]
        projected = []
        for level in reversed(levels):  # the authors concatenate the deepest level first
            y = layers.Dense(width, name=f"decoder_linear_{level}")(features[level])
            if level != "P2":
                y = Resize(name=f"decoder_upsample_{level}")([y, features["P2"]])
            projected.append(y)
        x = layers.Concatenate(name="decoder_concat")(projected)
        x = layers.Conv2D(width, 1, use_bias=False, name="decoder_fuse")(x)
        x = BatchNormalization(epsilon=1e-5, name="decoder_fuse_bn")(x)
        x = layers.ReLU(name="decoder_fuse_relu")(x)
        x = layers.Dropout(dropout, name="decoder_dropout")(x)
        x = layers.Conv2D(num_classes, 1, name="classifier")(x)
        logits = Resize(name="upsample")([x, images])
        super().__init__(images, logits, name=name or f"segformer_{backbone[-2:]}", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            decoder_channels=decoder_channels,
            dropout=dropout,
            drop_path_rate=drop_path_rate,
            weights=weights,
        )

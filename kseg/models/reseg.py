"""ReSeg (Visin et al., CVPR-W 2016): VGG16 features, ReNet layers, transposed convolutions."""

from __future__ import annotations

import keras
from keras import layers

from kseg.backbones._pretrained import LayerRecorder, load_application_weights
from kseg.layers import ImageNormalization, Resize
from kseg.layers.renet import ReNet
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_ints,
    check_weights,
)
from kseg.registry import MODELS

# VGG16 up to conv3_3 (the authors' ``in-nfilters: 'conv3_3'``): stride 4.
_FRONT_CONVS = (2, 2, 3)
_FRONT_FILTERS = (64, 128, 256)
_UNUSED_VGG = tuple(f"block{b}_conv{c}" for b in (4, 5) for c in (1, 2, 3))


@MODELS.register("reseg")
@keras.saving.register_keras_serializable(package="kseg")
class ReSeg(SegmentationModel):
    """VGG16's first seven convolutions, ReNet layers and transposed-convolution upsampling.

    The configuration follows the authors' CamVid script (``evaluate_camvid_with_cb.py`` in
    fvisin/reseg, which the paper's CamVid result comes from): VGG16 up to ``conv3_3``
    (stride 4, "caffe" normalisation), two ReNet layers of 100 GRU units with 1×1 patches,
    two 2×2 stride-2 transposed convolutions of 50 filters with ReLU, a 1×1 classifier.
    With 11 classes that is 2,542,149 parameters, 1,735,488 of them VGG16's (the paper gives
    no count; this one is computed from that script). Where the patches or an odd input size
    leave the upsampled map off the input size, it is resized to it (the authors crop).

    Args:
        num_classes: the number of classes.
        input_shape: ``(H, W, 3)``; H and W may be None.
        weights: None, ``"imagenet"`` or a keras.applications VGG16 weights file for the
            front (needs the default ``front_filters``).
        front_filters: widths of VGG16's first three blocks.
        renet_units: GRU units of each ReNet layer (one layer per entry).
        patch_sizes: patch side of each ReNet layer.
        upsample_filters: filters of each 2×2 stride-2 transposed convolution.
        cell: ``"gru"`` (the authors') or ``"lstm"``.

    Example:
        >>> model = ReSeg(num_classes=3, input_shape=(32, 32, 3), front_filters=(8, 8, 8),
        ...               renet_units=(4, 4), upsample_filters=(4, 4))
        >>> tuple(model.output_shape)
        (None, 32, 32, 3)
        >>> ReSeg(num_classes=11).count_params()
        2542149
    """

    def __init__(
        self,
        num_classes=11,
        input_shape=(None, None, 3),
        weights=None,
        front_filters=_FRONT_FILTERS,
        renet_units=(100, 100),
        patch_sizes=(1, 1),
        upsample_filters=(50, 50),
        cell="gru",
        name=None,
        **kwargs,
    ):
        check_num_classes("ReSeg", num_classes)
        input_shape = check_input_shape("ReSeg", input_shape, channels=(3,))
        weights = check_weights("ReSeg", weights)
        front_filters = check_positive_ints("ReSeg", "front_filters", front_filters, length=3)
        renet_units = check_positive_ints("ReSeg", "renet_units", renet_units)
        patch_sizes = check_positive_ints(
            "ReSeg", "patch_sizes", patch_sizes, length=len(renet_units)
        )
        upsample_filters = check_positive_ints("ReSeg", "upsample_filters", upsample_filters)
        check_choice("ReSeg", "cell", cell, ("gru", "lstm"))
        if weights is not None and front_filters != _FRONT_FILTERS:
            raise ValueError(
                f"ReSeg: pretrained weights need front_filters={_FRONT_FILTERS}. "
                f"Received: front_filters={front_filters!r}"
            )

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        track = LayerRecorder()
        for block, (filters, convs) in enumerate(zip(front_filters, _FRONT_CONVS), 1):
            for conv in range(1, convs + 1):
                conv_layer = layers.Conv2D(
                    filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}"
                )
                x = track(conv_layer)(x)
            if block < 3:
                x = layers.MaxPooling2D(2, padding="same", name=f"block{block}_pool")(x)
        load_application_weights(
            "ReSeg", track.layers, keras.applications.VGG16, weights, 3, unused=_UNUSED_VGG
        )
        for index, (units, patch) in enumerate(zip(renet_units, patch_sizes), 1):
            x = ReNet(units, patch_size=patch, cell=cell, name=f"renet{index}")(x)
        for index, filters in enumerate(upsample_filters, 1):
            x = layers.Conv2DTranspose(
                filters, 2, strides=2, activation="relu", name=f"upsample{index}"
            )(x)
        x = layers.Conv2D(num_classes, 1, name="classifier")(x)
        logits = Resize(name="resize")([x, images])
        super().__init__(images, logits, name=name or "reseg", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            weights=weights,
            front_filters=front_filters,
            renet_units=renet_units,
            patch_sizes=patch_sizes,
            upsample_filters=upsample_filters,
            cell=cell,
        )

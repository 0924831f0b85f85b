"""Panoptic-DeepLab (Cheng, Collins, Zhu, Liu, Huang, Adam, Chen, CVPR 2020).

A shared backbone feeds two DeepLab branches, each an ASPP and a decoder that fuses the
stride-8 ("P3") and stride-4 ("P2") features: the semantic branch ends in the semantic head
(class logits), the instance branch in the centre head (a heat-map regressed against Gaussians
of sigma 8 at the instance centres) and the offset head (for every pixel, the ``(dy, dx)`` from
the pixel to its instance's centre, in input pixels). ``kseg.panoptic.group`` turns the three
into a panoptic map; ``PanopticDeepLab.panoptic_model()`` appends it as a layer, for export.

It is registered as ``"panoptic_deeplab"`` with ``task = "panoptic"``: the sweeps over the
semantic models (whose single output is the logits, the contract ``kseg.testing.check_model``
and the model matrix train and export) leave it out; it has three outputs and its own losses.

The layout follows the official configuration (deeplab2 ``configs/coco/panoptic_deeplab/
resnet50_os16.textproto``): ASPP 256 wide at rates (6, 12, 18) on both branches; semantic
decoder 256 wide with 64/32-channel projections of P3/P2, instance decoder 128 wide with
32/16; every decoder fusion and head convolution a 5×5 depthwise-separable convolution
(BN + ReLU after both parts); heads 256 (semantic) and 32 (centre, offset) wide, then a 1×1
convolution with bias.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.layers.aspp import ASPP
from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_positive_ints,
)
from kseg.models.deeplab import (
    _V3_BACKBONES,
    _backbone_features,
    _backbone_options,
    _check_backbone,
    _default_rates,
    check_weights,
)
from kseg.registry import MODELS

#: The order of the model's outputs.
OUTPUT_NAMES = ("semantic", "center", "offset")
#: Loss weights of the paper (semantic, centre, offset).
PAPER_LOSS_WEIGHTS = (1.0, 200.0, 0.01)


def _check_thing_classes(thing_classes, num_classes):
    try:
        things = tuple(sorted(set(thing_classes)))
    except TypeError:
        things = None
    if things is None or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c < num_classes for c in things
    ):
        raise ValueError(
            "PanopticDeepLab: thing_classes must be class indices in [0, num_classes="
            f"{num_classes}). Received: thing_classes={thing_classes!r}"
        )
    return things


def _decoder(features, branch, aspp_filters, rates, filters, projections):
    """ASPP on P5, then for P3 and P2: upsample, concat a 1×1 projection, 5×5 separable conv."""
    x = ASPP(
        filters=aspp_filters, rates=rates, image_pooling=True, dropout=0.1, name=f"{branch}_aspp"
    )(features["P5"])
    for level, channels in zip(("P3", "P2"), projections):
        low = conv_bn_relu(features[level], channels, 1, f"{branch}_{level.lower()}_project")
        x = Resize(name=f"{branch}_{level.lower()}_upsample")([x, low])
        x = layers.Concatenate(name=f"{branch}_{level.lower()}_concat")([x, low])
        x = conv_bn_relu(x, filters, 5, f"{branch}_{level.lower()}_fuse", separable=True)
    return x


def _head(x, name, filters, outputs, images):
    x = conv_bn_relu(x, filters, 5, f"{name}_head", separable=True)
    x = layers.Conv2D(
        outputs,
        1,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name=f"{name}_output",
    )(x)
    return Resize(name=f"{name}_upsample")([x, images])


@MODELS.register("panoptic_deeplab", "panopticdeeplab")
@keras.saving.register_keras_serializable(package="kseg")
class PanopticDeepLab(SegmentationModel):
    """Panoptic-DeepLab: semantic logits, instance centre heat-map and centre offsets.

    ``kseg.models.create("panoptic_deeplab", ...)`` builds it too (``task = "panoptic"``).

    Outputs (a list, in ``OUTPUT_NAMES`` order), all at the input resolution:
    ``semantic`` logits ``[B, H, W, num_classes]``, ``center`` heat-map ``[B, H, W, 1]`` (no
    activation: regressed with MSE) and ``offset`` ``[B, H, W, 2]`` (``(dy, dx)`` from the pixel
    to its centre, in input pixels). Train with ``model.compile(optimizer,
    loss=model.default_losses(), loss_weights=model.loss_weights_for_outputs)`` on the targets
    of ``kseg.panoptic.panoptic_targets`` (``training_targets``); ``model.panoptic_model()``
    returns the model with the grouping post-process appended (images -> panoptic map, id
    ``class * label_divisor + instance``).

    Trainable parameters with the official COCO configuration (``resnet50``, output stride 16,
    134 classes): 55,029,817, against 55,003,257 counted from deeplab2's config (+0.05 %:
    kseg's keras-style ResNet-50 keeps 26,560 convolution biases that deeplab2's has not;
    there is no published count for this configuration).

    Args:
        num_classes: the number of semantic classes (stuff and things).
        thing_classes: the class indices that have instances (the rest are stuff).
        input_shape: ``(H, W, 3)``; H and W may be None.
        backbone: "resnet50" (default), "resnet101", "mobilenetv2" or "xception65".
        output_stride: 8, 16 (paper) or 32.
        weights: None, "imagenet" or a backbone weights file.
        aspp_rates: None for (6, 12, 18) at output stride 16 (scaled with it).
        aspp_filters: width of both ASPPs (256).
        semantic_filters, instance_filters: decoder widths (256, 128).
        semantic_projections, instance_projections: channels of the P3 and P2 projections
            ((64, 32) and (32, 16)).
        semantic_head_filters, instance_head_filters: head widths (256, 32).
        label_divisor: panoptic id = class * label_divisor + instance (1000).
        multi_grid, backbone_options: as ``DeepLabV3Plus``.

    Example:
        >>> model = PanopticDeepLab(num_classes=4, thing_classes=(2, 3), backbone="mobilenetv2",
        ...                         input_shape=(64, 64, 3), aspp_filters=32,
        ...                         semantic_filters=32, instance_filters=16)
        >>> [tuple(shape) for shape in model.output_shape]
        [(None, 64, 64, 4), (None, 64, 64, 1), (None, 64, 64, 2)]
    """

    task = "panoptic"

    def __init__(
        self,
        num_classes=19,
        thing_classes=(),
        input_shape=(None, None, 3),
        backbone="resnet50",
        output_stride=16,
        weights=None,
        aspp_rates=None,
        aspp_filters=256,
        semantic_filters=256,
        instance_filters=128,
        semantic_projections=(64, 32),
        instance_projections=(32, 16),
        semantic_head_filters=256,
        instance_head_filters=32,
        label_divisor=1000,
        multi_grid=None,
        backbone_options=None,
        name=None,
        **kwargs,
    ):
        model = "PanopticDeepLab"
        check_num_classes(model, num_classes)
        thing_classes = _check_thing_classes(thing_classes, num_classes)
        input_shape = check_input_shape(model, input_shape, channels=(3,))
        _check_backbone(model, backbone, _V3_BACKBONES)
        check_choice(model, "output_stride", output_stride, (8, 16, 32))
        weights = check_weights(model, weights)
        for argument, value in (
            ("aspp_filters", aspp_filters),
            ("semantic_filters", semantic_filters),
            ("instance_filters", instance_filters),
            ("semantic_head_filters", semantic_head_filters),
            ("instance_head_filters", instance_head_filters),
        ):
            check_positive_int(model, argument, value)
        semantic_projections = check_positive_ints(
            model, "semantic_projections", semantic_projections, length=2
        )
        instance_projections = check_positive_ints(
            model, "instance_projections", instance_projections, length=2
        )
        check_positive_int(model, "label_divisor", label_divisor)
        rates = _default_rates(output_stride) if aspp_rates is None else tuple(aspp_rates)

        # 1. layers
        images = keras.Input(input_shape, name="images")
        options = _backbone_options(backbone, multi_grid, backbone_options)
        features = _backbone_features(
            images, model, backbone, _V3_BACKBONES, output_stride, weights, options
        )
        semantic = _decoder(
            features, "semantic", aspp_filters, rates, semantic_filters, semantic_projections
        )
        instance = _decoder(
            features, "instance", aspp_filters, rates, instance_filters, instance_projections
        )
        outputs = [
            _head(semantic, "semantic", semantic_head_filters, num_classes, images),
            _head(instance, "center", instance_head_filters, 1, images),
            _head(instance, "offset", instance_head_filters, 2, images),
        ]
        # 2. wiring
        super().__init__(images, outputs, name=name or "panoptic_deeplab", **kwargs)
        # 3. config
        self._store_config(
            num_classes=num_classes,
            thing_classes=thing_classes,
            input_shape=input_shape,
            backbone=backbone,
            output_stride=output_stride,
            weights=weights,
            aspp_rates=None if aspp_rates is None else tuple(aspp_rates),
            aspp_filters=aspp_filters,
            semantic_filters=semantic_filters,
            instance_filters=instance_filters,
            semantic_projections=semantic_projections,
            instance_projections=instance_projections,
            semantic_head_filters=semantic_head_filters,
            instance_head_filters=instance_head_filters,
            label_divisor=label_divisor,
            multi_grid=None if multi_grid is None else tuple(multi_grid),
            backbone_options=backbone_options,
        )

    @property
    def loss_weights_for_outputs(self):
        """The paper's loss weights ``[1.0, 200.0, 0.01]`` (semantic, centre, offset)."""
        return list(PAPER_LOSS_WEIGHTS)

    def default_losses(self, top_k_percent=0.2, ignore_index=255):
        """The paper's three losses, for ``compile(loss=...)`` with ``loss_weights_for_outputs``.

        Weighted bootstrapped cross-entropy (the hardest ``top_k_percent`` of the pixels),
        weighted MSE on the centre heat-map, weighted L1 on the offsets
        (``kseg.panoptic.losses``).

        Example:
            >>> model = PanopticDeepLab(num_classes=3, thing_classes=(1,),
            ...                         backbone="mobilenetv2", input_shape=(32, 32, 3))
            >>> [type(loss).__name__ for loss in model.default_losses()]
            ['BootstrappedCrossEntropy', 'CenterLoss', 'OffsetLoss']
        """
        from kseg.panoptic.losses import BootstrappedCrossEntropy, CenterLoss, OffsetLoss

        return [
            BootstrappedCrossEntropy(top_k_percent=top_k_percent, ignore_index=ignore_index),
            CenterLoss(),
            OffsetLoss(),
        ]

    def inference_model(self):
        """A single-output ``keras.Model`` (semantic logits) sharing this model's weights.

        Example:
            >>> model = PanopticDeepLab(num_classes=3, thing_classes=(1,),
            ...                         backbone="mobilenetv2", input_shape=(32, 32, 3))
            >>> tuple(model.inference_model().output_shape)
            (None, 32, 32, 3)
        """
        return keras.Model(self.input, self.outputs[0], name=f"{self.name}_semantic")

    def panoptic_model(self, **grouping):
        """This model with ``kseg.panoptic.PanopticGrouping`` appended: images -> panoptic map.

        Args:
            **grouping: ``PanopticGrouping`` arguments (``center_threshold``, ``nms_kernel``,
                ``top_k``, ``stuff_area``, ``void_label``); ``thing_classes`` and
                ``label_divisor`` come from the model.

        Returns:
            A ``keras.Model`` from images to the int32 panoptic map ``[B, H, W]``.

        Example:
            >>> model = PanopticDeepLab(num_classes=3, thing_classes=(1,),
            ...                         backbone="mobilenetv2", input_shape=(32, 32, 3))
            >>> tuple(model.panoptic_model(top_k=8).output_shape)
            (None, 32, 32)
        """
        from kseg.panoptic.postprocess import PanopticGrouping

        layer = PanopticGrouping(
            thing_classes=self.thing_classes,
            label_divisor=self.label_divisor,
            name="panoptic_grouping",
            **grouping,
        )
        return keras.Model(self.input, layer(self.outputs), name=f"{self.name}_panoptic")

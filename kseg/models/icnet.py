"""ICNet (Zhao, Qi, Shen, Shi, Jia, "ICNet for Real-Time Semantic Segmentation on
High-Resolution Images", ECCV 2018): an image cascade over three resolutions.

The full image goes through three cheap strided convolutions (stride 8); the half-resolution
image through PSPNet-50's first stages up to ``conv3_1`` (stride 16 of the image); those
features, halved again, through the rest of the dilated ResNet-50 and a pyramid pooling
module (stride 32). Two cascade feature fusion units merge 1/32 into 1/16 and 1/16 into 1/8;
the result is upsampled ×2 and classified at 1/4, then upsampled to the input. Heavy layers
only ever see the quarter-resolution image, which makes it fast at 1024×2048.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.backbones.resnet import _bottleneck
from kseg.layers.conv_block import conv_bn_relu
from kseg.layers.icnet import CascadeFeatureFusion
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.pyramid_pooling import pyramid_pooling_module
from kseg.layers.resize import Resize
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_positive_ints,
)
from kseg.models.bisenet import _check_positive, _check_weight
from kseg.registry import MODELS

# Smallest height/width: the 1/32 branch must keep at least one pixel.
_MIN_SIZE = 32


def _scaled(channels, alpha):
    return max(1, int(round(channels * alpha)))


def _identity(layer):
    return layer


@MODELS.register("icnet")
@keras.saving.register_keras_serializable(package="kseg")
class ICNet(SegmentationModel):
    """ICNet on PSPNet-50 (dilated ResNet-50 with the deep stem), with its cascade losses.

    Branches: sub1, 3×3/2 convolutions to 64, 64, 128 channels (× ``alpha``); sub2, on the
    image resized to 1/2, the three-convolution stem (64, 64, 128), max pooling, ``conv2`` and
    ``conv3_1`` of ResNet-50; sub4, on ``conv3_1`` resized to 1/2, ``conv3_2`` … ``conv5``
    (``conv4`` dilated 2, ``conv5`` dilated 4), pyramid pooling by summation (bins 1, 2, 3, 6,
    no convolutions, as ICNet's released model) and a 1×1 convolution to 512. Cascade feature
    fusion (``kseg.layers.CascadeFeatureFusion``) to 256 channels at 1/16 and at 1/8; ×2
    upsampling and a 1×1 classifier at 1/4. Every width scales with ``alpha``; ``alpha=0.5``
    is the released, kernel-halved Cityscapes model (32, 32, 64 stem; 256-channel pyramid
    projection; 128-channel fusion).

    With ``cascade_outputs`` (default) the model has three outputs, ``[logits, logits_8,
    logits_16]``: the 1/4 classifier (the main output, loss weight 1.0) and the cascade label
    guidance classifiers of the two fusion units at 1/8 and 1/16 (weights 0.4 and 0.4, the
    paper's λ). All three are upsampled bilinearly to the input size, so the same labels serve
    every output (the paper downsamples the labels instead).

    Parameters at 19 classes (trainable, with the two cascade classifiers of 19·(C+1)
    parameters each): ``alpha=1.0`` 26,775,609, ``alpha=0.5`` 6,720,569. Multiply-adds of
    ``inference_model()`` at 1024×2048 (``kseg.bench.profile``): ``alpha=1.0`` 114.3 B,
    ``alpha=0.5`` 29.0 B. The published figures (second-hand, [?]) are 26.5 M parameters,
    which is the full-width network (+1.0 %), and 28.3 G "FLOPs", which is the multiply-adds
    of the released half-width network (+2.6 %); the default is that released network
    (``alpha=0.5``), whose speed the paper reports.

    Good for: high-resolution (1024×2048) street scenes in real time on a GPU (Cityscapes
    test 69.5 at 30 fps in the paper); its cascade keeps the ResNet at 1/4 of the pixels.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; H and W at least 32 (or None).
        alpha: width multiplier of every layer (0.5, default: the released compressed model;
            1.0: PSPNet-50's widths).
        bins: pyramid pooling bins (1, 2, 3, 6).
        cascade_outputs: add the 1/8 and 1/16 cascade classifiers as outputs 2 and 3.
        cascade_loss_weights: their loss weights (paper: 0.4, 0.4).

    Example:
        >>> model = ICNet(num_classes=4, input_shape=(64, 96, 3), alpha=0.125)
        >>> [tuple(s) for s in model.output_shape]
        [(None, 64, 96, 4), (None, 64, 96, 4), (None, 64, 96, 4)]
        >>> model.loss_weights_for_outputs
        [1.0, 0.4, 0.4]
    """

    def __init__(
        self,
        num_classes=19,
        input_shape=(None, None, 3),
        alpha=0.5,
        bins=(1, 2, 3, 6),
        cascade_outputs=True,
        cascade_loss_weights=(0.4, 0.4),
        name=None,
        **kwargs,
    ):
        check_num_classes("ICNet", num_classes)
        input_shape = check_input_shape("ICNet", input_shape, channels=(3,))
        for size in input_shape[:2]:
            if size is not None and size < _MIN_SIZE:
                raise ValueError(
                    f"ICNet: height and width must be at least {_MIN_SIZE} (the 1/32 branch "
                    f"needs a pixel). Received: input_shape={input_shape!r}"
                )
        _check_positive("ICNet", "alpha", alpha)
        bins = check_positive_ints("ICNet", "bins", bins)
        try:
            cascade_loss_weights = tuple(float(w) for w in cascade_loss_weights)
        except (TypeError, ValueError):
            cascade_loss_weights = ()
        if len(cascade_loss_weights) != 2:
            raise ValueError(
                "ICNet: cascade_loss_weights must be two numbers >= 0 (1/8 and 1/16). "
                f"Received: cascade_loss_weights={cascade_loss_weights!r}"
            )
        for weight in cascade_loss_weights:
            _check_weight("ICNet", "cascade_loss_weights", weight)

        # 1. layers
        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        # sub1: full resolution, stride 8
        sub1 = x
        for index, filters in enumerate((64, 64, 128), 1):
            sub1 = conv_bn_relu(sub1, _scaled(filters, alpha), 3, f"sub1_conv{index}", strides=2)
        # sub2: half resolution, PSPNet-50 up to conv3_1 (stride 16 of the image)
        y = Resize(scale=0.5, name="sub2_downsample")(x)
        for index, filters in enumerate((64, 64, 128), 1):
            y = conv_bn_relu(
                y, _scaled(filters, alpha), 3, f"conv1_{index}", strides=2 if index == 1 else 1
            )
        y = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(y)
        for block in range(3):
            y = _bottleneck(
                y, _scaled(64, alpha), 1, 1, block == 0, f"conv2_block{block + 1}", _identity
            )
        sub2 = _bottleneck(y, _scaled(128, alpha), 2, 1, True, "conv3_block1", _identity)
        # sub4: conv3_1 halved, the rest of the dilated ResNet-50 (stride 32 of the image)
        y = Resize(scale=0.5, name="sub4_downsample")(sub2)
        for block in range(1, 4):
            y = _bottleneck(
                y, _scaled(128, alpha), 1, 1, False, f"conv3_block{block + 1}", _identity
            )
        for stage, (filters, blocks, rate) in ((4, (256, 6, 2)), (5, (512, 3, 4))):
            for block in range(blocks):
                y = _bottleneck(
                    y,
                    _scaled(filters, alpha),
                    1,
                    rate,
                    block == 0,
                    f"conv{stage}_block{block + 1}",
                    _identity,
                )
        y = pyramid_pooling_module(y, bins, "ppm", merge="sum")
        sub4 = conv_bn_relu(y, _scaled(512, alpha), 1, "ppm_project")
        fusion_filters = _scaled(256, alpha)
        sub24, logits16 = CascadeFeatureFusion(
            fusion_filters, num_classes=num_classes, name="cff_sub24"
        )([sub4, sub2])
        sub12, logits8 = CascadeFeatureFusion(
            fusion_filters, num_classes=num_classes, name="cff_sub12"
        )([sub24, sub1])
        y = Resize(scale=2, name="sub12_upsample")(sub12)
        logits4 = layers.Conv2D(num_classes, 1, name="classifier")(y)
        outputs = [Resize(name="upsample")([logits4, images])]
        if cascade_outputs:
            outputs.append(Resize(name="cascade8_upsample")([logits8, images]))
            outputs.append(Resize(name="cascade16_upsample")([logits16, images]))
        # 2. wiring
        super().__init__(
            images, outputs if cascade_outputs else outputs[0], name=name or "icnet", **kwargs
        )
        # 3. config
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            alpha=alpha,
            bins=bins,
            cascade_outputs=cascade_outputs,
            cascade_loss_weights=cascade_loss_weights,
        )

    @property
    def loss_weights_for_outputs(self):
        """``[1.0, w_8, w_16]`` with the cascade outputs (paper: 0.4, 0.4), else ``[1.0]``."""
        if not self.cascade_outputs:
            return [1.0]
        return [1.0, *self.cascade_loss_weights]

    def inference_model(self):
        """A single-output ``keras.Model`` (the main logits) sharing this model's weights."""
        return keras.Model(self.input, self.outputs[0], name=f"{self.name}_inference")

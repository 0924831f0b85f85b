"""GCN: Large Kernel Matters (Peng, Zhang, Yu, Luo, Sun, CVPR 2017).

A ResNet encoder; on each of its four stages a Global Convolutional Network module (two
separable branches, k×1 then 1×k and 1×k then k×1, summed; no non-linearity) maps the features to
class scores, a Boundary Refinement block (x + conv3×3(relu(conv3×3(x)))) sharpens them, and a
top-down path adds each stage's scores to the ×2-upsampled (transposed convolution, bilinear
start) scores from the stage below, refining after each sum. A last BR, ×2 upsampling and BR
bring the scores to the input resolution (the paper's Figure 2).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg import backbones
from kseg.layers.crop import CropLike
from kseg.layers.fft_conv import ALGORITHMS, FFTConv2D
from kseg.layers.image_normalization import ImageNormalization
from kseg.layers.resize import BilinearKernel
from kseg.models._base import (
    SegmentationModel,
    check_choice,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_weights,
)
from kseg.registry import MODELS

BACKBONES = ("resnet50", "resnet101")
LEVELS = ("P5", "P4", "P3", "P2")


def _gcn_module(x, channels, k, algorithm, name):
    # Both branches are k×k in receptive field with 2k weights per channel pair.
    def conv(t, size, suffix):
        return FFTConv2D(
            channels, size, padding="same", algorithm=algorithm, name=f"{name}_{suffix}"
        )(t)

    left = conv(conv(x, (k, 1), "left_kx1"), (1, k), "left_1xk")
    right = conv(conv(x, (1, k), "right_1xk"), (k, 1), "right_kx1")
    return layers.Add(name=f"{name}_sum")([left, right])


def _boundary_refinement(x, channels, name):
    residual = layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"{name}_conv1")(
        x
    )
    residual = layers.Conv2D(channels, 3, padding="same", name=f"{name}_conv2")(residual)
    return layers.Add(name=f"{name}_add")([x, residual])


def _upsample2(x, channels, name):
    return layers.Conv2DTranspose(
        channels,
        4,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearKernel(),
        name=name,
    )(x)


@MODELS.register("gcn")
@keras.saving.register_keras_serializable(package="kseg")
class GCN(SegmentationModel):
    """Global Convolutional Network with Boundary Refinement on ResNet-50/101.

    The GCN branches are ``FFTConv2D`` layers: with ``fft_algorithm="auto"`` each one runs by FFT
    or by ``tf.nn.conv2d``, whichever the cost model says is faster for its size (the 1-D
    15-tap kernels of GCN are usually faster direct at 21 channels; 2-D large kernels are where
    the FFT wins). Every size of input works: upsampled maps are cropped to the skip's size.

    Args:
        num_classes: number of classes (logits channels; the paper also uses it as the width of
            every GCN/BR map).
        input_shape: ``(H, W, 3)``, H/W may be None.
        backbone: "resnet50" or "resnet101".
        kernel_size: k of the GCN modules (the paper's best: 15).
        weights: None, "imagenet" or a path to a keras.applications ResNet weights file.
        fft_algorithm: "auto", "fft" or "direct" for the GCN convolutions.

    Example:
        >>> model = GCN(num_classes=5, input_shape=(96, 80, 3))
        >>> tuple(model.output_shape)
        (None, 96, 80, 5)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        backbone="resnet50",
        kernel_size=15,
        weights=None,
        fft_algorithm="auto",
        name=None,
        **kwargs,
    ):
        check_num_classes("GCN", num_classes)
        input_shape = check_input_shape("GCN", input_shape, channels=(3,))
        check_choice("GCN", "backbone", backbone, BACKBONES)
        check_choice("GCN", "fft_algorithm", fft_algorithm, ALGORITHMS)
        check_positive_int("GCN", "kernel_size", kernel_size)
        weights = check_weights("GCN", weights)

        images = keras.Input(input_shape, name="images")
        x = ImageNormalization("caffe", name="normalize")(images)
        features = backbones.build(backbone, x, output_stride=32, weights=weights)
        scores = None
        for level in LEVELS:
            stage = level.lower()
            s = _gcn_module(
                features[level], num_classes, kernel_size, fft_algorithm, f"gcn_{stage}"
            )
            s = _boundary_refinement(s, num_classes, f"br_{stage}")
            if scores is not None:
                up = CropLike("top_left", name=f"crop_to_{stage}")([scores, s])
                s = layers.Add(name=f"fuse_{stage}")([s, up])
                s = _boundary_refinement(s, num_classes, f"br_fused_{stage}")
            scores = _upsample2(s, num_classes, f"up_{stage}")
        scores = _boundary_refinement(scores, num_classes, "br_half")
        scores = _upsample2(scores, num_classes, "up_full")
        scores = CropLike("top_left", name="crop_to_input")([scores, images])
        logits = _boundary_refinement(scores, num_classes, "br_full")
        super().__init__(images, logits, name=name or f"gcn_{backbone}", **kwargs)

        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            backbone=backbone,
            kernel_size=kernel_size,
            weights=weights,
            fft_algorithm=fft_algorithm,
        )

"""Input normalisation matching the conventions of ImageNet-trained backbones."""

from __future__ import annotations

import keras
from keras import ops

# Per-channel statistics of the keras.applications preprocessing modes, in RGB order.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
_TORCH_STD = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)

MODES = ("caffe", "tf", "torch", "unit", "none")


@keras.saving.register_keras_serializable(package="kseg")
class ImageNormalization(keras.layers.Layer):
    """Maps RGB images in [0, 255] to what an ImageNet backbone was trained on.

    Modes (the same as ``keras.applications`` preprocessing):

    - ``"caffe"``: RGB → BGR, minus the ImageNet mean (VGG16, ResNet-50/101 v1);
    - ``"tf"``: scaled to [-1, 1] (MobileNetV2, Xception);
    - ``"torch"``: scaled to [0, 1], minus mean, divided by std per channel;
    - ``"unit"``: scaled to [0, 1];
    - ``"none"``: unchanged (single-channel or non-RGB inputs).

    ``"caffe"`` and ``"torch"`` need exactly 3 channels.

    Args:
        mode: one of ``MODES``.

    Example:
        >>> import numpy as np
        >>> ImageNormalization("tf")(np.array([[[[0., 127.5, 255.]]]], "float32")).numpy()
        array([[[[-1.,  0.,  1.]]]], dtype=float32)
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(
                f"ImageNormalization: mode must be one of {MODES}. Received: mode={mode!r}"
            )
        self.mode = mode

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.mode in ("caffe", "torch") and channels != 3:
            raise ValueError(
                f"ImageNormalization: mode {self.mode!r} needs 3-channel RGB input (use mode='tf', 'unit' "
                f"or 'none' otherwise). Received: channels={channels}"
            )
        self.built = True

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            # A reversing slice, not ops.flip: TFLite's int8 REVERSE_V2 copies the bytes but the
            # converter gives its output other quantization parameters (RGB -> BGR came out
            # off by ~57 on average in 0..255), while STRIDED_SLICE keeps them.
            x = x[..., ::-1]
            return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            return (x - mean) / std
        if self.mode == "unit":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config

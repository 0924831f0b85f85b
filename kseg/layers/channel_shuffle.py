"""Channel shuffle and grouped convolution (ShuffleNet, Zhang, Zhou, Lin, Sun, CVPR 2018).

A grouped convolution splits the channels into ``groups`` parts and convolves each part on its
own; stacking grouped convolutions would keep information inside one group, so ShuffleNet
shuffles the channels between them: ``[B, H, W, groups * n]`` is viewed as ``[..., groups, n]``,
transposed to ``[..., n, groups]`` and flattened again, so that the next grouped convolution's
every group sees a channel from each of the previous groups. ESPNetV2 uses both (its EESP
unit's group point-wise convolutions and the shuffle in its efficient pyramid pooling).

Both layers are built from 4-D reshapes/transposes, slices, ``Conv2D`` and concatenation, so they
run on every TensorFlow device (TensorFlow has no CPU kernel for a grouped ``Conv2D``; Keras
falls back on XLA for it) and convert to TFLite built-in ops.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _check_groups(layer, groups):
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{layer}: groups must be a positive int. Received: groups={groups!r}")


@keras.saving.register_keras_serializable(package="kseg")
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle: ``reshape(g, n) → transpose → flatten`` of the channels.

    Output channel ``j * groups + i`` is input channel ``i * n + j`` (``n = C / groups``), as
    ``x.reshape(B, H, W, groups, n).transpose(0, 1, 2, 4, 3).reshape(B, H, W, C)``.

    Args:
        groups: the number of groups; the channel count must be a multiple of it.

    Example:
        >>> import numpy as np
        >>> x = np.arange(6, dtype="float32").reshape(1, 1, 1, 6)
        >>> ChannelShuffle(2)(x).numpy().ravel().tolist()
        [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    """

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        _check_groups("ChannelShuffle", groups)
        self.groups = groups

    def _channels(self, shape):
        channels = shape[-1]
        if len(shape) != 4 or channels is None or channels % self.groups:
            raise ValueError(
                f"{self.name}: expects [batch, height, width, channels] with a known channel "
                f"count that is a multiple of groups={self.groups}. Received: shape={tuple(shape)}"
            )
        return int(channels)

    def call(self, x):
        channels = self._channels(tuple(x.shape))
        shape = tf.shape(x)
        # 4-D only (TFLite kernels): [B, H*W, groups, n] -> [B, H*W, n, groups]
        y = tf.reshape(x, tf.stack([shape[0], shape[1] * shape[2], self.groups, -1]))
        y = tf.transpose(y, [0, 1, 3, 2])
        return tf.reshape(y, tf.stack([shape[0], shape[1], shape[2], channels]))

    def compute_output_shape(self, input_shape):
        self._channels(tuple(input_shape))
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="kseg")
class GroupedConv2D(keras.layers.Layer):
    """A grouped 2-D convolution ("same" padding), as ``torch.nn.Conv2d(groups=g)``.

    The input's ``C`` channels are cut into ``groups`` consecutive parts of ``C / groups``; part
    ``i`` is convolved into output channels ``[i * filters / groups, (i + 1) * filters / groups)``.
    One kernel ``[kh, kw, C / groups, filters]`` holds all the weights (as a grouped Keras
    ``Conv2D``), run as one grouped convolution. ``groups=1`` is an ordinary convolution.

    Args:
        filters: output channels, a multiple of ``groups``.
        kernel_size: int or pair.
        groups: the number of groups; the input channels must be a multiple of it.
        strides, dilation_rate: int (the same along both axes) or pair.
        use_bias: add a bias.
        kernel_initializer: initializer of the kernel.

    Example:
        >>> import numpy as np
        >>> layer = GroupedConv2D(4, 1, groups=2, kernel_initializer="ones")
        >>> layer(np.array([[[[1.0, 2.0, 3.0, 4.0]]]], "float32")).numpy().ravel().tolist()
        [3.0, 3.0, 7.0, 7.0]
    """

    def __init__(
        self,
        filters,
        kernel_size,
        groups=1,
        strides=1,
        dilation_rate=1,
        use_bias=False,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_groups("GroupedConv2D", groups)
        if not isinstance(filters, int) or isinstance(filters, bool) or filters % groups:
            raise ValueError(
                f"GroupedConv2D: filters must be a positive multiple of groups={groups}. "
                f"Received: filters={filters!r}"
            )
        self.filters = filters
        self.kernel_size = self._pair("kernel_size", kernel_size)
        self.groups = groups
        self.strides = self._pair("strides", strides)
        self.dilation_rate = self._pair("dilation_rate", dilation_rate)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @staticmethod
    def _pair(argument, value):
        pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
        if len(pair) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
        ):
            raise ValueError(
                f"GroupedConv2D: {argument} must be a positive int or a pair of them. "
                f"Received: {argument}={value!r}"
            )
        return pair

    def _check_input(self, shape):
        channels = shape[-1]
        if len(shape) != 4 or channels is None or channels % self.groups:
            raise ValueError(
                f"{self.name}: expects [batch, height, width, channels] with a known channel "
                f"count that is a multiple of groups={self.groups}. Received: shape={tuple(shape)}"
            )
        return int(channels)

    def build(self, input_shape):
        channels = self._check_input(tuple(input_shape))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
            if self.use_bias
            else None
        )

    def call(self, x):
        # One grouped convolution (the kernel's input depth C / groups tells TensorFlow the
        # groups): TF 2.21 runs it on CPU, and TFLite gets one grouped CONV_2D that XNNPACK runs,
        # instead of a slice, a convolution and a concatenation per group.
        y = tf.nn.conv2d(
            x,
            tf.cast(self.kernel, x.dtype),
            strides=(1, *self.strides, 1),
            padding="SAME",
            dilations=(1, *self.dilation_rate, 1),
        )
        if self.bias is not None:
            y = y + tf.cast(self.bias, x.dtype)
        return y

    def compute_output_shape(self, input_shape):
        self._check_input(tuple(input_shape))
        b, h, w, _ = input_shape
        sh, sw = self.strides
        return (
            b,
            None if h is None else -(-h // sh),
            None if w is None else -(-w // sw),
            self.filters,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "groups": self.groups,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }

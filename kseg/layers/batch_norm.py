"""Batch normalisation whose training step is TensorFlow's fused kernel.

Keras 3's ``BatchNormalization`` trains with ``ops.moments`` and an unfused normalisation: about
ten element-wise ops forward and as many backward on every activation, which on a CPU costs
more than the convolutions of a narrow network (a third of a training step of ``kseg demo``'s
U-Net). TensorFlow's ``FusedBatchNormV3`` does the same in one pass each way.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kseg")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with the fused kernel for training steps.

    Same arguments, weights, config and inference maths as Keras's layer (a file saved with one
    loads into the other). A training call on a 4-D float32 input normalised over the last
    axis, without mask, renorm or synchronisation, runs ``tf.compat.v1.nn.fused_batch_norm``
    and updates the moving statistics exactly as Keras does (with the biased batch variance;
    the fused kernel returns the unbiased one, which is rescaled by ``(n - 1) / n``). Any other
    call is Keras's own. Inference is always Keras's own, so exported graphs do not change.

    Example:
        >>> import numpy as np
        >>> layer = BatchNormalization()
        >>> x = np.random.default_rng(0).normal(3, 2, size=(8, 4, 4, 5)).astype("float32")
        >>> y = layer(x, training=True).numpy()
        >>> bool(abs(y.mean()) < 1e-4 and abs(y.std() - 1) < 1e-2)
        True
    """

    def _fusable(self, inputs, training, mask):
        return (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype == tf.float32
            and self.compute_dtype == "float32"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            tf.cast(self.gamma, tf.float32),
            tf.cast(self.beta, tf.float32),
            epsilon=self.epsilon,
            is_training=True,
        )[:3]
        shape = tf.shape(inputs)
        count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return outputs

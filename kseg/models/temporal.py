"""Video segmentation: a per-frame segmenter with a ConvLSTM over its features."""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg.layers import Resize
from kseg.models._base import SegmentationModel, check_positive_int


@keras.saving.register_keras_serializable(package="kseg")
class FoldTime(keras.layers.Layer):
    """``[B, T, ...]`` -> ``[B * T, ...]`` (frames as a batch), for the per-frame parts.

    Example:
        >>> import numpy as np
        >>> tuple(FoldTime()(np.zeros((2, 3, 4, 5, 1), "float32")).shape)
        (6, 4, 5, 1)
    """

    def call(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (-1, *[shape[i] for i in range(2, len(x.shape))]))

    def compute_output_shape(self, input_shape):
        batch, steps = input_shape[:2]
        folded = None if batch is None or steps is None else batch * steps
        return (folded, *input_shape[2:])


@keras.saving.register_keras_serializable(package="kseg")
class UnfoldTime(keras.layers.Layer):
    """``[B * T, ...]`` -> ``[B, T, ...]`` for a known ``steps`` = T (inverse of ``FoldTime``).

    Example:
        >>> import numpy as np
        >>> tuple(UnfoldTime(3)(np.zeros((6, 4, 5, 1), "float32")).shape)
        (2, 3, 4, 5, 1)
    """

    def __init__(self, steps, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("UnfoldTime", "steps", steps)
        self.steps = steps

    def call(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (-1, self.steps, *[shape[i] for i in range(1, len(x.shape))]))

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] // self.steps
        return (batch, self.steps, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


def _shape_of(frame):
    return tuple(getattr(frame, "shape", ()))


@keras.saving.register_keras_serializable(package="kseg")
class TemporalSegmenter(SegmentationModel):
    """Wraps a per-frame segmenter with a ConvLSTM over its features, for video.

    Input: frames ``[B, T, H, W, C]`` (float RGB in 0..255, as the per-frame model takes) with
    ``T = sequence_length``; a list of ``T`` frames ``[B, H, W, C]`` of one size is stacked.
    Output: logits ``[B, T, H, W, num_classes]``. Each frame goes through ``model``; a
    ConvLSTM (Shi et al. 2015) runs forward in time over its features (``feature_layer``, a
    layer of ``model``; default its logits) together with its logits, and a 1×1 convolution of
    the ConvLSTM state and those features, resized to the frame size, is added to the
    per-frame logits. That convolution starts at zero, so an untrained wrapper predicts what
    ``model`` predicts, and training teaches it what the past frames add (an object hidden in
    this frame but seen moving before it). The survey's "LSTM video segmentation"; the wrapped
    model is part of this one and trains with it.

    Args:
        model: the per-frame segmenter, ``[B, H, W, C] -> [B, H, W, K]`` (one output).
        sequence_length: the number of frames ``T`` the model is built for.
        feature_layer: name of a layer of ``model`` whose output (``[B, h, w, F]``) feeds the
            ConvLSTM; None uses the per-frame logits.
        filters: ConvLSTM channels.
        kernel_size: ConvLSTM kernel size.

    Example:
        >>> import kseg
        >>> frame_model = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3),
        ...                                base_filters=4, depth=2)
        >>> video = TemporalSegmenter(frame_model, sequence_length=4, filters=8)
        >>> tuple(video.output_shape)
        (None, 4, 32, 32, 3)
    """

    def __init__(
        self,
        model,
        sequence_length=4,
        feature_layer=None,
        filters=32,
        kernel_size=3,
        name=None,
        **kwargs,
    ):
        if isinstance(model, dict):  # from a saved config
            model = keras.saving.deserialize_keras_object(model)
        if not isinstance(model, keras.Model) or len(model.outputs) != 1:
            raise ValueError(
                "TemporalSegmenter: model must be a keras.Model with one output "
                f"[B, H, W, num_classes]. Received: model={model!r}"
            )
        check_positive_int("TemporalSegmenter", "sequence_length", sequence_length)
        check_positive_int("TemporalSegmenter", "filters", filters)
        check_positive_int("TemporalSegmenter", "kernel_size", kernel_size)
        frame_shape = tuple(model.inputs[0].shape[1:])
        num_classes = model.outputs[0].shape[-1]
        if feature_layer is None:
            extractor = model
        else:
            names = [layer.name for layer in model.layers]
            if feature_layer not in names:
                raise ValueError(
                    f"TemporalSegmenter: feature_layer must name a layer of the model (one of "
                    f"{names}). Received: feature_layer={feature_layer!r}"
                )
            extractor = keras.Model(
                model.inputs,
                [model.outputs[0], model.get_layer(feature_layer).output],
                name="frame_features",
            )

        frames = keras.Input((sequence_length, *frame_shape), name="frames")
        flat = FoldTime(name="fold")(frames)
        if feature_layer is None:
            logits = extractor(flat)
            features = logits
        else:
            logits, features = extractor(flat)
            features = layers.Concatenate(name="features_and_logits")(
                [features, Resize(name="logits_to_features")([logits, features])]
            )
        memory = layers.ConvLSTM2D(
            filters, kernel_size, padding="same", return_sequences=True, name="conv_lstm"
        )(UnfoldTime(sequence_length, name="unfold_features")(features))
        memory = FoldTime(name="fold_memory")(memory)
        joint = layers.Concatenate(name="memory_and_features")([memory, features])
        correction = layers.Conv2D(
            num_classes, 1, kernel_initializer="zeros", name="temporal_classifier"
        )(joint)
        if feature_layer is not None:
            correction = Resize(name="resize")([correction, logits])
        outputs = layers.Add(name="add")([logits, correction])
        outputs = UnfoldTime(sequence_length, name="unfold")(outputs)
        super().__init__(frames, outputs, name=name or "temporal_segmenter", **kwargs)
        self._store_config(
            model=model,
            sequence_length=sequence_length,
            feature_layer=feature_layer,
            filters=filters,
            kernel_size=kernel_size,
        )
        self.frame_model = model

    def get_config(self):
        config = super().get_config()
        config["model"] = keras.saving.serialize_keras_object(self.frame_model)
        return config

    @property
    def preprocessing(self):
        """The per-frame model's ``preprocessing`` (see ``SegmentationModel.preprocessing``)."""
        return getattr(self.frame_model, "preprocessing", None)

    def _check_frames(self, frames):
        """Stacks a list of frames after checking their sizes; checks the sequence length."""
        if isinstance(frames, (list, tuple)):
            if len(frames) != self.sequence_length:
                raise ValueError(
                    f"TemporalSegmenter: built for sequence_length={self.sequence_length}, "
                    f"given {len(frames)} frames. Received: len(frames)={len(frames)}"
                )
            first = _shape_of(frames[0])
            for index, frame in enumerate(frames):
                shape = _shape_of(frame)
                if len(shape) != 4 or shape[1:] != first[1:]:
                    raise ValueError(
                        "TemporalSegmenter: every frame must be [B, H, W, C] of the size of "
                        f"frames[0] {first}. Received: frames[{index}].shape={shape}"
                    )
            frames = ops.stack([ops.convert_to_tensor(f) for f in frames], axis=1)
        shape = _shape_of(frames)
        if len(shape) != 5:
            raise ValueError(
                "TemporalSegmenter: frames must be [batch, time, height, width, channels]. "
                f"Received: frames.shape={shape}"
            )
        if shape[1] is not None and shape[1] != self.sequence_length:
            raise ValueError(
                f"TemporalSegmenter: built for sequence_length={self.sequence_length}, "
                f"given {shape[1]} frames. Received: frames.shape={shape}"
            )
        return frames

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(self._check_frames(inputs), *args, **kwargs)

"""``SegmentationModel``, the base of every kseg model, and the argument checks they share."""

from __future__ import annotations

import numbers
import os

import keras

from kseg.layers.image_normalization import (
    _CAFFE_MEAN_BGR,
    _TORCH_MEAN,
    _TORCH_STD,
    ImageNormalization,
)

# Constructor arguments whose names are read-only properties of keras.Model.
_ATTRIBUTE_NAMES = {"weights": "weights_source", "input_shape": "input_shape_"}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_num_classes(model, num_classes):
    """Raises unless ``num_classes`` is a positive int.

    Example:
        >>> check_num_classes("UNet", 3)
    """
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(
            f"{model}: num_classes must be a positive int. Received: num_classes={num_classes!r}"
        )


def check_input_shape(model, input_shape, channels=None):
    """Validates ``(H, W, C)`` with H/W positive ints or None; returns it as a tuple.

    Args:
        model: name used in the error message.
        input_shape: the shape to check.
        channels: None (any positive count) or the allowed channel counts.

    Example:
        >>> check_input_shape("FCN", [None, 64, 3], channels=(3,))
        (None, 64, 3)
    """
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) != 3
        or not all(d is None or (_is_int(d) and d > 0) for d in shape[:2])
        or not _is_int(shape[2])
        or shape[2] < 1
    ):
        raise ValueError(
            f"{model}: input_shape must be (height, width, channels) with positive ints "
            f"(height/width may be None). Received: input_shape={input_shape!r}"
        )
    if channels is not None and shape[2] not in channels:
        raise ValueError(
            f"{model}: input_shape must have {' or '.join(map(str, channels))} channels. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def check_choice(model, argument, value, allowed):
    """Raises unless ``value`` is one of ``allowed``.

    Example:
        >>> check_choice("FCN", "variant", "8s", ("32s", "16s", "8s"))
    """
    if value not in allowed:
        raise ValueError(
            f"{model}: {argument} must be one of {tuple(allowed)}. Received: {argument}={value!r}"
        )


def check_positive_int(model, argument, value):
    """Raises unless ``value`` is a positive int (bools are not ints here).

    Example:
        >>> check_positive_int("UNet", "depth", 4)
    """
    if not _is_int(value) or value < 1:
        raise ValueError(
            f"{model}: {argument} must be a positive int. Received: {argument}={value!r}"
        )


def check_positive_number(model, argument, value):
    """Raises unless ``value`` is a finite number > 0 (a width multiplier, a scale).

    Example:
        >>> check_positive_number("ENet", "alpha", 0.5)
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 < value < float("inf")
    ):
        raise ValueError(
            f"{model}: {argument} must be a positive number. Received: {argument}={value!r}"
        )


def check_positive_ints(model, argument, values, length=None):
    """Validates a non-empty sequence of positive ints (of ``length`` if given); returns a tuple.

    Example:
        >>> check_positive_ints("DeepLabV2", "rates", [6, 12])
        (6, 12)
    """
    try:
        result = tuple(values)
    except TypeError:
        result = ()
    if (
        not result
        or (length is not None and len(result) != length)
        or not all(_is_int(v) and v > 0 for v in result)
    ):
        count = f"{length} " if length is not None else ""
        raise ValueError(
            f"{model}: {argument} must be {count}positive ints. Received: {argument}={values!r}"
        )
    return result


def check_rate(model, argument, value):
    """Raises unless ``value`` is a rate in [0, 1) (dropout).

    Example:
        >>> check_rate("FCN", "dropout", 0.5)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{model}: {argument} must be in [0, 1). Received: {argument}={value!r}")


def check_options(model, argument, value):
    """Raises unless ``value`` is None or a dict (e.g. ``backbone_options``).

    Example:
        >>> check_options("PSPNet", "backbone_options", {"stem": "deep"})
    """
    if value is not None and not isinstance(value, dict):
        raise ValueError(
            f"{model}: {argument} must be a dict or None. Received: {argument}={value!r}"
        )


def check_weights(model, weights):
    """Validates a ``weights`` argument: None, ``"imagenet"`` or a file path; returns it.

    Only the form is checked here: the backbone that loads the weights reports a missing file
    or a file that does not fit. Paths come back as ``str``.

    Example:
        >>> check_weights("FCN", None) is None
        True
    """
    if weights is None or weights == "imagenet":
        return weights
    if isinstance(weights, (str, os.PathLike)):
        return os.fspath(weights)
    raise ValueError(
        f"{model}: weights must be None, 'imagenet' or a file path. Received: weights={weights!r}"
    )


def preprocessing_of(mode, channels=3):
    """What ``ImageNormalization(mode)`` does, as ``SegmentationModel.preprocessing`` reports it.

    Example:
        >>> preprocessing_of("tf")["mean"], preprocessing_of("tf")["std"]
        ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5])
    """
    if mode == "caffe":
        mean, std = list(reversed(_CAFFE_MEAN_BGR)), [1.0] * 3
    elif mode == "torch":
        mean, std = list(_TORCH_MEAN), list(_TORCH_STD)
    else:
        mean, std = {"tf": (127.5, 127.5), "unit": (0.0, 255.0), "none": (0.0, 1.0)}[mode]
        mean, std = [mean] * channels, [std] * channels
    return {
        "mode": mode,
        "value_range": (0.0, 255.0),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "channel_order": "BGR" if mode == "caffe" else "RGB",
    }


class SegmentationModel(keras.Model):
    """The base of every kseg model: a functional ``keras.Model`` with an exact config.

    A model class builds its layers in ``__init__``, calls
    ``super().__init__(inputs, outputs, name=...)``, then ``self._store_config(...)`` with every
    constructor argument (after checking and normalising them). That one call sets one
    attribute per argument (``weights`` → ``weights_source`` and ``input_shape`` →
    ``input_shape_``, since ``keras.Model`` has read-only properties of those names) and is
    what ``get_config`` returns, so ``.keras`` files round-trip.

    ``weights`` (None, ``"imagenet"`` or a file path) only initialise a new model: the trained
    weights travel in the ``.keras`` file, so ``get_config`` always says ``weights=None`` and
    ``from_config`` forces it to None, even for a file whose config was edited to name a path
    or ``"imagenet"``: loading a model never downloads or reads another file.

    ``preprocessing`` describes what the model does to its input (see the property), so that
    export can write it into TFLite metadata or a serving signature.

    Example:
        >>> import keras
        >>> @keras.saving.register_keras_serializable(package="example")
        ... class Tiny(SegmentationModel):
        ...     def __init__(self, num_classes=2, input_shape=(None, None, 3), name=None, **kw):
        ...         check_num_classes("Tiny", num_classes)
        ...         images = keras.Input(input_shape)
        ...         x = ImageNormalization("unit", name="normalize")(images)
        ...         logits = keras.layers.Conv2D(num_classes, 1)(x)
        ...         super().__init__(images, logits, name=name or "tiny", **kw)
        ...         self._store_config(num_classes=num_classes, input_shape=tuple(input_shape))
        >>> model = Tiny(num_classes=4)
        >>> model.get_config()
        {'num_classes': 4, 'input_shape': (None, None, 3), 'name': 'tiny'}
        >>> model.preprocessing["std"]
        [255.0, 255.0, 255.0]
    """

    task = "semantic"
    """What the model predicts: "semantic" (logits ``[B, H, W, num_classes]``, the contract
    of ``kseg.testing.check_model``), "instance" (``MaskRCNN``) or "panoptic"
    (``PanopticDeepLab``). Sweeps over ``kseg.models.names()`` select by it."""

    def __init__(self, inputs, outputs, *args, **kwargs):
        super().__init__(inputs, _float32_outputs(outputs), *args, **kwargs)

    def _store_config(self, **config):
        """Records the constructor arguments: one attribute each, and the config."""
        self._init_config = dict(config)
        for key, value in config.items():
            setattr(self, _ATTRIBUTE_NAMES.get(key, key), value)

    def get_config(self):
        if "_init_config" not in self.__dict__:
            raise NotImplementedError(
                f"{type(self).__name__} must call self._store_config(...) with its constructor "
                "arguments after super().__init__(inputs, outputs)"
            )
        config = dict(self._init_config)
        if "weights" in config:
            config["weights"] = None  # the weights travel in the .keras file itself
        config["name"] = self.name
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "weights" in config:
            # Never download or read a file named by a (possibly edited) saved config.
            config["weights"] = None
        return cls(**config)

    @property
    def preprocessing(self):
        """How the model normalises its input, for export and serving.

        A dict: ``mode`` (``kseg.layers.ImageNormalization`` mode), ``value_range`` (the
        pixel values the model takes: float RGB in [0, 255]), ``mean`` and ``std`` (per input
        channel, RGB order, in the input's units: the model computes ``(image - mean) / std``),
        ``channel_order`` (``"BGR"`` when it then reverses the channels, as Caffe-trained
        backbones expect). The model does this itself, so a server or a MediaPipe pipeline feeds
        raw pixels (normalisation mean 0, std 1 in TFLite metadata terms). None if the model
        has no ``ImageNormalization`` layer.

        Example:
            >>> import kseg
            >>> model = kseg.models.UNet(num_classes=2, input_shape=(32, 32, 1), base_filters=4)
            >>> model.preprocessing["mean"], model.preprocessing["std"]
            ([0.0], [255.0])
        """
        layer = _find_normalization(self)
        if layer is None:
            return None
        channels = self.inputs[0].shape[-1]
        return preprocessing_of(layer.mode, channels or 3)


_HALF_DTYPES = ("float16", "bfloat16")


def _float32_outputs(outputs):
    """Under a mixed dtype policy, appends a float32 cast to each half-precision output.

    Softmax and the losses lose precision in float16/bfloat16 (Keras's mixed-precision
    guide), so logits always leave the model as float32. Under a float32 policy nothing is
    added, so the layer graph of a float32 model is unchanged.
    """

    def cast(tensor):
        if not isinstance(tensor, keras.KerasTensor):
            return tensor
        if keras.backend.standardize_dtype(tensor.dtype) not in _HALF_DTYPES:
            return tensor
        producer = tensor._keras_history.operation.name
        return keras.layers.Activation("linear", dtype="float32", name=f"{producer}_float32")(
            tensor
        )

    return keras.tree.map_structure(cast, outputs)


def _find_normalization(model):
    # Depth-first, so a model nested inside another (CRFasRNN's FCN) is searched too.
    for layer in model.layers:
        if isinstance(layer, ImageNormalization):
            return layer
        if isinstance(layer, keras.Model):
            found = _find_normalization(layer)
            if found is not None:
                return found
    return None

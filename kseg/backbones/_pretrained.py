"""Shared pieces of the backbones: argument checks, layer tracking, weight transfer."""

from __future__ import annotations

import os

import keras


class LayerRecorder:
    """Creates layers and remembers them, so weights can later be copied by layer name."""

    def __init__(self):
        self.layers: list[keras.layers.Layer] = []

    def __call__(self, layer):
        self.layers.append(layer)
        return layer


def check_output_stride(backbone, output_stride, allowed=(8, 16, 32)):
    if output_stride not in allowed:
        raise ValueError(
            f"{backbone}: output_stride must be one of {allowed}. Received: output_stride={output_stride!r}"
        )


def stage_strides_and_rates(output_stride, stage_strides):
    """Turns per-stage strides into (stride, dilation rate) once ``output_stride`` is reached.

    A stage whose stride would take the network past ``output_stride`` keeps stride 1 and
    dilates all its convolutions by the stride it dropped (times the rate already reached),
    so the receptive field of every later layer is unchanged.

    Example:
        >>> stage_strides_and_rates(16, [4, 2, 2, 2])
        [(4, 1), (2, 1), (2, 1), (1, 2)]
    """
    current, rate, result = 1, 1, []
    for stride in stage_strides:
        if current * stride > output_stride:
            rate *= stride
            result.append((1, rate))
        else:
            current *= stride
            result.append((stride, rate))
    return result


def load_application_weights(
    backbone, layers, application, weights, input_channels, unused=(), **application_kwargs
):
    """Copies weights from a ``keras.applications`` model into same-named ``layers``.

    Args:
        backbone: name used in error messages.
        layers: the backbone's layers (names equal to the application's).
        application: ``keras.applications`` constructor, e.g. ``keras.applications.ResNet50``;
            called with ``include_top=False`` and ``weights="imagenet"`` or a file path.
        weights: None, "imagenet" or a path to a keras.applications weights file.
        input_channels: channels of the backbone input (ImageNet weights need 3).
        unused: names of the application's weighted layers the backbone leaves out on purpose
            (e.g. MobileNetV2's final 1280-wide convolution); any other unused layer is an error.
        **application_kwargs: extra arguments of the application (e.g. ``alpha``).
    """
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"{backbone}: weights must be None, 'imagenet' or a file path. Received: weights={weights!r}"
        )
    weights = os.fspath(weights)
    if weights != "imagenet" and not os.path.isfile(weights):
        raise FileNotFoundError(
            f"{backbone}: the weights file does not exist. Received: weights={weights!r}"
        )
    if input_channels != 3:
        raise ValueError(
            f"{backbone}: pretrained weights need 3 input channels, the input has {input_channels}"
        )
    try:
        application_kwargs.setdefault("input_shape", (None, None, 3))
        source = application(include_top=False, weights=weights, **application_kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised with the file and backbone named
        raise ValueError(
            f"{backbone}: could not load weights {weights!r} into keras.applications."
            f"{application.__name__}: {error}"
        ) from error
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    copied = set()
    for layer in layers:
        if not layer.weights:
            continue
        if layer.name not in source_layers:
            raise ValueError(
                f"{backbone}: layer {layer.name!r} has no counterpart in "
                f"keras.applications.{application.__name__}"
            )
        values = source_layers[layer.name].get_weights()
        expected = [tuple(w.shape) for w in layer.weights]
        received = [tuple(v.shape) for v in values]
        if expected != received:
            raise ValueError(
                f"{backbone}: weights of layer {layer.name!r} have shapes {received} in "
                f"{weights!r}, the backbone expects {expected}"
            )
        layer.set_weights(values)
        copied.add(layer.name)
    missing = sorted(set(source_layers) - copied - set(unused))
    if missing:
        raise ValueError(
            f"{backbone}: {len(missing)} weighted layers of {weights!r} were not used, e.g. {missing[:3]}"
        )

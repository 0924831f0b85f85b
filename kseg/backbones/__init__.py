"""Backbones: encoders that return a dict of feature levels.

Every backbone is built on a given input tensor and returns
``{"P1": stride 2, "P2": stride 4, "P3": stride 8, "P4": stride 16, "P5": stride 32}``
(fewer levels where the network has fewer). With ``output_stride`` 8 or 16 the deeper
stages keep their resolution and use dilated convolutions instead of strides, so e.g.
"P5" is at stride 16. Decoders pick levels by key, so any decoder works with any backbone.

Example:
    >>> import keras, kseg
    >>> x = keras.Input((224, 224, 3))
    >>> feats = kseg.backbones.build("resnet50", x, output_stride=16)
    >>> sorted(feats)
    ['P1', 'P2', 'P3', 'P4', 'P5']
"""

from kseg.registry import BACKBONES


def build(name, inputs, *, output_stride=32, weights=None, **kwargs):
    """Builds backbone ``name`` on ``inputs`` and returns its feature-level dict.

    Args:
        name: a registered backbone name (see ``names()``).
        inputs: a Keras tensor ``[B, H, W, C]``, already normalised as the backbone expects.
        output_stride: 8, 16 or 32 (where the backbone supports dilation).
        weights: None (random), "imagenet" (through keras.applications, needs a network)
            or a path to a keras.applications weights file.
        **kwargs: backbone-specific options (e.g. ``alpha`` for MobileNetV2).
    """
    return BACKBONES.get(name)(inputs, output_stride=output_stride, weights=weights, **kwargs)


def names():
    """Lists the registered backbone names."""
    return BACKBONES.names()


def register(*names):
    """Decorator registering a backbone builder ``fn(inputs, output_stride, weights, **kw)``."""
    return BACKBONES.register(*names)


# Backbone modules register themselves on import.
from kseg.backbones import (  # noqa: E402,F401
    mit,
    mobilenet_v2,
    mobilenet_v3,
    resnet,
    resnet18,
    vgg,
    xception,
    xception39,
)
from kseg.backbones.vgg import vgg16_bn_encoder  # noqa: E402,F401

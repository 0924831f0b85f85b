"""Segmentation models, each a ``keras.Model`` built with the functional API.

Every model takes RGB images as float32 in [0, 255] (normalisation is inside the model),
and returns per-pixel class logits ``[B, H, W, num_classes]`` at the input resolution.

Example:
    >>> import kseg
    >>> model = kseg.models.create("unet", num_classes=6, input_shape=(128, 128, 3))
    >>> kseg.models.names()[:3]
    [...]
"""

from kseg.registry import MODELS


def register(*names):
    """Decorator registering a model class under one or more names (``MODELS.register``)."""
    return MODELS.register(*names)


def create(name, **kwargs):
    """Builds the model registered as ``name``; an unknown name lists the valid ones.

    Example:
        >>> model = create("deeplabv3plus", num_classes=21, backbone="mobilenetv2",
        ...                input_shape=(256, 256, 3))
    """
    return MODELS.get(name)(**kwargs)


def names():
    """Lists the registered model names."""
    return MODELS.names()


from kseg.models._base import SegmentationModel  # noqa: E402,F401

# Model modules register themselves on import; keep one import per file below.
from kseg.models.crf_as_rnn import CRFasRNN  # noqa: E402,F401
from kseg.models.deconvnet import DeconvNet  # noqa: E402,F401
from kseg.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV3, DeepLabV3Plus  # noqa: E402,F401
from kseg.models.fcn import FCN  # noqa: E402,F401
from kseg.models.gcn import GCN  # noqa: E402,F401
from kseg.models.lraspp import LRASPP  # noqa: E402,F401
from kseg.models.pspnet import PSPNet  # noqa: E402,F401
from kseg.models.segnet import SegNet  # noqa: E402,F401
from kseg.models.unet import UNet  # noqa: E402,F401
from kseg.models.unet_weight_map import unet_weight_map  # noqa: E402,F401

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


def create(name, resolution=None, **kwargs):
    """Builds the model registered as ``name``; an unknown name lists the valid ones.

    Args:
        name: a registered model name (see ``names()``).
        resolution: None (or 1) for the model itself; a factor such as 0.5 applies the
            resolution multiplier: the returned ``ResolutionScaled`` model resizes its input
            by the factor, runs the model and resizes the logits back to the input's full
            size (about ``resolution²`` of the multiply-adds).
        **kwargs: the model's constructor arguments (``num_classes``, ``input_shape``, ...).

    Example:
        >>> model = create("deeplabv3plus", num_classes=21, backbone="mobilenetv2",
        ...                input_shape=(256, 256, 3))
        >>> half = create("lraspp", num_classes=19, input_shape=(512, 1024, 3), resolution=0.5)
        >>> tuple(half.output_shape), tuple(half.inner.input_shape)
        ((None, 512, 1024, 19), (None, 256, 512, 3))
    """
    builder = MODELS.get(name)
    if resolution is None or (resolution == 1 and not isinstance(resolution, bool)):
        return builder(**kwargs)

    input_shape = kwargs.pop("input_shape", (None, None, 3))
    return ResolutionScaled(name, kwargs, resolution=resolution, input_shape=input_shape)


def names(task=None):
    """Lists the registered model names; ``task`` keeps those of one task.

    Args:
        task: None (all), ``"semantic"`` (logits ``[B, H, W, num_classes]``: what the model
            matrix, ``kseg bench`` and the tuner sweep), ``"instance"`` or ``"panoptic"``.

    Example:
        >>> names(task="instance")
        ['mask_rcnn', 'maskrcnn']
    """
    if task is None:
        return MODELS.names()
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}. Received: task={task!r}")
    return [n for n in MODELS.names() if getattr(MODELS.get(n), "task", "semantic") == task]


TASKS = ("semantic", "instance", "panoptic")


# Instance segmentation lives in kseg.instance; the model class is found here too.
from kseg.instance.mask_rcnn import MaskRCNN  # noqa: E402,F401
from kseg.loss_weights import unet_weight_map  # noqa: E402,F401 (moved; the old name stays)
from kseg.models._base import SegmentationModel  # noqa: E402,F401
from kseg.models.adversarial import (  # noqa: E402,F401
    AdversarialSegmentation,
    SemiSupervisedGAN,
    adversarial_discriminator,
    ssgan_generator,
)

# Model modules register themselves on import; keep one import per file below.
from kseg.models.attention_to_scale import AttentionToScale  # noqa: E402,F401
from kseg.models.bisenet import BiSeNetV1, BiSeNetV2  # noqa: E402,F401
from kseg.models.change import (  # noqa: E402,F401
    ChangeDetectionNet,
    FCEarlyFusion,
    FCSiamConc,
    FCSiamDiff,
)
from kseg.models.convolutionalize import convolutionalize, dense_kernel_as_conv  # noqa: E402,F401
from kseg.models.crf_as_rnn import CRFasRNN  # noqa: E402,F401
from kseg.models.danet import DANet  # noqa: E402,F401
from kseg.models.deconvnet import DeconvNet  # noqa: E402,F401
from kseg.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV3, DeepLabV3Plus  # noqa: E402,F401
from kseg.models.dpn import DeepParsingNetwork  # noqa: E402,F401
from kseg.models.enet import ENet  # noqa: E402,F401
from kseg.models.erfnet import ERFNet  # noqa: E402,F401
from kseg.models.espnet import ESPNet, ESPNetV2  # noqa: E402,F401
from kseg.models.fast_scnn import FastSCNN  # noqa: E402,F401
from kseg.models.fcn import FCN  # noqa: E402,F401
from kseg.models.feature_fusion import FeatureFusionNet  # noqa: E402,F401
from kseg.models.gcn import GCN  # noqa: E402,F401
from kseg.models.icnet import ICNet  # noqa: E402,F401
from kseg.models.lraspp import LRASPP  # noqa: E402,F401
from kseg.models.pan import PAN  # noqa: E402,F401
from kseg.models.panoptic_deeplab import PanopticDeepLab  # noqa: E402,F401
from kseg.models.parsenet import ParseNet  # noqa: E402,F401
from kseg.models.pspnet import PSPNet  # noqa: E402,F401
from kseg.models.reseg import ReSeg  # noqa: E402,F401
from kseg.models.resolution import ResolutionScaled  # noqa: E402,F401
from kseg.models.segformer import SegFormer  # noqa: E402,F401
from kseg.models.segnet import SegNet  # noqa: E402,F401
from kseg.models.temporal import TemporalSegmenter  # noqa: E402,F401
from kseg.models.unet import UNet  # noqa: E402,F401

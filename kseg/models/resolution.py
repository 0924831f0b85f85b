"""The resolution multiplier: run a model on a resized image, return logits at full size."""

from __future__ import annotations

import numbers

import keras

from kseg.layers.resize import Resize
from kseg.models._base import SegmentationModel, check_input_shape
from kseg.registry import MODELS


def _scaled(size, resolution):
    return None if size is None else int(size * resolution)


@keras.saving.register_keras_serializable(package="kseg")
class ResolutionScaled(SegmentationModel):
    """Wraps model ``model`` (a registered name) with a resolution multiplier.

    The input image is resized bilinearly by ``resolution`` (to ``floor(H * resolution) ×
    floor(W * resolution)``), the wrapped model runs on it, and its logits are resized
    bilinearly back to the input's full size: the resolution multiplier of the MobileNet
    papers, which cuts the multiply-adds by about ``resolution²``. Built by
    ``kseg.models.create(name, ..., resolution=r)``. Every output of the wrapped model
    (e.g. PSPNet's auxiliary logits) is resized back. All ops are TFLite built-ins.

    Args:
        model: the registered name of the wrapped model.
        model_kwargs: its constructor arguments (without ``input_shape``).
        resolution: the factor, in (0, 1] for a multiplier (values above 1 upsample).
        input_shape: ``(H, W, C)`` of the full-size input; the wrapped model gets
            ``(floor(H * r), floor(W * r), C)``.

    Example:
        >>> model = kseg.models.create("lraspp", num_classes=3, backbone="mobilenetv3_small",
        ...                            input_shape=(96, 128, 3), resolution=0.5)
        >>> tuple(model.output_shape), tuple(model.inner.input_shape)
        ((None, 96, 128, 3), (None, 48, 64, 3))
    """

    def __init__(
        self,
        model,
        model_kwargs=None,
        resolution=0.5,
        input_shape=(None, None, 3),
        name=None,
        **kwargs,
    ):
        if (
            isinstance(resolution, bool)
            or not isinstance(resolution, numbers.Real)
            or not resolution > 0
        ):
            raise ValueError(
                f"ResolutionScaled: resolution must be a positive number. "
                f"Received: resolution={resolution!r}"
            )
        model_kwargs = dict(model_kwargs or {})
        if "input_shape" in model_kwargs or "resolution" in model_kwargs:
            raise ValueError(
                "ResolutionScaled: pass input_shape and resolution to the wrapper, not in "
                f"model_kwargs. Received: model_kwargs={model_kwargs!r}"
            )
        input_shape = check_input_shape("ResolutionScaled", input_shape)
        inner_shape = (
            _scaled(input_shape[0], resolution),
            _scaled(input_shape[1], resolution),
            input_shape[2],
        )
        if any(size is not None and size < 1 for size in inner_shape[:2]):
            raise ValueError(
                f"ResolutionScaled: resolution {resolution} leaves no pixels of input_shape "
                f"{input_shape}. Received: resolution={resolution!r}"
            )
        inner = MODELS.get(model)(input_shape=inner_shape, **model_kwargs)

        images = keras.Input(input_shape, name="images")
        small = Resize(scale=float(resolution), name="resize_in")(images)
        outputs = inner(small)
        if isinstance(outputs, (list, tuple)):
            logits = [
                Resize(name=f"resize_out_{i}" if i else "resize_out")([o, images])
                for i, o in enumerate(outputs)
            ]
        else:
            logits = Resize(name="resize_out")([outputs, images])
        super().__init__(images, logits, name=name or f"{inner.name}_x{resolution:g}", **kwargs)
        self.inner = inner
        if "weights" in model_kwargs:
            model_kwargs["weights"] = None  # weights travel in the .keras file
        self._store_config(
            model=model,
            model_kwargs=model_kwargs,
            resolution=float(resolution),
            input_shape=input_shape,
        )

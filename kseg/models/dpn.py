"""Deep Parsing Network (Liu et al., ICCV 2015): a VGG FCN's unary and one MRF pass as layers."""

from __future__ import annotations

import keras

from kseg.layers.dpn import DPNMRF
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_options,
    check_positive_int,
)
from kseg.registry import MODELS


@MODELS.register("dpn", "deep_parsing_network")
@keras.saving.register_keras_serializable(package="kseg")
class DeepParsingNetwork(SegmentationModel):
    """A unary segmenter followed by ``kseg.layers.DPNMRF``, trained jointly end to end.

    The paper's unary is VGG16 made denser (pool4/pool5 removed, fc6/fc7 as convolutions,
    output stride 8), which is kseg's ``deeplabv1`` (the default ``unary``); any registered
    model can serve (``unary``, ``unary_options``). The MRF (locally shared convolution,
    mixture of label contexts, block min-pooling, one mean-field pass) runs on the unary logits
    at the input resolution with the image as its colour guide. The paper gives no parameter
    count; the MRF adds ``(K * context_kernel² + 1) * K * components`` to the unary's
    (21 classes: 178,710 at the paper's 9×9 and 5 components).

    Args:
        num_classes: the number of classes.
        input_shape: ``(H, W, 3)``; H and W may be None.
        unary: registered name of the unary model.
        unary_options: its other constructor arguments (e.g. ``{"weights": "imagenet"}``).
        components, context_kernel, window, theta_rgb, theta_xy: the MRF (see ``DPNMRF``).

    Example:
        >>> model = DeepParsingNetwork(num_classes=3, input_shape=(32, 32, 3), unary="unet",
        ...                            unary_options={"base_filters": 4, "depth": 2},
        ...                            window=3, context_kernel=3, components=2)
        >>> tuple(model.output_shape)
        (None, 32, 32, 3)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        unary="deeplabv1",
        unary_options=None,
        components=5,
        context_kernel=9,
        window=9,
        theta_rgb=13.0,
        theta_xy=3.0,
        name=None,
        **kwargs,
    ):
        check_num_classes("DeepParsingNetwork", num_classes)
        input_shape = check_input_shape("DeepParsingNetwork", input_shape, channels=(3,))
        check_options("DeepParsingNetwork", "unary_options", unary_options)
        check_positive_int("DeepParsingNetwork", "components", components)
        unary_options = dict(unary_options or {})
        if not isinstance(unary, str) or unary in ("dpn", "deep_parsing_network"):
            raise ValueError(
                "DeepParsingNetwork: unary must be the name of another registered model. "
                f"Received: unary={unary!r}"
            )

        images = keras.Input(input_shape, name="images")
        unary_model = MODELS.get(unary)(
            num_classes=num_classes, input_shape=input_shape, name="unary", **unary_options
        )
        logits = DPNMRF(
            components=components,
            context_kernel=context_kernel,
            window=window,
            theta_rgb=theta_rgb,
            theta_xy=theta_xy,
            name="mrf",
        )([images, unary_model(images)])
        super().__init__(images, logits, name=name or "dpn", **kwargs)
        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            unary=unary,
            unary_options=unary_options,
            components=components,
            context_kernel=context_kernel,
            window=window,
            theta_rgb=theta_rgb,
            theta_xy=theta_xy,
        )

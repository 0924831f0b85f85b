"""CRF-as-RNN (Zheng et al., ICCV 2015): FCN-8s followed by a trainable mean-field CRF."""

from __future__ import annotations

import keras

from kseg.layers.crf import CRFRNN
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_weights,
)
from kseg.models.fcn import FCN
from kseg.registry import MODELS


@MODELS.register("crfasrnn", "crf_as_rnn")
@keras.saving.register_keras_serializable(package="kseg")
class CRFasRNN(SegmentationModel):
    """FCN-8s + ``kseg.layers.CRFRNN``, trainable end to end.

    The FCN-8s scores are the CRF's unaries; the CRF's image features come from the same RGB
    input (0..255). Outputs logits ``[B, H, W, num_classes]`` at the input size. The paper
    trains with 5 mean-field iterations and tests with 10: change ``iterations`` when building
    the inference model and load the trained weights into it.

    Args:
        num_classes: number of classes.
        input_shape: ``(H, W, 3)``; H/W may be None.
        iterations: mean-field steps of the CRF.
        theta_alpha, theta_beta, theta_gamma: CRF kernel widths (see ``CRFRNN``).
        weights: VGG16 encoder weights for the FCN (None, "imagenet" or a file).
        fc_channels: width of FCN's fc6/fc7 (4096 in the paper).

    Example:
        >>> model = CRFasRNN(num_classes=3, input_shape=(32, 32, 3), fc_channels=16,
        ...                  iterations=2)
        >>> tuple(model.output_shape)
        (None, 32, 32, 3)
    """

    def __init__(
        self,
        num_classes=21,
        input_shape=(None, None, 3),
        iterations=5,
        theta_alpha=160.0,
        theta_beta=3.0,
        theta_gamma=3.0,
        weights=None,
        fc_channels=4096,
        name=None,
        **kwargs,
    ):
        check_num_classes("CRFasRNN", num_classes)
        input_shape = check_input_shape("CRFasRNN", input_shape, channels=(3,))
        weights = check_weights("CRFasRNN", weights)

        images = keras.Input(input_shape, name="images")
        fcn = FCN(
            num_classes=num_classes,
            input_shape=input_shape,
            variant="8s",
            weights=weights,
            fc_channels=fc_channels,
            name="fcn8s",
        )
        unary = fcn(images)
        crf = CRFRNN(
            iterations=iterations,
            theta_alpha=theta_alpha,
            theta_beta=theta_beta,
            theta_gamma=theta_gamma,
            name="crf_rnn",
        )
        logits = crf([images, unary])
        super().__init__(images, logits, name=name or "crf_as_rnn", **kwargs)

        self._store_config(
            num_classes=num_classes,
            input_shape=input_shape,
            iterations=iterations,
            theta_alpha=theta_alpha,
            theta_beta=theta_beta,
            theta_gamma=theta_gamma,
            weights=weights,
            fc_channels=fc_channels,
        )

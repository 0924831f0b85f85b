"""Convolutionalisation (Long, Shelhamer, Darrell 2015): a classifier's dense head as convolutions.

A classifier that ends in ``Flatten`` (or global pooling) and ``Dense`` layers sees one fixed-size
image. Its first dense layer over an ``h x w x c`` feature map is an ``h x w`` convolution with
``units`` filters; every later dense layer is a 1x1 convolution. The converted network then takes
any input size: at the training size it gives the classifier's scores (a 1x1 map), on a larger
image a map of scores, one per training-size window (the window slides by the body's stride):
exactly the classifier's scores on that window when the body pads "valid"; with "same" padding
a window sees its real neighbours where the classifier saw zeros at the border. This is how FCN turned VGG16's fc6/fc7 into convolutions.
"""

from __future__ import annotations

import keras
import numpy as np

_POOLING = {
    "GlobalAveragePooling2D": keras.layers.AveragePooling2D,
    "GlobalMaxPooling2D": keras.layers.MaxPooling2D,
}
# Head layers that act on the last axis only, so they work unchanged on a score map.
_PER_POSITION = (
    keras.layers.Dropout,
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.BatchNormalization,
)


def dense_kernel_as_conv(kernel, feature_shape):
    """Reshapes a Dense kernel ``[h*w*c, units]`` that follows ``Flatten`` of ``[h, w, c]``.

    ``Flatten`` (channels_last) orders its output row by row, column by column, then channel,
    so the kernel is the ``[h, w, c, units]`` convolution kernel read in that order.

    Args:
        kernel: the Dense kernel, shape ``[h * w * c, units]``.
        feature_shape: ``(h, w, c)`` of the map that was flattened.

    Returns:
        The ``[h, w, c, units]`` convolution kernel.

    Example:
        >>> dense_kernel_as_conv(np.zeros((7 * 7 * 512, 4096)), (7, 7, 512)).shape
        (7, 7, 512, 4096)
    """
    kernel = np.asarray(kernel)
    h, w, c = (int(d) for d in feature_shape)
    if kernel.ndim != 2 or kernel.shape[0] != h * w * c:
        raise ValueError(
            f"a Dense kernel after Flatten of {(h, w, c)} must have shape ({h * w * c}, units). "
            f"Received: kernel.shape={kernel.shape}"
        )
    return kernel.reshape(h, w, c, kernel.shape[1])


def _head_chain(classifier):
    """(index of the Flatten/global pooling layer, the head layers after it) of a linear head."""
    names = [type(layer).__name__ for layer in classifier.layers]
    starts = [i for i, n in enumerate(names) if n == "Flatten" or n in _POOLING]
    if len(starts) != 1:
        raise ValueError(
            "convolutionalize: the classifier must have exactly one Flatten, "
            "GlobalAveragePooling2D or GlobalMaxPooling2D layer before its Dense layers. "
            f"Received: layers={names}"
        )
    start = starts[0]
    head = classifier.layers[start:]
    for previous, layer in zip(head, head[1:]):
        if not isinstance(layer, (keras.layers.Dense, *_PER_POSITION)):
            raise ValueError(
                f"convolutionalize: layer {layer.name!r} ({type(layer).__name__}) after "
                f"{head[0].name!r} has no convolutional equivalent; the head may hold Dense, "
                f"Dropout, activation and BatchNormalization layers. Received: layer={layer.name!r}"
            )
        if layer.input is not previous.output:
            raise ValueError(
                f"convolutionalize: the head must be a chain; layer {layer.name!r} does not take "
                f"the output of {previous.name!r}. Received: layer={layer.name!r}"
            )
    if head[-1].output is not classifier.outputs[0] or len(classifier.outputs) != 1:
        raise ValueError(
            f"convolutionalize: the classifier's one output must be its last layer's. "
            f"Received: outputs={len(classifier.outputs)}"
        )
    return head


def convolutionalize(classifier, name=None):
    """Turns a classifier ending in Flatten/global pooling + Dense layers into a fully conv net.

    The layers before the Flatten (or pooling) are cloned onto an input of any height and width
    and keep their weights. ``Flatten`` + the first ``Dense`` become an ``h x w`` convolution
    (``h x w`` the flattened map's size at the training size); ``GlobalAveragePooling2D`` /
    ``GlobalMaxPooling2D`` become ``h x w`` average / max pooling with stride 1; later ``Dense``
    layers become 1x1 convolutions; dropout, activations and batch normalisation are kept.

    Args:
        classifier: a built ``keras.Model`` (Sequential or functional) whose input has a fixed
            height and width (the training size) and whose head after the Flatten/pooling is a
            chain of Dense, Dropout, activation and BatchNormalization layers.
        name: the new model's name (default ``<classifier name>_fcn``).

    Returns:
        A ``keras.Model`` from ``[B, H, W, C]`` (any ``H, W`` >= the training size) to scores
        ``[B, (H - h0) / s + 1, (W - w0) / s + 1, classes]``, ``h0 x w0`` the training size and
        ``s`` the body's stride; at the training size ``[B, 1, 1, classes]`` equal to the
        classifier's output.

    Example:
        >>> inputs = keras.Input((32, 32, 3))
        >>> x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
        >>> x = keras.layers.Flatten()(x)
        >>> outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(16)(x))
        >>> fcn = convolutionalize(keras.Model(inputs, outputs))
        >>> fcn.predict(np.zeros((1, 64, 64, 3)), verbose=0).shape
        (1, 17, 17, 3)
    """
    if not isinstance(classifier, keras.Model) or not classifier.built:
        raise ValueError(
            f"convolutionalize: classifier must be a built keras.Model. Received: "
            f"classifier={type(classifier).__name__}"
        )
    if len(classifier.inputs) != 1 or len(classifier.inputs[0].shape) != 4:
        raise ValueError(
            "convolutionalize: the classifier must take one image input [B, H, W, C]. "
            f"Received: inputs={[tuple(t.shape) for t in classifier.inputs]}"
        )
    input_shape = tuple(classifier.inputs[0].shape[1:])
    if None in input_shape[:2]:
        raise ValueError(
            "convolutionalize: the classifier's input must have a fixed height and width (the "
            f"size its Flatten/Dense head was trained at). Received: input_shape={input_shape}"
        )
    head = _head_chain(classifier)
    start = head[0]
    if getattr(start, "data_format", "channels_last") != "channels_last":
        raise ValueError(
            f"convolutionalize: {start.name!r} must be channels_last. "
            f"Received: data_format={start.data_format!r}"
        )
    feature_shape = tuple(start.input.shape[1:])
    images = keras.Input((None, None, input_shape[2]), name="images")
    body = keras.Model(classifier.inputs[0], start.input)
    clone = keras.models.clone_model(body, input_tensors=images)
    clone.set_weights(body.get_weights())
    x = clone.output
    window = feature_shape[:2]
    flattened = type(start).__name__ == "Flatten"
    if not flattened:
        x = _POOLING[type(start).__name__](window, strides=1, name=f"{start.name}_as_pool")(x)
    first_dense = True
    for layer in head[1:]:
        if isinstance(layer, keras.layers.Dense):
            kernel, *bias = layer.get_weights()
            size = window if (flattened and first_dense) else (1, 1)
            conv = keras.layers.Conv2D(
                layer.units,
                size,
                activation=layer.activation,
                use_bias=layer.use_bias,
                name=f"{layer.name}_as_conv",
            )
            x = conv(x)
            if flattened and first_dense:
                kernel = dense_kernel_as_conv(kernel, feature_shape)
            else:
                kernel = kernel.reshape(1, 1, *kernel.shape)
            conv.set_weights([kernel, *bias])
            first_dense = False
        else:
            copy = type(layer).from_config(layer.get_config())
            x = copy(x)
            copy.set_weights(layer.get_weights())
    return keras.Model(images, x, name=name or f"{classifier.name}_fcn")

"""Model checks shared by the exporters (:mod:`kseg.export`, :mod:`kseg.serving`)."""

from __future__ import annotations


def _check_model(model):
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model, Received: model of type {type(model).__name__}"
        )
    if len(model.inputs) != 1:
        raise ValueError(
            f"model must take one image input, {model.name!r} has {len(model.inputs)} inputs"
        )


def _resolve_input_shape(model, input_shape):
    declared = tuple(model.inputs[0].shape[1:])
    if input_shape is None:
        return declared
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != len(declared) or any(d is not None and d <= 0 for d in shape):
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive ints or None. "
            f"Received: input_shape={input_shape!r}"
        )
    for d, s in zip(declared, shape):
        if d is not None and s != d:
            raise ValueError(
                f"input_shape {shape!r} does not fit the model's input shape {declared!r}"
            )
    return shape


def _first_output(outputs):
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def run_tflite_per_image(path, images, outputs):
    """Runs the default signature of the TFLite file ``path`` on ``images`` one at a time.

    The instance and panoptic exports have a batch of one; their ``run_tflite`` stack the named
    ``outputs`` back into batches.

    Example:
        >>> out = run_tflite_per_image("/tmp/m.tflite", images, ("boxes",))  # doctest: +SKIP
    """
    import os

    import numpy as np
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_path=os.fspath(path)).get_signature_runner()
    results = {name: [] for name in outputs}
    for image in np.asarray(images, np.float32):
        out = runner(images=image[None])
        for name in outputs:
            results[name].append(out[name][0])
    return {name: np.stack(values) for name, values in results.items()}

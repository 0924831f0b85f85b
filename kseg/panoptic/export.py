"""Export of a ``PanopticDeepLab`` with its grouping: a SavedModel signature and a TFLite file.

Both run the network and ``kseg.panoptic.group`` in one graph, so a server or a phone gets the
panoptic map directly.

- ``saved_model``: ``serving_default`` takes ``images`` float32 ``[B, H, W, 3]`` (RGB 0..255)
  and returns ``panoptic`` int32 ``[B, H, W]`` (``class * label_divisor + instance``),
  ``semantic`` int32 ``[B, H, W]`` (arg-max labels), ``center`` float32 ``[B, H, W, 1]`` and
  ``offset`` float32 ``[B, H, W, 2]``.
- ``tflite``: the same four outputs at a fixed input size, converted with TFLite built-in ops
  only (``TFLITE_BUILTINS``: max-pool, top-k, arg-min/arg-max, one-hot, batch matmul, gather
  and the network's convolutions); the conversion fails rather than fall back to TF ops.
"""

from __future__ import annotations

import os
import tempfile

import tensorflow as tf

OUTPUTS = ("panoptic", "semantic", "center", "offset")


def _check(model):
    from kseg.models.panoptic_deeplab import PanopticDeepLab

    if not isinstance(model, PanopticDeepLab):
        raise ValueError(
            f"kseg.panoptic.export: expected a PanopticDeepLab. Received: model of type "
            f"{type(model).__name__}"
        )


def _serving_fn(model, grouping):
    from kseg.panoptic.postprocess import PanopticGrouping

    layer = PanopticGrouping(
        thing_classes=model.thing_classes, label_divisor=model.label_divisor, **grouping
    )

    def serve(images):
        semantic, center, offset = model(images, training=False)
        return {
            "panoptic": layer([semantic, center, offset]),
            "semantic": tf.cast(tf.argmax(semantic, axis=-1), tf.int32),
            "center": center,
            "offset": offset,
        }

    return serve


def _input_shape(model, input_shape):
    shape = tuple(input_shape) if input_shape is not None else tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(
            f"kseg.panoptic.export: input_shape must be (height, width, 3). Received: "
            f"input_shape={input_shape!r}"
        )
    return shape


def saved_model(model, path, input_shape=None, batch=None, **grouping):
    """Writes a SavedModel whose ``serving_default`` returns the panoptic map (module doc).

    Args:
        model: a ``kseg.models.PanopticDeepLab``.
        path: the SavedModel folder.
        input_shape: ``(H, W, 3)`` for the signature (None entries stay dynamic); default the
            model's input shape.
        batch: the batch size of the signature (None: any).
        **grouping: ``PanopticGrouping`` options (``center_threshold``, ``nms_kernel``, ...).

    Returns:
        ``path``.

    Example:
        >>> import kseg
        >>> model = kseg.models.PanopticDeepLab(num_classes=3, thing_classes=(1, 2),
        ...     backbone="mobilenetv2", input_shape=(64, 64, 3))
        >>> kseg.panoptic.export.saved_model(model, "/tmp/pdl")      # doctest: +SKIP
        '/tmp/pdl'
    """
    import keras

    _check(model)
    shape = _input_shape(model, input_shape)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=_serving_fn(model, grouping),
        input_signature=[tf.TensorSpec((batch,) + shape, tf.float32, name="images")],
    )
    from kseg import fileio

    # written beside and swapped in: a killed export leaves no half folder at ``path``
    with fileio.atomic_directory(path) as folder:
        archive.write_out(folder, verbose=False)
    return os.fspath(path)


def tflite(model, path, input_shape=None, **grouping):
    """Writes a float32 TFLite file of the network and the grouping, built-in ops only.

    Args:
        model: a ``kseg.models.PanopticDeepLab``.
        path: the ``.tflite`` file.
        input_shape: ``(H, W, 3)``, fixed; default the model's (which must then be fixed).
        **grouping: ``PanopticGrouping`` options.

    Returns:
        ``path``.

    Raises:
        ValueError: the size is not fixed, or the converter needs an op TFLite lacks (the
            message holds the converter's, which names the op).

    Example:
        >>> import kseg
        >>> model = kseg.models.PanopticDeepLab(num_classes=3, thing_classes=(1, 2),
        ...     backbone="mobilenetv2", input_shape=(64, 64, 3))
        >>> kseg.panoptic.export.tflite(model, "/tmp/pdl.tflite")    # doctest: +SKIP
        '/tmp/pdl.tflite'
    """
    _check(model)
    shape = _input_shape(model, input_shape)
    if None in shape:
        raise ValueError(
            "kseg.panoptic.export.tflite: the input size must be fixed. Received: "
            f"input_shape={shape!r}"
        )

    # Through a SavedModel, so the TFLite file keeps the named signature and outputs.
    with tempfile.TemporaryDirectory() as directory:
        saved = saved_model(model, os.path.join(directory, "saved"), shape, batch=1, **grouping)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            content = converter.convert()
        except Exception as error:  # the converter raises ConverterError and others
            raise ValueError(
                f"kseg.panoptic.export.tflite: conversion with built-in ops failed: {error}"
            ) from error
    from kseg import fileio

    fileio.write_bytes(path, content)
    return os.fspath(path)


def run_tflite(path, images):
    """Runs a file written by ``tflite`` on images ``[B, H, W, 3]``, one image at a time.

    Returns:
        A dict of the four outputs (``OUTPUTS``) as numpy arrays, batched.

    Example:
        >>> out = run_tflite("/tmp/pdl.tflite", np.zeros((2, 64, 64, 3), "float32"))  # doctest: +SKIP
        >>> out["panoptic"].shape                                                     # doctest: +SKIP
        (2, 64, 64)
    """
    from kseg._export_common import run_tflite_per_image

    return run_tflite_per_image(path, images, OUTPUTS)

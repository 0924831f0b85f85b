"""Export of a ``MaskRCNN`` with its post-processing: a SavedModel signature and a TFLite file.

Both run the network, proposal decoding and NMS, the box and mask heads on RoIAlign crops and
mask pasting in one graph, so a server or a phone gets detections directly.

- ``saved_model``: ``serving_default`` takes ``images`` float32 ``[B, H, W, 3]`` (RGB 0..255;
  ``B`` fixed, default 1, since the heads loop over the images) and returns, padded to the
  model's ``max_detections`` ``D``: ``boxes`` float32 ``[B, D, 4]`` (ymin, xmin, ymax, xmax
  pixels), ``classes`` int32 ``[B, D]`` (0 pads), ``scores`` float32 ``[B, D]``, ``masks``
  float32 ``[B, D, H, W]`` (probabilities) and ``num_detections`` int32 ``[B]`` -- what
  ``model.predict`` returns.
- ``tflite``: the same outputs at a fixed size and batch 1, TFLite built-in ops only: the
  network, anchors, top-k, NMS (``NON_MAX_SUPPRESSION_V5``), RoIAlign by gathers, mask pasting
  by batched matrix products.

Training's graph routes each RoI to its FPN level with ``tf.dynamic_partition`` /
``tf.dynamic_stitch`` and crops mask targets with ``tf.image.crop_and_resize``; TFLite has no
built-in kernel for any of the three (``UNSUPPORTED_BUILTIN_OPS``; TF 2.21's converter offers
them only as Flex ops, which the ``tensorflow`` pip package's interpreter does not run). So the
exports use ``detect(routing="gather")`` (every RoI aligned on every level, its own level
gathered: the same values for four times the RoIAlign work), and ``paste_masks`` (in
``predict`` too) samples with two batched matrix products instead of ``crop_and_resize`` (the
same values to float rounding).

Example:
    >>> import kseg
    >>> model = kseg.models.MaskRCNN(num_classes=3, backbone="resnet18",
    ...                              input_shape=(64, 64, 3))                # doctest: +SKIP
    >>> kseg.instance.export.saved_model(model, "/tmp/mrcnn")                 # doctest: +SKIP
    '/tmp/mrcnn'
"""

from __future__ import annotations

import os
import re
import tempfile

import tensorflow as tf

OUTPUTS = ("boxes", "classes", "scores", "masks", "num_detections")

UNSUPPORTED_BUILTIN_OPS = ("CropAndResize", "DynamicPartition", "DynamicStitch")
"""TensorFlow ops TFLite has no built-in kernel for (TF 2.21's converter), which the exported
graph avoids (module notes); ``select_tf_ops=True`` lets any remaining TF op through as Flex."""


def _check(model):
    from kseg.instance.mask_rcnn import MaskRCNN

    if not isinstance(model, MaskRCNN):
        raise ValueError(
            "kseg.instance.export: expected a MaskRCNN. Received: model of type "
            f"{type(model).__name__}"
        )


def _input_shape(model, input_shape):
    shape = tuple(input_shape) if input_shape is not None else tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(
            "kseg.instance.export: input_shape must be (height, width, 3). Received: "
            f"input_shape={input_shape!r}"
        )
    return shape


def saved_model(model, path, input_shape=None, batch=1):
    """Writes a SavedModel whose ``serving_default`` returns detections (see the module notes).

    Args:
        model: a ``kseg.models.MaskRCNN``.
        path: the SavedModel folder.
        input_shape: ``(H, W, 3)`` of the signature (None entries stay dynamic); default the
            model's input shape.
        batch: the fixed batch size of the signature (the heads loop over the images).

    Returns:
        ``path``.

    Example:
        >>> saved_model(model, "/tmp/mrcnn", input_shape=(64, 64, 3))  # doctest: +SKIP
        '/tmp/mrcnn'
    """
    import keras

    _check(model)
    shape = _input_shape(model, input_shape)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(
            f"kseg.instance.export: batch must be a positive int. Received: batch={batch!r}"
        )

    def serve(images):
        out = model.detect(images, routing="gather")
        return {
            "boxes": out["boxes"],
            "classes": tf.cast(out["classes"], tf.int32),
            "scores": out["scores"],
            "masks": out["masks"],
            "num_detections": tf.cast(out["num_detections"], tf.int32),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[tf.TensorSpec((batch,) + shape, tf.float32, name="images")],
    )
    from kseg import fileio

    # written beside and swapped in: a killed export leaves no half folder at ``path``
    with fileio.atomic_directory(path) as folder:
        archive.write_out(folder, verbose=False)
    return os.fspath(path)


def _unsupported_ops(message):
    """TF op names a converter error lists as unsupported (``tf.CropAndResize`` ...)."""
    return sorted(
        set(re.findall(r"'tf\.([A-Za-z0-9_]+)'", message))
        | set(re.findall(r"\btf\.([A-Z][A-Za-z0-9_]+)\b", message))
    )


def tflite(model, path, input_shape=None, select_tf_ops=False):
    """Writes a float32 TFLite file of the network and its post-processing (batch 1).

    Args:
        model: a ``kseg.models.MaskRCNN``.
        path: the ``.tflite`` file.
        input_shape: ``(H, W, 3)``, fixed; default the model's (which must then be fixed).
        select_tf_ops: allow TensorFlow (Flex) ops where TFLite has no built-in
            (``UNSUPPORTED_BUILTIN_OPS``). Without it the conversion fails, naming them.

    Returns:
        ``path``.

    Raises:
        ValueError: the size is not fixed, or (built-ins only) the converter needs ops TFLite
            lacks; the message names them.

    Example:
        >>> tflite(model, "/tmp/mrcnn.tflite", select_tf_ops=True)  # doctest: +SKIP
        '/tmp/mrcnn.tflite'
    """
    _check(model)
    shape = _input_shape(model, input_shape)
    if None in shape:
        raise ValueError(
            "kseg.instance.export.tflite: the input size must be fixed. Received: "
            f"input_shape={shape!r}"
        )
    with tempfile.TemporaryDirectory() as directory:
        saved = saved_model(model, os.path.join(directory, "saved"), shape, batch=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if select_tf_ops:
            ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        converter.target_spec.supported_ops = ops
        try:
            content = converter.convert()
        except Exception as error:  # the converter raises ConverterError and others
            missing = _unsupported_ops(str(error))
            raise ValueError(
                "kseg.instance.export.tflite: Mask R-CNN needs TensorFlow ops that TFLite has "
                "no built-in kernel for; pass select_tf_ops=True to keep them as Flex ops. "
                f"Received: unsupported ops={missing or str(error)[:500]}"
            ) from error
    from kseg import fileio

    fileio.write_bytes(path, content)
    return os.fspath(path)


def run_tflite(path, images):
    """Runs a file written by ``tflite`` on images ``[B, H, W, 3]``, one image at a time.

    Returns:
        A dict of ``OUTPUTS`` as numpy arrays, batched.

    Example:
        >>> out = run_tflite("/tmp/mrcnn.tflite", np.zeros((2, 64, 64, 3), "float32"))  # doctest: +SKIP
        >>> out["masks"].shape  # doctest: +SKIP
        (2, 100, 64, 64)
    """
    from kseg._export_common import run_tflite_per_image

    return run_tflite_per_image(path, images, OUTPUTS)


__all__ = ["OUTPUTS", "UNSUPPORTED_BUILTIN_OPS", "run_tflite", "saved_model", "tflite"]

"""Export to SavedModel (TF Serving) and TFLite (Android, MediaPipe), and checks of the result.

* ``saved_model`` writes a SavedModel through ``keras.export.ExportArchive`` (a plain
  ``tf.saved_model.save`` reloads in TF2 but fails in the TF1 session loader that TF Serving
  uses), with float-image, uint8-image, encoded-image and ``tf.Example`` signatures, assets and
  warm-up requests, checked against Keras before it is renamed into place (see
  :mod:`kseg.serving`).
* ``write_report`` (from :mod:`kseg.export_report`) records an export's check in
  ``export_report.json``; every format uses it.
* ``tflite`` converts with built-in TFLite ops only (float32, float16, dynamic-range or full
  int8 post-training quantization). A model that needs a compiled ``kseg_ops`` op (dense CRF,
  FFT convolution) cannot become built-in ops; conversion then fails with the op named.
* ``verify`` runs an exported artefact and the Keras model on the same images and reports the
  per-pixel argmax agreement and the largest absolute logit difference.

Example:
    >>> import numpy as np, kseg
    >>> model = kseg.models.create("segnet", num_classes=3, input_shape=(None, None, 3),
    ...                            stage_filters=(8, 8, 8, 8, 8))
    >>> kseg.export.saved_model(model, "/tmp/segnet_sm")           # doctest: +SKIP
    >>> kseg.export.tflite(model, "/tmp/segnet.tflite", input_shape=(64, 64, 3))  # doctest: +SKIP
    >>> images = np.random.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    >>> kseg.export.verify(model, "/tmp/segnet.tflite", images)["argmax_agreement"]  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import os

import numpy as np

from kseg import fileio

# Also used by kseg.serving, which kseg.export imports: in a module of their own, no cycle.
from kseg._export_common import _check_model, _first_output, _resolve_input_shape  # noqa: F401
from kseg.export_report import ExportCheckError, read_report, write_report  # noqa: F401 (shared)

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
SIGNATURE_INPUT = "images"
SIGNATURE_OUTPUT = "logits"


def saved_model(model, path, input_shape=None, dynamic_size=True, **options):
    """Writes ``model`` as a SavedModel for TF Serving, checked against Keras; returns its folder.

    See :func:`kseg.serving.export_saved_model` (this function) for the signatures
    (``serving_default`` float images, ``predict_image_bytes``, ``predict_image_tensor``,
    ``predict_tf_example``), the assets, the warm-up requests, the versioned layout
    (``name=``, ``version=``) and the check written to ``export_report.json``. Without
    ``name``/``version``, ``path`` is the SavedModel folder itself, as before.

    Example:
        >>> model = kseg.models.create("segnet", num_classes=3, stage_filters=(8,) * 5)
        >>> kseg.export.saved_model(model, "/tmp/export", name="segnet")   # doctest: +SKIP
        '/tmp/export/segnet/1'
    """
    from kseg import serving

    return serving.export_saved_model(
        model, path, input_shape=input_shape, dynamic_size=dynamic_size, **options
    )


def _representative_dataset(representative_data, input_shape, limit):
    import tensorflow as tf

    if representative_data is None:
        raise ValueError(
            "quantize='int8' needs representative_data: an iterable of image batches "
            "[B, H, W, C] (or (images, labels) pairs), e.g. a slice of the training set"
        )

    def generator():
        count = 0
        for item in representative_data:
            images = item[0] if isinstance(item, (tuple, list)) else item
            images = np.asarray(images, np.float32)
            if images.ndim == 3:
                images = images[None]
            if images.ndim != 4:
                raise ValueError(
                    f"representative_data must yield images [B, H, W, C]. Received: "
                    f"shape={images.shape}"
                )
            for image in images:
                if input_shape is not None and any(
                    d is not None and d != s for d, s in zip(input_shape, image.shape)
                ):
                    image = tf.image.resize(image, input_shape[:2]).numpy()
                yield [image[None]]
                count += 1
                if count >= limit:
                    return
        if count == 0:
            raise ValueError("representative_data yielded no images")

    return generator


def tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    input_shape=None,
    num_calibration_images=100,
):
    """Converts ``model`` to a TFLite flatbuffer at ``path`` using built-in ops only.

    The input is ``[1, H, W, C]`` float32 RGB 0..255 and the output the float32 logits
    ``[1, H, W, num_classes]`` (also for ``"int8"``, where the inside is quantized and the
    float input/output are converted at the edges). Android's ImageSegmenter needs a fixed
    size: pass ``input_shape``. Unknown height/width stay dynamic
    (use ``Interpreter.resize_tensor_input``).

    Args:
        model: a single-input segmentation model.
        path: output ``.tflite`` file.
        quantize: None (float32), "float16" (float16 weights), "dynamic" (int8 weights,
            float activations) or "int8" (full integer, needs ``representative_data``).
        representative_data: for "int8": iterable of image batches (numpy or tensors) or
            ``(images, labels)`` pairs, e.g. a ``tf.data.Dataset``; images are resized to
            ``input_shape`` when it is fixed.
        input_shape: ``(H, W, C)``; default the model's input shape.
        num_calibration_images: how many images of ``representative_data`` calibrate "int8".

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: for an unknown ``quantize`` or when the model needs an op that is not a
            TFLite built-in (e.g. a compiled ``kseg_ops`` op); the message names the op.

    Example:
        >>> model = kseg.models.create("segnet", num_classes=3, stage_filters=(8,) * 5)
        >>> kseg.export.tflite(model, "/tmp/segnet.tflite", input_shape=(64, 64, 3))  # doctest: +SKIP
        '/tmp/segnet.tflite'
    """
    import tensorflow as tf

    _check_model(model)
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"quantize must be one of {QUANTIZATIONS}. Received: quantize={quantize!r}"
        )
    if not isinstance(num_calibration_images, int) or num_calibration_images < 1:
        raise ValueError(
            f"num_calibration_images must be a positive int. Received: num_calibration_images={num_calibration_images!r}"
        )
    shape = _resolve_input_shape(model, input_shape)
    path = os.fspath(path)

    fn = tf.function(lambda images: _first_output(model(images, training=False)))
    concrete = fn.get_concrete_function(
        tf.TensorSpec((1,) + shape, tf.float32, name=SIGNATURE_INPUT)
    )
    # Freeze first: converting the unfrozen function keeps Keras 3 variables as TFLite resource
    # variables that are never initialised in the flatbuffer (the outputs come out NaN).
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(concrete)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(
            representative_data, shape, num_calibration_images
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # noqa: BLE001 - re-raised with the model and mode named
        raise ValueError(
            f"TFLite conversion of {model.name!r} (quantize={quantize!r}, built-in ops only) "
            f"failed: {error}"
        ) from error
    fileio.write_bytes(path, flatbuffer)
    return path


def tflite_interpreter(path_or_content, num_threads=None):
    """A TFLite interpreter for a file or flatbuffer bytes (LiteRT's when installed).

    Example:
        >>> interpreter = kseg.export.tflite_interpreter("/tmp/segnet.tflite")  # doctest: +SKIP
    """
    kwargs = {"num_threads": num_threads}
    if isinstance(path_or_content, (bytes, bytearray)):
        kwargs["model_content"] = bytes(path_or_content)
    else:
        path = os.fspath(path_or_content)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"TFLite file {path!r} does not exist")
        kwargs["model_path"] = path
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            return tf.lite.Interpreter(**kwargs)
    return Interpreter(**kwargs)


def run_tflite(path, images, num_threads=None):
    """Runs a ``.tflite`` segmentation model image by image; returns ``[B, H, W, K]`` float32.

    Dynamic height/width are resized to each image's size.

    Example:
        >>> logits = kseg.export.run_tflite("/tmp/segnet.tflite", images)  # doctest: +SKIP
    """
    interpreter = tflite_interpreter(path, num_threads=num_threads)
    input_detail = interpreter.get_input_details()[0]
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C]. Received: shape={images.shape}")
    outputs = []
    allocated_shape = None
    for image in images:
        batch = image[None]
        if allocated_shape != batch.shape:
            expected = tuple(input_detail["shape_signature"])
            if any(e != -1 and e != s for e, s in zip(expected, batch.shape)):
                raise ValueError(
                    f"TFLite model {os.fspath(path)!r} expects input {expected}, "
                    f"Received: image.shape={image.shape}"
                )
            interpreter.resize_tensor_input(input_detail["index"], batch.shape)
            interpreter.allocate_tensors()
            allocated_shape = batch.shape
        interpreter.set_tensor(input_detail["index"], batch.astype(input_detail["dtype"]))
        interpreter.invoke()
        output_detail = interpreter.get_output_details()[0]
        outputs.append(interpreter.get_tensor(output_detail["index"])[0].astype(np.float32))
    return np.stack(outputs)


def run_saved_model(path, images):
    """Runs a SavedModel's ``serving_default`` signature (TF2 loader); returns the logits.

    Example:
        >>> logits = kseg.export.run_saved_model("/tmp/segnet_savedmodel", images)  # doctest: +SKIP
    """
    import tensorflow as tf

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"SavedModel directory {path!r} does not exist")
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    outputs = signature(**{SIGNATURE_INPUT: tf.constant(np.asarray(images, np.float32))})
    return outputs[SIGNATURE_OUTPUT].numpy()


def run_tf1_session(path, images, tags=("serve",), signature="serving_default"):
    """Loads a SavedModel with the TF1 session loader (as TF Serving and ``saved_model_cli``
    do) and runs ``signature`` on ``images``; returns the logits.

    Example:
        >>> logits = kseg.export.run_tf1_session("/tmp/segnet_savedmodel", images)  # doctest: +SKIP
    """
    import tensorflow as tf

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"SavedModel directory {path!r} does not exist")
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, list(tags), path)
        if signature not in meta_graph.signature_def:
            raise ValueError(
                f"SavedModel {path!r} has no signature {signature!r}; it has "
                f"{sorted(meta_graph.signature_def)}"
            )
        signature_def = meta_graph.signature_def[signature]
        input_name = signature_def.inputs[SIGNATURE_INPUT].name
        output_name = signature_def.outputs[SIGNATURE_OUTPUT].name
        return session.run(output_name, {input_name: np.asarray(images, np.float32)})


def verify(model, path, images, ignore_index=None, labels=None):
    """Runs the exported artefact at ``path`` (a ``.tflite`` file or a SavedModel directory)
    and ``model.predict`` on ``images``; reports how well they agree.

    Args:
        model: the Keras model that was exported.
        path: ``.tflite`` file or SavedModel directory.
        images: ``[B, H, W, C]`` float32 images.
        ignore_index, labels: optionally leave out pixels whose label is ``ignore_index``.

    Returns:
        ``{"argmax_agreement": fraction of pixels with the same class, "max_abs_diff": largest
        absolute logit difference, "pixels": pixels compared}``.

    Example:
        >>> kseg.export.verify(model, "/tmp/segnet.tflite", images)  # doctest: +SKIP
        {'argmax_agreement': 1.0, 'max_abs_diff': 1.9e-05, 'pixels': 8192}
    """
    path = os.fspath(path)
    images = np.asarray(images, np.float32)
    if os.path.isdir(path):
        exported = run_saved_model(path, images)
    elif os.path.isfile(path):
        exported = run_tflite(path, images)
    else:
        raise FileNotFoundError(f"exported model {path!r} does not exist")
    expected = np.asarray(_first_output(model.predict(images, verbose=0)), np.float32)
    if exported.shape != expected.shape:
        raise ValueError(
            f"exported model {path!r} returned shape {exported.shape}, the Keras model "
            f"{expected.shape}"
        )
    valid = np.ones(expected.shape[:-1], bool)
    if labels is not None and ignore_index is not None:
        valid = np.asarray(labels).reshape(valid.shape) != ignore_index
    agree = np.argmax(exported, -1) == np.argmax(expected, -1)
    return {
        "argmax_agreement": float(agree[valid].mean()) if valid.any() else 1.0,
        "max_abs_diff": float(np.abs(exported - expected).max()),
        "pixels": int(valid.sum()),
    }

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
  With ``class_names`` and a fixed ``input_shape`` the file carries the metadata MediaPipe's
  ImageSegmenter and the TFLite Task Library need (:mod:`kseg.tflite_metadata`); ``io_dtype``
  gives a full-integer model uint8 or int8 input and output.
* ``onnx`` writes an ONNX file through tf2onnx with dynamic batch and size; ``run_onnx`` runs it
  on onnxruntime (:mod:`kseg.onnx_export`).
* ``verify`` runs an exported artefact and the Keras model on the same images and reports the
  per-pixel argmax agreement and the largest absolute logit difference;
  :mod:`kseg.export_checks` turns that into a pass/fail record for ``export_report.json``.

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
from kseg.onnx_export import onnx, run_onnx  # noqa: F401 - public in kseg.export

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
IO_DTYPES = (None, "uint8", "int8")
# pixel = integer input + offset, for io_dtype inputs
INT_INPUT_OFFSETS = {"uint8": 0.0, "int8": 128.0}
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


def _representative_dataset(representative_data, input_shape, limit, dtype=np.float32):
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
                if dtype != np.float32:
                    image = np.clip(np.round(image), 0, 255) - (128 if dtype == np.int8 else 0)
                yield [image[None].astype(dtype)]
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
    io_dtype=None,
    class_names=None,
    activation="softmax",
):
    """Converts ``model`` to a TFLite flatbuffer at ``path`` using built-in ops only.

    The input is ``[1, H, W, C]`` float32 RGB 0..255 and the output the float32 logits
    ``[1, H, W, num_classes]`` (also for ``"int8"``, where the inside is quantized and the
    float input/output are converted at the edges, unless ``io_dtype`` makes them integer).
    Only the main logits are exported (auxiliary heads are dropped), from one subgraph.
    Unknown height/width stay dynamic (use ``Interpreter.resize_tensor_input``).

    For Android (MediaPipe ImageSegmenter, TFLite Task Library) pass a fixed ``input_shape``
    and ``class_names``: the file then carries the metadata those clients need (see
    :mod:`kseg.tflite_metadata`): normalisation mean 0 / std 1 for a float input (kseg models
    take 0..255 pixels and normalise inside), the labels, the output activation.

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
        io_dtype: for "int8": None keeps float32 input and output; "uint8" or "int8" makes
            them integer. A "uint8" input takes the pixel values themselves (scale 1, zero
            point 0), which is what MediaPipe feeds a uint8 model; an "int8" input takes
            ``pixel - 128``.
        class_names: one name per class: writes ImageSegmenter metadata (needs a fixed
            ``input_shape``, ``tflite-support`` and ``mediapipe``; see
            :func:`kseg.tflite_metadata.add_segmenter_metadata`).
        activation: the metadata's output activation ("softmax", "sigmoid", "none" or None).

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: for an unknown ``quantize`` or when the model needs an op that is not a
            TFLite built-in (e.g. a compiled ``kseg_ops`` op); the message names the op.

    Example:
        >>> model = kseg.models.create("segnet", num_classes=3, stage_filters=(8,) * 5)
        >>> kseg.export.tflite(model, "/tmp/segnet.tflite", input_shape=(64, 64, 3))  # doctest: +SKIP
        '/tmp/segnet.tflite'
        >>> kseg.export.tflite(model, "/tmp/segnet_int8.tflite", quantize="int8",
        ...                    representative_data=calibration, input_shape=(64, 64, 3),
        ...                    io_dtype="uint8", class_names=["bg", "a", "b"])  # doctest: +SKIP
        '/tmp/segnet_int8.tflite'
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
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {IO_DTYPES}. Received: io_dtype={io_dtype!r}")
    if io_dtype is not None and quantize != "int8":
        raise ValueError(
            "io_dtype (integer input and output) needs quantize='int8'. "
            f"Received: io_dtype={io_dtype!r} with quantize={quantize!r}"
        )
    shape = _resolve_input_shape(model, input_shape)
    if class_names is not None and any(d is None for d in shape):
        raise ValueError(
            "TFLite metadata for MediaPipe's ImageSegmenter needs a fixed height and width: "
            f"pass input_shape=(H, W, C). Received: input shape {shape!r}"
        )
    path = os.fspath(path)

    # An integer input holds the pixel values themselves for uint8 (scale 1, zero point 0: what
    # MediaPipe feeds) and pixel - 128 for int8, whatever range the calibration images cover.
    # uint8 is converted inside the graph (cast + offset). int8 pins the float input's range to
    # 0..255 with a fake quantisation, which the converter turns into the input's own scale 1 /
    # zero point -128: no CAST or QUANTIZE is left at the input, and XNNPACK runs the whole
    # graph (those two ran outside it and cost ~1 ms at 512x1024).
    pinned = io_dtype == "int8"
    input_dtype = tf.float32 if io_dtype is None or pinned else getattr(tf, io_dtype)
    offset = INT_INPUT_OFFSETS.get(io_dtype)

    def call(images):
        if pinned:
            images = tf.quantization.fake_quant_with_min_max_args(
                images, min=0.0, max=255.0, num_bits=8
            )
        elif offset is not None:
            images = tf.cast(images, tf.float32) + offset
        return _first_output(model(images, training=False))

    fn = tf.function(call)
    concrete = fn.get_concrete_function(
        tf.TensorSpec((1,) + shape, input_dtype, name=SIGNATURE_INPUT)
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
            representative_data, shape, num_calibration_images, input_dtype.as_numpy_dtype
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype is not None:
            converter.inference_input_type = getattr(tf, io_dtype)
            converter.inference_output_type = getattr(tf, io_dtype)
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # noqa: BLE001 - re-raised with the model and mode named
        raise ValueError(
            f"TFLite conversion of {model.name!r} (quantize={quantize!r}, built-in ops only) "
            f"failed: {error}\nAn op that is not a TFLite built-in (a compiled kseg_ops op: "
            "DenseCRF, CRFRNN, FFTConv2D with fft_algorithm='fft') cannot run in MediaPipe or "
            "LiteRT: export the network without that layer and apply it after inference (GCN: "
            "fft_algorithm='direct' runs built-in convolutions)."
        ) from error
    if class_names is not None:
        from kseg import tflite_metadata

        flatbuffer = tflite_metadata.add_segmenter_metadata(
            flatbuffer, class_names, activation=activation, name=model.name
        )
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
        interpreter.set_tensor(input_detail["index"], _to_input(batch, input_detail))
        interpreter.invoke()
        output_detail = interpreter.get_output_details()[0]
        outputs.append(
            _from_output(interpreter.get_tensor(output_detail["index"])[0], output_detail)
        )
    return np.stack(outputs)


def _to_input(images, detail):
    """float32 pixels 0..255 as the model's input tensor (quantised or integer I/O)."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return images.astype(np.float32)
    scale, zero_point = detail["quantization"]
    if scale:  # a quantised input: q = x / scale + zero_point
        values = np.round(images / scale) + zero_point
    else:  # an integer input converted inside the graph (see INT_INPUT_OFFSETS)
        values = np.round(images) - INT_INPUT_OFFSETS[dtype.name]
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


def _from_output(values, detail):
    """The output tensor as float32 scores (dequantised for an integer output)."""
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]) != np.float32 and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


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
    """Runs the exported artefact at ``path`` (``.tflite``, ``.onnx`` or a SavedModel directory)
    and ``model.predict`` on ``images``; reports how well they agree.

    Args:
        model: the Keras model that was exported.
        path: ``.tflite`` file, ``.onnx`` file (run under onnxruntime) or SavedModel
            directory.
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
    elif os.path.isfile(path) and path.lower().endswith(".onnx"):
        exported = run_onnx(path, images)
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

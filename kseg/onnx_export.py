"""ONNX export through ``tf2onnx``, and a runner on ``onnxruntime``.

The graph is the model called with ``training=False`` and only its main logits (auxiliary heads
are left out), traced with batch, height and width unknown where the model allows it, so one
``.onnx`` file serves any batch and image size. ``verify`` in :mod:`kseg.export` runs it under
``onnxruntime`` and compares the argmax with Keras.

Example:
    >>> model = kseg.models.create("unet", num_classes=3, base_filters=4, depth=2)
    >>> kseg.export.onnx(model, "/tmp/unet.onnx")                               # doctest: +SKIP
    '/tmp/unet.onnx'
    >>> kseg.export.run_onnx("/tmp/unet.onnx", images).shape                    # doctest: +SKIP
    (2, 64, 48, 3)
"""

from __future__ import annotations

import os

import numpy as np

from kseg import fileio

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17


def _require(package, purpose):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the {package} package (pip install {package.replace('_', '-')}); "
            f"importing it failed: {error}"
        ) from error


def onnx(model, path, opset=DEFAULT_OPSET, input_shape=None):
    """Writes ``model`` as an ONNX file at ``path`` with ``tf2onnx``.

    Input ``images`` ``[batch, H, W, C]`` float32 RGB 0..255 (NHWC, as the Keras model), output
    ``logits`` ``[batch, H, W, num_classes]``. Batch, height and width are dynamic unless the
    model (or ``input_shape``) fixes them.

    Args:
        model: a single-input segmentation model; auxiliary outputs are dropped.
        path: output ``.onnx`` file.
        opset: ONNX opset (default 17).
        input_shape: ``(H, W, C)`` to fix the size; default the model's input shape.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: when tf2onnx cannot convert an op (e.g. a compiled ``kseg_ops`` op);
            the message names the op.

    Example:
        >>> kseg.export.onnx(model, "/tmp/model.onnx")  # doctest: +SKIP
        '/tmp/model.onnx'
    """
    import tensorflow as tf

    from kseg._export_common import _check_model, _first_output, _resolve_input_shape

    _check_model(model)
    if not isinstance(opset, int) or isinstance(opset, bool) or not 13 <= opset <= 21:
        raise ValueError(f"opset must be an int in [13, 21]. Received: opset={opset!r}")
    tf2onnx = _require("tf2onnx", "ONNX export")
    shape = _resolve_input_shape(model, input_shape)
    path = os.fspath(path)

    @tf.function
    def serve(images):
        return {OUTPUT_NAME: _first_output(model(images, training=False))}

    spec = [tf.TensorSpec((None,) + tuple(shape), tf.float32, name=INPUT_NAME)]
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    except Exception as error:  # noqa: BLE001 - re-raised with the model named
        raise ValueError(
            f"ONNX conversion of {model.name!r} (tf2onnx, opset {opset}) failed: {error}"
        ) from error
    unsupported = sorted(
        {node.op_type for node in proto.graph.node if node.domain not in ("", "ai.onnx")}
    )
    if unsupported:
        # tf2onnx keeps an op it cannot map as a node of the TF domain: onnxruntime cannot run it
        raise ValueError(
            f"ONNX conversion of {model.name!r} left ops that are not ONNX operators: "
            f"{', '.join(unsupported)} (a compiled kseg_ops op cannot become ONNX; export "
            "the model without that layer, e.g. without the CRF, and apply it after)"
        )
    onnx_package = _require("onnx", "ONNX export")
    try:
        onnx_package.checker.check_model(proto)
    except onnx_package.checker.ValidationError as error:
        raise ValueError(
            f"ONNX conversion of {model.name!r} (tf2onnx, opset {opset}) wrote an invalid "
            f"graph: {str(error).splitlines()[0]}"
        ) from error
    fileio.write_bytes(path, proto.SerializeToString())
    return path


def run_onnx(path, images, providers=("CPUExecutionProvider",)):
    """Runs an ``.onnx`` segmentation model under ``onnxruntime``; returns the logits.

    Example:
        >>> kseg.export.run_onnx("/tmp/model.onnx", images).shape  # doctest: +SKIP
        (2, 64, 64, 3)
    """
    ort = _require("onnxruntime", "running an ONNX model")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file {path!r} does not exist")
    session = ort.InferenceSession(path, providers=list(providers))
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(images, np.float32)})[0]

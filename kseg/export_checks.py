"""Checks an exported artefact against its Keras model before it is called done.

``check_export`` runs the exported file (TFLite or ONNX) and the Keras model on held-out images,
measures the per-pixel argmax agreement, the file size and the latency, and raises with the
figure when the agreement is below the threshold (99.9 % for float exports, 97 % for int8 by
default), so a silently broken model is never shipped. ``write_report`` writes the record as
``export_report.json`` through ``kseg.export_report``, the one report every export format
adds its entry to.

Example:
    >>> record = check_export(model, "/tmp/m.tflite", held_out, format="tflite",
    ...                       quantize=None)                                  # doctest: +SKIP
    >>> record["argmax_agreement"], record["passed"]                          # doctest: +SKIP
    (1.0, True)
    >>> write_report("/tmp/export_report.json", record)                      # doctest: +SKIP
"""

from __future__ import annotations

import os
import time

import numpy as np

from kseg import export_report

MIN_AGREEMENT_FLOAT = export_report.MIN_AGREEMENT["float"]
MIN_AGREEMENT_INT8 = export_report.MIN_AGREEMENT["int8"]


def default_min_agreement(quantize):
    """The agreement an export must reach: 97 % for full-integer int8, 99.9 % otherwise.

    Example:
        >>> default_min_agreement("int8"), default_min_agreement(None)
        (0.97, 0.999)
    """
    return MIN_AGREEMENT_INT8 if quantize == "int8" else MIN_AGREEMENT_FLOAT


def _median_latency_ms(run, images):
    """Median wall time of ``run`` on one image (after one warm-up call), in milliseconds."""
    run(images[:1])
    times = []
    for i in range(len(images)):
        start = time.perf_counter()
        run(images[i : i + 1])
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def check_export(
    model, path, images, format, quantize=None, min_agreement=None, input_spec=None, extra=None
):
    """Runs the artefact at ``path`` and ``model`` on ``images``; returns the report record.

    Args:
        model: the Keras model that was exported.
        path: the ``.tflite`` or ``.onnx`` file.
        images: held-out ``[N, H, W, C]`` float32 images (not the calibration ones).
        format: "tflite" or "onnx" (recorded).
        quantize: None, "float16", "dynamic" or "int8" (recorded; chooses the default
            threshold).
        min_agreement: the smallest argmax agreement accepted, in [0, 1]; default
            :func:`default_min_agreement`.
        input_spec: a description of the input (shape, dtype, value range) to record.
        extra: more fields to record (e.g. the calibration data).

    Returns:
        A dict: ``format``, ``quantize``, ``path``, ``size_bytes``, ``input_spec``,
        ``agreement`` (= ``argmax_agreement``), ``max_abs_diff``, ``held_out_images``, ``pixels``,
        ``latency_ms`` (median per image, this machine), ``min_agreement``, ``passed``.

    Raises:
        ValueError: for a bad ``min_agreement`` or a format it does not know.

    Example:
        >>> check_export(model, "/tmp/m.onnx", held_out, format="onnx")["passed"]  # doctest: +SKIP
        True
    """
    from kseg import export

    if min_agreement is None:
        min_agreement = default_min_agreement(quantize)
    if isinstance(min_agreement, bool):
        raise ValueError(
            f"min_agreement must be a fraction in [0, 1]. Received: min_agreement={min_agreement!r}"
        )
    min_agreement = export_report.check_min_agreement(min_agreement)
    runners = {"tflite": export.run_tflite, "onnx": export.run_onnx}
    if format not in runners:
        raise ValueError(f"format must be one of {sorted(runners)}. Received: format={format!r}")
    path = os.fspath(path)
    images = np.asarray(images, np.float32)
    result = export.verify(model, path, images)
    record = {
        "format": format,
        "quantize": quantize,
        "path": path,
        "size_bytes": os.path.getsize(path),
        "input_spec": input_spec,
        "agreement": result["argmax_agreement"],
        "argmax_agreement": result["argmax_agreement"],
        "max_abs_diff": result["max_abs_diff"],
        "held_out_images": int(len(images)),
        "pixels": result["pixels"],
        "latency_ms": _median_latency_ms(lambda x: runners[format](path, x), images),
        "min_agreement": float(min_agreement),
    }
    record["passed"] = bool(record["argmax_agreement"] >= min_agreement)
    record.update(extra or {})
    return record


def require_agreement(record):
    """Raises ``kseg.export_report.ExportCheckError`` (a ``ValueError``) with the figure when
    ``record`` did not pass.

    Example:
        >>> require_agreement({"passed": True})
    """
    if not record["passed"]:
        export_report.check_agreement(
            record["argmax_agreement"],
            record["min_agreement"],
            f"the {record['format']} export (quantize={record['quantize']})",
        )


def write_report(path, record):
    """Adds ``record`` to the export report at ``path`` (``kseg.export_report.write_report``).

    Example:
        >>> write_report("/tmp/export_report.json", record)  # doctest: +SKIP
    """
    return export_report.write_report(path, record)

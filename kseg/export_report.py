"""The export check shared by every format: held-out images, argmax agreement, ``export_report.json``.

Every exporter (SavedModel, TFLite, ONNX) runs its artefact on held-out images, compares the
per-pixel argmax with the Keras model, and records the result with :func:`write_report`
before the export is called done; :func:`check_agreement` turns a figure below the threshold
into an :class:`ExportCheckError` (a ``ValueError``) that names it.

A report file holds ``{"kseg_version": ..., "exports": [entry, ...]}``. An entry is a dict with
at least ``format`` (``"savedmodel"``, ``"tflite"``, ...), ``path`` (the artefact, relative to
the report's folder when it lies inside it), ``size_bytes``, ``input_spec`` (a dict) and
``agreement`` (fraction of held-out pixels whose argmax matches Keras, 0..1); ``latency_ms``,
``min_agreement``, ``images`` and anything else JSON-serialisable may follow. Writing an entry
whose ``path`` is already in the file replaces that entry and keeps the others, so several
variants (float32, int8, ...) exported into one folder share one report.

Example:
    >>> import os, tempfile
    >>> from kseg import export_report
    >>> folder = tempfile.mkdtemp()
    >>> path = export_report.write_report(folder, [{
    ...     "format": "tflite", "path": "model.tflite", "size_bytes": 1024,
    ...     "input_spec": {"shape": [1, 64, 64, 3], "dtype": "float32"}, "agreement": 0.9995}])
    >>> os.path.basename(path), export_report.read_report(path)["exports"][0]["agreement"]
    ('export_report.json', 0.9995)
"""

from __future__ import annotations

import datetime
import json
import os

import numpy as np

from kseg import fileio

REPORT_FILE = "export_report.json"
"""The report's file name when :func:`write_report` is given a folder."""

MIN_AGREEMENT = {"float": 0.999, "int8": 0.97}
"""Default agreement thresholds: float exports (float32, float16, SavedModel, ONNX) and int8."""

REQUIRED_KEYS = ("format", "path", "size_bytes", "input_spec", "agreement")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class ExportCheckError(ValueError):
    """An exported artefact disagrees with its Keras model more than the threshold allows.

    Example:
        >>> try:
        ...     check_agreement(0.41, 0.999, "model.tflite")
        ... except ExportCheckError as error:
        ...     print(str(error).split(";")[0])
        model.tflite agrees with the Keras model on 41.000 % of held-out pixels
    """


def _report_path(path):
    path = os.fspath(path)
    if os.path.isdir(path) or not path.endswith(".json"):
        return os.path.join(path, REPORT_FILE)
    return path


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_report(path):
    """Reads a report written by :func:`write_report` (a file, or a folder holding one).

    Example:
        >>> read_report("/tmp/export/export_report.json")["exports"]  # doctest: +SKIP
    """
    path = _report_path(path)
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def write_report(path, entries):
    """Adds ``entries`` to the export report at ``path`` and returns the report's path.

    Args:
        path: the ``.json`` file, or a folder (then ``folder/export_report.json``).
        entries: one entry (a dict) or a list of them; each has at least ``format``, ``path``,
            ``size_bytes``, ``input_spec`` and ``agreement`` (see the module docstring).
            An entry whose ``path`` is already in the report replaces it.

    The file is rewritten atomically (a reader never sees half a report).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> entry = {"format": "savedmodel", "path": ".", "size_bytes": 9, "input_spec": {},
        ...          "agreement": 1.0, "latency_ms": 3.2}
        >>> _ = write_report(folder, entry)
        >>> _ = write_report(folder, dict(entry, path="m.tflite", format="tflite"))
        >>> [e["format"] for e in read_report(folder)["exports"]]
        ['savedmodel', 'tflite']
    """
    if isinstance(entries, dict):
        entries = [entries]
    entries = list(entries)
    for entry in entries:
        if not isinstance(entry, dict):
            raise TypeError(
                f"a report entry must be a dict. Received: entry of type {type(entry).__name__}"
            )
        missing = [key for key in REQUIRED_KEYS if key not in entry]
        if missing:
            raise ValueError(
                f"a report entry needs the keys {list(REQUIRED_KEYS)}; missing {missing}. "
                f"Received: entry={entry!r}"
            )
        agreement = entry["agreement"]
        if agreement is not None and not 0.0 <= float(agreement) <= 1.0:
            raise ValueError(
                f"agreement is a fraction in [0, 1]. Received: agreement={agreement!r}"
            )
    path = _report_path(path)
    report = {"exports": []}
    if os.path.isfile(path):
        report = read_report(path)
    from kseg import __version__

    report["kseg_version"] = __version__
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    new_paths = {os.fspath(entry["path"]) for entry in entries}
    kept = [e for e in report.get("exports", []) if e.get("path") not in new_paths]
    added = [
        _jsonable(dict(entry, path=os.fspath(entry["path"]), created=now)) for entry in entries
    ]
    report["exports"] = kept + added
    with fileio.atomic_open(path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
        file.write("\n")
    return path


def check_min_agreement(min_agreement):
    """Checks a threshold argument (a fraction in [0, 1]); returns it as a float.

    Example:
        >>> check_min_agreement(0.97)
        0.97
    """
    try:
        value = float(min_agreement)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"min_agreement must be a fraction in [0, 1] (0.999 = 99.9 %). "
            f"Received: min_agreement={min_agreement!r}"
        )
    return value


def check_agreement(agreement, min_agreement, what):
    """Raises :class:`ExportCheckError` naming ``what`` and the figure when ``agreement`` is
    below ``min_agreement``.

    Example:
        >>> check_agreement(0.9995, 0.999, "saved model")   # passes silently
    """
    if agreement < min_agreement:
        raise ExportCheckError(
            f"{what} agrees with the Keras model on {100 * agreement:.3f} % of held-out pixels; "
            f"at least {100 * min_agreement:.3f} % is required, so the export was not written "
            f"(lower the threshold with min_agreement / --min-agreement only if this is "
            f"expected). Received: agreement={agreement:.6f}"
        )


def argmax_agreement(expected, got):
    """Fraction of pixels where the class (argmax of the last axis, or label maps) matches.

    ``expected`` and ``got`` are logits/probabilities ``[..., K]`` or integer label maps of the
    same shape.

    Example:
        >>> import numpy as np
        >>> argmax_agreement(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 0]]))
        0.75
    """
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.dtype.kind == "f":
        expected = expected.argmax(-1)
    if got.dtype.kind == "f":
        got = got.argmax(-1)
    if expected.shape != got.shape:
        raise ValueError(f"label maps differ in shape: Keras {expected.shape}, export {got.shape}")
    return float((expected == got).mean()) if expected.size else 1.0


def artefact_size(path):
    """Bytes of a file, or of every file below a folder (a SavedModel).

    Example:
        >>> import tempfile
        >>> artefact_size(tempfile.mkdtemp())
        0
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, name)) for name in files)
    return total


def _to_channels(image, channels):
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return image.mean(-1, keepdims=True)
    if image.shape[-1] == 1:
        return np.repeat(image, channels, -1)
    raise ValueError(f"cannot turn a {image.shape[-1]}-channel image into {channels} channels")


def held_out_images(spec=None, num_images=4, image_size=None, channels=3, seed=0):
    """Held-out images for an export check: a list of float32 ``[H, W, C]`` arrays in 0..255.

    Args:
        spec: where they come from: None or ``"synthetic"`` (scenes of the synthetic "test"
            split, never used for training), ``"voc:ROOT"`` (the VOC ``val`` split),
            ``"folder:DIR"`` or a folder of image files, or a ``.npy`` file ``[N, H, W, C]``.
        num_images: how many (the first ones of the source).
        image_size: ``(H, W)``: every image is resized to it (a model with a fixed input
            size); None keeps each image's size (synthetic scenes are then 96x128).
        channels: the model's input channels (3 RGB, 1 grey; 6 for change-detection pairs,
            drawn from ``kseg.data.synthetic_change`` for "synthetic").
        seed: the synthetic scenes' seed.

    Example:
        >>> images = held_out_images(num_images=2, image_size=(40, 56))
        >>> [image.shape for image in images]
        [(40, 56, 3), (40, 56, 3)]
    """
    from kseg import data

    if not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive int. Received: num_images={num_images!r}")
    spec = "synthetic" if spec is None else os.fspath(spec)
    if spec == "synthetic":
        size = tuple(image_size) if image_size is not None else (96, 128)
        # Scenes need at least 8 pixels a side: draw larger, resize below.
        draw = tuple(max(32, s) for s in size)
        first = data.SYNTHETIC_SPLITS["test"][0]
        if channels == 6:  # a change-detection model: synthetic image pairs
            images = list(data.synthetic_change_numpy(num_images, draw, seed, first_index=first)[0])
        else:
            images = list(data.synthetic_numpy(num_images, draw, seed, first_index=first)[0])
    elif spec.startswith("voc:"):
        dataset = data.load("voc", spec[4:], "val")
        images = [np.asarray(image) for image, _ in dataset.take(num_images)]
    elif spec.endswith(".npy"):
        images = list(np.load(spec)[:num_images])
    else:
        folder = spec[7:] if spec.startswith("folder:") else spec
        if not os.path.isdir(folder):
            raise ValueError(
                "held-out images come from 'synthetic', 'voc:ROOT', 'folder:DIR' (or a folder) "
                f"or a .npy file. Received: spec={spec!r}"
            )
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
        images = [data.read_image(os.path.join(folder, f)) for f in files[:num_images]]
    if not images:
        raise ValueError(f"no held-out images found in {spec!r}")
    result = []
    for image in images:
        image = _to_channels(np.asarray(image, np.float32), channels)
        if image_size is not None and image.shape[:2] != tuple(image_size):
            import tensorflow as tf

            image = tf.image.resize(image, tuple(image_size)).numpy()
        result.append(np.clip(image, 0, 255).astype(np.float32))
    return result


def median_latency_ms(fn, inputs, repeats=3):
    """Median wall time of ``fn(x)`` in milliseconds over ``inputs`` (each run ``repeats``
    times after one untimed warm-up call).

    Example:
        >>> median_latency_ms(lambda x: x * 2, [1, 2]) >= 0
        True
    """
    import time

    fn(inputs[0])
    times = []
    for x in inputs:
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)

"""Where real-time models spend their TFLite time: the same graph with ops swapped, timed
interleaved in one process (ratios are what to read on a shared machine).

Two studies:

* ``ablate``: float32 TFLite of each model as built, with PReLU replaced by ReLU (which XNNPACK
  fuses into the convolution), and, for ENet, with its index-keeping max pooling and unpooling
  replaced by plain max pooling + nearest upsampling (same MAdds; the ``EQUAL`` / ``SELECT`` ops
  of the exact unpooling have no XNNPACK kernel).
* ``edges``: float32 against full-integer int8 with float, uint8 and int8 input/output
  (``kseg.export.tflite(io_dtype=...)``), same weights and calibration scenes.

Usage::

    python benchmarks/realtime_ablation.py ablate --models enet,espnet,espnetv2 --size 512x1024
    python benchmarks/realtime_ablation.py edges --models lraspp_small_min,fastscnn --size 512x1024
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from realtime import MOBILE_DEEPLABS, REALTIME  # noqa: E402

import kseg  # noqa: E402
from kseg import export  # noqa: E402
from kseg.compress import recalibrate_batch_norm  # noqa: E402
from kseg.data import synthetic_numpy  # noqa: E402
from kseg.layers import enet_blocks, esp_blocks, unpooling  # noqa: E402

ROWS = {label: (name, kwargs) for label, name, kwargs in REALTIME + MOBILE_DEEPLABS}


def _relu(name, dtype=None):
    return keras.layers.ReLU(name=name, dtype=dtype)


def _plain_pool(x, pool_size=(2, 2)):
    pooled = tf.nn.max_pool2d(tf.convert_to_tensor(x), pool_size, pool_size, "SAME")
    return pooled, tf.zeros_like(pooled, dtype=tf.int32)


def _nearest_unpool(values, indices, pool_size=(2, 2), output_size=None):
    shape = tf.shape(values)
    size = [shape[1] * pool_size[0], shape[2] * pool_size[1]]
    out = tf.image.resize(values, size, "nearest")
    return out if output_size is None else out[:, : output_size[0], : output_size[1], :]


@contextlib.contextmanager
def swapped(prelu_to_relu=False, plain_pooling=False):
    """Builds models with PReLU -> ReLU and/or index pooling -> plain pooling inside."""
    saved = (
        enet_blocks.prelu,
        esp_blocks.prelu,
        unpooling.max_pool_with_window_argmax,
        unpooling.max_unpool_from_window_argmax,
    )
    try:
        if prelu_to_relu:
            enet_blocks.prelu = esp_blocks.prelu = _relu
        if plain_pooling:
            unpooling.max_pool_with_window_argmax = _plain_pool
            unpooling.max_unpool_from_window_argmax = _nearest_unpool
        yield
    finally:
        (
            enet_blocks.prelu,
            esp_blocks.prelu,
            unpooling.max_pool_with_window_argmax,
            unpooling.max_unpool_from_window_argmax,
        ) = saved


def _build(label, size, scenes):
    name, kwargs = ROWS[label]
    keras.utils.set_random_seed(0)
    model = kseg.models.create(name, num_classes=19, input_shape=(*size, 3), **kwargs)
    recalibrate_batch_norm(model, scenes, 2, 2, seed=1)
    return model


def _interleaved_ms(paths, image, rounds=7, calls=3, threads=2):
    """Median over ``rounds`` of each file's median of ``calls`` invocations, files taking
    turns within each round."""
    interpreters = {}
    for key, path in paths.items():
        interpreter = export.tflite_interpreter(path, num_threads=threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], export._to_input(image, detail))
        for _ in range(2):
            interpreter.invoke()
        interpreters[key] = interpreter
    times = {key: [] for key in paths}
    for _ in range(rounds):
        for key, interpreter in interpreters.items():
            calls_ms = []
            for _ in range(calls):
                start = time.perf_counter()
                interpreter.invoke()
                calls_ms.append((time.perf_counter() - start) * 1e3)
            times[key].append(float(np.median(calls_ms)))
    return {key: round(float(np.median(values)), 2) for key, values in times.items()}


def ablate(labels, size, folder):
    scenes, _ = synthetic_numpy(4, image_size=size, seed=2, num_classes=6)
    image = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype("float32")
    results = {}
    for label in labels:
        variants = {"as built": {}, "PReLU -> ReLU": {"prelu_to_relu": True}}
        if ROWS[label][0] == "enet":
            variants["indices -> plain pooling"] = {"plain_pooling": True}
            variants["both"] = {"prelu_to_relu": True, "plain_pooling": True}
        paths, madds = {}, None
        for key, swaps in variants.items():
            with swapped(**swaps):
                model = _build(label, size, scenes)
                madds = madds or kseg.bench.profile(model, (*size, 3))["madds"]
                paths[key] = export.tflite(
                    model,
                    os.path.join(folder, f"{label}_{len(paths)}.tflite"),
                    input_shape=(*size, 3),
                )
            keras.backend.clear_session()
        ms = _interleaved_ms(paths, image)
        results[label] = {
            "gmadds": madds / 1e9,
            "ms": ms,
            "ms_per_gmadd": {key: round(value / (madds / 1e9), 2) for key, value in ms.items()},
            "not_in_xnnpack": {
                key: kseg.bench.tflite_undelegated_ops(p)[0] for key, p in paths.items()
            },
        }
        print(label, json.dumps(results[label]), flush=True)
    return results


def edges(labels, size, folder):
    scenes, _ = synthetic_numpy(4, image_size=size, seed=2, num_classes=6)
    calibration = synthetic_numpy(8, image_size=size, seed=0, num_classes=6)[0].astype("float32")
    held_out = synthetic_numpy(4, image_size=size, seed=1, num_classes=6)[0].astype("float32")
    image = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype("float32")
    variants = {
        "float32": {},
        "int8, float edges": {"quantize": "int8"},
        "int8, uint8 edges": {"quantize": "int8", "io_dtype": "uint8"},
        "int8, int8 edges": {"quantize": "int8", "io_dtype": "int8"},
    }
    results = {}
    for label in labels:
        model = _build(label, size, scenes)
        paths = {}
        for key, options in variants.items():
            if "quantize" in options:
                options = {**options, "representative_data": calibration}
            paths[key] = export.tflite(
                model,
                os.path.join(folder, f"{label}_{len(paths)}.tflite"),
                input_shape=(*size, 3),
                **options,
            )
        ms = _interleaved_ms(paths, image)
        reference = export.run_tflite(paths["float32"], held_out).argmax(-1)
        results[label] = {
            "ms": ms,
            "float32 / int8": {
                k: round(ms["float32"] / v, 2) for k, v in ms.items() if k != "float32"
            },
            "agreement_with_float32": {
                key: float(np.mean(export.run_tflite(p, held_out).argmax(-1) == reference))
                for key, p in paths.items()
                if key != "float32"
            },
            "not_in_xnnpack": {
                key: kseg.bench.tflite_undelegated_ops(p)[0] for key, p in paths.items()
            },
        }
        print(label, json.dumps(results[label]), flush=True)
        keras.backend.clear_session()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=("ablate", "edges"))
    parser.add_argument("--models", required=True, help="row labels of benchmarks/realtime.py")
    parser.add_argument("--size", default="512x1024", help="HxW")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    labels = args.models.split(",")
    unknown = [label for label in labels if label not in ROWS]
    if unknown:
        parser.error(f"unknown --models {unknown}; known: {sorted(ROWS)}")
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as folder:
        results = (ablate if args.study == "ablate" else edges)(labels, size, folder)
    print("load average", os.getloadavg())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

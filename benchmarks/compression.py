"""Compression side by side: quantized, magnitude-pruned and channel-pruned U-Net and SegNet.

For each model (a small U-Net and SegNet), trained on ``kseg.data.load("synthetic")`` scenes,
one run measures every variant's held-out mIoU (computed from the TFLite model's outputs),
TFLite size (raw and gzip -9), float32 MAdds and TFLite latency (XNNPACK, ``--threads``,
median of ``--runs`` invocations at ``--latency-size``, interleaved over ``--rounds`` rounds so
that a machine slowing down affects all variants alike):

- ``float32`` / ``float16`` / ``dynamic`` / ``int8`` (full integer, calibrated on training
  scenes): post-training quantization of the trained model, no fine-tuning;
- ``float32 + FT``: the trained model fine-tuned for the same budget as the pruned ones;
- ``magnitude 50 %`` / ``80 %``: ``kseg.compress.prune`` (polynomial schedule reaching the
  target at 2/3 of the fine-tuning steps; ``--prune-skip`` layers left dense) + fine-tuning,
  then ``strip``;
- ``channels 50 %``: ``kseg.compress.prune_channels(ratio=0.5)`` + the same fine-tuning.

    flock /tmp/kseg-heavy.lock python benchmarks/compression.py --output compression.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import tempfile
import time

import numpy as np

import kseg
from kseg import compress, engine, export

MODELS = {
    "unet": ("unet", {"base_filters": 8, "depth": 4}),
    "segnet": ("segnet", {"stage_filters": (8, 16, 32, 64, 64)}),
}


def _scenes(split, count, size, seed):
    dataset = kseg.data.load(
        "synthetic", split=split, num_images=count, image_size=(size, size), seed=seed
    )
    return next(dataset.batch(count).as_numpy_iterator())


def _fit(model, images, labels, epochs, learning_rate, batch_size, callbacks=()):
    steps = epochs * (len(images) // batch_size)
    engine.compile_model(
        model,
        len(kseg.data.SYNTHETIC_CLASSES),
        learning_rate=learning_rate,
        total_steps=steps,
        metrics=[],
        warmup_steps=steps // 30,
    )
    model.fit(
        images,
        labels,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        callbacks=list(callbacks),
    )
    return steps


def _miou(logits, labels, num_classes):
    cm = kseg.metrics.confusion_matrix(labels, logits.argmax(-1), num_classes)
    return float(kseg.metrics.scores(np.asarray(cm))["mean_iou"])


def _sizes(path):
    data = open(path, "rb").read()
    return len(data), len(gzip.compress(data, compresslevel=9))


def _median_ms(interpreter, runs):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        samples.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(samples))


def _copy(model):
    # An independent copy (same class, config and weights) through a .keras round trip.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        return kseg.load_model(path, compile=False)


def measure(name, args, data, folder):
    builder, options = MODELS[name]
    (train_x, train_y), (val_x, val_y) = data
    num_classes = len(kseg.data.SYNTHETIC_CLASSES)
    import keras

    keras.utils.set_random_seed(args.seed)
    model = kseg.models.create(
        builder, num_classes=num_classes, input_shape=(None, None, 3), **options
    )
    started = time.time()
    steps = _fit(model, train_x, train_y, args.epochs, args.lr, args.batch_size)
    print(f"{name}: trained {steps} steps in {time.time() - started:.0f} s", flush=True)
    ft_epochs, ft_lr = args.finetune_epochs, args.finetune_lr
    ft_steps = ft_epochs * (len(train_x) // args.batch_size)

    variants = {}  # label -> (keras model, quantize, notes)
    variants["float32"] = (model, None, {})
    variants["float16"] = (model, "float16", {})
    variants["dynamic"] = (model, "dynamic", {})
    variants["int8"] = (model, "int8", {})

    tuned = _copy(model)
    _fit(tuned, train_x, train_y, ft_epochs, ft_lr, args.batch_size)
    variants["float32 + FT"] = (tuned, None, {})

    for sparsity in (0.5, 0.8):
        pruned = _copy(model)
        end = max(1, ft_steps * 2 // 3)
        frequency = max(1, end // 20)
        _, callback = compress.prune(
            pruned, sparsity, end_step=end, frequency=frequency, skip=tuple(args.prune_skip)
        )
        _fit(pruned, train_x, train_y, ft_epochs, ft_lr, args.batch_size, [callback])
        compress.strip(pruned)
        reached = compress.sparsity_report(pruned)["total"]["sparsity"]
        variants[f"magnitude {sparsity:.0%}"] = (pruned, None, {"sparsity": reached})

    narrow, report = compress.prune_channels(model, args.channel_ratio)
    _fit(narrow, train_x, train_y, ft_epochs, ft_lr, args.batch_size)
    variants[f"channels {args.channel_ratio:.0%}"] = (
        narrow,
        None,
        {"left": report["left"], "narrowed_layers": len(report["layers"])},
    )
    print(f"{name}: fine-tuned 5 variants ({ft_steps} steps each)", flush=True)

    size = args.image_size
    latency_shape = (args.latency_size, args.latency_size, 3)
    rows, interpreters = {}, {}
    for label, (keras_model, quantize, notes) in variants.items():
        calibration = train_x[:64] if quantize == "int8" else None
        path = os.path.join(folder, f"{name}_{label.replace(' ', '_').replace('%', '')}.tflite")
        export.tflite(
            keras_model,
            path,
            quantize=quantize,
            representative_data=calibration,
            input_shape=(size, size, 3),
        )
        logits = export.run_tflite(path, val_x, num_threads=args.threads)
        raw, zipped = _sizes(path)
        timing_path = path.replace(".tflite", "_timing.tflite")
        export.tflite(
            keras_model,
            timing_path,
            quantize=quantize,
            representative_data=calibration,
            input_shape=latency_shape,
        )
        interpreter = export.tflite_interpreter(timing_path, num_threads=args.threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        image = np.random.default_rng(0).uniform(0, 255, (1, *latency_shape))
        interpreter.set_tensor(detail["index"], image.astype(detail["dtype"]))
        for _ in range(3):
            interpreter.invoke()
        interpreters[label] = interpreter
        rows[label] = {
            "miou": _miou(logits, val_y, num_classes),
            "bytes": raw,
            "gzip_bytes": zipped,
            "madds": kseg.bench.profile(keras_model, latency_shape)["madds"],
            "params": int(keras_model.count_params()),
            "latency_samples": [],
            **notes,
        }
    for _ in range(args.rounds):
        for label, interpreter in interpreters.items():
            rows[label]["latency_samples"].append(_median_ms(interpreter, args.runs))
    for row in rows.values():
        row["latency_ms"] = float(np.median(row.pop("latency_samples")))
    return {"model": name, "train_steps": steps, "finetune_steps": ft_steps, "rows": rows}


def format_table(result):
    rows = result["rows"]
    base = rows["float32"]
    lines = [
        f"**{result['model']}** (trained {result['train_steps']} steps; fine-tuning "
        f"{result['finetune_steps']} steps)",
        "",
        "| variant | mIoU | Δ mIoU (pts) | params | MAdds | MAdds vs f32 | TFLite KiB | gzip KiB "
        "| gzip vs f32 raw | gzip vs f32 gzip | latency ms | latency vs f32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        extra = f" (sparsity {row['sparsity']:.4f})" if "sparsity" in row else ""
        lines.append(
            f"| {label}{extra} | {row['miou']:.4f} | {100 * (row['miou'] - base['miou']):+.2f} | "
            f"{row['params']:,} | {row['madds'] / 1e6:,.1f} M | "
            f"{row['madds'] / base['madds']:.2f}× | {row['bytes'] / 1024:,.1f} | "
            f"{row['gzip_bytes'] / 1024:,.1f} | {base['bytes'] / row['gzip_bytes']:.2f}× | "
            f"{base['gzip_bytes'] / row['gzip_bytes']:.2f}× | {row['latency_ms']:.2f} | "
            f"{row['latency_ms'] / base['latency_ms']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="unet,segnet")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-scenes", type=int, default=1600)
    parser.add_argument("--val-scenes", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channel-ratio", type=float, default=0.5)
    parser.add_argument(
        "--prune-skip",
        action="append",
        default=[],
        help="layer left dense by magnitude pruning (repeatable), e.g. logits",
    )
    parser.add_argument("--latency-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="JSON file for the results")
    args = parser.parse_args(argv)

    size = args.image_size
    data = (
        _scenes("train", args.train_scenes, size, args.seed),
        _scenes("val", args.val_scenes, size, args.seed),
    )
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            results.append(measure(name, args, data, folder))
            print(format_table(results[-1]), flush=True)
            print(flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"machine: {machine}; threads {args.threads}; latency at {args.latency_size}²")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

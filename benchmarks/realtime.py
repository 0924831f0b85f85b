"""Real-time models against the mobile DeepLabs: size, MAdds, Keras/TFLite latency, accuracy.

Measures every registered real-time model and the mobile DeepLabs (v3 on MobileNetV2 without
and with ASPP and at width 0.5, v3+ on MobileNetV2) side by side in one run, with
``kseg.bench.profile(latency=True)``: params, MAdds, Keras ``predict_on_batch`` latency,
TFLite float32 and full-integer int8 latency (XNNPACK, ``--threads``), the int8/float32
argmax agreement on held-out synthetic scenes, the float32 milliseconds per GMAdd (and its ratio
to the median of the rows) and the ops XNNPACK leaves to TFLite's own kernels.
Names not registered yet are skipped (and listed).

``--train`` instead trains each model on ``kseg.data.synthetic`` scenes for the same CPU
budget (``--budget-seconds`` of process CPU time) and reports held-out mIoU beside MAdds,
with an accuracy–speed plot (PNG).

    flock /tmp/kseg-heavy.lock python benchmarks/realtime.py --output realtime.md
    flock /tmp/kseg-heavy.lock python benchmarks/realtime.py --train --budget-seconds 120 \\
        --plot realtime.png --output realtime_train.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

import kseg

# (row label, registered model name, constructor arguments)
REALTIME = [
    ("enet", "enet", {}),
    ("espnet", "espnet", {}),
    ("espnetv2", "espnetv2", {}),
    ("erfnet", "erfnet", {}),
    ("bisenetv1", "bisenetv1", {}),
    ("bisenetv2", "bisenetv2", {}),
    ("fastscnn", "fastscnn", {}),
    ("icnet", "icnet", {}),
    ("lraspp_large", "lraspp", {"backbone": "mobilenetv3_large"}),
    ("lraspp_small", "lraspp", {"backbone": "mobilenetv3_small"}),
]
MOBILE_DEEPLABS = [
    ("deeplabv3_mnv2", "deeplabv3", {"backbone": "mobilenetv2", "aspp": False}),
    ("deeplabv3_mnv2_aspp", "deeplabv3", {"backbone": "mobilenetv2", "aspp": True}),
    (
        "deeplabv3_mnv2_w0.5",
        "deeplabv3",
        {"backbone": "mobilenetv2", "aspp": False, "backbone_options": {"alpha": 0.5}},
    ),
    ("deeplabv3plus_mnv2", "deeplabv3plus", {"backbone": "mobilenetv2"}),
]


def _size(text):
    height, width = (int(d) for d in text.lower().split("x"))
    return height, width


def select(labels=None):
    """The rows to run: (label, name, kwargs) of registered models; and the skipped labels."""
    rows, skipped = [], []
    for label, name, kwargs in REALTIME + MOBILE_DEEPLABS:
        if labels and label not in labels:
            continue
        (rows if name in kseg.models.MODELS else skipped).append((label, name, kwargs))
    return rows, [label for label, _, _ in skipped]


def measure(rows, sizes, num_classes, threads, runs, warmup):
    import keras

    results = []
    for height, width in sizes:
        for label, name, kwargs in rows:
            model = kseg.models.create(
                name, num_classes=num_classes, input_shape=(height, width, 3), **kwargs
            )
            info = kseg.bench.profile(
                model,
                (height, width, 3),
                latency=True,
                threads=threads,
                runs=runs,
                warmup=warmup,
            )
            results.append({"name": label, **info})
            fp32 = info["latency_ms"].get("tflite_float32")
            print(
                f"{label} {height}x{width}: {info['madds'] / 1e9:.2f} GMAdds, "
                f"latency {json.dumps(info['latency_ms'])}",
                flush=True,
            )
            results[-1]["fp32_ms_per_gmadd"] = (
                None if fp32 is None else fp32 / max(info["madds"] / 1e9, 1e-9)
            )
            del model
            keras.backend.clear_session()
    return results


def _ops_text(counts):
    if not counts:
        return "-"
    return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def latency_table(results):
    """The latency table plus fp32 ms per GMAdd, its ratio to the median of the rows of the same
    input size (the issue's "no model more than 2x the zoo's median") and the ops XNNPACK does
    not run in each mode (``kseg.bench.tflite_undelegated_ops``)."""
    table = kseg.bench.format_latency_rows(results).splitlines()
    table[0] += " fp32 ms / GMAdd | ÷ median | not in XNNPACK, fp32 | not in XNNPACK, int8 |"
    table[1] += "---:|---:|---|---|"
    medians = {}
    for row in results:
        value = row.get("fp32_ms_per_gmadd")
        if value is not None:
            medians.setdefault(tuple(row["input_shape"]), []).append(value)
    medians = {shape: float(np.median(values)) for shape, values in medians.items()}
    for i, row in enumerate(results):
        value = row.get("fp32_ms_per_gmadd")
        ratio = None if value is None else value / medians[tuple(row["input_shape"])]
        undelegated = row.get("tflite_undelegated", {})
        table[i + 2] += (
            f" {'n/a' if value is None else f'{value:.2f}'} |"
            f" {'n/a' if ratio is None else f'{ratio:.2f}'} |"
            f" {_ops_text(undelegated.get('float32'))} | {_ops_text(undelegated.get('int8'))} |"
        )
    return "\n".join(table)


def _miou(predictions, labels, num_classes):
    ious = []
    for c in range(num_classes):
        p, t = predictions == c, labels == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious))


def train(rows, size, num_classes, budget_seconds, batch_size, num_train, num_val):
    """Trains each model for ``budget_seconds`` of process CPU time; returns held-out mIoU."""
    import keras

    from kseg.data import synthetic_numpy

    images, labels = synthetic_numpy(num_train, image_size=size, seed=0, num_classes=num_classes)
    val_images, val_labels = synthetic_numpy(
        num_val, image_size=size, seed=1, num_classes=num_classes
    )
    results = []
    for label, name, kwargs in rows:
        keras.utils.set_random_seed(0)
        model = kseg.models.create(name, num_classes=num_classes, input_shape=(*size, 3), **kwargs)
        outputs = len(model.outputs)
        loss = kseg.losses.CrossEntropy(ignore_index=255)
        model.compile(
            keras.optimizers.Adam(1e-3),
            loss=[loss] * outputs if outputs > 1 else loss,
            loss_weights=getattr(model, "loss_weights_for_outputs", None),
        )
        rng = np.random.default_rng(0)
        start, steps = time.process_time(), 0
        while time.process_time() - start < budget_seconds:
            index = rng.choice(num_train, batch_size, replace=False)
            y = labels[index]
            model.train_on_batch(images[index], [y] * outputs if outputs > 1 else y)
            steps += 1
        predict = model.inference_model() if hasattr(model, "inference_model") else model
        logits = predict.predict(val_images, batch_size=batch_size, verbose=0)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        miou = _miou(logits.argmax(-1), val_labels, num_classes)
        info = kseg.bench.profile(model, (*size, 3))
        results.append(
            {
                "name": label,
                "steps": steps,
                "miou": miou,
                "params": info["params"],
                "madds": info["madds"],
            }
        )
        print(f"{label}: {steps} steps, held-out mIoU {miou:.3f}", flush=True)
        del model, predict
        keras.backend.clear_session()
    return results


def train_table(results, size, budget_seconds):
    lines = [
        f"Trained {budget_seconds:g} CPU-seconds each on synthetic scenes {size[0]}x{size[1]}",
        "",
        "| model | params (M) | MAdds (B) | steps | held-out mIoU |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in results:
        lines.append(
            f"| {row['name']} | {row['params'] / 1e6:.2f} | {row['madds'] / 1e9:.3f} | "
            f"{row['steps']} | {row['miou']:.3f} |"
        )
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for row in results:
        axes.scatter(row["madds"] / 1e9, row["miou"])
        axes.annotate(row["name"], (row["madds"] / 1e9, row["miou"]), fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("GMAdds per image")
    axes.set_ylabel("held-out mIoU (synthetic scenes)")
    axes.set_title("accuracy vs cost, same CPU budget")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated row labels (default: all)")
    parser.add_argument("--sizes", default="512x1024,360x480", help="HxW,HxW,...")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", help="write the markdown table here")
    parser.add_argument("--train", action="store_true", help="accuracy under a CPU budget")
    parser.add_argument("--budget-seconds", type=float, default=120.0)
    parser.add_argument("--train-size", default="128x128", help="HxW of the training scenes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-train", type=int, default=256)
    parser.add_argument("--num-val", type=int, default=32)
    parser.add_argument("--plot", default="realtime_accuracy_speed.png", help="PNG (--train)")
    args = parser.parse_args(argv)

    rows, skipped = select(args.models.split(",") if args.models else None)
    header = (
        f"machine: {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} CPUs; TFLite threads {args.threads}"
    )
    if skipped:
        print(f"not registered (skipped): {', '.join(skipped)}")
    if args.train:
        size = _size(args.train_size)
        num_classes = min(args.num_classes, 6)  # the synthetic scenes have 2..6 classes
        results = train(
            rows,
            size,
            num_classes,
            args.budget_seconds,
            args.batch_size,
            args.num_train,
            args.num_val,
        )
        text = train_table(results, size, args.budget_seconds)
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    else:
        sizes = [_size(s) for s in args.sizes.split(",")]
        results = measure(rows, sizes, args.num_classes, args.threads, args.runs, args.warmup)
        text = latency_table(results)
    text = f"{header}\n\n{text}\n"
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

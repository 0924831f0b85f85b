"""Real-time models against the mobile DeepLabs: size, MAdds, Keras/TFLite latency, accuracy.

Measures every registered real-time model and the mobile DeepLabs (v3 on MobileNetV2 without
and with ASPP and at width 0.5, v3+ on MobileNetV2) side by side in one run, with
``kseg.bench.profile(latency=True)``: params, MAdds, Keras ``predict_on_batch`` latency,
TFLite float32 and full-integer int8 latency (XNNPACK, ``--threads``), the int8/float32
argmax agreement on held-out synthetic scenes, the float32 milliseconds per GMAdd (and its ratio
to the median of the rows) and the ops XNNPACK leaves to TFLite's own kernels.
Names not registered yet are skipped (and listed). The models are untrained; their
batch-normalisation statistics are re-estimated on synthetic scenes before timing
(``--statistics-batches``), so that int8 scales are those of a network with normalised
activations (see ``measure``).

Under the table it prints the issue's three speed checks (``acceptance``).

``--train`` instead trains each model on ``kseg.data.synthetic`` scenes for the same CPU
budget (``--budget-seconds`` of process CPU time, the tracing step excluded) and reports
held-out mIoU beside params, MAdds and TFLite latencies taken from a speed run's ``--json``
(``--latency-json``), with an accuracy–speed plot (PNG). ``--precise-bn N`` re-estimates the
batch-normalisation statistics on N training batches before the evaluation.

    flock /tmp/kseg-heavy.lock python benchmarks/realtime.py --json speed.json --output speed.md
    flock /tmp/kseg-heavy.lock python benchmarks/realtime.py --train --budget-seconds 60 \\
        --latency-json speed.json --plot realtime.png --output realtime_train.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

import kseg
from kseg.compress import recalibrate_batch_norm

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
    # no hard-swish, squeeze-excite or 5x5 kernels: XNNPACK runs every int8 op
    ("lraspp_large_min", "lraspp", {"backbone": "mobilenetv3_large_minimalistic"}),
    ("lraspp_small_min", "lraspp", {"backbone": "mobilenetv3_small_minimalistic"}),
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


def measure(rows, sizes, num_classes, threads, runs, warmup, statistics_batches=2, int8_io="uint8"):
    """Times every row at every size (``kseg.bench.profile(latency=True)``).

    Before timing, each untrained model's batch-normalisation statistics are re-estimated on
    ``statistics_batches`` batches of 2 synthetic scenes (weights unchanged; 0 skips it).
    With the initial statistics (mean 0, variance 1) activations shrink layer after layer
    (1e-8 after Fast-SCNN's bottlenecks), and two branches that are added can be 1e4 apart in
    scale: XNNPACK then refuses the int8 ADD (each input's scale must be 1/1024..256 of the
    output's), which a trained network does not meet. The float32 graph is the same either way.
    """
    import keras

    from kseg.data import synthetic_numpy

    results = []
    for height, width in sizes:
        scenes = None
        if statistics_batches:
            scenes, _ = synthetic_numpy(
                2 * statistics_batches, image_size=(height, width), seed=2, num_classes=6
            )
        for label, name, kwargs in rows:
            keras.utils.set_random_seed(0)
            model = kseg.models.create(
                name, num_classes=num_classes, input_shape=(height, width, 3), **kwargs
            )
            if scenes is not None:
                recalibrate_batch_norm(model, scenes, 2, statistics_batches, seed=1)
            info = kseg.bench.profile(
                model,
                (height, width, 3),
                latency=True,
                threads=threads,
                runs=runs,
                warmup=warmup,
                int8_io=int8_io,
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
            traffic = info.get("tflite_activation_bytes", {}).get("float32")
            results[-1]["fp32_ms_per_traffic_gb"] = (
                None if fp32 is None or not traffic else fp32 / (traffic / 1e9)
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
    table[0] += (
        " fp32 ms / GMAdd | ÷ median | fp32 activation traffic (MB) | bytes / MAdd |"
        " fp32 ms / GB traffic | ÷ median | not in XNNPACK, fp32 | not in XNNPACK, int8 |"
    )
    table[1] += "---:|---:|---:|---:|---:|---:|---|---|"
    medians = {
        key: _medians(results, key) for key in ("fp32_ms_per_gmadd", "fp32_ms_per_traffic_gb")
    }

    def value_and_ratio(row, key):
        value = row.get(key)
        if value is None:
            return " n/a | n/a |"
        return f" {value:.2f} | {value / medians[key][tuple(row['input_shape'])]:.2f} |"

    for i, row in enumerate(results):
        undelegated = row.get("tflite_undelegated", {})
        traffic = row.get("tflite_activation_bytes", {}).get("float32")
        table[i + 2] += (
            value_and_ratio(row, "fp32_ms_per_gmadd")
            + (
                f" {traffic / 1e6:.0f} | {traffic / max(row['madds'], 1):.3f} |"
                if traffic
                else " n/a | n/a |"
            )
            + value_and_ratio(row, "fp32_ms_per_traffic_gb")
            + f" {_ops_text(undelegated.get('float32'))} | {_ops_text(undelegated.get('int8'))} |"
        )
    return "\n".join(table)


def _medians(results, key):
    """``{input_shape: median of row[key]}`` over the rows that have it."""
    values = {}
    for row in results:
        if row.get(key) is not None:
            values.setdefault(tuple(row["input_shape"]), []).append(row[key])
    return {shape: float(np.median(v)) for shape, v in values.items()}


def acceptance(results, reference="deeplabv3_mnv2"):
    """The issue's three speed checks, per input size, as Markdown lines: the fastest real-time
    model in int8 against ``reference`` in float32 (>= 5x); int8 against float32 for each model
    (>= 1.5x where XNNPACK runs every int8 op); float32 ms per GMAdd against the median (<= 2x).
    """
    realtime = {label for label, _, _ in REALTIME}
    lines = []
    for shape in dict.fromkeys(tuple(row["input_shape"]) for row in results):
        rows = [row for row in results if tuple(row["input_shape"]) == shape]
        size = f"{shape[0]}x{shape[1]}"
        ms = {row["name"]: row.get("latency_ms", {}) for row in rows}
        int8 = {
            name: value["tflite_int8"]
            for name, value in ms.items()
            if name in realtime and value.get("tflite_int8") is not None
        }
        base = ms.get(reference, {}).get("tflite_float32")
        if int8 and base is not None:
            fastest = min(int8, key=int8.get)
            ratio = base / int8[fastest]
            meeting = [name for name in sorted(int8, key=int8.get) if base / int8[name] >= 5]
            lines.append(
                f"- {size}: fastest real-time int8 is {fastest} ({int8[fastest]:.1f} ms), "
                f"{ratio:.1f}x faster than {reference} float32 ({base:.1f} ms): "
                + (
                    f"pass (>= 5x), met by {fastest}"
                    + (f"; also >= 5x: {', '.join(meeting[1:])}" if len(meeting) > 1 else "")
                    if ratio >= 5
                    else "FAIL (>= 5x), met by none"
                )
            )
        for row in rows:
            fp32, q = row["latency_ms"].get("tflite_float32"), row["latency_ms"].get("tflite_int8")
            if fp32 is None or q is None:
                continue
            left = row.get("tflite_undelegated", {}).get("int8")
            speedup = fp32 / q
            verdict = (
                ("pass" if speedup >= 1.5 else "FAIL") + " (>= 1.5x)"
                if not left
                else "not checked: XNNPACK leaves " + _ops_text(left) + " in int8"
            )
            lines.append(f"- {size} {row['name']}: fp32 / int8 = {speedup:.2f}x, {verdict}")
        per = [row.get("fp32_ms_per_gmadd") for row in rows]
        per = [value for value in per if value is not None]
        if per:
            median = float(np.median(per))
            slow = [
                row
                for row in rows
                if row.get("fp32_ms_per_gmadd") is not None
                and row["fp32_ms_per_gmadd"] > 2 * median
            ]
            lines.append(
                f"- {size}: median fp32 {median:.2f} ms / GMAdd; above 2x the median: "
                + (
                    ", ".join(
                        f"{row['name']} ({row['fp32_ms_per_gmadd'] / median:.2f}x)" for row in slow
                    )
                    or "none"
                )
            )
            traffic = _medians(rows, "fp32_ms_per_traffic_gb").get(shape)
            if slow and traffic:
                # A model slow per MAdd but not per byte moved is memory bound by design.
                per_byte = [
                    f"{row['name']} {row['fp32_ms_per_traffic_gb'] / traffic:.2f}x"
                    for row in slow
                    if row.get("fp32_ms_per_traffic_gb") is not None
                ]
                lines.append(
                    f"- {size}: per GB of activation traffic (median {traffic:.2f} ms / GB) "
                    "the same models run at " + ", ".join(per_byte) + " the median"
                )
    return "\n".join(lines)


def _miou(predictions, labels, num_classes):
    ious = []
    for c in range(num_classes):
        p, t = predictions == c, labels == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious))


def train(
    rows,
    size,
    num_classes,
    budget_seconds,
    batch_size,
    num_train,
    num_val,
    count_madds=True,
    precise_bn=0,
):
    """Trains each model for ``budget_seconds`` of process CPU time; returns held-out mIoU."""
    import keras

    from kseg.data import synthetic_numpy

    images, labels = synthetic_numpy(num_train, image_size=size, seed=0, num_classes=num_classes)
    # Other scenes than the training ones (another seed of the generator).
    val_images, val_labels = synthetic_numpy(
        num_val, image_size=size, seed=1, num_classes=num_classes
    )
    results = []
    for label, name, kwargs in rows:
        try:
            keras.utils.set_random_seed(0)
            model = kseg.models.create(
                name, num_classes=num_classes, input_shape=(*size, 3), **kwargs
            )
            outputs = len(model.outputs)
            loss = kseg.losses.CrossEntropy(ignore_index=255)
            model.compile(
                keras.optimizers.Adam(1e-3),
                loss=[loss] * outputs if outputs > 1 else loss,
                loss_weights=getattr(model, "loss_weights_for_outputs", None),
            )
            rng = np.random.default_rng(0)
            # The budget is this process's CPU time (all threads), so other jobs on the machine
            # change the wall time of a run but not how much training each model gets.
            # The first step traces and compiles the train function (tens of CPU-seconds for the
            # deeper graphs); it is run before the clock starts, so the budget is training only.
            index = rng.choice(num_train, batch_size, replace=False)
            y = labels[index]
            model.train_on_batch(images[index], [y] * outputs if outputs > 1 else y)
            start, wall, steps = time.process_time(), time.perf_counter(), 1
            while time.process_time() - start < budget_seconds:
                index = rng.choice(num_train, batch_size, replace=False)
                y = labels[index]
                model.train_on_batch(images[index], [y] * outputs if outputs > 1 else y)
                steps += 1
            cpu, wall = time.process_time() - start, time.perf_counter() - wall
            if precise_bn:
                recalibrate_batch_norm(model, images, batch_size, precise_bn, seed=1)
            predict = model.inference_model() if hasattr(model, "inference_model") else model
            logits = predict.predict(val_images, batch_size=batch_size, verbose=0)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            miou = _miou(logits.argmax(-1), val_labels, num_classes)
            results.append(
                {
                    "name": label,
                    "steps": steps,
                    "cpu_seconds": cpu,
                    "wall_seconds": wall,
                    "miou": miou,
                    # At the training size (num_classes of the scenes); the table shows the
                    # speed run's figures instead where it has them (join_latency).
                    "train_params": predict.count_params(),
                    "train_madds": (
                        kseg.bench.profile(predict, (*size, 3))["madds"] if count_madds else None
                    ),
                }
            )
            print(f"{label}: {steps} steps, {cpu:.0f} CPU-s, held-out mIoU {miou:.3f}", flush=True)
            del model, predict
            keras.backend.clear_session()
        except Exception as error:  # one model failing must not end the whole table
            print(f"{label}: failed: {type(error).__name__}: {error}", flush=True)
            keras.backend.clear_session()
    return results


def join_latency(results, latency_rows, input_shape):
    """Adds params, MAdds and TFLite latencies of the speed run (``--json`` of a run without
    ``--train``) at ``input_shape`` to the training rows, by row label."""
    by_name = {row["name"]: row for row in latency_rows if tuple(row["input_shape"]) == input_shape}
    for row in results:
        speed = by_name.get(row["name"])
        if speed is not None:
            latency = speed.get("latency_ms", {})
            row.update(
                params=speed["params"],
                madds=speed["madds"],
                fp32_ms=latency.get("tflite_float32"),
                int8_ms=latency.get("tflite_int8"),
            )
    return results


def train_table(results, size, budget_seconds, speed_shape=None):
    speed = "x".join(str(d) for d in speed_shape[:2]) if speed_shape else None
    lines = [
        f"Trained {budget_seconds:g} CPU-seconds each (`time.process_time()`) on synthetic "
        f"scenes {size[0]}x{size[1]}; mIoU on other scenes (seed 1)."
        + (
            f" Params, MAdds and TFLite ms: the speed run, 19 classes, {speed}."
            if speed
            else " Params and MAdds at the training size."
        ),
        "",
        "| model | params (M) | MAdds (B) | TFLite fp32 ms | TFLite int8 ms | steps | CPU-s "
        "| held-out mIoU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(value):
        return "n/a" if value is None else f"{value:.1f}"

    for row in results:
        params, madds = row.get("params"), row.get("madds")
        lines.append(
            f"| {row['name']} | {'n/a' if params is None else f'{params / 1e6:.2f}'} | "
            f"{'n/a' if madds is None else f'{madds / 1e9:.2f}'} | "
            f"{ms(row.get('fp32_ms'))} | {ms(row.get('int8_ms'))} | {row['steps']} | "
            f"{row['cpu_seconds']:.0f} | {row['miou']:.3f} |"
        )
    return "\n".join(lines)


def plot(results, path, title=""):
    """Held-out mIoU against MAdds and against the faster TFLite mode's latency (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mobile = {label for label, _, _ in MOBILE_DEEPLABS}
    rows = [row for row in results if row.get("madds") is not None]
    timed = [row for row in rows if row.get("fp32_ms") is not None]
    panels = 2 if timed else 1
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    for axis, key, xlabel in (
        (axes[0, 0], "madds", "GMAdds per image"),
        (axes[0, -1] if timed else None, "ms", "TFLite ms (faster of fp32 / int8)"),
    ):
        if axis is None:
            continue
        for row in rows if key == "madds" else timed:
            x = (
                row["madds"] / 1e9
                if key == "madds"
                else min(v for v in (row["fp32_ms"], row.get("int8_ms")) if v is not None)
            )
            colour = "tab:orange" if row["name"] in mobile else "tab:blue"
            axis.scatter(x, row["miou"], color=colour, s=18)
            axis.annotate(row["name"], (x, row["miou"]), fontsize=6)
        axis.set_xscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("held-out mIoU (synthetic)")
    figure.suptitle(
        title or "same CPU budget; blue: real-time, orange: mobile DeepLabs", fontsize=8
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated row labels (default: all)")
    parser.add_argument("--sizes", default="512x1024,360x480", help="HxW,HxW,...")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--statistics-batches",
        type=int,
        default=2,
        help="speed run: re-estimate batch-norm statistics on this many batches of 2 synthetic "
        "scenes before timing (0: the untrained initial statistics)",
    )
    parser.add_argument(
        "--int8-io",
        default="int8",
        choices=("int8", "uint8", "float32"),
        help="input/output type of the int8 models (int8: pixel - 128 as the input's own "
        "quantisation, the whole graph in XNNPACK; uint8: MediaPipe's input, converted by ops "
        "outside XNNPACK; float32: quantised inside, float edges)",
    )
    parser.add_argument("--output", help="write the markdown table here")
    parser.add_argument("--json", help="write the raw rows (JSON) here")
    parser.add_argument("--train", action="store_true", help="accuracy under a CPU budget")
    parser.add_argument("--budget-seconds", type=float, default=120.0)
    parser.add_argument("--train-size", default="128x128", help="HxW of the training scenes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-train", type=int, default=256)
    parser.add_argument("--num-val", type=int, default=32)
    parser.add_argument("--plot", default="realtime_accuracy_speed.png", help="PNG (--train)")
    parser.add_argument(
        "--precise-bn",
        type=int,
        default=0,
        help="--train: re-estimate BatchNormalization statistics on this many batches first",
    )
    parser.add_argument(
        "--latency-json",
        help="--train: the --json of a speed run, for params, MAdds and TFLite ms beside mIoU",
    )
    parser.add_argument(
        "--latency-size", default="512x1024", help="--train: which size of --latency-json"
    )
    args = parser.parse_args(argv)

    rows, skipped = select(args.models.split(",") if args.models else None)
    header = (
        f"machine: {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} CPUs; TFLite threads {args.threads}"
        + (f"; int8 models take and return {args.int8_io}" if not args.train else "")
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
            count_madds=not args.latency_json,
            precise_bn=args.precise_bn,
        )
        speed_shape = None
        if args.latency_json:
            with open(args.latency_json) as f:
                speed_shape = (*_size(args.latency_size), 3)
                join_latency(results, json.load(f)["rows"], speed_shape)
        else:
            for row in results:
                row.update(params=row["train_params"], madds=row["train_madds"])
        text = train_table(results, size, args.budget_seconds, speed_shape)
        if args.precise_bn:
            text += (
                f"\n\nBatchNormalization statistics re-estimated on {args.precise_bn} training "
                "batches after the budget (not counted in it)."
            )
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    else:
        sizes = [_size(s) for s in args.sizes.split(",")]
        results = measure(
            rows,
            sizes,
            args.num_classes,
            args.threads,
            args.runs,
            args.warmup,
            args.statistics_batches,
            None if args.int8_io == "float32" else args.int8_io,
        )
        text = latency_table(results) + "\n\n" + acceptance(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": header, "rows": results}, f, indent=1, default=str)
    text = f"{header}\n\n{text}\n"
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

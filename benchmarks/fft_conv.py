"""FFT convolution (kseg_ops.fft_conv2d) against tf.nn.conv2d, measured in the same run.

For every size the two ops (and FFTConv2D with algorithm="auto") are timed interleaved, several
repeats each, and the median is kept, so load from other processes hits both sides alike.
Prints a markdown table (times in ms, speed-up = conv2d / fft) and the crossover kernel size.

    python benchmarks/fft_conv.py                     # full grid (takes a while)
    python benchmarks/fft_conv.py --sizes 256 --channels 32 --kernels 15 31
    python benchmarks/fft_conv.py --calibrate         # also fit the "auto" cost model
    python benchmarks/fft_conv.py --json results.json
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/fft_conv.py --passes fwd+bwd --threads 1

TensorFlow 2.21's oneDNN Conv2DBackpropFilter is pathologically slow for kernels of 13x13 and
up (80 s for 2x128x128x32 at k = 15 against 0.05 s at k = 11); with TF_ENABLE_ONEDNN_OPTS=0
tf.nn.conv2d runs TensorFlow's own (Eigen) kernels, the fair peer for forward+backward there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import tensorflow as tf

import kseg_ops
from kseg.layers.fft_conv import FFTConv2D
from kseg_ops import fft_conv as fft_model
from kseg_ops.fft_conv import choose_algorithm, fft_plan


def _time(fn, repeats):
    fn()  # warm-up (plans, allocations, oneDNN primitive creation)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _interleaved(fns, repeats):
    """Times each of ``fns`` ``repeats`` times, alternating between them.

    Returns the median wall-clock seconds and the median process CPU seconds (all threads) of
    each; the CPU time is the work done, which other processes' load does not inflate.
    """
    for fn in fns:
        fn()
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[i].append(time.perf_counter() - start)
            cpu[i].append(time.process_time() - start_cpu)
    return [statistics.median(s) for s in wall], [statistics.median(s) for s in cpu]


def _forward_backward(conv, x, kernel, dy):
    def run():
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            loss = tf.reduce_sum(conv(x, kernel) * dy)
        grads = tape.gradient(loss, [x, kernel])
        return [g.numpy() for g in grads]

    return run


def measure(batch, size, channels, k, repeats, backward):
    rng = np.random.default_rng(k)
    x = tf.constant(rng.standard_normal((batch, size, size, channels)).astype(np.float32))
    kernel = tf.constant((rng.standard_normal((k, k, channels, channels)) / k).astype(np.float32))
    layer = FFTConv2D(channels, k, padding="same", use_bias=False, algorithm="auto")
    layer.build(x.shape)
    layer.kernel.assign(kernel)

    def fft(a, b):
        return kseg_ops.fft_conv2d(a, b, padding="SAME")

    def direct(a, b):
        return tf.nn.conv2d(a, b, strides=1, padding="SAME")

    def auto(a, b):
        del b  # the layer holds the same kernel
        return layer(a)

    if backward:
        dy = tf.constant(rng.standard_normal((batch, size, size, channels)).astype(np.float32))
        fns = [_forward_backward(f, x, kernel, dy) for f in (fft, direct)]
        # FFTConv2D's gradient with respect to its kernel variable.

        def auto_run():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True) * dy)
            return [g.numpy() for g in tape.gradient(loss, [x, layer.kernel])]

        fns.append(auto_run)
    else:
        fns = [lambda f=f: f(x, kernel).numpy() for f in (fft, direct, auto)]
    (t_fft, t_direct, t_auto), (c_fft, c_direct, c_auto) = _interleaved(fns, repeats)
    return {
        "batch": batch,
        "size": size,
        "channels": channels,
        "k": k,
        "pass": "fwd+bwd" if backward else "fwd",
        "fft_ms": 1e3 * t_fft,
        "direct_ms": 1e3 * t_direct,
        "auto_ms": 1e3 * t_auto,
        "speedup": t_direct / t_fft,
        "fft_cpu_ms": 1e3 * c_fft,
        "direct_cpu_ms": 1e3 * c_direct,
        "auto_cpu_ms": 1e3 * c_auto,
        "cpu_speedup": c_direct / c_fft,
        "load": os.getloadavg()[0],
        "auto_choice": choose_algorithm(
            batch, size, size, channels, k, k, channels, training=backward
        ),
        "auto_vs_best": t_auto / min(t_fft, t_direct),
        "fft_size": fft_plan(batch, size, size, channels, k, k, channels)["fft_size"],
    }


def calibrate(rows):
    """Fits the cost-model constants of kseg_ops/fft_conv.py to the measured rows.

    Forward rows: tf.nn.conv2d seconds per MAdd, median per kernel size; FFT seconds per
    transform unit and per product unit, least squares on relative error. Forward+backward rows
    (where the same size also has a forward row): the training factors, medians of the ratios.
    """
    fwd = [r for r in rows if r["pass"] == "fwd"]
    per_k = {}
    for r in fwd:
        madds = r["batch"] * r["size"] ** 2 * r["channels"] ** 2 * r["k"] ** 2
        per_k.setdefault(r["k"], []).append(r["direct_ms"] * 1e-3 / madds)
    constants = {
        "DIRECT_SECONDS_PER_MADD": {k: statistics.median(v) for k, v in sorted(per_k.items())}
    }
    if fwd:
        a, b = [], []
        for r in fwd:
            plan = fft_plan(
                r["batch"], r["size"], r["size"], r["channels"], r["k"], r["k"], r["channels"]
            )
            t = r["fft_ms"] * 1e-3 - fft_model.FFT_SECONDS_FIXED
            a.append([plan["transform_units"] / t, plan["product_units"] / t])
            b.append(1.0)
        (per_transform, per_product), *_ = np.linalg.lstsq(np.array(a), np.array(b), rcond=None)
        constants["FFT_SECONDS_PER_TRANSFORM_UNIT"] = float(per_transform)
        constants["FFT_SECONDS_PER_PRODUCT_UNIT"] = float(per_product)
    forward = {(r["size"], r["channels"], r["k"]): r for r in fwd}
    fft_ratio, direct_ratio = [], []
    for r in rows:
        f = forward.get((r["size"], r["channels"], r["k"]))
        if r["pass"] != "fwd+bwd" or f is None:
            continue
        fft_ratio.append(r["fft_ms"] / f["fft_ms"])
        if r["k"] ** 2 < fft_model.ONEDNN_SLOW_BACKPROP_AREA:
            direct_ratio.append(r["direct_ms"] / f["direct_ms"])
    if fft_ratio:
        constants["FFT_TRAINING_FACTOR"] = statistics.median(fft_ratio)
    if direct_ratio:
        constants["DIRECT_TRAINING_FACTOR"] = statistics.median(direct_ratio)
    return constants


def auto_with(constants, rows):
    """For each row, what "auto" picks with these constants and its measured time over the best."""
    saved = {name: getattr(fft_model, name) for name in constants}
    try:
        for name, value in constants.items():
            setattr(fft_model, name, value)
        out = []
        for r in rows:
            choice = choose_algorithm(
                r["batch"],
                r["size"],
                r["size"],
                r["channels"],
                r["k"],
                r["k"],
                r["channels"],
                training=r["pass"] == "fwd+bwd",
            )
            picked = r["fft_ms"] if choice == "fft" else r["direct_ms"]
            out.append((choice, picked / min(r["fft_ms"], r["direct_ms"])))
        return out
    finally:
        for name, value in saved.items():
            setattr(fft_model, name, value)


def table(rows):
    lines = [
        "| pass | size | C | k | FFT size | fft ms | conv2d ms | speed-up | CPU-time speed-up | auto picks "
        "| auto / best | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pass']} | {r['size']}² | {r['channels']} | {r['k']} | {r['fft_size'][0]}×{r['fft_size'][1]} "
            f"| {r['fft_ms']:.1f} | {r['direct_ms']:.1f} | {r['speedup']:.2f}× | {r['cpu_speedup']:.2f}× "
            f"| {r['auto_choice']} | {r['auto_vs_best']:.2f} | {r['load']:.1f} |"
        )
    return "\n".join(lines)


def crossover(rows):
    """Smallest kernel size from which the FFT is faster at every larger benchmarked size."""
    out = {}
    for key in sorted({(r["pass"], r["size"], r["channels"]) for r in rows}):
        ks = sorted(
            (r["k"], r["speedup"]) for r in rows if (r["pass"], r["size"], r["channels"]) == key
        )
        winning = [k for i, (k, _) in enumerate(ks) if all(s > 1 for _, s in ks[i:])]
        out[key] = winning[0] if winning else None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7, 11, 15, 21, 31])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--passes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"]
    )
    parser.add_argument(
        "--calibrate", action="store_true", help="print fitted cost-model constants"
    )
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--from-json", nargs="+", help="skip measuring: load rows from these files")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF's default)")
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
    print(
        f"TensorFlow {tf.__version__}, oneDNN {'on' if onednn else 'off'}, intra-op threads "
        f"{args.threads or 'default'}, batch {args.batch}, repeats {args.repeats}",
        flush=True,
    )

    rows = []
    for path in args.from_json or []:
        with open(path, encoding="utf-8") as f:
            rows.extend(json.load(f))
    for backward in [p == "fwd+bwd" for p in ([] if args.from_json else args.passes)]:
        for size in args.sizes:
            for channels in args.channels:
                for k in args.kernels:
                    row = measure(args.batch, size, channels, k, args.repeats, backward)
                    rows.append(row)
                    print(
                        f"{row['pass']:8s} {size}x{size}x{channels} k={k:2d}: fft {row['fft_ms']:8.1f} ms  "
                        f"conv2d {row['direct_ms']:8.1f} ms  x{row['speedup']:.2f} (cpu x{row['cpu_speedup']:.2f})  auto={row['auto_choice']} "
                        f"({row['auto_vs_best']:.2f} of best)",
                        flush=True,
                    )
    print()
    print(table(rows))
    print()
    for (pass_, size, channels), k in crossover(rows).items():
        print(f"crossover {pass_} {size}x{size}x{channels}: FFT faster from k = {k}")
    if args.calibrate:
        constants = calibrate(rows)
        print("calibrated constants:", json.dumps(constants, indent=1))
        print("| pass | size | C | k | auto picks (fitted model) | its time / best |")
        print("|---|---|---|---|---|---|")
        for r, (choice, ratio) in zip(rows, auto_with(constants, rows)):
            print(
                f"| {r['pass']} | {r['size']}² | {r['channels']} | {r['k']} | {choice} | {ratio:.2f} |"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

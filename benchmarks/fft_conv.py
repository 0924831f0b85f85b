"""FFT convolution (kseg_ops.fft_conv2d) against tf.nn.conv2d, measured in the same run.

For every size the two ops (and FFTConv2D with algorithm="auto") are timed interleaved, several
repeats each, and the median is kept, so load from other processes hits both sides alike.
Prints a markdown table (times in ms, speed-up = conv2d / fft) and the crossover kernel size.

    python benchmarks/fft_conv.py                     # full grid (takes a while)
    python benchmarks/fft_conv.py --sizes 256 --channels 32 --kernels 15 31
    python benchmarks/fft_conv.py --calibrate         # also fit the "auto" cost model
    python benchmarks/fft_conv.py --json results.json
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
from kseg.layers.fft_conv import FFTConv2D, choose_algorithm, fft_plan


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
                loss = tf.reduce_sum(layer(x) * dy)
            return [g.numpy() for g in tape.gradient(loss, [x, layer.kernel])]

        fns.append(auto_run)
    else:
        fns = [lambda f=f: f(x, kernel).numpy() for f in (fft, direct, auto)]
    (t_fft, t_direct, t_auto), (c_fft, c_direct, c_auto) = _interleaved(fns, repeats)
    return {
        "batch": batch, "size": size, "channels": channels, "k": k,
        "pass": "fwd+bwd" if backward else "fwd",
        "fft_ms": 1e3 * t_fft, "direct_ms": 1e3 * t_direct, "auto_ms": 1e3 * t_auto,
        "speedup": t_direct / t_fft,
        "fft_cpu_ms": 1e3 * c_fft, "direct_cpu_ms": 1e3 * c_direct, "auto_cpu_ms": 1e3 * c_auto,
        "cpu_speedup": c_direct / c_fft,
        "load": os.getloadavg()[0],
        "auto_choice": choose_algorithm(batch, size, size, channels, k, k, channels),
        "auto_vs_best": t_auto / min(t_fft, t_direct),
        "fft_size": fft_plan(batch, size, size, channels, k, k, channels)["fft_size"],
    }


def calibrate(rows):
    """Least-squares fit of the cost model constants in kseg/layers/fft_conv.py (forward rows)."""
    small, large, fft_rates = [], [], []
    for r in rows:
        if r["pass"] != "fwd":
            continue
        madds = r["batch"] * r["size"] ** 2 * r["channels"] ** 2 * r["k"] ** 2
        (small if r["k"] ** 2 <= 25 else large).append(r["direct_ms"] * 1e-3 / madds)
        cost = fft_plan(r["batch"], r["size"], r["size"], r["channels"], r["k"], r["k"], r["channels"])["cost"]
        fft_rates.append(r["fft_ms"] * 1e-3 / cost)
    direct_rate = statistics.median(large) if large else float("nan")
    return {
        "DIRECT_SECONDS_PER_MADD": direct_rate,
        "DIRECT_SMALL_KERNEL_FACTOR": statistics.median(small) / direct_rate if small and large else float("nan"),
        "FFT_SECONDS_PER_UNIT": statistics.median(fft_rates) if fft_rates else float("nan"),
    }


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
        ks = sorted((r["k"], r["speedup"]) for r in rows if (r["pass"], r["size"], r["channels"]) == key)
        winning = [k for i, (k, _) in enumerate(ks) if all(s > 1 for _, s in ks[i:])]
        out[key] = winning[0] if winning else None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7, 11, 15, 21, 31])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--calibrate", action="store_true", help="print fitted cost-model constants")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    rows = []
    for backward in [p == "fwd+bwd" for p in args.passes]:
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
        print("calibrated constants:", json.dumps(calibrate(rows), indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

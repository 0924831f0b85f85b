"""GPU kernels of kseg_ops timed against named peers in the same run.

- Dense CRF (kseg_ops.dense_crf on the GPU) vs pydensecrf2 (Kraehenbuehl's code, one CPU core)
  at 500x375, 21 classes, 10 iterations; batch 1 and batch 16 (targets on an H100: <= 5 ms and
  <= 40 ms).
- FFT convolution (Kseg>FftConv2D on the GPU) vs tf.nn.conv2d (cuDNN) for large kernels.
- Lattice filter on the GPU vs the same op on the CPU.

Times are medians of several runs after a warm-up, each ending with a device-to-host copy so
that the GPU work is finished. Prints a markdown table.

    python benchmarks/gpu_kernels.py                   # needs a GPU and KSEG_OPS_CUDA=1 build
    python benchmarks/gpu_kernels.py --device CPU --quick   # dry run of the script on the CPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

import kseg_ops


def _median_ms(fn, repeats):
    fn()  # warm-up: lattice buffers, cuFFT plans, autotuning
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples)


def _scene(batch, h, w, classes, seed=0):
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, h, w, 3), np.uint8)
    images[:, :, w // 2 :] = 200
    images = np.clip(images + rng.integers(0, 30, images.shape), 0, 255).astype(np.uint8)
    probs = rng.dirichlet(np.ones(classes), size=(batch, h, w)).astype(np.float32)
    return probs, images


def bench_dense_crf(device, h, w, classes, iterations, batches, repeats):
    rows = []
    for batch in batches:
        probs, images = _scene(batch, h, w, classes)
        with tf.device(device):
            p, im = tf.constant(probs), tf.constant(images)

            def run():
                with tf.device(device):
                    return kseg_ops.dense_crf(p, im, iterations=iterations).numpy()

            ms = _median_ms(run, repeats)
        peer = _pydensecrf_ms(probs[0], images[0], iterations, max(1, repeats // 3))
        ratio = f"{peer * batch / ms:.1f}x" if peer else "n/a"
        peer_text = f"{peer * batch:.1f}" if peer else "not installed"
        rows.append(
            (
                f"dense CRF {h}x{w}x{classes}, {iterations} it, batch {batch}",
                f"{ms:.2f}",
                f"pydensecrf2 (1 core) {peer_text}",
                ratio,
            )
        )
    return rows


def _pydensecrf_ms(probs, image, iterations, repeats):
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        return None
    h, w, classes = probs.shape

    def run():
        d = dcrf.DenseCRF2D(w, h, classes)
        d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.transpose(2, 0, 1))))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(image), compat=10)
        return d.inference(iterations)

    return _median_ms(run, repeats)


def bench_fft_conv(device, sizes, channels, kernels, repeats):
    lib = kseg_ops.load_ops_library()
    rows = []
    rng = np.random.default_rng(1)
    for size in sizes:
        for k in kernels:
            with tf.device(device):
                x = tf.constant(rng.normal(size=(1, size, size, channels)).astype(np.float32))
                f = tf.constant(rng.normal(size=(k, k, channels, channels)).astype(np.float32))

            def fft():
                with tf.device(device):
                    return lib.kseg_fft_conv2d(input=x, filter=f, padding="SAME").numpy()

            def direct():
                with tf.device(device):
                    return tf.nn.conv2d(x, f, strides=1, padding="SAME").numpy()

            fft_ms, direct_ms = _median_ms(fft, repeats), _median_ms(direct, repeats)
            rows.append(
                (
                    f"FftConv2D {size}x{size}x{channels}, {k}x{k} -> {channels}",
                    f"{fft_ms:.2f}",
                    f"tf.nn.conv2d {direct_ms:.2f}",
                    f"{direct_ms / fft_ms:.2f}x",
                )
            )
    return rows


def bench_lattice(device, n, channels, repeats):
    lib = kseg_ops.load_ops_library()
    rng = np.random.default_rng(2)
    values = tf.constant(rng.normal(size=(1, n, channels)).astype(np.float32))
    features = tf.constant(rng.uniform(0, 20, size=(1, n, 5)).astype(np.float32))

    def on(dev):
        def run():
            with tf.device(dev):
                return lib.kseg_lattice_filter(values, features).numpy()

        return run

    ms, cpu_ms = _median_ms(on(device), repeats), _median_ms(on("/CPU:0"), repeats)
    return [
        (
            f"LatticeFilter n={n}, d=5, {channels} channels",
            f"{ms:.2f}",
            f"same op on the CPU {cpu_ms:.2f}",
            f"{cpu_ms / ms:.1f}x",
        )
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="GPU", choices=["GPU", "CPU"])
    parser.add_argument("--quick", action="store_true", help="small sizes (script check)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if args.device == "GPU" and not tf.config.list_physical_devices("GPU"):
        raise SystemExit("no GPU visible to TensorFlow (use --device CPU for a dry run)")
    device = f"/{args.device}:0"
    if args.quick:
        crf = dict(h=60, w=45, classes=5, iterations=3, batches=(1, 2))
        fft = dict(sizes=(32,), channels=4, kernels=(7,))
        lattice_n = 2000
    else:
        crf = dict(h=375, w=500, classes=21, iterations=10, batches=(1, 16))
        fft = dict(sizes=(256, 512), channels=32, kernels=(7, 15, 31))
        lattice_n = 187500
    rows = bench_dense_crf(device, repeats=args.repeats, **crf)
    rows += bench_fft_conv(device, repeats=args.repeats, **fft)
    rows += bench_lattice(device, lattice_n, 21, args.repeats)
    print(f"device: {device}  ({tf.config.list_physical_devices(args.device)})")
    print("| case | kseg_ops ms | peer ms | speed-up |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

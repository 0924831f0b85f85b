"""Seeded fuzz of the compiled ops: every call returns sane values or raises a documented error.

Run by ``test_fuzz.py`` in a child process, so that a crash of the process (a signal, an abort)
is reported with the call that caused it instead of taking pytest down. Each call's description
is written to the log, flushed, before the call runs.

Example:
    python tests/kseg_ops/fuzz_ops.py --seed 0 --calls 200 --log /tmp/fuzz.log
"""

import argparse
import json
import sys

import numpy as np

# Errors the wrappers document; anything else is a failure.
DOCUMENTED = ("ValueError", "TypeError", "InvalidArgumentError", "ResourceExhaustedError")
# Words an error message must contain one of: the name of an input or argument.
ARGUMENT_NAMES = (
    "probs",
    "images",
    "values",
    "features",
    "x",
    "kernel",
    "iterations",
    "padding",
    "gradient",
)
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _dtype(rng, usual):
    # Mostly the usual dtype; sometimes another one, to exercise the dtype errors.
    if rng.random() < 0.9:
        return usual
    return str(rng.choice(FLOAT_DTYPES + ("int32", "uint8")))


def _size(rng, large):
    if rng.random() < 0.05:
        return int(rng.choice([0, 1]))
    return int(rng.integers(1, 65 if large else 13))


def _poison(rng, array, spec):
    # A few calls carry NaN or Inf, which must be rejected.
    if array.size and array.dtype.kind == "f" and rng.random() < 0.04:
        array.flat[int(rng.integers(array.size))] = rng.choice([np.nan, np.inf, -np.inf])
        spec["poisoned"] = True
    return array


def _cast(array, dtype):
    import tensorflow as tf

    return tf.cast(tf.constant(array), dtype) if dtype == "bfloat16" else array.astype(dtype)


def make_call(rng, index):
    """Returns ``(description, function)`` for one random call."""
    import tensorflow as tf

    import kseg_ops

    large = rng.random() < 0.03
    op = str(rng.choice(["dense_crf", "lattice_filter", "lattice_grad", "fft", "fft_grad"]))
    spec = {"index": index, "op": op}
    if op == "dense_crf":
        b, h, w = int(rng.integers(1, 3)), _size(rng, large), _size(rng, large)
        classes = int(rng.choice([1, 2, 3, 21, 33, 40])) if rng.random() > 0.03 else 0
        dtype = _dtype(rng, str(rng.choice(FLOAT_DTYPES)))
        from_logits = bool(rng.random() < 0.5)
        scores = rng.standard_normal((b, h, w, classes)) * 3
        if not from_logits:
            scores = np.exp(scores) / np.maximum(np.exp(scores).sum(-1, keepdims=True), 1e-30)
        scores = _poison(rng, scores, spec)
        images = rng.uniform(0, 255, (b, h, w, 3))
        iterations = int(rng.integers(0, 6))
        image_dtype = "uint8" if rng.random() < 0.5 else "float32"
        normalization = str(rng.choice(["symmetric", "after"]))
        spec.update(shape=[b, h, w, classes], dtype=dtype, logits=from_logits, it=iterations)

        def run():
            q = kseg_ops.dense_crf(
                _cast(scores, dtype),
                images.astype(image_dtype),
                iterations=iterations,
                from_logits=from_logits,
                normalization=normalization,
            )
            q = np.asarray(tf.cast(q, tf.float64))
            assert q.shape == (b, h, w, classes), q.shape
            assert np.all(np.isfinite(q)), "non-finite CRF output"
            if q.size:
                tolerance = 2e-2 if dtype in ("float16", "bfloat16") else 1e-4
                np.testing.assert_allclose(q.sum(-1), 1.0, atol=tolerance)

        return spec, run
    if op in ("lattice_filter", "lattice_grad"):
        b, n = int(rng.integers(1, 3)), _size(rng, large) * _size(rng, False)
        channels = int(rng.choice([1, 2, 5, 21, 40]))
        dim = int(rng.integers(1, 17)) if rng.random() > 0.03 else int(rng.choice([0, 17]))
        dtype = _dtype(rng, str(rng.choice(["float32", "float64"])))
        # Feature magnitudes up to 2^28 (the lattice's coordinate bound) and a little beyond.
        scale = float(2.0 ** rng.choice([0, 4, 10, 20, 26, 27, 28, 29]))
        features = _poison(rng, rng.standard_normal((b, n, dim)) * scale, spec)
        values = rng.standard_normal((b, n, channels))
        transpose = bool(rng.random() < 0.3)
        spec.update(n=n, channels=channels, dim=dim, dtype=dtype, scale=scale, t=transpose)

        def run():
            v = tf.constant(_cast(values, dtype))
            f = tf.constant(_cast(features, dtype))
            if op == "lattice_filter":
                out = kseg_ops.lattice_filter(v, f, transpose=transpose)
            else:
                with tf.GradientTape() as tape:
                    tape.watch(v)
                    y = kseg_ops.lattice_filter(v, f, transpose=transpose)
                out = tape.gradient(y, v, output_gradients=tf.ones_like(y))
            out = np.asarray(out)
            assert out.shape == (b, n, channels), out.shape
            assert np.all(np.isfinite(out)), "non-finite lattice output"

        return spec, run
    b, h, w = int(rng.integers(1, 3)), _size(rng, large), _size(rng, large)
    kh, kw = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    cin, cout = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    kernel_cin = cin if rng.random() > 0.03 else cin + 1
    dtype = _dtype(rng, str(rng.choice(["float32", "float64"])))
    padding = str(rng.choice(["SAME", "VALID", "same"])) if rng.random() > 0.02 else "FULL"
    x = _poison(rng, rng.standard_normal((b, h, w, cin)), spec)
    kernel = rng.standard_normal((kh, kw, kernel_cin, cout))
    spec.update(x=[b, h, w, cin], kernel=[kh, kw, kernel_cin, cout], dtype=dtype, pad=padding)

    def run():
        xt, kt = tf.constant(_cast(x, dtype)), tf.constant(_cast(kernel, dtype))
        if op == "fft":
            out = np.asarray(kseg_ops.fft_conv2d(xt, kt, padding=padding))
            reference = np.asarray(tf.nn.conv2d(xt, kt, 1, padding.upper()))
            assert out.shape == reference.shape, (out.shape, reference.shape)
            np.testing.assert_allclose(out, reference, rtol=1e-3, atol=1e-3)
            return
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([xt, kt])
            y = kseg_ops.fft_conv2d(xt, kt, padding=padding)
        for tensor, gradient in zip((xt, kt), tape.gradient(y, [xt, kt])):
            gradient = np.asarray(gradient)
            assert gradient.shape == tuple(tensor.shape), gradient.shape
            assert np.all(np.isfinite(gradient)), "non-finite gradient"

    return spec, run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    counts = {"ok": 0, "errors": 0}
    failures = []
    with open(args.log, "w") as log:
        for index in range(args.calls):
            spec, run = make_call(rng, index)
            log.write(json.dumps(spec) + "\n")
            log.flush()
            try:
                run()
            except AssertionError as error:
                failures.append(f"{spec}: wrong result: {error}")
                continue
            except Exception as error:  # noqa: BLE001 -- classified below
                kind = type(error).__name__
                message = str(error)
                if kind not in DOCUMENTED:
                    failures.append(f"{spec}: undocumented {kind}: {message[:300]}")
                elif not any(word in message for word in ARGUMENT_NAMES):
                    failures.append(f"{spec}: {kind} names no input: {message[:300]}")
                else:
                    counts["errors"] += 1
                continue
            if spec.get("poisoned"):
                failures.append(f"{spec}: NaN/Inf input accepted")
            counts["ok"] += 1
    print(json.dumps({"counts": counts, "failures": failures[:20], "failed": len(failures)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

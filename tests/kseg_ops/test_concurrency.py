"""8 threads call the three ops with mixed shapes and dtypes; each result equals the call made alone.

The kernels share caches (the dense CRF's scratch memory, the FFT plans) across calls; a race
there would show as a result that differs from the same call made on its own.
"""

import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import kseg_ops

THREADS = 8
SECONDS = 8.0


def _calls():
    """A fixed list of (name, function) calls of varied shapes and dtypes."""
    rng = np.random.default_rng(7)
    calls = []
    for index, (h, w, classes, dtype) in enumerate(
        [
            (24, 31, 3, "float32"),
            (40, 17, 21, "float64"),
            (9, 64, 33, "float32"),
            (33, 33, 5, "float32"),
        ]
    ):
        probs = rng.dirichlet(np.ones(classes), (1, h, w)).astype(dtype)
        images = rng.integers(0, 256, (1, h, w, 3)).astype("uint8")
        calls.append(
            (f"dense_crf_{index}", lambda p=probs, i=images: kseg_ops.dense_crf(p, i, iterations=3))
        )
    for index, (n, channels, dim, dtype) in enumerate(
        [(300, 4, 5, "float32"), (128, 21, 2, "float64"), (500, 1, 9, "float32")]
    ):
        values = tf.constant(rng.standard_normal((2, n, channels)).astype(dtype))
        features = tf.constant((rng.standard_normal((2, n, dim)) * 3).astype(dtype))

        def lattice(v=values, f=features):
            with tf.GradientTape() as tape:
                tape.watch(v)
                out = kseg_ops.lattice_filter(v, f)
            return tf.concat([out, tape.gradient(out, v, output_gradients=out)], -1)

        calls.append((f"lattice_{index}", lattice))
    for index, (h, w, k, cin, cout, dtype) in enumerate(
        [(32, 40, 7, 3, 4, "float32"), (19, 23, 5, 2, 2, "float64"), (64, 64, 15, 4, 8, "float32")]
    ):
        x = tf.constant(rng.standard_normal((1, h, w, cin)).astype(dtype))
        kernel = tf.constant(rng.standard_normal((k, k, cin, cout)).astype(dtype))

        def fft(x=x, kernel=kernel):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = kseg_ops.fft_conv2d(x, kernel)
            dx, dk = tape.gradient(y, [x, kernel])
            return [y, dx, dk]

        calls.append((f"fft_{index}", fft))
    return calls


def _numpy(result):
    if isinstance(result, list):
        return [np.asarray(r) for r in result]
    return [np.asarray(result)]


def test_eight_threads_match_the_calls_made_alone():
    if not tf.executing_eagerly():
        pytest.skip("eager only")
    calls = _calls()
    alone = {name: _numpy(fn()) for name, fn in calls}
    mismatches, errors, counts = [], [], [0] * THREADS
    deadline = time.monotonic() + SECONDS

    def worker(thread):
        order = np.random.default_rng(thread).permutation(len(calls))
        position = 0
        while time.monotonic() < deadline:
            name, fn = calls[order[position % len(calls)]]
            position += 1
            try:
                got = _numpy(fn())
            except Exception as error:  # noqa: BLE001 -- reported below
                errors.append(f"{name}: {type(error).__name__}: {error}")
                return
            for expected, actual in zip(alone[name], got):
                # Same inputs, same kernels: thread pools may split work differently, so
                # float sums can differ in the last bits, never more.
                if not np.allclose(expected, actual, rtol=1e-5, atol=1e-6):
                    mismatches.append(f"{name} in thread {thread}")
            counts[thread] += 1

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 120)
    assert not errors, errors[:5]
    assert not mismatches, mismatches[:5]
    assert all(count >= 2 for count in counts), counts

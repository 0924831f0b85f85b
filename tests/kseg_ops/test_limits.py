"""Limits of the kseg_ops kernels: a host memory budget (ResourceExhausted, not an abort), a
failed allocation caught at the op boundary, the dense CRF's scratch cache cap and
release_cached_memory(), the iteration cap and cancellation between iterations."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

import kseg_ops
from kseg_ops._loader import load_ops_library

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUDGET_ENV = "KSEG_OPS_MEMORY_BUDGET_BYTES"


def crf_inputs(h, w, classes, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.random((1, h, w, classes)).astype(np.float32)
    probs /= probs.sum(-1, keepdims=True)
    image = (rng.random((1, h, w, 3)) * 255).astype(np.float32)
    return probs, image


def crf_point_bytes(h, w, classes, t=4):
    """CrfPointBytes of dense_crf.h, as the docstring of kseg_ops.dense_crf states it."""
    cp = (classes + 7) // 8 * 8
    return h * w * (t * (10 + 2 * cp) + (183 if t == 4 else 255))


def run_child(script, env=None, timeout=240):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
    )


def test_dense_crf_over_budget_names_shape_and_bytes(monkeypatch):
    probs, image = crf_inputs(120, 160, 21)
    need = crf_point_bytes(120, 160, 21)
    monkeypatch.setenv(BUDGET_ENV, str(need - 1))
    with pytest.raises(tf.errors.ResourceExhaustedError) as e:
        kseg_ops.dense_crf(probs, image, iterations=2)
    assert f"needs {need} bytes of host memory" in e.value.message
    assert f"budget of {need - 1} bytes" in e.value.message
    assert "scores.shape=[1, 120, 160, 21]" in e.value.message
    # The per-pixel buffers fit, the lattices' vertices do not: refused once they are counted.
    monkeypatch.setenv(BUDGET_ENV, str(need))
    with pytest.raises(tf.errors.ResourceExhaustedError, match="lattice vertices: gaussian="):
        kseg_ops.dense_crf(probs, image, iterations=2)
    # The process goes on: the same call within the budget works.
    monkeypatch.setenv(BUDGET_ENV, str(1 << 40))
    q = kseg_ops.dense_crf(probs, image, iterations=2).numpy()
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)


def test_lattice_filter_over_budget(monkeypatch):
    rng = np.random.default_rng(1)
    values = rng.random((1, 5000, 3)).astype(np.float32)
    features = (rng.random((1, 5000, 2)) * 20).astype(np.float32)
    # PointBytes(n, d) = n (d + 1) (8 + 2 t) + n (5 d + 2) = 5000 * 48 + 5000 * 12.
    monkeypatch.setenv(BUDGET_ENV, "299999")
    with pytest.raises(tf.errors.ResourceExhaustedError) as e:
        kseg_ops.lattice_filter(values, features)
    assert "needs 300000 bytes" in e.value.message
    assert "values.shape=[1, 5000, 3], features.shape=[1, 5000, 2]" in e.value.message
    monkeypatch.setenv(BUDGET_ENV, "300000")
    with pytest.raises(tf.errors.ResourceExhaustedError, match=r"lattice vertices: \d+"):
        kseg_ops.lattice_filter(values, features)
    monkeypatch.delenv(BUDGET_ENV)
    assert np.isfinite(kseg_ops.lattice_filter(values, features).numpy()).all()


@pytest.mark.parametrize("which", ["forward", "input_gradient", "filter_gradient"])
def test_fft_conv_over_budget(monkeypatch, which):
    lib = load_ops_library()
    rng = np.random.default_rng(2)
    x = tf.constant(rng.random((1, 128, 128, 16)), tf.float32)
    k = tf.constant(rng.random((9, 9, 16, 16)), tf.float32)
    dy = tf.constant(rng.random((1, 128, 128, 16)), tf.float32)
    calls = {
        "forward": lambda: lib.kseg_fft_conv2d(x, k, padding="SAME"),
        "input_gradient": lambda: lib.kseg_fft_conv2d_backprop_input(x, k, dy, padding="SAME"),
        "filter_gradient": lambda: lib.kseg_fft_conv2d_backprop_filter(x, k, dy, padding="SAME"),
    }
    monkeypatch.setenv(BUDGET_ENV, str(1 << 20))
    with pytest.raises(tf.errors.ResourceExhaustedError) as e:
        calls[which]()
    assert "input.shape=[1, 128, 128, 16], filter.shape=[9, 9, 16, 16]" in e.value.message
    assert "bytes of host memory, more than the budget of 1048576 bytes" in e.value.message
    monkeypatch.delenv(BUDGET_ENV)
    assert np.isfinite(calls[which]().numpy()).all()


def test_failed_allocation_is_resource_exhausted_not_an_abort():
    # With the budget out of the way, an address-space limit makes the lattice's workspace
    # allocation itself fail (std::bad_alloc): the op reports it and the process goes on.
    result = run_child(
        """
        import resource, numpy as np, tensorflow as tf, kseg_ops
        rng = np.random.default_rng(0)
        values = rng.random((1, 20000, 512)).astype(np.float32)
        features = (rng.random((1, 20000, 16)) * 50).astype(np.float32)
        kseg_ops.lattice_filter(values[:, :100], features[:, :100])  # threads, library loaded
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (size + (600 << 20), resource.RLIM_INFINITY))
        try:
            kseg_ops.lattice_filter(values, features)
            print("NO ERROR")
        except tf.errors.ResourceExhaustedError as e:
            print("RESOURCE_EXHAUSTED:", e.message)
        print("ALIVE")
        """,
        env={BUDGET_ENV: str(1 << 50)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ran out of host memory" in result.stdout
    assert "values.shape=[1, 20000, 512], features.shape=[1, 20000, 16]" in result.stdout
    assert "ALIVE" in result.stdout


def test_crf_cache_holds_at_most_its_cap_and_releases_everything():
    # In a child: its resident memory is not shared with the other tests. 1024x768x21 needs
    # about 650 MiB of scratch, over the 256 MiB cap: nothing of it may stay; a small call's
    # scratch stays (under the cap) until release_cached_memory().
    result = run_child(
        """
        import numpy as np, kseg_ops
        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024
        def crf(h, w):
            rng = np.random.default_rng(0)
            p = rng.random((1, h, w, 21), dtype=np.float32)
            image = rng.random((1, h, w, 3), dtype=np.float32) * 255
            kseg_ops.dense_crf(p, image, iterations=1)
        crf(32, 32)
        kseg_ops.release_cached_memory()
        base = rss()
        crf(1024, 768)
        print("after_large", kseg_ops.cached_memory_bytes())
        crf(100, 100)
        print("after_small", kseg_ops.cached_memory_bytes(), rss() - base)
        print("freed", kseg_ops.release_cached_memory())
        print("after_release", kseg_ops.cached_memory_bytes())
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert int(lines["after_large"]) == 0
    small_cached, grown = (int(v) for v in lines["after_small"].split())
    assert 0 < small_cached <= 256 << 20
    # The cap plus a stated slack of 128 MiB for the allocator and TF (the old cache kept
    # about 800 MiB here).
    assert grown <= (256 << 20) + (128 << 20), grown
    assert int(lines["freed"]) == small_cached
    assert int(lines["after_release"]) == 0


def test_cache_cap_comes_from_the_environment():
    result = run_child(
        """
        import numpy as np, kseg_ops
        p = np.full((1, 40, 40, 3), 1 / 3, np.float32)
        kseg_ops.dense_crf(p, np.zeros((1, 40, 40, 3), np.float32), iterations=1)
        print(kseg_ops.cached_memory_bytes())
        """,
        env={"KSEG_OPS_CACHE_BYTES": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "0"


def test_iterations_are_capped():
    probs, image = crf_inputs(8, 8, 2)
    with pytest.raises(ValueError, match=r"\[0, 1000\]. Received: iterations=1001"):
        kseg_ops.dense_crf(probs, image, iterations=1001)
    # The op checks too (graphs built without the wrapper).
    with pytest.raises(tf.errors.InvalidArgumentError, match="Received: iterations=1001"):
        load_ops_library().kseg_dense_crf(probs, image, iterations=1001)
    q = kseg_ops.dense_crf(probs, image, iterations=1000).numpy()
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)


def test_cancelled_dense_crf_stops_between_iterations():
    # A TF1 session's run timeout cancels the step; the session then waits for the running op,
    # so without the check the call would take as long as the full run.
    probs, image = crf_inputs(96, 96, 8)
    graph = tf.Graph()
    with graph.as_default():
        p = tf.compat.v1.placeholder(tf.float32, probs.shape)
        im = tf.compat.v1.placeholder(tf.float32, image.shape)
        q = load_ops_library().kseg_dense_crf(p, im, iterations=1000, scores_kind="probabilities")
    feed = {p: probs, im: image}
    with tf.compat.v1.Session(graph=graph) as session:
        start = time.perf_counter()
        session.run(q, feed)
        full = time.perf_counter() - start
        start = time.perf_counter()
        with pytest.raises(tf.errors.DeadlineExceededError):
            session.run(q, feed, options=tf.compat.v1.RunOptions(timeout_in_ms=100))
        cancelled = time.perf_counter() - start
        assert full > 0.4, f"the full run ({full:.2f} s) is too short to compare"
        assert cancelled < full / 2, (cancelled, full)
        # The session is usable afterwards.
        np.testing.assert_allclose(session.run(q, feed).sum(-1), 1.0, atol=1e-5)

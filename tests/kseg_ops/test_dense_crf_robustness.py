"""Bad input to kseg_ops.dense_crf raises Python errors naming the argument, never crashes."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import kseg_ops

ACCEPTED_ERRORS = (ValueError, TypeError, tf.errors.InvalidArgumentError)


def ok_inputs(b=1, h=4, w=5, c=3):
    probs = np.full((b, h, w, c), 1.0 / c, np.float32)
    images = np.zeros((b, h, w, 3), np.uint8)
    return probs, images


@pytest.mark.parametrize(
    "probs_shape, images_shape, match",
    [
        ((4, 5, 3), (1, 4, 5, 3), "probs must have rank 4"),
        ((1, 4, 5, 3), (4, 5, 3), "images must have rank 4"),
        ((1, 4, 5, 3), (1, 4, 5, 4), "images must have 3"),
        ((2, 4, 5, 3), (1, 4, 5, 3), "same batch size"),
        ((1, 4, 5, 3), (1, 3, 5, 3), "same height"),
        ((1, 4, 5, 3), (1, 4, 6, 3), "same width"),
        ((1, 4, 5, 0), (1, 4, 5, 3), "at least one class"),
        ((1, 0, 5, 3), (1, 0, 5, 3), "images must not be empty"),
        ((1, 4, 0, 3), (1, 4, 0, 3), "images must not be empty"),
    ],
)
def test_bad_shapes(probs_shape, images_shape, match):
    with pytest.raises(ValueError, match=match):
        kseg_ops.dense_crf(np.ones(probs_shape, np.float32), np.zeros(images_shape, np.uint8))


def test_non_finite_and_dtypes():
    probs, images = ok_inputs()
    bad = probs.copy()
    bad[0, 1, 2, 0] = np.nan
    with pytest.raises(
        ValueError,
        match=r"probabilities holds a non-finite value at index \(0, 1, 2, 0\) \(flat index 21\)"
        r"\. Received: probabilities\[0, 1, 2, 0\]=nan",
    ):
        kseg_ops.dense_crf(bad, images)
    bad[0, 1, 2, 0] = np.inf
    with pytest.raises(
        ValueError, match=r"logits holds a non-finite value .*Received: logits\[0, 1, 2, 0\]=inf"
    ):
        kseg_ops.dense_crf(bad, images, from_logits=True)
    with pytest.raises(
        ValueError, match=r"image holds a non-finite value .*Received: image\[0, 0, 0, 0\]=nan"
    ):
        kseg_ops.dense_crf(probs, np.full(images.shape, np.nan, np.float32))
    with pytest.raises(TypeError, match="probs must be a float tensor"):
        kseg_ops.dense_crf(probs.astype(np.int32), images)
    with pytest.raises(TypeError, match="images must be uint8 or float"):
        kseg_ops.dense_crf(probs, images.astype(np.int64))
    with pytest.raises(TypeError, match="probs must hold numbers"):
        kseg_ops.dense_crf(np.array([["x"]]), images)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(iterations=-1), "iterations must be an integer >= 0. Received: iterations=-1"),
        (dict(iterations=2.5), "iterations must be an integer"),
        (
            dict(gaussian_sxy=0),
            "gaussian_sxy must be a positive finite number. Received: gaussian_sxy=0",
        ),
        (dict(bilateral_srgb=float("nan")), "bilateral_srgb must be a positive finite"),
        (dict(bilateral_sxy=-3), "bilateral_sxy must be a positive"),
        (dict(gaussian_compat=float("inf")), "gaussian_compat must be a finite number"),
        (dict(bilateral_compat="10"), "bilateral_compat must be a finite number"),
        (dict(normalization="before"), "normalization must be one of"),
    ],
)
def test_bad_parameters(kwargs, match):
    probs, images = ok_inputs()
    with pytest.raises(ValueError, match=match):
        kseg_ops.dense_crf(probs, images, **kwargs)


def test_kernel_checks_what_graphs_hide():
    fn = tf.function(
        lambda p, i: kseg_ops.dense_crf(p, i),
        input_signature=[tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.uint8)],
    )
    probs, images = ok_inputs()
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"probabilities holds a non-finite value at index \(0, 0, 0, 0\)",
    ):
        fn(np.full(probs.shape, np.nan, np.float32), images)
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"must agree in batch, height and width\. Received: probabilities\.shape=",
    ):
        fn(probs, np.zeros((1, 4, 6, 3), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image must not be empty"):
        fn(np.zeros((1, 0, 5, 3), np.float32), np.zeros((1, 0, 5, 3), np.uint8))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank 4|must be rank 4"):
        fn(np.zeros((4, 5, 3), np.float32), images)


def _random_malformed_call(rng):
    """One call with a random mix of bad ranks, sizes, dtypes, values and parameters."""
    rank_p = rng.choice([0, 1, 2, 3, 4, 4, 4, 5])
    rank_i = rng.choice([0, 2, 3, 4, 4, 4, 5])
    shape_p = list(rng.integers(0, 4, rank_p))
    shape_i = list(rng.integers(0, 4, rank_i))
    if rank_i == 4 and rng.random() < 0.6:
        shape_i[-1] = 3
    if rank_p == 4 and rank_i == 4 and rng.random() < 0.5:
        shape_i[:3] = shape_p[:3]
    p_dtype = rng.choice(["float32", "float64", "float16", "int32", "uint8", "bool"])
    i_dtype = rng.choice(["uint8", "float32", "float64", "int32", "float16"])
    probs = rng.normal(size=shape_p).astype(p_dtype)
    images = (rng.uniform(0, 255, size=shape_i)).astype(i_dtype)
    if probs.size and probs.dtype.kind == "f" and rng.random() < 0.3:
        probs.flat[rng.integers(probs.size)] = rng.choice([np.nan, np.inf, -np.inf])
    if images.size and images.dtype.kind == "f" and rng.random() < 0.2:
        images.flat[rng.integers(images.size)] = np.nan
    kwargs = {}
    if rng.random() < 0.3:
        kwargs[
            rng.choice(
                [
                    "iterations",
                    "gaussian_sxy",
                    "bilateral_sxy",
                    "bilateral_srgb",
                    "gaussian_compat",
                    "bilateral_compat",
                ]
            )
        ] = rng.choice([-1, 0, 1e30, float("nan"), 3, 2.5, None, "a"])
    if rng.random() < 0.1:
        kwargs["normalization"] = rng.choice(["after", "symmetric", "none", 1])
    if rng.random() < 0.1:
        kwargs["from_logits"] = rng.choice([True, False, 1, "yes"])
    return probs, images, kwargs


def test_fuzz_1000_malformed_calls_never_crash():
    rng = np.random.default_rng(2024)
    raised = succeeded = 0
    for _ in range(1000):
        probs, images, kwargs = _random_malformed_call(rng)
        try:
            out = kseg_ops.dense_crf(probs, images, **kwargs)
        except ACCEPTED_ERRORS as e:
            assert str(e), "errors must say what is wrong"
            raised += 1
        else:
            succeeded += 1
            assert out.shape == probs.shape
    assert raised + succeeded == 1000 and raised > 800


def test_fuzz_lattice_filter_malformed_calls():
    rng = np.random.default_rng(7)
    for _ in range(300):
        v = rng.normal(size=list(rng.integers(0, 4, rng.choice([2, 3, 3, 4])))).astype(
            rng.choice(["float32", "float64", "int32"])
        )
        f = rng.normal(size=list(rng.integers(0, 4, rng.choice([2, 3, 3, 4])))).astype(
            rng.choice(["float32", "float64"])
        )
        if f.size and rng.random() < 0.3:
            f.flat[0] = np.inf
        try:
            kseg_ops.lattice_filter(v, f)
        except ACCEPTED_ERRORS as e:
            assert str(e)


def test_missing_library_says_how_to_build_and_kseg_still_imports():
    code = textwrap.dedent("""
        import kseg, kseg_ops, numpy as np
        try:
            kseg_ops.dense_crf(np.ones((1, 2, 2, 2), 'float32'), np.zeros((1, 2, 2, 3), 'uint8'))
        except ImportError as e:
            print('IMPORT-ERROR:', e)
    """)
    env = dict(os.environ, KSEG_OPS_LIBRARY="/nonexistent/_kseg_ops.so", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "IMPORT-ERROR" in out.stdout
    assert "pip install --no-build-isolation -e ." in out.stdout
    assert "bazel build //kseg_ops:_kseg_ops.so" in out.stdout


def test_library_built_for_another_tensorflow_is_refused(tmp_path):
    library = tmp_path / "_kseg_ops.so"
    library.write_bytes(open(kseg_ops.library_path(), "rb").read())
    (tmp_path / "_kseg_ops.tf_version").write_text("2.3.0\n")
    code = textwrap.dedent("""
        import kseg_ops
        try:
            kseg_ops.load_ops_library()
        except ImportError as e:
            print('IMPORT-ERROR:', e)
    """)
    env = dict(os.environ, KSEG_OPS_LIBRARY=str(library), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert "built for TensorFlow 2.3.0" in out.stdout, out.stdout + out.stderr
    assert "Rebuild it" in out.stdout


@pytest.mark.slow
def test_peak_memory_at_2048x1024x19_is_bounded():
    # Peak RSS of a fresh process running one 2048x1024x19 CRF, minus its RSS before the call.
    code = textwrap.dedent("""
        import resource, numpy as np, tensorflow as tf, kseg_ops
        rng = np.random.default_rng(0)
        probs = rng.uniform(0.01, 1, (1, 1024, 2048, 19)).astype('float32')
        probs /= probs.sum(-1, keepdims=True)
        images = rng.integers(0, 255, (1, 1024, 2048, 3)).astype('uint8')
        p, i = tf.constant(probs), tf.constant(images)
        kseg_ops.dense_crf(p[:, :8, :8], i[:, :8, :8], iterations=1)  # load everything
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kseg_ops.dense_crf(p, i, iterations=2).numpy()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print('PEAK-MB', (after - before) / 1024)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900
    )
    assert out.returncode == 0, out.stderr
    peak_mb = float(out.stdout.split("PEAK-MB")[1])
    # Buffers per image, N = 2^21 pixels, 24 padded channels: ~560 bytes/pixel for the unary
    # and Q rows, features, both lattices' splat tables and TF's temporaries, plus ~260 bytes
    # per bilateral lattice vertex. A noise image is the worst case (almost every pixel opens
    # its own simplices): measured 1.58 GB. Bound: 2.5 GB.
    assert peak_mb < 2560, peak_mb

"""GPU kernels of kseg_ops against the CPU kernels (and against tf.nn.conv2d for the FFT ops).

The op tests run only where TensorFlow sees a GPU and the op library was built with CUDA
(``KSEG_OPS_CUDA=1 pip install --no-build-isolation -e .``); elsewhere they skip. Two checks run
everywhere: the device code of the lattice, of the mean-field loop and of the FFT correlation
executed on the host through a small CUDA emulation (``test_*_gpu_emulated.cc``) and, when nvcc
is installed, an object compile of every GPU source (slow).
"""

import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))


def _gpu_ops():
    """The op library when a GPU and GPU kernels exist, else None (with the reason)."""
    if not tf.config.list_physical_devices("GPU"):
        return None, "no GPU visible to TensorFlow"
    try:
        import kseg_ops

        lib = kseg_ops.load_ops_library()
    except ImportError as e:  # pragma: no cover - depends on the build
        return None, f"op library not available: {e}"
    try:
        with tf.device("/GPU:0"):
            out = lib.kseg_lattice_filter(tf.ones([1, 2, 1]), tf.zeros([1, 2, 1]))
        if "GPU" not in out.device:
            return None, "op library has no GPU kernels (build with KSEG_OPS_CUDA=1)"
    except tf.errors.NotFoundError:
        return None, "op library has no GPU kernels (build with KSEG_OPS_CUDA=1)"
    return lib, ""


_LIB, _WHY = _gpu_ops()
needs_gpu = pytest.mark.skipif(_LIB is None, reason=_WHY)


def _op(name):
    """The generated Python wrapper of op `name` ("Kseg>FftConv2D" -> kseg_fft_conv2d...)."""
    wanted = name.replace(">", "").replace("_", "").lower()
    for attr in dir(_LIB):
        if attr.replace("_", "").lower() == wanted:
            return getattr(_LIB, attr)
    raise AttributeError(f"op {name} not found in the kseg_ops library")


def _on(device, fn, *args, **kwargs):
    with tf.device(device):
        out = fn(*args, **kwargs)
    return out.numpy() if isinstance(out, tf.Tensor) else [o.numpy() for o in out]


def _both(fn, *args, **kwargs):
    return _on("/CPU:0", fn, *args, **kwargs), _on("/GPU:0", fn, *args, **kwargs)


def _tol(dtype):
    return dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------------------------
# Host emulation of the CUDA lattice and the nvcc compile check (run on every machine).


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
@pytest.mark.parametrize(
    "source",
    [
        "test_permutohedral_gpu_emulated.cc",
        "test_dense_crf_gpu_emulated.cc",
        "test_fft_conv_gpu_emulated.cc",
    ],
)
def test_cuda_algorithm_in_host_emulation(source, tmp_path):
    """The device code (lattice, mean field, FFT correlation) run on the host vs references."""
    exe = tmp_path / "emulated"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-O0",
            "-ffp-contract=off",
            "-I",
            REPO,
            "-o",
            str(exe),
            os.path.join(HERE, source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 failed" in run.stdout


def _nvcc():
    return (
        os.environ.get("NVCC")
        or shutil.which("nvcc")
        or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    )


@pytest.mark.slow
@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed")
@pytest.mark.parametrize(
    "source",
    ["lattice_filter_op_gpu.cu.cc", "dense_crf_op_gpu.cu.cc", "fft_conv_op_gpu.cu.cc"],
)
def test_gpu_source_compiles_with_nvcc(source, tmp_path):
    nvcc = _nvcc()
    cuda_home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    # The tensorflow-cpu wheel lacks the CUDA headers TF's GPU headers include.
    overlay = tmp_path / "overlay" / "third_party" / "gpus" / "cuda"
    overlay.mkdir(parents=True)
    (overlay / "include").symlink_to(os.path.join(cuda_home, "include"))
    cmd = [
        nvcc,
        "-c",
        os.path.join(REPO, "kseg_ops", "cc", "kernels", source),
        "-o",
        str(tmp_path / "out.o"),
        "-x",
        "cu",
        "--expt-relaxed-constexpr",
        "-Xcompiler",
        "-fPIC",
        "-O1",
        "-DGOOGLE_CUDA=1",
        "-Wno-deprecated-gpu-targets",
        "-I",
        REPO,
        "-I",
        str(tmp_path / "overlay"),
    ] + tf.sysconfig.get_compile_flags()
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    assert os.path.getsize(tmp_path / "out.o") > 0


# --------------------------------------------------------------------------------------------
# Kseg>LatticeFilter


def _clustered_features(rng, batch, n, d, dtype):
    f = rng.uniform(-3, 3, size=(batch, n, d))
    f[:, 1::4] = f[:, 0::4][:, : f[:, 1::4].shape[1]]  # repeated points share simplices
    return f.astype(dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("transpose", [False, True])
def test_lattice_filter_gpu_matches_cpu(dtype, d, transpose):
    rng = np.random.default_rng(d)
    features = _clustered_features(rng, 2, 300, d, dtype)
    values = rng.normal(size=(2, 300, 7)).astype(dtype)
    cpu, gpu = _both(_LIB.kseg_lattice_filter, values, features, transpose=transpose)
    np.testing.assert_allclose(gpu, cpu, **_tol(dtype))
    # The transposed filter is the adjoint: an independent check of the GPU output alone.
    y = rng.normal(size=values.shape).astype(dtype)
    lx = _on("/GPU:0", _LIB.kseg_lattice_filter, values, features, transpose=transpose)
    lty = _on("/GPU:0", _LIB.kseg_lattice_filter, y, features, transpose=not transpose)
    np.testing.assert_allclose(np.sum(lx * y), np.sum(values * lty), rtol=1e-4)


@needs_gpu
def test_lattice_filter_gradient_gpu_matches_cpu():
    import kseg_ops

    rng = np.random.default_rng(3)
    features = tf.constant(_clustered_features(rng, 1, 200, 3, np.float64))
    values = tf.constant(rng.normal(size=(1, 200, 4)))
    weights = tf.constant(rng.normal(size=(1, 200, 4)))

    def grad(device):
        with tf.device(device):
            with tf.GradientTape() as tape:
                tape.watch(values)
                loss = tf.reduce_sum(kseg_ops.lattice_filter(values, features) * weights)
            return tape.gradient(loss, values).numpy()

    np.testing.assert_allclose(grad("/GPU:0"), grad("/CPU:0"), rtol=1e-9, atol=1e-11)


@needs_gpu
def test_lattice_filter_gpu_rejects_non_finite_features():
    features = np.zeros((1, 4, 2), np.float32)
    features[0, 2, 1] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="point 2"):
        _on("/GPU:0", _LIB.kseg_lattice_filter, np.ones((1, 4, 3), np.float32), features)


# --------------------------------------------------------------------------------------------
# Kseg>DenseCrf


def _crf_inputs(rng, batch, h, w, classes, dtype):
    image = np.zeros((batch, h, w, 3))
    image[:, :, w // 2 :] = 200
    image += rng.uniform(0, 30, size=image.shape)
    probs = rng.dirichlet(np.ones(classes), size=(batch, h, w))
    unary = -np.log(np.clip(probs, 1e-5, 1))
    return unary.astype(dtype), image.astype(dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalization", ["symmetric", "after"])
def test_dense_crf_gpu_matches_cpu(dtype, normalization):
    rng = np.random.default_rng(11)
    unary, image = _crf_inputs(rng, 2, 23, 31, 5, dtype)
    kwargs = dict(
        iterations=5,
        gaussian_sxy=3.0,
        gaussian_compat=3.0,
        bilateral_sxy=20.0,
        bilateral_srgb=13.0,
        bilateral_compat=10.0,
        normalization=normalization,
    )
    cpu, gpu = _both(_LIB.kseg_dense_crf, unary, image, **kwargs)
    np.testing.assert_allclose(gpu.sum(-1), 1.0, rtol=1e-5)
    tol = dict(rtol=1e-3, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gpu, cpu, **tol)


@needs_gpu
@pytest.mark.parametrize("scores_kind", ["probabilities", "logits"])
def test_dense_crf_gpu_converts_scores_like_cpu(scores_kind):
    rng = np.random.default_rng(12)
    unary, image = _crf_inputs(rng, 2, 19, 26, 6, np.float32)
    scores = np.exp(-unary) if scores_kind == "probabilities" else -unary
    cpu, gpu = _both(_LIB.kseg_dense_crf, scores, image, iterations=3, scores_kind=scores_kind)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-5)


@needs_gpu
def test_dense_crf_gpu_zero_iterations_is_softmax_of_minus_unary():
    rng = np.random.default_rng(5)
    unary, image = _crf_inputs(rng, 1, 9, 8, 4, np.float64)
    q = _on("/GPU:0", _LIB.kseg_dense_crf, unary, image, iterations=0)
    e = np.exp(-unary - (-unary).max(-1, keepdims=True))
    np.testing.assert_allclose(q, e / e.sum(-1, keepdims=True), rtol=1e-12)


@needs_gpu
def test_dense_crf_gpu_rejects_non_finite_unary_like_cpu():
    rng = np.random.default_rng(6)
    unary, image = _crf_inputs(rng, 1, 4, 5, 3, np.float32)
    unary[0, 1, 2, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="flat index 22"):
        _on("/GPU:0", _LIB.kseg_dense_crf, unary, image, iterations=1)


# --------------------------------------------------------------------------------------------
# Kseg>FftConv2D and its gradients


FFT_CASES = [
    # batch, h, w, cin, kh, kw, cout, padding
    (2, 17, 23, 3, 3, 3, 4, "SAME"),
    (1, 32, 20, 2, 7, 5, 3, "SAME"),
    (3, 15, 15, 4, 4, 6, 2, "SAME"),  # even kernel sizes: asymmetric padding
    (2, 40, 33, 3, 11, 9, 5, "VALID"),
    (1, 9, 64, 1, 9, 1, 1, "VALID"),
]


@needs_gpu
@pytest.mark.parametrize("case", FFT_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fft_conv2d_gpu_matches_conv2d_and_cpu(case, dtype):
    b, h, w, cin, kh, kw, cout, padding = case
    rng = np.random.default_rng(kh * 10 + kw)
    x = rng.normal(size=(b, h, w, cin)).astype(dtype)
    k = rng.normal(size=(kh, kw, cin, cout)).astype(dtype)
    fft_conv = _op("Kseg>FftConv2D")
    cpu, gpu = _both(fft_conv, input=x, filter=k, padding=padding)
    # Reference in float64 on the CPU (GPU convolutions may use TF32 for float32).
    want = _on(
        "/CPU:0",
        tf.nn.conv2d,
        x.astype(np.float64),
        k.astype(np.float64),
        strides=1,
        padding=padding,
    )
    scale = np.abs(want).max()
    tol = dict(rtol=0, atol=(2e-5 if dtype == np.float32 else 1e-11) * scale)
    np.testing.assert_allclose(gpu, want, **tol)
    np.testing.assert_allclose(gpu, cpu, **tol)


@needs_gpu
@pytest.mark.parametrize("case", FFT_CASES)
def test_fft_conv2d_gradients_gpu_match_conv2d(case):
    b, h, w, cin, kh, kw, cout, padding = case
    rng = np.random.default_rng(kh * 7 + kw)
    x = tf.constant(rng.normal(size=(b, h, w, cin)))
    k = tf.constant(rng.normal(size=(kh, kw, cin, cout)))
    with tf.device("/CPU:0"):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, k])
            y = tf.nn.conv2d(x, k, strides=1, padding=padding)
        g = tf.constant(rng.normal(size=y.shape))
        want_x, want_k = tape.gradient(y, [x, k], output_gradients=g)
    backprop_input = _op("Kseg>FftConv2DBackpropInput")
    backprop_filter = _op("Kseg>FftConv2DBackpropFilter")
    for device in ("/GPU:0", "/CPU:0"):
        got_x = _on(device, backprop_input, input=x, filter=k, grad_output=g, padding=padding)
        got_k = _on(device, backprop_filter, input=x, filter=k, grad_output=g, padding=padding)
        np.testing.assert_allclose(got_x, want_x.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got_k, want_k.numpy(), rtol=1e-9, atol=1e-9)


@needs_gpu
def test_fft_conv2d_gpu_rejects_non_finite_input_like_cpu():
    x = np.zeros((1, 5, 5, 2), np.float32)
    x[0, 1, 2, 1] = np.nan
    k = np.ones((3, 3, 2, 1), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="input holds a non-finite.*index 15"):
        _on("/GPU:0", _op("Kseg>FftConv2D"), input=x, filter=k, padding="SAME")

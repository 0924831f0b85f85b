"""kseg_ops.fft_conv2d against tf.nn.conv2d: values, gradients, shapes and error handling."""

import numpy as np
import pytest
import tensorflow as tf

import kseg_ops
from kseg_ops import fft_conv


def _relative_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)


CASES = [
    # (x shape, kernel shape, padding)
    ((2, 17, 23, 3), (5, 5, 3, 4), "SAME"),
    ((1, 16, 16, 2), (4, 4, 2, 3), "SAME"),  # even kernel: tf pads one less on top/left
    ((1, 19, 12, 5), (6, 3, 5, 2), "SAME"),  # non-square even x odd kernel
    ((2, 21, 30, 4), (7, 2, 4, 6), "VALID"),
    ((1, 9, 9, 1), (9, 9, 1, 1), "VALID"),  # kernel as large as the image
    ((1, 8, 11, 3), (15, 15, 3, 2), "SAME"),  # kernel larger than the image
    ((3, 40, 37, 6), (15, 15, 6, 5), "SAME"),  # the GCN kernel size
    ((1, 70, 90, 8), (11, 3, 8, 8), "SAME"),
    ((1, 1, 1, 3), (1, 1, 3, 2), "SAME"),
]


@pytest.mark.parametrize("x_shape,k_shape,padding", CASES)
def test_matches_tf_conv2d_float32(x_shape, k_shape, padding):
    rng = np.random.default_rng(sum(x_shape) + sum(k_shape))
    x = rng.standard_normal(x_shape).astype(np.float32)
    k = rng.standard_normal(k_shape).astype(np.float32)
    got = kseg_ops.fft_conv2d(x, k, padding=padding)
    want = tf.nn.conv2d(x, k, strides=1, padding=padding)
    assert got.shape == want.shape
    assert got.dtype == tf.float32
    assert _relative_error(got, want) < 1e-4


def test_random_shapes_float32():
    rng = np.random.default_rng(7)
    for _ in range(12):
        h, w = rng.integers(1, 40, size=2)
        kh, kw = rng.integers(1, 18, size=2)
        padding = "SAME" if rng.random() < 0.5 or kh > h or kw > w else "VALID"
        cin, cout = rng.integers(1, 9, size=2)
        x = rng.standard_normal((int(rng.integers(1, 3)), h, w, cin)).astype(np.float32)
        k = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
        got = kseg_ops.fft_conv2d(x, k, padding=padding)
        want = tf.nn.conv2d(x, k, strides=1, padding=padding)
        assert _relative_error(got, want) < 1e-4, (x.shape, k.shape, padding)


def test_float64_is_exact_to_rounding():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 31, 26, 3))
    k = rng.standard_normal((9, 8, 3, 4))
    for padding in ("SAME", "VALID"):
        got = kseg_ops.fft_conv2d(x, k, padding=padding)
        assert got.dtype == tf.float64
        assert _relative_error(got, tf.nn.conv2d(x, k, 1, padding)) < 1e-12


def test_hand_made_example():
    # A single 1 at (2, 3) correlated with a kernel reproduces the kernel flipped around it.
    x = np.zeros((1, 6, 7, 1), np.float32)
    x[0, 2, 3, 0] = 1.0
    k = np.arange(9, dtype=np.float32).reshape(3, 3, 1, 1)
    y = kseg_ops.fft_conv2d(x, k, padding="SAME").numpy()[0, :, :, 0]
    want = np.zeros((6, 7), np.float32)
    want[1:4, 2:5] = k[::-1, ::-1, 0, 0]
    np.testing.assert_allclose(y, want, atol=1e-5)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_gradients_match_tf_conv2d(padding):
    rng = np.random.default_rng(11)
    x = tf.constant(rng.standard_normal((2, 20, 17, 3)).astype(np.float32))
    k = tf.constant(rng.standard_normal((6, 5, 3, 4)).astype(np.float32))
    dy = rng.standard_normal(tf.nn.conv2d(x, k, 1, padding).shape).astype(np.float32)
    grads = []
    for fn in (
        lambda a, b: kseg_ops.fft_conv2d(a, b, padding),
        lambda a, b: tf.nn.conv2d(a, b, 1, padding),
    ):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            loss = tf.reduce_sum(fn(x, k) * dy)
        grads.append(tape.gradient(loss, [x, k]))
    for got, want in zip(*grads):
        assert _relative_error(got, want) < 1e-4


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_gradient_check_float64(padding):
    rng = np.random.default_rng(5)
    x = tf.constant(rng.standard_normal((1, 7, 6, 2)))
    k = tf.constant(rng.standard_normal((4, 3, 2, 3)))
    theoretical, numerical = tf.test.compute_gradient(
        lambda a, b: kseg_ops.fft_conv2d(a, b, padding=padding), [x, k]
    )
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-6)


def test_tf_function_with_unknown_shapes():
    fn = tf.function(
        lambda a, b: kseg_ops.fft_conv2d(a, b, "SAME"),
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32),
            tf.TensorSpec([None, None, 3, 2], tf.float32),
        ],
    )
    rng = np.random.default_rng(1)
    for shape in ((1, 12, 9, 3), (2, 5, 20, 3)):
        x = rng.standard_normal(shape).astype(np.float32)
        k = rng.standard_normal((5, 4, 3, 2)).astype(np.float32)
        assert _relative_error(fn(x, k), tf.nn.conv2d(x, k, 1, "SAME")) < 1e-4


def test_static_shape_inference():
    fn = tf.function(lambda a, b: kseg_ops.fft_conv2d(a, b, "VALID"))
    concrete = fn.get_concrete_function(
        tf.TensorSpec([2, 30, 20, 3], tf.float32), tf.TensorSpec([7, 5, 3, 8], tf.float32)
    )
    assert concrete.output_shapes.as_list() == [2, 24, 16, 8]


def test_empty_batch():
    y = kseg_ops.fft_conv2d(np.zeros((0, 8, 8, 2), np.float32), np.ones((3, 3, 2, 4), np.float32))
    assert y.shape == (0, 8, 8, 4)


def test_bad_ranks():
    with pytest.raises(ValueError, match=r"x must have rank 4.*\(8, 8, 2\)"):
        kseg_ops.fft_conv2d(np.zeros((8, 8, 2), np.float32), np.zeros((3, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"kernel must have rank 4.*\(3, 3, 2\)"):
        kseg_ops.fft_conv2d(np.zeros((1, 8, 8, 2), np.float32), np.zeros((3, 3, 2), np.float32))


def test_channel_mismatch():
    with pytest.raises(ValueError, match=r"expects 3 input channels, but x \(1, 8, 8, 2\) has 2"):
        kseg_ops.fft_conv2d(np.zeros((1, 8, 8, 2), np.float32), np.zeros((3, 3, 3, 2), np.float32))


def test_valid_kernel_larger_than_image():
    with pytest.raises(
        ValueError, match=r"kernel height \(9\) must not exceed the image height \(8\)"
    ):
        kseg_ops.fft_conv2d(
            np.zeros((1, 8, 20, 1), np.float32), np.zeros((9, 3, 1, 1), np.float32), padding="VALID"
        )


def test_kernel_checks_shapes_in_graphs_too():
    # Unknown static shapes: the C++ kernel raises a clear InvalidArgumentError.
    fn = tf.function(
        lambda a, b: kseg_ops.fft_conv2d(a, b, "VALID"),
        input_signature=[tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.float32)],
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="filter .* must not be larger than the input"
    ):
        fn(np.zeros((1, 4, 4, 1), np.float32), np.zeros((5, 5, 1, 1), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expects 2 input channels but input"):
        fn(np.zeros((1, 4, 4, 1), np.float32), np.zeros((3, 3, 2, 1), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input must have rank 4"):
        fn(np.zeros((4, 4, 1), np.float32), np.zeros((3, 3, 1, 1), np.float32))


@pytest.mark.parametrize("which", ["x", "kernel"])
def test_nan_is_refused(which):
    x = np.ones((1, 6, 6, 2), np.float32)
    k = np.ones((3, 3, 2, 1), np.float32)
    (x if which == "x" else k)[0, 1, 1, 0] = np.nan
    name = "input" if which == "x" else "filter"
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{name} holds a non-finite value"):
        kseg_ops.fft_conv2d(x, k)


def test_other_argument_errors():
    x = np.zeros((1, 8, 8, 2), np.float32)
    k = np.zeros((3, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="strides=2"):
        kseg_ops.fft_conv2d(x, k, strides=2)
    with pytest.raises(ValueError, match=r"dilations=\(2, 2\)"):
        kseg_ops.fft_conv2d(x, k, dilations=(2, 2))
    with pytest.raises(
        ValueError, match="padding must be 'SAME' or 'VALID'. Received: padding='FULL'"
    ):
        kseg_ops.fft_conv2d(x, k, padding="FULL")
    with pytest.raises(
        TypeError,
        match="kernel must have the dtype of x \\(float32\\). Received: kernel.dtype=float64",
    ):
        kseg_ops.fft_conv2d(x, k.astype(np.float64))
    with pytest.raises(TypeError, match="x must be float32 or float64. Received: x.dtype=int32"):
        kseg_ops.fft_conv2d(x.astype(np.int32), k)
    # Accepted spellings of unit stride and lower-case padding.
    y = kseg_ops.fft_conv2d(x, k, padding="valid", strides=(1, 1, 1, 1), dilations=[1, 1])
    assert y.shape == (1, 6, 6, 2)


# The cost model of FFTConv2D(algorithm="auto"), kept beside the op.


def test_training_choice_avoids_the_slow_onednn_kernel_gradient(monkeypatch):
    # oneDNN's Conv2DBackpropFilter is pathological from 13x13 up: training picks the FFT there
    # even where the forward pass alone would run direct.
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(fft_conv, "DIRECT_SECONDS_PER_MADD", {3: 1e-13, 31: 1e-13})
    assert fft_conv.choose_algorithm(2, 128, 128, 32, 15, 15, 32) == "direct"
    assert fft_conv.choose_algorithm(2, 128, 128, 32, 15, 15, 32, training=True) == "fft"
    assert fft_conv.choose_algorithm(2, 128, 128, 32, 11, 11, 32, training=True) == "direct"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert fft_conv.choose_algorithm(2, 128, 128, 32, 15, 15, 32, training=True) == "direct"


def test_direct_rate_interpolates_between_calibrated_kernel_sizes(monkeypatch):
    monkeypatch.setattr(fft_conv, "DIRECT_SECONDS_PER_MADD", {3: 1.0, 7: 3.0, 15: 5.0})
    assert fft_conv.direct_seconds_per_madd(3, 3) == 1.0
    assert fft_conv.direct_seconds_per_madd(5, 5) == 2.0
    assert fft_conv.direct_seconds_per_madd(11, 11) == 4.0
    assert fft_conv.direct_seconds_per_madd(1, 1) == 1.0
    assert fft_conv.direct_seconds_per_madd(31, 31) == 5.0
    assert fft_conv.direct_seconds_per_madd(3, 27) == 3.5  # non-square: k = sqrt(kh * kw) = 9


def test_auto_choice_follows_the_cost_model():
    # Small kernels run direct, large ones by FFT (the crossover measured by the benchmark).
    assert fft_conv.choose_algorithm(2, 256, 256, 32, 3, 3, 32) == "direct"
    assert fft_conv.choose_algorithm(2, 256, 256, 32, 31, 31, 32) == "fft"
    t = fft_conv.estimate_seconds(2, 256, 256, 32, 15, 15, 32)
    assert t["fft"] < t["direct"]
    # The plan mirrors the C++ chooser: an FFT size of 2^a 3^b 5^c covering kernel + tile.
    plan = fft_conv.fft_plan(2, 256, 256, 32, 15, 15, 32)
    nh, nw = plan["fft_size"]
    assert nh >= 15 and nw >= 15 and nw % 2 == 0
    ty, tx = plan["tiles"]
    assert ty * (nh - 14) >= 256 and tx * (nw - 14) >= 256

"""FFTConv2D against keras.layers.Conv2D: values, gradients, config, choice of algorithm, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers import FFTConv2D
from kseg.testing import check_layer


def _pair(algorithm, kernel_size, padding, filters=5, channels=3, **kwargs):
    """An FFTConv2D and a Conv2D with the same weights."""
    fft = FFTConv2D(filters, kernel_size, padding=padding, algorithm=algorithm, **kwargs)
    ref = keras.layers.Conv2D(filters, kernel_size, padding=padding, **kwargs)
    shape = (None, None, None, channels)
    fft.build(shape)
    ref.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(w.shape).astype("float32") for w in ref.get_weights()]
    ref.set_weights(weights)
    fft.set_weights(weights)
    return fft, ref


@pytest.mark.parametrize("algorithm", ["fft", "direct", "auto"])
@pytest.mark.parametrize("kernel_size,padding", [(15, "same"), ((7, 4), "valid"), ((2, 9), "same")])
def test_equals_conv2d(algorithm, kernel_size, padding):
    fft, ref = _pair(algorithm, kernel_size, padding, activation="relu")
    x = np.random.default_rng(1).standard_normal((2, 23, 19, 3)).astype("float32")
    got, want = fft(x).numpy(), ref(x).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_gradients_equal_conv2d():
    fft, ref = _pair("fft", 9, "same", filters=4, channels=2)
    x = tf.constant(np.random.default_rng(2).standard_normal((2, 16, 14, 2)).astype("float32"))
    grads = []
    for layer in (fft, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) ** 2)
        grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_weights_have_conv2d_names_and_shapes():
    layer = FFTConv2D(6, (5, 3), use_bias=True)
    layer.build((None, 10, 10, 4))
    assert [w.path.split("/")[-1] for w in layer.weights] == ["kernel", "bias"]
    assert [tuple(w.shape) for w in layer.weights] == [(5, 3, 4, 6), (6,)]
    no_bias = FFTConv2D(6, 3, use_bias=False)
    no_bias.build((None, 10, 10, 4))
    assert len(no_bias.weights) == 1


def test_config_round_trip_and_regularizers():
    layer = FFTConv2D(
        4,
        (7, 5),
        padding="same",
        activation="relu",
        use_bias=False,
        algorithm="fft",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(0.01),
    )
    config = layer.get_config()
    clone = FFTConv2D.from_config(config)
    assert clone.get_config() == config
    assert clone.kernel_size == (7, 5) and clone.algorithm == "fft" and clone.padding == "same"
    # The kernel regulariser contributes a loss, as Conv2D's does.
    layer.build((None, 8, 8, 2))
    assert len(layer.losses) == 1
    expected = 0.01 * float(np.sum(layer.kernel.numpy() ** 2))
    assert float(layer.losses[0]) == pytest.approx(expected, rel=1e-5)


def test_model_save_and_load(tmp_path):
    inputs = keras.Input((20, 20, 3))
    outputs = FFTConv2D(2, 11, padding="same", algorithm="fft", name="big")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(3).standard_normal((1, 20, 20, 3)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("big").algorithm == "fft"


def test_compute_output_shape():
    assert FFTConv2D(3, (5, 4), padding="valid").compute_output_shape((2, 20, 10, 1)) == (
        2,
        16,
        7,
        3,
    )
    assert FFTConv2D(3, 5, padding="same").compute_output_shape((None, None, 10, 1)) == (
        None,
        None,
        10,
        3,
    )
    symbolic = FFTConv2D(3, 5, padding="valid")(keras.Input((None, 12, 2)))
    assert tuple(symbolic.shape) == (None, None, 8, 3)


def test_trains_in_a_model():
    inputs = keras.Input((16, 16, 2))
    model = keras.Model(inputs, FFTConv2D(1, 9, padding="same", algorithm="fft")(inputs))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 16, 16, 2)).astype("float32")
    target = tf.nn.conv2d(x, rng.standard_normal((9, 9, 2, 1)).astype("float32"), 1, "SAME").numpy()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    losses = model.fit(x, target, epochs=15, batch_size=4, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0]


def test_dynamic_sizes_in_a_graph():
    layer = FFTConv2D(2, 15, padding="same", algorithm="auto")
    layer.build((None, None, None, 3))
    fn = tf.function(layer.call, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    ref = keras.layers.Conv2D(2, 15, padding="same")
    ref.build((None, None, None, 3))
    ref.set_weights(layer.get_weights())
    for shape in ((1, 9, 30, 3), (2, 33, 17, 3)):
        x = np.random.default_rng(5).standard_normal(shape).astype("float32")
        np.testing.assert_allclose(fn(x), ref(x), rtol=1e-4, atol=1e-4)


def test_mixed_precision_input_runs_in_float32():
    layer = FFTConv2D(2, 7, padding="same", algorithm="fft", dtype="mixed_float16")
    x = np.random.default_rng(6).standard_normal((1, 12, 12, 3)).astype("float32")
    y = layer(x)
    assert y.dtype == tf.float16
    kernel = layer.kernel.numpy()
    want = (
        tf.nn.conv2d(tf.cast(tf.cast(x, tf.float16), tf.float32), kernel, 1, "SAME")
        + layer.bias.numpy()
    )
    np.testing.assert_allclose(tf.cast(y, tf.float32), want, rtol=1e-2, atol=1e-2)


def test_layer_passes_training_to_the_choice(monkeypatch):
    from kseg.layers import fft_conv

    calls = []
    real = fft_conv.choose_algorithm

    def spy(*args, **kwargs):
        calls.append(args[-1] if len(args) > 8 else kwargs.get("training", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(fft_conv, "choose_algorithm", spy)
    layer = FFTConv2D(4, 5, padding="same")
    x = np.zeros((1, 16, 16, 3), "float32")
    layer(x)
    layer(x, training=True)
    assert calls == [False, True]


def test_the_cost_model_names_stay_importable_from_the_layer_module():
    import kseg_ops.fft_conv
    from kseg.layers import fft_conv

    for name in ("fft_plan", "estimate_seconds", "choose_algorithm", "DIRECT_SECONDS_PER_MADD"):
        assert getattr(fft_conv, name) is getattr(kseg_ops.fft_conv, name)


def test_auto_uses_the_chosen_path(monkeypatch):
    import kseg_ops

    calls = []
    real = kseg_ops.fft_conv2d
    monkeypatch.setattr(kseg_ops, "fft_conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = np.zeros((1, 64, 64, 8), "float32")
    FFTConv2D(8, 3, padding="same", algorithm="auto")(x)
    assert not calls  # 3x3: direct
    FFTConv2D(8, 31, padding="same", algorithm="auto")(x)
    assert calls  # 31x31: FFT


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(filters=0, kernel_size=3), "filters must be a positive int. Received: filters=0"),
        (
            dict(filters=2, kernel_size=(3, 0)),
            r"kernel_size must be positive. Received: kernel_size=\(3, 0\)",
        ),
        (dict(filters=2, kernel_size=3, strides=2), "only strides=1 is supported.*strides=2"),
        (
            dict(filters=2, kernel_size=3, dilation_rate=2),
            "only dilation_rate=1 is supported. Received: dilation_rate=2",
        ),
        (
            dict(filters=2, kernel_size=3, padding="causal"),
            "padding must be 'valid' or 'same'. Received: padding='causal'",
        ),
        (
            dict(filters=2, kernel_size=3, algorithm="winograd"),
            "algorithm must be one of .*. Received: algorithm='winograd'",
        ),
        (dict(filters=2, kernel_size=3, data_format="channels_first"), "channels_last"),
        (
            dict(filters=2, kernel_size="3"),
            "kernel_size must be an int or a pair of ints. Received: kernel_size='3'",
        ),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FFTConv2D(**kwargs)


def test_nan_input_is_refused():
    layer = FFTConv2D(1, 5, padding="same", algorithm="fft")
    x = np.ones((1, 8, 8, 1), "float32")
    x[0, 3, 3, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="input holds a non-finite value"):
        layer(x)


@pytest.mark.parametrize("algorithm,padding", [("fft", "same"), ("fft", "valid"), ("auto", "same")])
def test_layer_contract_with_the_shared_harness(algorithm, padding, tmp_path):
    # Seeded initialisers give every instance the same weights, so Conv2D gives the reference.
    kwargs = {
        "filters": 3,
        "kernel_size": (5, 4),
        "padding": padding,
        "kernel_initializer": keras.initializers.RandomNormal(seed=1),
        "bias_initializer": keras.initializers.RandomUniform(seed=2),
    }
    x = np.random.default_rng(7).standard_normal((2, 9, 11, 2)).astype("float32")
    expected = keras.layers.Conv2D(**kwargs)(x).numpy()
    check_layer(
        FFTConv2D,
        {**kwargs, "algorithm": algorithm},
        x,
        expected_output=expected,
        atol=1e-4,
        input_shapes=(None, None, 2),
        tmp_dir=tmp_path,
    )


def _unit_roundoff(dtype):
    import ml_dtypes

    return float(ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps) / 2


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "float16", "bfloat16"])
def test_half_precision_agrees_with_float32_within_the_rounding_bound(policy):
    # In half precision x, the kernel and the bias are each rounded once (relative error u =
    # eps / 2), the float32 FFT result is rounded to the half format and so is the bias sum:
    # |y_half - y_32| <= (2u + u^2) S + u (1 + 2u) S + u |b| + u (S + |b|) (1 + 3u)
    #                 <= 4.1 u S + 2.1 u |b|, with S = sum |x| |k| (the convolution of |x|, |k|),
    # plus the float32 FFT's own error (1e-5 S is 10x what test_equals_conv2d allows).
    fft, ref = _pair("fft", 7, "same", filters=4, channels=3)
    half = FFTConv2D(4, 7, padding="same", algorithm="fft", dtype=policy)
    half.build((None, None, None, 3))
    kernel, bias = ref.get_weights()
    bias = np.random.default_rng(7).standard_normal(bias.shape).astype("float32")
    ref.set_weights([kernel, bias])
    half.set_weights([kernel, bias])
    x = np.random.default_rng(8).standard_normal((2, 20, 17, 3)).astype("float32")
    got = half(x)
    assert got.dtype.name == half.compute_dtype
    want = ref(x).numpy()
    total = tf.nn.conv2d(np.abs(x), np.abs(kernel), 1, "SAME").numpy()
    u = _unit_roundoff(half.compute_dtype)
    bound = (4.1 * u + 1e-5) * total + 2.1 * u * np.abs(bias)
    error = np.abs(tf.cast(got, tf.float32).numpy() - want)
    assert np.all(error <= bound), float((error / bound).max())
    # The half format really was used (the error is not float32's), and the bound is tight
    # enough to catch a plausible bug: a correlation with the kernel flipped misses it.
    assert error.max() > 1e-3 * u * total.max()
    flipped = tf.nn.conv2d(x, kernel[::-1, ::-1], 1, "SAME").numpy() + bias
    assert np.mean(np.abs(flipped - want) > bound) > 0.5

"""DenseCRF and CRFRNN layers: values, gradients, models, .keras round-trips without the op."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
import kseg_ops
from kseg.testing import check_layer


def scene(b=2, h=12, w=10, c=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (b, h, w, 3)).astype("float32")
    images[:, :, : w // 2] = 20.0
    logits = rng.normal(0, 1.5, (b, h, w, c)).astype("float32")
    return images, logits


def test_dense_crf_layer_equals_the_op_and_is_not_trainable():
    images, logits = scene()
    layer = kseg.layers.DenseCRF(iterations=4, bilateral_srgb=20.0)
    out = layer([images, logits]).numpy()
    expected = kseg_ops.dense_crf(
        logits, images, iterations=4, bilateral_srgb=20.0, from_logits=True
    ).numpy()
    np.testing.assert_array_equal(out, expected)
    assert not layer.trainable and layer.supports_jit is False
    probs = tf.nn.softmax(logits).numpy()
    from_probs = kseg.layers.DenseCRF(iterations=4, bilateral_srgb=20.0, from_logits=False)
    np.testing.assert_allclose(from_probs([images, probs]), out, atol=1e-4)


def test_dense_crf_in_a_model_predicts_and_round_trips(tmp_path):
    images, logits = scene()
    image_in = keras.Input((None, None, 3))
    logit_in = keras.Input((None, None, 3))
    refined = kseg.layers.DenseCRF(iterations=3)([image_in, logit_in])
    model = keras.Model([image_in, logit_in], refined)
    assert tuple(model.output_shape) == (None, None, None, 3)
    out = model.predict([images, logits], verbose=0)
    path = str(tmp_path / "crf.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict([images, logits], verbose=0), out)
    assert loaded.layers[-1].get_config()["iterations"] == 3


def test_layer_arguments_are_validated():
    with pytest.raises(
        ValueError, match="DenseCRF: iterations must be an integer >= 0. Received: iterations=-2"
    ):
        kseg.layers.DenseCRF(iterations=-2)
    with pytest.raises(ValueError, match="DenseCRF: bilateral_srgb must be a positive"):
        kseg.layers.DenseCRF(bilateral_srgb=0)
    with pytest.raises(ValueError, match="DenseCRF: normalization must be one of"):
        kseg.layers.DenseCRF(normalization="none")
    with pytest.raises(ValueError, match="CRFRNN: theta_alpha must be a positive"):
        kseg.layers.CRFRNN(theta_alpha=-1)
    with pytest.raises(ValueError, match="CRFRNN: iterations must be an integer >= 1"):
        kseg.layers.CRFRNN(iterations=0)
    with pytest.raises(ValueError, match="same height"):
        kseg.layers.DenseCRF().compute_output_shape([(1, 8, 8, 3), (1, 9, 8, 4)])
    with pytest.raises(ValueError, match="expects \\[images, scores\\]"):
        kseg.layers.CRFRNN().compute_output_shape((1, 8, 8, 3))


def crf_rnn_reference(layer, images, unary):
    """The CRF-RNN recurrence written out with numpy around the lattice filter."""
    b, h, w, c = unary.shape
    ys, xs = np.mgrid[0:h, 0:w]
    xy = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    spatial = np.repeat((xy / layer.theta_gamma)[None], b, 0)
    bilateral = np.concatenate(
        [
            np.repeat((xy / layer.theta_alpha)[None], b, 0),
            images.reshape(b, -1, 3).astype(np.float64) / layer.theta_beta,
        ],
        -1,
    )
    ones = np.ones((b, h * w, 1))
    ns = 1 / (kseg_ops.lattice_filter(ones, spatial).numpy() + 1e-20)
    nb = 1 / (kseg_ops.lattice_filter(ones, bilateral).numpy() + 1e-20)
    ws, wb, mu = (
        np.asarray(v)
        for v in (layer.spatial_kernel_weights, layer.bilateral_kernel_weights, layer.compatibility)
    )
    u = unary.reshape(b, -1, c).astype(np.float64)
    scores = u
    for _ in range(layer.iterations):
        q = np.exp(scores - scores.max(-1, keepdims=True))
        q /= q.sum(-1, keepdims=True)
        sm = kseg_ops.lattice_filter(q, spatial).numpy() * ns
        bm = kseg_ops.lattice_filter(q, bilateral).numpy() * nb
        message = np.einsum("ij,bnj->bni", ws, sm) + np.einsum("ij,bnj->bni", wb, bm)
        scores = u - np.einsum("ij,bnj->bni", mu, message)
    return scores.reshape(b, h, w, c)


def test_crf_rnn_matches_the_written_out_recurrence_and_potts_init():
    images, unary = scene(c=4)
    layer = kseg.layers.CRFRNN(iterations=3, theta_alpha=20.0, dtype="float64")
    out = layer([images, unary.astype("float64")]).numpy()
    np.testing.assert_array_equal(np.asarray(layer.compatibility), -np.eye(4))
    np.testing.assert_array_equal(np.asarray(layer.spatial_kernel_weights), 3 * np.eye(4))
    np.testing.assert_allclose(out, crf_rnn_reference(layer, images, unary), rtol=1e-10, atol=1e-10)

    # Smoothing: the CRF makes neighbouring labels agree more often than the unaries do.
    def agreement(x):
        labels = x.argmax(-1)
        return (labels[:, 1:] == labels[:, :-1]).mean()

    assert agreement(out) > agreement(unary)


def test_crf_rnn_gradients_reach_unaries_and_weights_numerically():
    images, unary = scene(b=1, h=6, w=5, c=3, seed=3)
    layer = kseg.layers.CRFRNN(iterations=2, theta_alpha=10.0, theta_beta=30.0, dtype="float64")
    layer([images, unary.astype("float64")])
    probe = np.random.default_rng(1).normal(size=unary.shape)

    def loss_of_unary(u):
        return tf.reduce_sum(layer([images, u]) * probe)

    theoretical, numerical = tf.test.compute_gradient(
        loss_of_unary, [tf.constant(unary, tf.float64)]
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)
    weights = [layer.spatial_kernel_weights, layer.bilateral_kernel_weights, layer.compatibility]
    with tf.GradientTape() as tape:
        loss = loss_of_unary(tf.constant(unary, tf.float64))
    analytic = tape.gradient(loss, weights)
    eps = 1e-6
    for weight, grad in zip(weights, analytic):
        original = weight.numpy()
        numeric = np.zeros_like(original)
        for index in np.ndindex(original.shape):
            for sign in (1, -1):
                shifted = original.copy()
                shifted[index] += sign * eps
                weight.assign(shifted)
                numeric[index] += sign * float(loss_of_unary(tf.constant(unary, tf.float64)))
        weight.assign(original)
        numeric /= 2 * eps
        assert np.abs(numeric).max() > 1e-3
        np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-5, atol=1e-6)


def test_crf_rnn_any_size_and_batch_and_round_trip(tmp_path):
    image_in = keras.Input((None, None, 3))
    unary_in = keras.Input((None, None, 5))
    model = keras.Model(
        [image_in, unary_in], kseg.layers.CRFRNN(iterations=2)([image_in, unary_in])
    )
    for b, h, w in ((1, 7, 9), (3, 16, 11)):
        images, unary = scene(b, h, w, 5)
        assert model([images, unary]).shape == (b, h, w, 5)
    path = str(tmp_path / "crfrnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    images, unary = scene(2, 8, 8, 5)
    np.testing.assert_allclose(loaded([images, unary]), model([images, unary]), rtol=1e-6)


def test_models_build_and_load_without_the_op_library(tmp_path):
    code = textwrap.dedent(f"""
        import keras, kseg
        image_in = keras.Input((32, 32, 3)); logit_in = keras.Input((32, 32, 4))
        x = kseg.layers.CRFRNN(iterations=2)([image_in, logit_in])
        y = kseg.layers.DenseCRF()([image_in, x])
        model = keras.Model([image_in, logit_in], y)
        print('SHAPE', tuple(model.output_shape))
        model.save({str(tmp_path / "m.keras")!r})
        loaded = keras.models.load_model({str(tmp_path / "m.keras")!r})
        print('LOADED', tuple(loaded.output_shape), len(loaded.weights))
        import numpy as np
        try:
            loaded.predict([np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 32, 4))], verbose=0)
        except ImportError as e:
            print('RUN-ERROR', 'pip install --no-build-isolation -e .' in str(e))
    """)
    env = dict(os.environ, KSEG_OPS_LIBRARY="/nonexistent/_kseg_ops.so", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHAPE (None, 32, 32, 4)" in out.stdout
    assert "LOADED (None, 32, 32, 4) 3" in out.stdout
    assert "RUN-ERROR True" in out.stdout


def test_dense_crf_contract_with_the_shared_harness(tmp_path):
    images, logits = scene()
    expected = kseg_ops.dense_crf(logits, images, iterations=3, from_logits=True).numpy()
    check_layer(
        kseg.layers.DenseCRF,
        {"iterations": 3},
        [images, logits],
        expected_output=expected,
        atol=1e-5,
        input_shapes=[(None, None, 3), (None, None, 3)],
        tmp_dir=tmp_path,
    )


def test_crf_rnn_contract_with_the_shared_harness(tmp_path):
    images, logits = scene(c=4, seed=2)
    out = check_layer(
        kseg.layers.CRFRNN,
        {"iterations": 2},
        [images, logits],
        atol=1e-5,
        input_shapes=[(None, None, 3), (None, None, 4)],
        tmp_dir=tmp_path,
    )
    # the mean field moves the unaries: the output is not the input
    assert np.abs(out - logits).max() > 1e-3

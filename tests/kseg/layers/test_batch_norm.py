"""kseg's BatchNormalization (fused training kernel) against Keras's own layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers.batch_norm import BatchNormalization
from kseg.testing import check_layer


def _pair(momentum=0.9, epsilon=1e-3, channels=5):
    ours, reference = (
        BatchNormalization(momentum=momentum, epsilon=epsilon),
        (keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon)),
    )
    rng = np.random.default_rng(0)
    for layer in (ours, reference):
        layer.build((None, None, None, channels))
    weights = [rng.normal(1, 0.3, channels), rng.normal(0, 0.3, channels)]
    weights += [rng.normal(0, 1, channels), rng.uniform(0.5, 2, channels)]
    for layer in (ours, reference):
        layer.set_weights([w.astype("float32") for w in weights])
    return ours, reference


@pytest.mark.parametrize("shape", [(8, 6, 7, 5), (1, 3, 2, 5), (2, 1, 1, 5)])
def test_training_step_matches_keras_outputs_gradients_and_moving_statistics(shape):
    ours, reference = _pair()
    x = tf.constant(np.random.default_rng(1).normal(3, 2, size=shape).astype("float32"))
    upstream = tf.constant(np.random.default_rng(2).normal(size=shape).astype("float32"))
    results = []
    for layer in (ours, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append(
            [
                y.numpy(),
                *(g.numpy() for g in grads),
                layer.moving_mean.numpy(),
                layer.moving_variance.numpy(),
            ]
        )
    names = ["outputs", "d_inputs", "d_gamma", "d_beta", "moving_mean", "moving_variance"]
    for name, a, b in zip(names, *results):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4, err_msg=name)
    # The batch statistics moved the moving ones: the comparison is not of untouched weights.
    untouched = _pair()[0]
    assert not np.allclose(results[0][4], untouched.moving_mean.numpy())
    assert not np.allclose(results[0][5], untouched.moving_variance.numpy())


def test_inference_and_other_calls_are_keras_own():
    ours, reference = _pair()
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 5)).astype("float32")
    np.testing.assert_array_equal(ours(x, training=False), reference(x, training=False))
    # A 3-D input is not fused: Keras's own path.
    ours3, reference3 = BatchNormalization(), keras.layers.BatchNormalization()
    x3 = np.random.default_rng(4).normal(size=(2, 4, 5)).astype("float32")
    np.testing.assert_array_equal(ours3(x3, training=True), reference3(x3, training=True))


def test_serializes_and_loads_keras_files_of_either_class(tmp_path):
    x = np.random.default_rng(5).normal(size=(2, 6, 6, 4)).astype("float32")
    check_layer(BatchNormalization, {"momentum": 0.8}, x, input_shapes=(None, None, 4))
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    model.get_layer("bn").set_weights([np.full(4, v, "float32") for v in (2, 1, 0.5, 4)])
    path = str(tmp_path / "keras_bn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))

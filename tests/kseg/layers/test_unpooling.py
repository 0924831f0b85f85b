"""Index pooling/unpooling against a numpy brute force and tf.nn.max_pool_with_argmax."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers.unpooling import (
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
    max_pool_with_window_argmax,
    window_to_flat_index,
)


def numpy_pool(x, kh, kw):
    """Brute force: ceil-mode windows, first maximum in row-major order wins."""
    b, h, w, c = x.shape
    hp, wp = -(-h // kh), -(-w // kw)
    pooled = np.zeros((b, hp, wp, c), x.dtype)
    index = np.zeros((b, hp, wp, c), np.int32)
    unpooled = np.zeros_like(x)
    for n in range(b):
        for i in range(hp):
            for j in range(wp):
                for ch in range(c):
                    best, best_pos, best_yx = None, None, None
                    for dy in range(kh):
                        for dx in range(kw):
                            y, xx = i * kh + dy, j * kw + dx
                            if y >= h or xx >= w:
                                continue
                            v = x[n, y, xx, ch]
                            if best is None or v > best:
                                best, best_pos, best_yx = v, dy * kw + dx, (y, xx)
                    pooled[n, i, j, ch] = best
                    index[n, i, j, ch] = best_pos
                    unpooled[n, best_yx[0], best_yx[1], ch] = best
    return pooled, index, unpooled


def test_hand_made_example_with_ties_batch_and_odd_size():
    # batch 2, 3x5 input (odd both ways), 1 channel; ties go to the first (row-major) maximum
    x = np.array(
        [
            [[1, 9, 2, 2, 5], [3, 4, 2, 7, 6], [8, 0, 1, 1, 9]],
            [[5, 5, 0, 1, -3], [5, 5, 3, 2, -1], [-2, -4, 0, 0, -7]],
        ],
        "float32",
    )[..., None]
    pooled, idx = MaxPoolingWithArgmax2D(2)(x)
    np.testing.assert_array_equal(
        pooled[..., 0], [[[9, 7, 6], [8, 1, 9]], [[5, 3, -1], [-2, 0, -7]]]
    )
    np.testing.assert_array_equal(idx[..., 0], [[[1, 3, 2], [0, 0, 0]], [[0, 2, 2], [0, 0, 0]]])
    restored = MaxUnpooling2D(2)([pooled, idx, x])
    expected = np.array(
        [
            [[0, 9, 0, 0, 0], [0, 0, 0, 7, 6], [8, 0, 1, 0, 9]],
            [[5, 0, 0, 0, 0], [0, 0, 3, 0, -1], [-2, 0, 0, 0, -7]],
        ],
        "float32",
    )[..., None]
    np.testing.assert_array_equal(restored, expected)


@pytest.mark.parametrize(
    "shape, pool", [((3, 7, 9, 5), (2, 2)), ((2, 6, 5, 3), (3, 2)), ((1, 4, 4, 2), (2, 2))]
)
def test_matches_brute_force(shape, pool):
    rng = np.random.default_rng(0)
    # few distinct values so that ties are frequent
    x = rng.integers(-3, 3, shape).astype("float32")
    pooled, idx = max_pool_with_window_argmax(x, pool)
    ref_pooled, ref_idx, ref_unpooled = numpy_pool(x, *pool)
    np.testing.assert_array_equal(pooled, ref_pooled)
    np.testing.assert_array_equal(idx, ref_idx)
    restored = MaxUnpooling2D(pool)([pooled, idx, x])
    np.testing.assert_array_equal(restored, ref_unpooled)


def test_flat_indices_match_tf_max_pool_with_argmax():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 8, 6, 4)).astype("float32")  # distinct values: no ties
    _, idx = max_pool_with_window_argmax(x, 2)
    _, tf_idx = tf.nn.max_pool_with_argmax(x, 2, 2, "VALID", include_batch_in_index=True)
    np.testing.assert_array_equal(window_to_flat_index(idx, x.shape, 2), tf_idx)


def test_unpool_without_reference_and_gradients():
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 6, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        pooled, idx = MaxPoolingWithArgmax2D(2)(x)
        out = MaxUnpooling2D(2)([pooled * 2.0, idx])
        loss = tf.reduce_sum(out)
    assert tuple(out.shape) == (2, 4, 6, 3)
    # gradient 2 exactly at the max positions, as for tf.nn.max_pool
    _, _, mask = numpy_pool(x.numpy(), 2, 2)
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_array_equal(grad, 2.0 * (mask != 0))


def test_symbolic_shapes_and_dynamic_sizes():
    inputs = keras.Input((None, None, 4))
    pooled, idx = MaxPoolingWithArgmax2D(2)(inputs)
    assert idx.dtype == "int32" and pooled.dtype == "float32"
    out = MaxUnpooling2D(2)([pooled, idx, inputs])
    model = keras.Model(inputs, out)
    for h, w in ((5, 7), (8, 4)):
        x = np.random.default_rng(h).normal(size=(2, h, w, 4)).astype("float32")
        np.testing.assert_array_equal(model.predict(x, verbose=0), numpy_pool(x, 2, 2)[2])
    static = keras.Input((9, 11, 4))
    p, i = MaxPoolingWithArgmax2D((3, 2))(static)
    assert tuple(p.shape) == (None, 3, 6, 4)
    assert tuple(MaxUnpooling2D((3, 2))([p, i, static]).shape) == (None, 9, 11, 4)
    assert tuple(MaxUnpooling2D((3, 2))([p, i]).shape) == (None, 9, 12, 4)


def test_saving_round_trip(tmp_path):
    inputs = keras.Input((5, 7, 2))
    pooled, idx = MaxPoolingWithArgmax2D(2)(inputs)
    model = keras.Model(inputs, MaxUnpooling2D(2)([pooled, idx, inputs]))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(3).normal(size=(2, 5, 7, 2)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.layers[1].get_config()["pool_size"] == (2, 2)


def test_converts_to_tflite_builtins_exactly():
    inputs = keras.Input((7, 9, 3), batch_size=2)
    pooled, idx = MaxPoolingWithArgmax2D(2)(inputs)
    model = keras.Model(inputs, MaxUnpooling2D(2)([pooled, idx, inputs]))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    x = np.random.default_rng(4).integers(-2, 3, (2, 7, 9, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_array_equal(out, numpy_pool(x, 2, 2)[2])


@pytest.mark.parametrize("bad", [0, (2,), (1, 1), "2", (2, 0), True])
def test_bad_pool_size(bad):
    with pytest.raises(ValueError, match=r"pool_size.*Received: pool_size="):
        MaxPoolingWithArgmax2D(bad)
    with pytest.raises(ValueError, match=r"pool_size.*Received: pool_size="):
        MaxUnpooling2D(bad)


def test_bad_inputs():
    x = np.zeros((1, 4, 4, 2), "float32")
    pooled, idx = MaxPoolingWithArgmax2D(2)(x)
    with pytest.raises(ValueError, match="values shape"):
        MaxUnpooling2D(2)([pooled, idx[:, :1]])
    with pytest.raises(ValueError, match="pre_pool shape"):
        MaxUnpooling2D(2)([pooled, idx, np.zeros((1, 8, 8, 2), "float32")])
    with pytest.raises(ValueError, match="4-D"):
        MaxPoolingWithArgmax2D(2)(np.zeros((4, 4, 2), "float32"))


def test_layer_contract_with_the_shared_harness(tmp_path):
    from kseg.testing import check_layer

    x = np.random.default_rng(5).integers(-2, 3, (2, 5, 7, 3)).astype("float32")
    pooled, idx, unpooled = numpy_pool(x, 2, 2)
    check_layer(
        MaxPoolingWithArgmax2D,
        {"pool_size": 2},
        x,
        expected_output=[pooled, idx],
        check_training=False,
        tmp_dir=tmp_path,
    )
    check_layer(
        MaxUnpooling2D,
        {"pool_size": (2, 2)},
        [pooled, idx, x],
        expected_output=unpooled,
        check_training=False,
        tmp_dir=tmp_path,
    )

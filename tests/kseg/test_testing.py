"""The shared harness passes correct models and catches broken ones."""

import keras
import numpy as np
import pytest

from kseg.data.synthetic import synthetic_numpy
from kseg.testing import (
    assert_inference_paths_agree,
    assert_keras_round_trip,
    assert_training_reduces_loss,
    check_layer,
    check_model,
    synthetic_batch,
)


def tiny(input_shape, num_classes=3, two_outputs=False):
    images = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255.0)(images)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    main = keras.layers.Conv2D(num_classes, 1, name="main")(x)
    if not two_outputs:
        return keras.Model(images, main)
    aux = keras.layers.Conv2D(num_classes, 1, name="aux")(x)
    return keras.Model(images, [main, aux])


def test_single_and_multi_output_models_pass(tmp_path):
    results = check_model(lambda s: tiny(s), [(16, 24, 3), (9, 7, 3)], 3, tmp_dir=tmp_path)
    assert len(results) == 2 and results[0]["losses"][-1] < results[0]["losses"][0]
    # both heads must receive gradients, or the eager training step reports the missing one
    multi = check_model(lambda s: tiny(s, two_outputs=True), [(16, 16, 3)], 3, tmp_dir=tmp_path)
    assert multi[0]["logits"].shape == (2, 16, 16, 3)


def test_wrong_class_count_and_broken_training_are_caught(tmp_path):
    with pytest.raises(AssertionError, match="not \\[B, 16, 16, 4\\]"):
        check_model(lambda s: tiny(s, num_classes=3), [(16, 16, 3)], 4, tmp_dir=tmp_path)
    with pytest.raises(AssertionError, match="did not bring the loss down"):
        check_model(lambda s: tiny(s), [(16, 16, 3)], 3, learning_rate=-1.0, tmp_dir=tmp_path)


def test_layer_with_wrong_compute_output_shape_is_caught():
    class Halving(keras.layers.Layer):
        def call(self, x):
            return x[:, ::2]

        def compute_output_shape(self, input_shape):
            return tuple(input_shape)  # wrong on purpose

    with pytest.raises(AssertionError, match="shape"):
        check_layer(Halving, {}, np.ones((2, 4, 3), "float32"), check_dtypes=False)


def test_synthetic_batch_is_deterministic_and_blocky():
    a_images, a_labels = synthetic_batch(2, 10, 9, 4, seed=3)
    b_images, b_labels = synthetic_batch(2, 10, 9, 4, seed=3)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert a_images.dtype == np.float32 and 0 <= a_images.min() and a_images.max() <= 255
    assert np.all(a_labels[:, :4, :4] == a_labels[:, :1, :1])  # 4x4 blocks


def test_synthetic_batch_scenes_are_the_dataset_scenes():
    images, labels = synthetic_batch(2, 20, 18, num_classes=5, seed=4, kind="scenes")
    want_images, want_labels = synthetic_numpy(2, image_size=(20, 18), seed=4, num_classes=5)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    assert labels.dtype == np.int32 and labels.max() < 5
    with pytest.raises(ValueError, match="Received: kind='noise'"):
        synthetic_batch(1, 8, 8, 2, kind="noise")
    with pytest.raises(ValueError, match="Received: channels=1"):
        synthetic_batch(1, 8, 8, 2, channels=1, kind="scenes")


def test_single_checks_pass_a_good_model_and_catch_a_bad_one(tmp_path):
    model = tiny((8, 8, 3), num_classes=2, two_outputs=True)
    images, labels = synthetic_batch(2, 8, 8, 2)
    logits = assert_inference_paths_agree(model, images)
    np.testing.assert_allclose(logits, model.predict(images, verbose=0)[0], atol=1e-5)
    # a plain functional config holds build shapes, which come back from JSON as lists
    loaded = assert_keras_round_trip(
        model, images, str(tmp_path / "tiny.keras"), exact_config=False
    )
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
    losses = assert_training_reduces_loss(model, images, labels, steps=4, learning_rate=1e-2)
    assert len(losses) == 5 and losses[-1] < 0.9 * losses[0]
    # a loss that cannot fall by 10% in one tiny step is reported
    with pytest.raises(AssertionError, match="0.9 x its first value"):
        assert_training_reduces_loss(model, images, labels, steps=1, learning_rate=1e-9)

    class Noisy(keras.layers.Layer):
        def call(self, x, training=None):
            return x + keras.random.normal(keras.ops.shape(x))  # random even at inference

    inputs = keras.Input((8, 8, 3))
    noisy = keras.Model(inputs, Noisy()(inputs))
    with pytest.raises(AssertionError, match="differs"):
        assert_inference_paths_agree(noisy, images)


def test_layer_with_unknown_sizes_and_a_chosen_dtype_list():
    @keras.saving.register_keras_serializable(package="kseg_test")
    class FixedHeight(keras.layers.Layer):
        """Guesses a height of 4 when the height is unknown: wrong for other heights."""

        def call(self, x):
            return x * 2.0

        def compute_output_shape(self, input_shape):
            return (input_shape[0], input_shape[1] or 4, *input_shape[2:])

    x = np.ones((2, 6, 3, 1), "float32")
    out = check_layer(FixedHeight, {}, x, expected_output=2 * x, check_dtypes=("float64",))
    np.testing.assert_array_equal(out, 2 * x)
    with pytest.raises(
        AssertionError, match="symbolic shape \\(None, 4, None, 1\\) does not fit the eager"
    ):
        check_layer(FixedHeight, {}, x, input_shapes=(None, None, 1), check_dtypes=False)
    with pytest.raises(AssertionError, match="does not fit the data shape"):
        check_layer(FixedHeight, {}, x, input_shapes=(5, None, 1), check_dtypes=False)


def test_layer_ignoring_its_dtype_policy_is_caught():
    @keras.saving.register_keras_serializable(package="kseg_test")
    class AlwaysFloat32(keras.layers.Layer):
        def call(self, x):
            return keras.ops.cast(x, "float32")

        def compute_output_shape(self, input_shape):
            return input_shape

    with pytest.raises(AssertionError, match="with dtype 'float64' a float output is float32"):
        check_layer(AlwaysFloat32, {}, np.ones((1, 2, 2, 1), "float32"))

"""The shared harness passes correct models and catches broken ones."""

import keras
import numpy as np
import pytest

from kseg.testing import check_layer, check_model, synthetic_batch


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

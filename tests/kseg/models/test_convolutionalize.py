"""convolutionalize: a trained classifier's dense head as convolutions (FCN's first idea)."""

import keras
import numpy as np
import pytest

from kseg.models import convolutionalize, dense_kernel_as_conv


def small_classifier(head="flatten", padding="valid"):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding=padding, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding=padding, activation="relu")(x)
    x = keras.layers.Flatten()(x) if head == "flatten" else keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"classifier_{head}")


def trained(model, seed=0):
    """A few steps on images whose class is the brightest colour channel (learnable)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 64)
    images = rng.uniform(0, 120, (64, 32, 32, 3)).astype("float32")
    images[np.arange(64), :, :, labels] += 120
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    history = model.fit(images, labels, epochs=3, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    return model


@pytest.mark.parametrize("head", ["flatten", "global_pooling"])
def test_training_size_equals_the_classifier_and_larger_sizes_give_score_maps(head):
    classifier = trained(small_classifier(head))
    fcn = convolutionalize(classifier)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (2, 64, 80, 3)).astype("float32")
    crops = images[:, :32, :32]
    expected = classifier.predict(crops, verbose=0)
    at_training_size = fcn.predict(crops, verbose=0)
    assert at_training_size.shape == (2, 1, 1, 3)
    np.testing.assert_allclose(at_training_size[:, 0, 0], expected, atol=1e-5, rtol=1e-5)
    scores = fcn.predict(images, verbose=0)
    # valid 3x3 stride-2 convolutions twice: body stride 4, 32 -> 7 (window 7x7), 64 -> 15
    assert scores.shape == (2, 9, 13, 3)
    # each score is the classifier on one 32x32 window, offset by 4 pixels per step
    for row, col in ((0, 0), (3, 5), (8, 12)):
        window = images[:, 4 * row : 4 * row + 32, 4 * col : 4 * col + 32]
        np.testing.assert_allclose(
            scores[:, row, col], classifier.predict(window, verbose=0), atol=1e-5, rtol=1e-5
        )
    np.testing.assert_allclose(scores.sum(-1), 1, atol=1e-5)  # the softmax is kept


def test_sequential_classifier_and_its_weights_are_copied_not_shared():
    classifier = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    fcn = convolutionalize(classifier, name="dense_to_conv")
    assert fcn.name == "dense_to_conv"
    conv = fcn.get_layer(f"{classifier.layers[-1].name}_as_conv")
    assert conv.kernel_size == (8, 8)
    kernel = classifier.layers[-1].get_weights()[0]
    np.testing.assert_array_equal(conv.get_weights()[0], kernel.reshape(8, 8, 4, 5))
    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(fcn(x)[:, 0, 0], classifier(x), atol=1e-5)
    fcn.layers[1].kernel.assign(fcn.layers[1].kernel * 0)
    assert np.abs(classifier.layers[0].get_weights()[0]).max() > 0


def test_dense_kernel_as_conv_reads_flatten_order():
    # Flatten of [h, w, c] is row-major: element (i, j, k) is input row i*w*c + j*c + k
    h, w, c, units = 2, 3, 4, 5
    kernel = np.arange(h * w * c * units, dtype="float32").reshape(h * w * c, units)
    conv = dense_kernel_as_conv(kernel, (h, w, c))
    np.testing.assert_array_equal(conv[1, 2, 3], kernel[1 * w * c + 2 * c + 3])
    with pytest.raises(ValueError, match=r"kernel.shape=\(10, 5\)"):
        dense_kernel_as_conv(np.zeros((10, 5)), (2, 3, 4))


def test_bad_classifiers_are_named():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match=r"fixed height and width.*input_shape=\(None, None, 3\)"):
        convolutionalize(keras.Model(inputs, keras.layers.Dense(2)(x)))
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dense(4)(keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="exactly one Flatten"):
        convolutionalize(keras.Model(inputs, x))
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(inputs))
    x = keras.layers.Reshape((6, 12))(x)
    with pytest.raises(ValueError, match="Reshape.*no convolutional equivalent"):
        convolutionalize(keras.Model(inputs, x))
    with pytest.raises(ValueError, match="built keras.Model"):
        convolutionalize(keras.layers.Dense(3))

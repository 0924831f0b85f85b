"""Checks every segmentation model in this directory must pass (imported by the test modules)."""

import keras
import numpy as np

from kseg.data.synthetic import synthetic_numpy


def synthetic_batch(height, width, num_images=2, num_classes=6, seed=0):
    images, labels = synthetic_numpy(
        num_images, image_size=(height, width), seed=seed, num_classes=num_classes
    )
    return images, labels


def assert_inference_paths_agree(model, images):
    """``model(x)``, ``model(x, training=False)`` and ``model.predict(x)`` give the same logits."""
    direct = keras.ops.convert_to_numpy(model(images))
    inference = keras.ops.convert_to_numpy(model(images, training=False))
    predicted = model.predict(images, verbose=0)
    np.testing.assert_allclose(direct, inference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predicted, inference, rtol=1e-4, atol=1e-4)
    return inference


def assert_keras_round_trip(model, images, path):
    """Saving to ``.keras`` and loading gives the same config and identical predictions."""
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    return loaded


def assert_training_reduces_loss(
    model, images, labels, steps=8, learning_rate=1e-3, loss_weights=None, loss=None
):
    """A few optimiser steps on one fixed batch bring the training loss down."""
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=loss, loss_weights=loss_weights
    )
    history = model.fit(
        images, labels, batch_size=len(images), epochs=steps, verbose=0, shuffle=False
    )
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses
    return losses

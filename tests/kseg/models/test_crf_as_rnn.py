"""CRFasRNN: FCN-8s + CRFRNN trains end to end and round-trips through .keras."""

import keras
import numpy as np

import kseg
from kseg.testing import synthetic_batch


def small_model(**kwargs):
    return kseg.models.create(
        "crfasrnn", num_classes=3, input_shape=(32, 32, 3), fc_channels=16, iterations=2, **kwargs
    )


def test_trains_with_loss_going_down_and_gradients_reach_the_crf():
    images, labels = synthetic_batch(2, 32, 32, num_classes=3, seed=1)
    model = small_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    crf = model.get_layer("crf_rnn")
    before = crf.compatibility.numpy().copy()
    history = model.fit(images, labels, epochs=6, batch_size=2, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses
    assert np.abs(crf.compatibility.numpy() - before).max() > 0  # the CRF's weights learned


def test_round_trip_and_registry(tmp_path):
    model = small_model()
    images, _ = synthetic_batch(1, 32, 32, num_classes=3)
    # Non-zero scores so the round trip compares something the CRF shaped.
    fcn = model.get_layer("fcn8s")
    for layer in fcn.layers:
        if layer.name.startswith("score_"):
            layer.kernel.assign(np.random.default_rng(0).normal(0, 0.01, layer.kernel.shape))
    out = model(images).numpy()
    assert np.abs(out).max() > 0
    path = str(tmp_path / "crfasrnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(images).numpy(), out, rtol=1e-5, atol=1e-6)
    assert loaded.get_config()["iterations"] == 2
    assert "crfasrnn" in kseg.models.names()

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg import engine, metrics


def test_poly_schedule_values():
    schedule = engine.poly_schedule(0.01, total_steps=100, power=0.9)
    for step in (0, 10, 50, 99, 100):
        want = 0.01 * (1 - step / 100) ** 0.9
        assert abs(float(schedule(step)) - want) < 1e-8
    warm = engine.poly_schedule(0.01, total_steps=100, warmup_steps=10)
    assert abs(float(warm(4)) - 0.005) < 1e-8
    assert abs(float(warm(50)) - 0.01 * 0.5**0.9) < 1e-8
    with pytest.raises(ValueError, match="total_steps"):
        engine.poly_schedule(0.01, total_steps=0)


def _fixed_model():
    inputs = keras.Input((None, None, 3))
    # logits = channel values, so the prediction is the argmax over the input's channels
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    return model


def _trainable_model():
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))


def test_evaluate_and_predict_labels_match_metrics():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 6, 7, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (5, 6, 7)).astype(np.int32)
    labels[0, :2] = 255
    model = _fixed_model()
    predicted = engine.predict_labels(model, images, batch_size=2)
    np.testing.assert_array_equal(predicted, images.argmax(-1))
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    result = engine.evaluate(model, ds, num_classes=3, progress=False)
    want = metrics.confusion_matrix(labels, images.argmax(-1), 3)
    np.testing.assert_array_equal(result["confusion_matrix"], want)
    assert result["mean_iou"] == metrics.scores(want)["mean_iou"]
    assert result["num_pixels"] == int((labels != 255).sum())


def test_predict_labels_rejects_bad_images():
    model = _fixed_model()
    with pytest.raises(ValueError, match="NaN"):
        engine.predict_labels(model, np.full((1, 4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="shape"):
        engine.predict_labels(model, np.zeros((4, 4, 3)))


def test_compile_model_warmup_steps():
    model = _fixed_model()
    engine.compile_model(model, num_classes=3, learning_rate=0.01, total_steps=100, warmup_steps=10)
    schedule = (
        model.optimizer._learning_rate
    )  # the schedule (``learning_rate`` is its current value)
    assert abs(float(schedule(4)) - 0.005) < 1e-8
    assert abs(float(schedule(50)) - 0.01 * 0.5**0.9) < 1e-8


def test_compile_model_metrics_and_steps_per_execution():
    images = np.random.default_rng(0).uniform(0, 255, (8, 4, 4, 3)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 3, (8, 4, 4)).astype("int32")
    default = _trainable_model()
    engine.compile_model(default, num_classes=3, total_steps=10)
    assert sorted(default.fit(images, labels, batch_size=4, epochs=1, verbose=0).history) == [
        "loss",
        "mean_iou",
        "pixel_accuracy",
    ]

    lean = _trainable_model()
    engine.compile_model(lean, num_classes=3, total_steps=10, metrics=[], steps_per_execution=2)
    history = lean.fit(images, labels, batch_size=2, epochs=1, verbose=0).history
    assert sorted(history) == ["loss"]
    assert int(lean.optimizer.iterations) == 4  # 8 images in batches of 2, two steps per graph call
    assert lean.steps_per_execution == 2

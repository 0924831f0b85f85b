import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg import losses


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def make_case(seed, c=4, shape=(3, 5, 6)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape + (c,)).astype(np.float64)
    labels = rng.integers(0, c, shape)
    labels[rng.random(shape) < 0.3] = 255
    return labels, logits


def reference_ce(labels, logits, weights=None, gamma=0.0):
    p = softmax(logits)
    total, norm = 0.0, 0.0
    for idx in np.ndindex(labels.shape):
        y = labels[idx]
        if y == 255:
            continue
        w = 1.0 if weights is None else weights[y]
        pt = p[idx][y]
        total += w * -((1 - pt) ** gamma) * np.log(pt)
        norm += w
    return total / norm


def reference_dice(labels, logits, smooth=1.0):
    p = softmax(logits)
    c = logits.shape[-1]
    per_image = []
    for b in range(labels.shape[0]):
        valid = labels[b] != 255
        scores = []
        for k in range(c):
            t = (labels[b] == k) & valid
            pk = p[b, ..., k] * valid
            scores.append((2 * np.sum(pk * t) + smooth) / (pk.sum() + t.sum() + smooth))
        per_image.append(1 - np.mean(scores))
    return np.mean(per_image)


@pytest.mark.parametrize("seed", range(5))
def test_cross_entropy_matches_reference(seed):
    labels, logits = make_case(seed)
    weights = [0.2, 1.0, 3.0, 0.5]
    assert (
        abs(
            float(losses.CrossEntropy(dtype="float64")(labels, logits))
            - reference_ce(labels, logits)
        )
        < 1e-9
    )
    got = float(losses.CrossEntropy(class_weights=weights, dtype="float64")(labels, logits))
    assert abs(got - reference_ce(labels, logits, weights)) < 1e-9
    probs = softmax(logits)
    got = float(losses.CrossEntropy(from_logits=False, dtype="float64")(labels[..., None], probs))
    assert abs(got - reference_ce(labels, logits)) < 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_focal_and_dice_match_reference(seed):
    labels, logits = make_case(seed)
    got = float(losses.Focal(gamma=2.0, dtype="float64")(labels, logits))
    assert abs(got - reference_ce(labels, logits, gamma=2.0)) < 1e-9
    assert (
        abs(
            float(losses.Focal(gamma=0.0, dtype="float64")(labels, logits))
            - reference_ce(labels, logits)
        )
        < 1e-9
    )
    assert (
        abs(float(losses.Dice(dtype="float64")(labels, logits)) - reference_dice(labels, logits))
        < 1e-6
    )


def test_ignored_pixels_do_not_change_the_loss():
    labels, logits = make_case(0)
    changed = logits.copy()
    changed[labels == 255] = 100.0 * np.random.default_rng(1).normal(
        size=changed[labels == 255].shape
    )
    for loss in (
        losses.CrossEntropy(dtype="float64"),
        losses.Dice(dtype="float64"),
        losses.Focal(dtype="float64"),
    ):
        assert abs(float(loss(labels, logits)) - float(loss(labels, changed))) < 1e-9
    all_ignored = np.full_like(labels, 255)
    assert float(losses.CrossEntropy()(all_ignored, logits.astype(np.float32))) == 0.0


def test_weighted_sum_operators_and_serialization():
    labels, logits = make_case(3)
    combo = losses.CrossEntropy(dtype="float64") + 0.5 * losses.Dice(dtype="float64")
    assert isinstance(combo, losses.WeightedSum) and combo.weights == [1.0, 0.5]
    want = reference_ce(labels, logits) + 0.5 * reference_dice(labels, logits)
    assert abs(float(combo(labels, logits)) - want) < 1e-6
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(combo))
    assert abs(float(clone(labels, logits)) - want) < 1e-6
    ce = losses.CrossEntropy.from_config(
        losses.CrossEntropy(ignore_index=0, class_weights=[1, 2]).get_config()
    )
    assert ce.ignore_index == 0 and ce.class_weights == [1.0, 2.0]


def test_training_with_losses_reduces_them():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int32)
    y[:, 0, :] = 255
    for loss in (
        losses.CrossEntropy(),
        losses.Focal(),
        losses.Dice(),
        losses.CrossEntropy() + losses.Dice(),
    ):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
        history = model.fit(x, y, epochs=15, batch_size=4, verbose=0).history["loss"]
        assert history[-1] < 0.7 * history[0], (loss.name, history)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="class_weights"):
        losses.CrossEntropy(class_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="gamma"):
        losses.Focal(gamma=-1)
    with pytest.raises(ValueError, match="ignore_index"):
        losses.CrossEntropy(ignore_index="x")
    with pytest.raises(ValueError, match="class_weights has 2 entries"):
        losses.CrossEntropy(class_weights=[1, 1])(
            np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 3), np.float32)
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        losses.CrossEntropy()(np.array([[7, 0]]), np.zeros((1, 2, 3), np.float32))


def test_class_weights_from_frequency_values_and_errors():
    class_weights_from_frequency = losses.class_weights_from_frequency

    labels = np.array([[0, 0, 0, 0, 0, 0, 1, 1, 2, 255]] * 3)
    counts = np.array([6.0, 2.0, 1.0])
    for power in (0.0, 0.25, 0.5, 1.0):
        want = (counts / counts.sum()) ** -power
        np.testing.assert_allclose(
            class_weights_from_frequency(labels, 3, power=power), want / want.mean(), rtol=1e-12
        )
    # A class with no pixels takes the largest weight of the others; the others keep their ratios.
    four = class_weights_from_frequency(labels, 4, power=1.0)
    assert four[3] == max(four[:3])
    np.testing.assert_allclose(np.array(four[:3]) / four[0], [1.0, 3.0, 6.0], rtol=1e-12)
    # Streaming over a dataset of (image, label) batches counts the same pixels.
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((3, 10, 1), "float32"), labels)).batch(2)
    np.testing.assert_allclose(
        class_weights_from_frequency(ds, 3), class_weights_from_frequency(labels, 3), rtol=1e-12
    )
    # With the weights, the loss is the weighted mean of the per-pixel losses.
    logits = np.random.default_rng(0).normal(size=(3, 10, 3)).astype("float32")
    weights = class_weights_from_frequency(labels, 3)
    loss = float(losses.CrossEntropy(class_weights=weights)(labels, logits))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = labels != 255
    nll = -np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    w = np.where(valid, np.array(weights)[np.where(valid, labels, 0)], 0.0)
    np.testing.assert_allclose(loss, (w * nll).sum() / w.sum(), rtol=1e-5)

    with pytest.raises(ValueError, match="value 3, outside"):
        class_weights_from_frequency([[0, 3]], 3)
    with pytest.raises(ValueError, match="value 0.5"):
        class_weights_from_frequency(np.array([0.5, 1.0]), 3)
    with pytest.raises(ValueError, match="no pixel"):
        class_weights_from_frequency([[255, 255]], 3)
    with pytest.raises(ValueError, match="power"):
        class_weights_from_frequency([[0]], 3, power=-1)
    with pytest.raises(ValueError, match="num_classes"):
        class_weights_from_frequency([[0]], 0)

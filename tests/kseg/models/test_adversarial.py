"""AdversarialSegmentation and SemiSupervisedGAN: fit, their losses, round-trip, export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg import export
from kseg.models.adversarial import _masked_cross_entropy
from kseg.testing import assert_inference_paths_agree, synthetic_batch


def unet():
    return kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4, depth=2)


def weights_of(model):
    return [w.numpy().copy() for w in model.trainable_weights]


def changed(before, model):
    return [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]


def test_adversarial_fit_trains_both_networks_and_round_trips(tmp_path):
    images, labels = synthetic_batch(4, 32, 32, num_classes=3, seed=1)
    labels[0, :8] = 255  # ignored pixels
    model = kseg.models.AdversarialSegmentation(unet(), lambda_adv=0.1, discriminator_filters=8)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), metrics=[kseg.metrics.MeanIoU(num_classes=3)]
    )
    segmenter, discriminator = weights_of(model.segmenter), weights_of(model.discriminator)
    history = model.fit(images, labels, epochs=4, batch_size=4, verbose=0).history
    assert set(history) == {"loss", "seg_loss", "adv_loss", "d_loss", "mean_iou"}
    assert history["seg_loss"][-1] < history["seg_loss"][0]
    # loss = seg_loss + lambda_adv * adv_loss (one step per epoch, so the means are the values)
    np.testing.assert_allclose(
        history["loss"], np.add(history["seg_loss"], 0.1 * np.array(history["adv_loss"])), 1e-5
    )
    assert all(changed(segmenter, model.segmenter)) and all(
        changed(discriminator, model.discriminator)
    )
    assert model.optimizer.iterations.numpy() == 4
    assert model.discriminator_optimizer.iterations.numpy() == 4

    scores = model.evaluate(images, labels, verbose=0, return_dict=True)
    logits = model.predict(images, verbose=0)
    np.testing.assert_allclose(
        scores["loss"], float(_masked_cross_entropy(tf.constant(labels), logits)), rtol=1e-4
    )
    assert_inference_paths_agree(model, images)
    path = tmp_path / "adversarial.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is kseg.models.AdversarialSegmentation and loaded.lambda_adv == 0.1
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))
    for a, b in zip(loaded.discriminator.weights, model.discriminator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the optimizers' state came back too, so training resumes
    assert loaded.discriminator_optimizer.iterations.numpy() == 4


def test_semi_supervised_gan_uses_unlabelled_and_generated_images(tmp_path):
    images, labels = synthetic_batch(4, 32, 32, num_classes=3, seed=2)
    labels[2:] = 255  # two unlabelled images
    model = kseg.models.SemiSupervisedGAN(unet(), latent_dim=8, generator_filters=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    generator = weights_of(model.generator)
    history = model.fit(images, labels, epochs=4, batch_size=4, verbose=0).history
    assert set(history) == {"loss", "sup_loss", "unsup_loss", "fake_loss", "g_loss"}
    assert history["loss"][-1] < history["loss"][0]
    np.testing.assert_allclose(
        history["loss"],
        np.array(history["sup_loss"]) + history["unsup_loss"] + np.array(history["fake_loss"]),
        rtol=1e-5,
    )
    assert all(changed(generator, model.generator))
    # the supervised term counts the labelled pixels only: unlabelled images change nothing
    logits = model.segmenter(images, training=False)
    both = float(_masked_cross_entropy(tf.constant(labels), logits))
    alone = float(_masked_cross_entropy(tf.constant(labels[:2]), logits[:2]))
    np.testing.assert_allclose(both, alone, rtol=1e-6)
    assert float(_masked_cross_entropy(tf.constant(labels[2:]), logits[2:])) == 0.0
    # P(real) of a pixel is Z / (Z + 1): the fake class's logit is 0
    z = np.exp(np.asarray(logits, np.float64)).sum(-1)
    lse = tf.reduce_logsumexp(logits, -1).numpy()
    np.testing.assert_allclose(np.log1p(np.exp(-lse)), -np.log(z / (z + 1)), rtol=1e-4)

    path = tmp_path / "ssgan.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is kseg.models.SemiSupervisedGAN and loaded.latent_dim == 8
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))
    noise = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(loaded.generator(noise)), np.asarray(model.generator(noise))
    )


def test_semi_supervised_gan_feature_matching_and_real_batch_norm_statistics():
    images, labels = synthetic_batch(4, 32, 32, num_classes=3, seed=4)
    segmenter = unet()
    reference = keras.models.clone_model(segmenter)
    reference.set_weights(segmenter.get_weights())
    layer = [lay.name for lay in segmenter.layers if "relu" in lay.name][-1]
    model = kseg.models.SemiSupervisedGAN(
        segmenter, latent_dim=8, generator_filters=8, seed=3, feature_layer=layer
    )
    # Learning rate 0: the logged losses are those of the initial weights.
    model.compile(keras.optimizers.SGD(0.0), generator_optimizer=keras.optimizers.SGD(0.0))
    logs = model.train_step((tf.constant(images), tf.constant(labels)))
    # The moving statistics are those of one training call on the real batch alone.
    reference(images, training=True)
    for ours, theirs in zip(segmenter.non_trainable_variables, reference.non_trainable_variables):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(reference.non_trainable_variables[0].numpy(), 0)
    # The generator's loss: squared distance of the layer's mean activations (inference mode,
    # after the segmenter's step), real batch against the generated one.
    noise = keras.random.normal((4, 8), seed=keras.random.SeedGenerator(3))
    features = keras.Model(reference.inputs, reference.get_layer(layer).output)
    real = np.asarray(features(images, training=False)).mean((0, 1, 2))
    fake = np.asarray(features(model.generator(noise, training=True), training=False))
    expected = np.sum((real - fake.mean((0, 1, 2))) ** 2)
    np.testing.assert_allclose(float(logs["g_loss"]), expected, rtol=1e-4)
    config = model.get_config()
    assert config["feature_layer"] == layer
    with pytest.raises(ValueError, match="Received: feature_layer='nope'"):
        kseg.models.SemiSupervisedGAN(unet(), feature_layer="nope")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["adversarial", "ssgan"])
def test_exports_serve_the_segmenter(kind, tmp_path):
    images, labels = synthetic_batch(2, 32, 32, num_classes=3, seed=3)
    if kind == "adversarial":
        model = kseg.models.AdversarialSegmentation(unet(), discriminator_filters=8)
    else:
        model = kseg.models.SemiSupervisedGAN(unet(), latent_dim=8, generator_filters=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(images, labels, epochs=2, batch_size=2, verbose=0)
    expected = model.predict(images, verbose=0)
    np.testing.assert_array_equal(expected, model.segmenter.predict(images, verbose=0))
    saved = export.saved_model(model, tmp_path / "saved_model")
    np.testing.assert_allclose(export.run_saved_model(saved, images), expected, atol=1e-4)
    lite = export.tflite(model, tmp_path / f"{kind}.tflite", input_shape=(32, 32, 3))
    ops = {d["op_name"] for d in export.tflite_interpreter(lite)._get_ops_details()}
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops
    assert export.verify(model, lite, images)["argmax_agreement"] >= 0.999


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Received: segmenter='unet'"):
        kseg.models.AdversarialSegmentation("unet")
    with pytest.raises(ValueError, match="Received: lambda_adv=-1"):
        kseg.models.AdversarialSegmentation(unet(), lambda_adv=-1)
    free = kseg.models.UNet(num_classes=3, base_filters=4, depth=2)  # size unknown
    with pytest.raises(ValueError, match=r"Received: segmenter input_shape=\(None, None, 3\)"):
        kseg.models.SemiSupervisedGAN(free)
    with pytest.raises(ValueError, match="Received: latent_dim=0"):
        kseg.models.SemiSupervisedGAN(unet(), latent_dim=0)

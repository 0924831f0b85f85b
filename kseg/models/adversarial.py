"""Adversarial training of segmenters: Luc et al. 2016 and the semi-supervised GAN of Souly et al.

Both wrap a segmenter in a Keras model whose output is the segmenter's logits (so ``predict``,
export and evaluation see the segmenter alone) and whose ``train_step`` trains it against a
second network; both work with ``fit``. Labels follow kseg's convention: ``[B, H, W]`` ints,
255 ignored (for ``SemiSupervisedGAN``, an unlabelled image has a label map of 255 only).
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf
from keras import layers

from kseg.layers import ImageNormalization
from kseg.models._base import SegmentationModel, check_positive_int

IGNORE_INDEX = 255


def _check_weight(model, argument, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(
            f"{model}: {argument} must be a number >= 0. Received: {argument}={value!r}"
        )


def _check_segmenter(model, segmenter):
    if isinstance(segmenter, dict):  # from a saved config
        segmenter = keras.saving.deserialize_keras_object(segmenter)
    if not isinstance(segmenter, keras.Model) or len(segmenter.outputs) != 1:
        raise ValueError(
            f"{model}: segmenter must be a keras.Model with one output [B, H, W, num_classes]. "
            f"Received: segmenter={segmenter!r}"
        )
    return segmenter


def _sparse_labels(y):
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 4:
        y = tf.squeeze(y, -1)
    return tf.cast(y, tf.int32)


def _masked_cross_entropy(labels, logits):
    """Mean cross-entropy over the pixels whose label is not 255 (0 when there are none)."""
    valid = tf.not_equal(labels, IGNORE_INDEX)
    safe = tf.where(valid, labels, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(safe, tf.cast(logits, tf.float32))
    valid = tf.cast(valid, tf.float32)
    return tf.reduce_sum(ce * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def adversarial_discriminator(num_classes, input_shape, filters=64, name="discriminator"):
    """Luc et al.'s discriminator: (image, label map) -> one real/fake logit per pair.

    The "Stanford Background" network of the paper: the class probabilities (or one-hot
    truth) go through a 5×5 convolution of ``filters``; the image through 5×5 convolutions of
    ``filters / 4`` and ``filters``; the two are concatenated, then 3×3 convolutions of 2, 4
    and 8 × ``filters`` with 2×2 max-pooling between, and a global average of a final 3×3
    convolution to one logit ("real"). Images are in 0..255 and normalised inside.

    Args:
        num_classes: channels of the label maps.
        input_shape: ``(H, W, C)`` of the images (H/W may be None).
        filters: width of the first layers.
        name: the model's name.

    Example:
        >>> d = adversarial_discriminator(3, (32, 32, 3), filters=8)
        >>> [tuple(t.shape) for t in d.inputs], tuple(d.output.shape)
        ([(None, 32, 32, 3), (None, 32, 32, 3)], (None, 1))
    """
    check_positive_int("adversarial_discriminator", "filters", filters)
    images = keras.Input(tuple(input_shape), name="images")
    labels = keras.Input((*tuple(input_shape)[:2], num_classes), name="label_map")
    x = ImageNormalization("tf", name="normalize")(images)
    x = layers.Conv2D(max(filters // 4, 1), 5, padding="same", activation="relu", name="image1")(x)
    x = layers.Conv2D(filters, 5, padding="same", activation="relu", name="image2")(x)
    y = layers.Conv2D(filters, 5, padding="same", activation="relu", name="label1")(labels)
    x = layers.Concatenate(name="pair")([x, y])
    for index, width in enumerate((2 * filters, 4 * filters, 8 * filters), 1):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        if index < 3:
            x = layers.MaxPooling2D(2, padding="same", name=f"pool{index}")(x)
    x = layers.Conv2D(1, 3, padding="same", name="score")(x)
    logit = layers.GlobalAveragePooling2D(name="average")(x)
    return keras.Model([images, labels], logit, name=name)


class _TrainerMixin:
    """Loss trackers and compiled metrics shared by the two adversarial models."""

    _tracker_names = ()

    def _make_trackers(self):
        self._trackers = {n: keras.metrics.Mean(name=n) for n in ("loss", *self._tracker_names)}

    @property
    def metrics(self):
        compiled = [m for m in super().metrics if m.name != "loss"]
        return list(self._trackers.values()) + compiled

    def _results(self, y, logits, sample_weight, **values):
        for key, value in values.items():
            self._trackers[key].update_state(value)
        if getattr(self, "_compile_metrics", None) is not None:
            self._compile_metrics.update_state(y, logits, sample_weight)
        results = {}
        for metric in self.metrics:
            result = metric.result()
            if isinstance(result, dict):
                results.update(result)
            else:
                results[metric.name] = result
        return results

    def test_step(self, data):
        # evaluation: the segmentation loss and the compiled metrics (no adversary)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = _sparse_labels(y)
        logits = self(x, training=False)
        results = self._results(y, logits, sample_weight, loss=_masked_cross_entropy(y, logits))
        return {k: v for k, v in results.items() if k not in self._tracker_names}

    def compile_from_config(self, config):
        # Keras skips a custom compile() when loading; ours takes the same base arguments
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)


def _second_optimizer(optimizer, given):
    if given is not None:
        return keras.optimizers.get(given)
    return type(optimizer).from_config(optimizer.get_config())


@keras.saving.register_keras_serializable(package="kseg")
class AdversarialSegmentation(_TrainerMixin, SegmentationModel):
    """A segmenter trained with a discriminator on (image, label map) pairs (Luc et al. 2016).

    Each ``train_step`` first trains the discriminator to tell the true label maps (one-hot;
    pixels labelled 255 take the segmenter's own prediction, so they give nothing away) from
    the segmenter's softmax outputs, then trains the segmenter on cross-entropy (255 ignored)
    plus ``lambda_adv`` times the adversarial loss ``-log D(image, softmax(logits))`` (the
    paper's "modified" generator loss). The model's output is the segmenter's logits.
    ``compile(optimizer, discriminator_optimizer=None, metrics=...)``: the discriminator gets a
    copy of the segmenter's optimizer unless one is given. Logged: ``loss`` (segmenter total),
    ``seg_loss``, ``adv_loss``, ``d_loss``.

    Args:
        segmenter: any one-output segmentation model (``[B, H, W, C] -> [B, H, W, K]``).
        discriminator: a model ``[images, label maps] -> [B, 1]`` logit; default
            ``adversarial_discriminator(K, input_shape)``.
        lambda_adv: weight of the adversarial term.
        discriminator_filters: width of the default discriminator.

    Example:
        >>> import kseg
        >>> unet = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4,
        ...                         depth=2)
        >>> model = AdversarialSegmentation(unet, lambda_adv=0.1, discriminator_filters=8)
        >>> model.compile(optimizer="adam")
        >>> images, labels = kseg.testing.synthetic_batch(2, 32, 32, num_classes=3)
        >>> history = model.fit(images, labels, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['adv_loss', 'd_loss', 'loss', 'seg_loss']
    """

    _tracker_names = ("seg_loss", "adv_loss", "d_loss")

    def __init__(
        self,
        segmenter,
        discriminator=None,
        lambda_adv=0.1,
        discriminator_filters=64,
        name=None,
        **kwargs,
    ):
        segmenter = _check_segmenter("AdversarialSegmentation", segmenter)
        _check_weight("AdversarialSegmentation", "lambda_adv", lambda_adv)
        check_positive_int(
            "AdversarialSegmentation", "discriminator_filters", discriminator_filters
        )
        input_shape = tuple(segmenter.inputs[0].shape[1:])
        num_classes = segmenter.outputs[0].shape[-1]
        if isinstance(discriminator, dict):
            discriminator = keras.saving.deserialize_keras_object(discriminator)
        if discriminator is None:
            discriminator = adversarial_discriminator(
                num_classes, input_shape, filters=discriminator_filters
            )
        elif not isinstance(discriminator, keras.Model) or len(discriminator.inputs) != 2:
            raise ValueError(
                "AdversarialSegmentation: discriminator must be a keras.Model taking "
                f"[images, label maps]. Received: discriminator={discriminator!r}"
            )
        images = keras.Input(input_shape, name="images")
        logits = segmenter(images)
        super().__init__(images, logits, name=name or "adversarial_segmentation", **kwargs)
        self._store_config(
            segmenter=segmenter,
            discriminator=discriminator,
            lambda_adv=float(lambda_adv),
            discriminator_filters=discriminator_filters,
        )
        self._make_trackers()

    def get_config(self):
        config = super().get_config()
        config["segmenter"] = keras.saving.serialize_keras_object(self.segmenter)
        config["discriminator"] = keras.saving.serialize_keras_object(self.discriminator)
        return config

    @property
    def preprocessing(self):
        """The segmenter's ``preprocessing``."""
        return getattr(self.segmenter, "preprocessing", None)

    def compile(self, optimizer="adam", loss=None, discriminator_optimizer=None, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.segmenter.trainable_variables)  # the segmenter's alone
        self.discriminator_optimizer = _second_optimizer(self.optimizer, discriminator_optimizer)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = _sparse_labels(y)
        num_classes = self.outputs[0].shape[-1]
        bce = keras.losses.binary_crossentropy
        fake = tf.nn.softmax(tf.cast(self.segmenter(x, training=True), tf.float32))
        fake = tf.stop_gradient(fake)
        valid = tf.not_equal(y, IGNORE_INDEX)[..., None]
        real = tf.where(valid, tf.one_hot(tf.where(valid[..., 0], y, 0), num_classes), fake)
        with tf.GradientTape() as tape:
            d_real = self.discriminator([x, real], training=True)
            d_fake = self.discriminator([x, fake], training=True)
            d_loss = tf.reduce_mean(
                bce(tf.ones_like(d_real), d_real, from_logits=True)
                + bce(tf.zeros_like(d_fake), d_fake, from_logits=True)
            )
        variables = self.discriminator.trainable_variables
        grads = tape.gradient(d_loss, variables)
        self.discriminator_optimizer.apply_gradients(zip(grads, variables))

        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            seg_loss = _masked_cross_entropy(y, logits)
            probs = tf.nn.softmax(tf.cast(logits, tf.float32))
            d_out = self.discriminator([x, probs], training=False)
            adv_loss = tf.reduce_mean(bce(tf.ones_like(d_out), d_out, from_logits=True))
            loss = seg_loss + self.lambda_adv * adv_loss
            if self.segmenter.losses:
                loss = loss + tf.add_n(self.segmenter.losses)
        variables = self.segmenter.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._results(
            y,
            logits,
            sample_weight,
            loss=loss,
            seg_loss=seg_loss,
            adv_loss=adv_loss,
            d_loss=d_loss,
        )


def ssgan_generator(latent_dim, image_shape, filters=64, name="generator"):
    """A DCGAN-style generator of ``image_shape`` images in 0..255 from ``latent_dim`` noise.

    A dense layer to an 8-times smaller map of ``4 * filters`` channels, three 4×4 stride-2
    transposed convolutions with batch normalisation and ReLU (``2 * filters``, ``filters``,
    ``filters / 2``), a 3×3 convolution to the channels with tanh, scaled to 0..255 and
    resized to the exact size.

    Args:
        latent_dim: length of the noise vector.
        image_shape: ``(H, W, C)`` with known H and W.
        filters: the width.
        name: the model's name.

    Example:
        >>> g = ssgan_generator(16, (40, 48, 3), filters=8)
        >>> tuple(g.output.shape)
        (None, 40, 48, 3)
    """
    height, width, channels = image_shape
    if height is None or width is None:
        raise ValueError(
            "ssgan_generator: the image size must be known to generate images. "
            f"Received: image_shape={tuple(image_shape)!r}"
        )
    noise = keras.Input((latent_dim,), name="noise")
    small = (-(-height // 8), -(-width // 8))
    x = layers.Dense(small[0] * small[1] * 4 * filters, name="project")(noise)
    x = layers.Reshape((*small, 4 * filters), name="reshape")(x)
    for index, width_ in enumerate((2 * filters, filters, max(filters // 2, 1)), 1):
        x = layers.Conv2DTranspose(
            width_, 4, strides=2, padding="same", use_bias=False, name=f"up{index}"
        )(x)
        x = layers.BatchNormalization(name=f"bn{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
    x = layers.Conv2D(channels, 3, padding="same", activation="tanh", name="to_image")(x)
    x = layers.Rescaling(127.5, offset=127.5, name="to_pixels")(x)
    if (8 * small[0], 8 * small[1]) != (height, width):
        x = layers.Resizing(height, width, name="resize")(x)
    return keras.Model(noise, x, name=name)


@keras.saving.register_keras_serializable(package="kseg")
class SemiSupervisedGAN(_TrainerMixin, SegmentationModel):
    """Semi-supervised segmentation with a GAN (Souly et al., ICCV 2017).

    The segmenter is the discriminator: per pixel it scores K real classes and a "fake"
    class. The fake class's logit is held at 0 (Salimans et al. 2016: a (K+1)-way softmax
    with one logit fixed loses nothing, since softmax ignores a shared shift), so any
    K-class segmenter serves unchanged and its K logits are the segmentation; the
    probability that a pixel is real is ``Z / (Z + 1)``, ``Z = sum_k exp(logit_k)``. Each
    ``train_step`` trains the segmenter on cross-entropy over the labelled pixels (label
    maps of 255 mark unlabelled images), ``lambda_unlabeled`` × ``-log P(real)`` over every
    pixel of the real images and ``lambda_fake`` × ``-log P(fake)`` over the pixels of a
    batch of generated images; then the generator on ``-log P(real)`` of its images (the
    non-saturating loss) or, with ``feature_layer``, on feature matching (Salimans et al.
    2016, which Souly et al. build on): the squared distance between the mean activations
    of that segmenter layer on the real and the generated batch. Generated images never
    update the segmenter's batch-norm statistics (they are restored after the fake batch),
    so inference normalises with real-image statistics only. A segmenter trained on the
    labelled images first is a warm start. ``compile(optimizer, generator_optimizer=None,
    ...)``. Logged: ``loss`` (segmenter total), ``sup_loss``, ``unsup_loss``, ``fake_loss``,
    ``g_loss``.

    Args:
        segmenter: a one-output K-class segmentation model with a known input size.
        generator: a model ``[B, latent_dim] -> images``; default ``ssgan_generator``.
        latent_dim: length of the noise vector.
        lambda_unlabeled, lambda_fake: weights of the two GAN terms of the segmenter.
        generator_filters: width of the default generator.
        seed: seed of the noise.
        feature_layer: None (non-saturating generator loss) or the name of a segmenter layer
            whose mean activations the generator matches (feature matching).

    Example:
        >>> import kseg
        >>> unet = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4,
        ...                         depth=2)
        >>> model = SemiSupervisedGAN(unet, latent_dim=16, generator_filters=8)
        >>> model.compile(optimizer="adam")
        >>> images, labels = kseg.testing.synthetic_batch(4, 32, 32, num_classes=3)
        >>> labels[2:] = 255  # two unlabelled images
        >>> history = model.fit(images, labels, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['fake_loss', 'g_loss', 'loss', 'sup_loss', 'unsup_loss']
    """

    _tracker_names = ("sup_loss", "unsup_loss", "fake_loss", "g_loss")

    def __init__(
        self,
        segmenter,
        generator=None,
        latent_dim=64,
        lambda_unlabeled=1.0,
        lambda_fake=1.0,
        generator_filters=64,
        seed=0,
        feature_layer=None,
        name=None,
        **kwargs,
    ):
        segmenter = _check_segmenter("SemiSupervisedGAN", segmenter)
        features = None
        if feature_layer is not None:
            names = [layer.name for layer in segmenter.layers]
            if feature_layer not in names:
                raise ValueError(
                    "SemiSupervisedGAN: feature_layer must name a layer of the segmenter "
                    f"(e.g. {names[-2]!r}). Received: feature_layer={feature_layer!r}"
                )
            features = keras.Model(
                segmenter.inputs, segmenter.get_layer(feature_layer).output, name="features"
            )
        check_positive_int("SemiSupervisedGAN", "latent_dim", latent_dim)
        check_positive_int("SemiSupervisedGAN", "generator_filters", generator_filters)
        _check_weight("SemiSupervisedGAN", "lambda_unlabeled", lambda_unlabeled)
        _check_weight("SemiSupervisedGAN", "lambda_fake", lambda_fake)
        input_shape = tuple(segmenter.inputs[0].shape[1:])
        if isinstance(generator, dict):
            generator = keras.saving.deserialize_keras_object(generator)
        if generator is None:
            if None in input_shape[:2]:
                raise ValueError(
                    "SemiSupervisedGAN: the default generator needs a segmenter with a known "
                    f"input size. Received: segmenter input_shape={input_shape!r}"
                )
            generator = ssgan_generator(latent_dim, input_shape, filters=generator_filters)
        elif not isinstance(generator, keras.Model):
            raise ValueError(
                "SemiSupervisedGAN: generator must be a keras.Model [B, latent_dim] -> images. "
                f"Received: generator={generator!r}"
            )
        images = keras.Input(input_shape, name="images")
        logits = segmenter(images)
        super().__init__(images, logits, name=name or "semi_supervised_gan", **kwargs)
        self._store_config(
            segmenter=segmenter,
            generator=generator,
            latent_dim=latent_dim,
            lambda_unlabeled=float(lambda_unlabeled),
            lambda_fake=float(lambda_fake),
            generator_filters=generator_filters,
            seed=seed,
            feature_layer=feature_layer,
        )
        self._features = features
        self._make_trackers()
        self.noise_seed = keras.random.SeedGenerator(seed)

    def get_config(self):
        config = super().get_config()
        config["segmenter"] = keras.saving.serialize_keras_object(self.segmenter)
        config["generator"] = keras.saving.serialize_keras_object(self.generator)
        return config

    @property
    def preprocessing(self):
        """The segmenter's ``preprocessing``."""
        return getattr(self.segmenter, "preprocessing", None)

    def compile(self, optimizer="adam", loss=None, generator_optimizer=None, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.segmenter.trainable_variables)  # the segmenter's alone
        self.generator_optimizer = _second_optimizer(self.optimizer, generator_optimizer)
        self.generator_optimizer.build(self.generator.trainable_variables)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = _sparse_labels(y)
        noise = keras.random.normal((tf.shape(x)[0], self.latent_dim), seed=self.noise_seed)
        fake_images = tf.stop_gradient(self.generator(noise, training=True))
        statistics = [
            v
            for layer in self.segmenter._flatten_layers()
            if isinstance(layer, layers.BatchNormalization)
            for v in layer.non_trainable_variables
        ]
        with tf.GradientTape() as tape:
            # Batch-norm statistics of generated images are put back: inference must use
            # those of real images (tf.function orders the reads and assigns as written).
            saved = [tf.identity(v) for v in statistics]
            fake_logits = self(fake_images, training=True)
            for variable, value in zip(statistics, saved):
                variable.assign(value)
            logits = self(x, training=True)
            sup_loss = _masked_cross_entropy(y, logits)
            total_real = tf.reduce_logsumexp(tf.cast(logits, tf.float32), axis=-1)
            total_fake = tf.reduce_logsumexp(tf.cast(fake_logits, tf.float32), axis=-1)
            # -log P(real) = softplus(-lse), -log P(fake) = softplus(lse)
            unsup_loss = tf.reduce_mean(tf.nn.softplus(-total_real))
            fake_loss = tf.reduce_mean(tf.nn.softplus(total_fake))
            loss = sup_loss + self.lambda_unlabeled * unsup_loss + self.lambda_fake * fake_loss
            if self.segmenter.losses:
                loss = loss + tf.add_n(self.segmenter.losses)
        variables = self.segmenter.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))

        with tf.GradientTape() as tape:
            generated = self.generator(noise, training=True)
            if self._features is None:
                scores = tf.reduce_logsumexp(
                    tf.cast(self(generated, training=False), tf.float32), axis=-1
                )
                g_loss = tf.reduce_mean(tf.nn.softplus(-scores))
            else:
                axes = list(range(len(self._features.output.shape) - 1))
                real = tf.reduce_mean(tf.cast(self._features(x, training=False), tf.float32), axes)
                fake = self._features(generated, training=False)
                fake = tf.reduce_mean(tf.cast(fake, tf.float32), axes)
                g_loss = tf.reduce_sum(tf.square(tf.stop_gradient(real) - fake))
        variables = self.generator.trainable_variables
        grads = tape.gradient(g_loss, variables)
        self.generator_optimizer.apply_gradients(zip(grads, variables))
        return self._results(
            y,
            logits,
            sample_weight,
            loss=loss,
            sup_loss=sup_loss,
            unsup_loss=unsup_loss,
            fake_loss=fake_loss,
            g_loss=g_loss,
        )

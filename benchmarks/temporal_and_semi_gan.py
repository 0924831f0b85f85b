"""Learning checks on synthetic data with exact truth, each against a same-budget baseline.

``temporal``: ``TemporalSegmenter`` (a ConvLSTM over a small U-Net's last decoder features)
against the same U-Net per frame, both trained for the same steps on the same frames of
``kseg.data.synthetic_sequences`` clips (objects moving, ~30 % of frames occluded by a panel
over the objects, amodal truth); held-out clips scored on all, occluded and clear frames.

``ssgan``: ``SemiSupervisedGAN`` with 10 % of the images labelled against the same U-Net
trained on those labelled images alone (same steps, same labelled batches; the GAN also sees
an unlabelled batch and a generated one each step) on ``kseg.data.synthetic_numpy`` scenes.

    flock /tmp/kseg-heavy.lock python benchmarks/temporal_and_semi_gan.py temporal [--steps N]
    flock /tmp/kseg-heavy.lock python benchmarks/temporal_and_semi_gan.py ssgan [--steps N] \
        [--warm-start N] [--lambda-unlabeled W] [--lambda-fake W] [--feature-layer NAME]

Prints one JSON line per model: mean IoU (kseg.metrics) and the CPU seconds of its training.
"""

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf

import kseg
from kseg.metrics import confusion_matrix, scores


def _miou(labels, logits, num_classes):
    pred = np.argmax(logits, axis=-1)
    return float(scores(np.asarray(confusion_matrix(labels, pred, num_classes)))["mean_iou"])


def _unet(num_classes, size, seed):
    keras.utils.set_random_seed(seed)
    return kseg.models.UNet(
        num_classes=num_classes, input_shape=(*size, 3), base_filters=8, depth=3
    )


def _timed_fit(model, dataset, steps):
    cpu = time.process_time()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return time.process_time() - cpu


def temporal(args):
    size, length, classes = (48, 48), 6, 3
    frames, labels, _ = kseg.data.synthetic_sequences(96, length, size, seed=0)
    test_frames, test_labels, occluded = kseg.data.synthetic_sequences(32, length, size, seed=1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = []

    per_frame = _unet(classes, size, args.seed)
    per_frame.compile(keras.optimizers.Adam(args.lr), loss)
    flat = tf.data.Dataset.from_tensor_slices(
        (frames.reshape(-1, *size, 3), labels.reshape(-1, *size))
    )
    flat = flat.shuffle(len(frames) * length, seed=args.seed).repeat().batch(2 * length)
    cpu = _timed_fit(per_frame, flat, args.steps)
    logits = per_frame.predict(test_frames.reshape(-1, *size, 3), verbose=0)
    logits = logits.reshape(*test_labels.shape, classes)
    results.append(("U-Net per frame", logits, cpu))

    video = kseg.models.TemporalSegmenter(
        _unet(classes, size, args.seed),
        sequence_length=length,
        feature_layer="up1_conv2_relu",
        filters=16,
    )
    video.compile(keras.optimizers.Adam(args.lr), loss)
    clips = tf.data.Dataset.from_tensor_slices((frames, labels))
    clips = clips.shuffle(len(frames), seed=args.seed).repeat().batch(2)
    cpu = _timed_fit(video, clips, args.steps)
    results.append(("TemporalSegmenter (ConvLSTM)", video.predict(test_frames, verbose=0), cpu))

    for name, logits, cpu in results:
        row = {
            "experiment": "temporal",
            "model": name,
            "steps": args.steps,
            "frames_per_step": 2 * length,
            "miou_all": _miou(test_labels, logits, classes),
            "miou_occluded": _miou(test_labels[occluded], logits[occluded], classes),
            "miou_clear": _miou(test_labels[~occluded], logits[~occluded], classes),
            "occluded_frames": int(occluded.sum()),
            "train_cpu_s": round(cpu, 1),
        }
        print(json.dumps(row), flush=True)


def ssgan(args):
    size, classes, batch = (48, 48), 6, 8
    images, labels = kseg.data.synthetic_numpy(400, size, seed=0, num_classes=classes)
    test_images, test_labels = kseg.data.synthetic_numpy(100, size, seed=1, num_classes=classes)
    labelled = 40  # 10 %
    sup = tf.data.Dataset.from_tensor_slices((images[:labelled], labels[:labelled]))
    sup = sup.shuffle(labelled, seed=args.seed).repeat().batch(batch)
    results = []

    alone = _unet(classes, size, args.seed)
    alone.compile(
        keras.optimizers.Adam(args.lr),
        kseg.losses.CrossEntropy(ignore_index=255),
    )
    # Warm start: the GAN's segmenter starts from the baseline after --warm-start steps and
    # both then train the remaining steps, so each sees `steps` labelled batches in all.
    warm_cpu = _timed_fit(alone, sup, args.warm_start) if args.warm_start else 0.0
    segmenter = _unet(classes, size, args.seed)
    if args.warm_start:
        segmenter.set_weights(alone.get_weights())
    cpu = warm_cpu + _timed_fit(alone, sup, args.steps - args.warm_start)
    results.append(("U-Net on the 10 % alone", alone, cpu))

    unlabelled = tf.data.Dataset.from_tensor_slices(images[labelled:])
    unlabelled = unlabelled.shuffle(400 - labelled, seed=args.seed).repeat().batch(batch)

    def join(pair, extra):
        x, y = pair
        blank = tf.fill(tf.shape(y), 255)
        return tf.concat([x, extra], 0), tf.concat([y, blank], 0)

    mixed = tf.data.Dataset.zip((sup, unlabelled)).map(join)
    gan = kseg.models.SemiSupervisedGAN(
        segmenter,
        latent_dim=64,
        generator_filters=32,
        seed=args.seed,
        lambda_unlabeled=args.lambda_unlabeled,
        lambda_fake=args.lambda_fake,
        feature_layer=args.feature_layer,
    )
    gan.compile(keras.optimizers.Adam(args.lr), generator_optimizer=keras.optimizers.Adam(2e-4))
    cpu = warm_cpu + _timed_fit(gan, mixed, args.steps - args.warm_start)
    results.append(("SemiSupervisedGAN, 10 % labelled + 90 % unlabelled", gan, cpu))

    for name, model, cpu in results:
        logits = model.predict(test_images, verbose=0)
        row = {
            "experiment": "ssgan",
            "model": name,
            "steps": args.steps,
            "labelled_images": labelled,
            "warm_start": args.warm_start,
            "lambda_unlabeled": args.lambda_unlabeled,
            "lambda_fake": args.lambda_fake,
            "feature_layer": args.feature_layer,
            "miou_test": _miou(test_labels, logits, classes),
            "train_cpu_s": round(cpu, 1),
        }
        print(json.dumps(row), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=("temporal", "ssgan"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    ssgan_options = parser.add_argument_group("ssgan")
    ssgan_options.add_argument(
        "--warm-start", type=int, default=0, help="supervised steps before the GAN (shared)"
    )
    ssgan_options.add_argument("--lambda-unlabeled", type=float, default=1.0)
    ssgan_options.add_argument("--lambda-fake", type=float, default=1.0)
    ssgan_options.add_argument(
        "--feature-layer",
        default=None,
        help="feature matching on this U-Net layer (e.g. up1_conv2_relu) instead of the "
        "non-saturating generator loss",
    )
    args = parser.parse_args()
    if not 0 <= args.warm_start < args.steps:
        parser.error(f"--warm-start must be in [0, --steps). Received: {args.warm_start}")
    {"temporal": temporal, "ssgan": ssgan}[args.experiment](args)


if __name__ == "__main__":
    main()

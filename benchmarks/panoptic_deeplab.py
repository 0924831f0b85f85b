"""Panoptic-DeepLab learning on synthetic instance scenes, against a same-budget DeepLabV3+.

Scenes: two stuff classes (0 background, 1 a band of "ground" at the bottom) and two thing
classes (2 discs, 3 squares), 3 to 7 objects per image, drawn in clusters of two or three
objects of one class that touch or overlap (the later one occludes), so that the semantic map
alone cannot separate them. Objects of one class share a hue band; images get a brightness
gradient and noise. An object left with fewer than 12 visible pixels becomes void.

Both models use the same MobileNetV2 backbone, widths, data, optimiser, steps and batch
size; Panoptic-DeepLab trains its three losses (paper weights), DeepLabV3+ cross-entropy.
Held-out scenes (another seed) give Panoptic-DeepLab's PQ (``kseg.panoptic.panoptic_quality``)
and both models' semantic mIoU.

``--scenes synthetic_instances`` trains and scores on ``kseg.data.synthetic_instances`` at
``--difficulty`` (default 0.5: five thing classes told apart by shape, touching and overlapping
objects of one class, textured background) instead of the scenes above.

Run (timed runs hold the lock so they never overlap)::

    flock /tmp/kseg-heavy.lock python benchmarks/panoptic_deeplab.py --steps 1500 \
        --output benchmarks/panoptic_deeplab.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

STUFF = (0, 1)
THINGS = (2, 3)
NUM_CLASSES = 4
HUES = {0: (0.55, 0.65), 1: (0.08, 0.14), 2: (0.95, 1.05), 3: (0.28, 0.38)}


def _hsv_to_rgb(h, s, v):
    h = h % 1.0
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _colour(rng, cls):
    low, high = HUES[cls]
    return np.array(_hsv_to_rgb(rng.uniform(low, high), rng.uniform(0.5, 0.9), 0.8)) * 255


def _shape_mask(cls, cy, cx, radius, rows, cols):
    if cls == 2:
        return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
    return (np.abs(rows - cy) <= radius) & (np.abs(cols - cx) <= radius)


def scene(rng, size):
    """One image (float32 0..255) and its panoptic map (int32, class * 1000 + instance)."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.empty((size, size, 3), np.float32)
    image[:] = _colour(rng, 0)
    panoptic = np.zeros((size, size), np.int32)
    if rng.random() < 0.7:
        top = int(rng.uniform(0.65, 0.85) * size)
        band = rows >= top + 3 * np.sin(cols / rng.uniform(4, 9))
        image[band] = _colour(rng, 1)
        panoptic[band] = 1000
    objects = []
    for _ in range(rng.integers(2, 4)):  # clusters
        cls = int(rng.choice(THINGS))
        radius = rng.uniform(0.07, 0.12) * size
        cy, cx = rng.uniform(radius, size - radius, 2)
        objects.append((cls, cy, cx, radius))
        for _ in range(rng.integers(1, 3)):  # touching / overlapping neighbours, same class
            r2 = rng.uniform(0.07, 0.12) * size
            angle = rng.uniform(0, 2 * np.pi)
            distance = (radius + r2) * rng.uniform(0.65, 1.0)
            objects.append((cls, cy + distance * np.sin(angle), cx + distance * np.cos(angle), r2))
    counters = {c: 0 for c in THINGS}
    for cls, cy, cx, radius in objects:
        mask = _shape_mask(cls, cy, cx, radius, rows, cols)
        counters[cls] += 1
        image[mask] = _colour(rng, cls)
        panoptic[mask] = cls * 1000 + counters[cls]
    ids, counts = np.unique(panoptic, return_counts=True)
    for segment, count in zip(ids, counts):
        if segment % 1000 and count < 12:
            panoptic[panoptic == segment] = 255000
    gradient = 1 + 0.25 * (rows / size - 0.5) * rng.choice([-1, 1])
    image = image * gradient[..., None] + rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.float32), panoptic


def scenes(count, size, seed):
    rng = np.random.default_rng(seed)
    pairs = [scene(rng, size) for _ in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def library_scenes(kseg, count, size, first_index, args):
    """Images and panoptic maps of ``kseg.data.synthetic_instances`` (held out: other indices).

    Objects under 12 visible pixels are void, as in :func:`scene`.
    """
    samples = kseg.data.synthetic_instances(
        count,
        (size, size),
        seed=args.seed,
        first_index=first_index,
        difficulty=args.difficulty,
        min_area=12,
    )
    pairs = [(s["image"].numpy(), s["panoptic"].numpy()) for s in samples]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def mean_iou(predicted, truth, num_classes=NUM_CLASSES, ignore=255):
    valid = truth != ignore
    confusion = np.bincount(
        truth[valid] * num_classes + predicted[valid], minlength=num_classes**2
    ).reshape(num_classes, num_classes)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    return float(np.mean(inter[union > 0] / union[union > 0]))


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_batch_norm_momentum(keras, model, momentum):
    # keras.applications' MobileNetV2 uses 0.999: after a short schedule its moving statistics
    # still hold mostly the first steps' batches and inference (training=False) collapses to
    # one class. Both models get the same momentum.
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _schedule(keras, learning_rate, steps):
    return keras.optimizers.schedules.PolynomialDecay(learning_rate, steps, 0.0, power=0.9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--train-scenes", type=int, default=1200)
    parser.add_argument("--val-scenes", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=128, help="ASPP/decoder width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bn-momentum", type=float, default=0.9)
    parser.add_argument("--models", default="panoptic_deeplab,deeplabv3plus")
    parser.add_argument(
        "--scenes",
        choices=("clusters", "synthetic_instances"),
        default="clusters",
        help="this file's disc/square clusters, or kseg.data.synthetic_instances (five thing "
        "classes over one stuff background) at --difficulty",
    )
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    import kseg
    from kseg.panoptic import panoptic_quality, training_targets

    keras.utils.set_random_seed(args.seed)
    things, num_classes = THINGS, NUM_CLASSES
    if args.scenes == "clusters":
        images, maps = scenes(args.train_scenes, args.size, seed=1000 + args.seed)
        val_images, val_maps = scenes(args.val_scenes, args.size, seed=9000 + args.seed)
    else:
        things, num_classes = (1, 2, 3, 4, 5), 6
        images, maps = library_scenes(kseg, args.train_scenes, args.size, 0, args)
        val_images, val_maps = library_scenes(kseg, args.val_scenes, args.size, 10**9, args)
    targets = training_targets(maps, things, small_instance_area=0)
    val_semantic = np.where(val_maps // 1000 == 255, 255, val_maps // 1000)
    print(
        f"{len(images)} training and {len(val_images)} held-out scenes of {args.size}x"
        f"{args.size}; {args.steps} steps of batch {args.batch_size}",
        flush=True,
    )
    common = dict(
        num_classes=num_classes,
        input_shape=(args.size, args.size, 3),
        backbone="mobilenetv2",
        output_stride=16,
    )
    results = {"settings": vars(args)}
    for name in args.models.split(","):
        keras.backend.clear_session()
        keras.utils.set_random_seed(args.seed)
        if name == "panoptic_deeplab":
            model = kseg.models.PanopticDeepLab(
                thing_classes=things,
                aspp_filters=args.width,
                semantic_filters=args.width,
                instance_filters=args.width // 2,
                semantic_head_filters=args.width,
                **common,
            )
            model.compile(
                keras.optimizers.Adam(_schedule(keras, args.learning_rate, args.steps)),
                loss=model.default_losses(),
                loss_weights=model.loss_weights_for_outputs,
            )
            data = tf.data.Dataset.from_tensor_slices((images, targets))
        else:
            model = kseg.models.DeepLabV3Plus(filters=args.width, **common)
            model.compile(
                keras.optimizers.Adam(_schedule(keras, args.learning_rate, args.steps)),
                loss=kseg.losses.CrossEntropy(ignore_index=255),
            )
            data = tf.data.Dataset.from_tensor_slices((images, targets[0][..., 0]))
        _set_batch_norm_momentum(keras, model, args.bn_momentum)
        data = data.shuffle(len(images), seed=args.seed).repeat().batch(args.batch_size)
        wall, cpu = time.time(), _cpu_seconds()
        # epochs of 100 steps: one progress line each
        history = model.fit(
            data.prefetch(2),
            steps_per_epoch=min(100, args.steps),
            epochs=max(1, args.steps // 100),
            verbose=2,
        ).history
        train_wall, train_cpu = time.time() - wall, _cpu_seconds() - cpu
        if name == "panoptic_deeplab":
            semantic_logits = model.predict(val_images, batch_size=16, verbose=0)[0]
            panoptic = model.panoptic_model(
                nms_kernel=7, top_k=32, stuff_area=64, center_threshold=0.1
            ).predict(val_images, batch_size=16, verbose=0)
            quality = panoptic_quality(list(panoptic), list(val_maps), thing_classes=things)
        else:
            semantic_logits = model.predict(val_images, batch_size=16, verbose=0)
            quality = None
        miou = mean_iou(np.argmax(semantic_logits, -1), val_semantic, num_classes)
        results[name] = {
            "trainable_parameters": int(
                sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            ),
            "train_wall_s": round(train_wall, 1),
            "train_cpu_s": round(train_cpu, 1),
            "final_loss": float(history["loss"][-1]),
            "semantic_miou": round(miou, 4),
        }
        if quality is not None:
            results[name].update(
                pq=round(quality["pq"], 4),
                sq=round(quality["sq"], 4),
                rq=round(quality["rq"], 4),
                pq_things=round(quality["things"]["pq"], 4),
                pq_stuff=round(quality["stuff"]["pq"], 4),
                per_class={
                    str(k): {m: round(v, 4) if isinstance(v, float) else v for m, v in d.items()}
                    for k, d in quality["per_class"].items()
                },
            )
        print(name, json.dumps(results[name]), flush=True)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()

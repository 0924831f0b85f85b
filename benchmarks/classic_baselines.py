"""Pre-deep-learning segmentation (kseg.classic) beside a small U-Net on the synthetic scenes.

Every method is scored with kseg's metrics on the same held-out scenes (synthetic "test" split,
six classes). The classic methods see no training data: their segments are named by Hungarian
matching to the classes on each image's truth (``kseg.classic.match_segments``), an oracle
labelling that flatters them. The U-Net (``base_filters=8``, depth 3, ~0.12 M parameters)
trains on scenes of the "train" split with augmentation and predicts the classes itself.

    python benchmarks/classic_baselines.py [--test 50] [--size 64] [--train 1000] [--epochs 10]
        [--output FILE]
"""

import argparse
import json
import time

CLASSIC = [
    ("otsu", {}),
    ("multi_otsu", {"classes": 4}),
    ("kmeans", {"n_clusters": 6}),
    ("kmeans", {"n_clusters": 6, "spatial_weight": 0.5}),
    ("gmm", {"n_components": 6}),
    ("mean_shift", {}),
    ("watershed", {"markers": 30}),
    ("felzenszwalb", {"scale": 100, "min_size": 20}),
    ("normalized_cuts", {"n_segments": 100}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the scores as JSON")
    args = parser.parse_args()

    import keras

    import kseg

    size = (args.size, args.size)
    first = kseg.data.SYNTHETIC_SPLITS["test"][0]
    images, labels = kseg.data.synthetic_numpy(args.test, size, seed=args.seed, first_index=first)
    rows = {}
    for method, options in CLASSIC:
        start = time.process_time()
        result = kseg.classic.evaluate(method, zip(images, labels), num_classes=6, **options)
        seconds = (time.process_time() - start) / args.test
        label = method + "".join(f" {k}={v}" for k, v in options.items())
        rows[label] = {k: result[k] for k in ("mean_iou", "pixel_accuracy", "mean_accuracy")}
        rows[label]["cpu_s_per_image"] = seconds
        rows[label]["segments_per_image"] = result["segments_per_image"]
        print(f"{label:45s} mIoU {result['mean_iou']:.3f}", flush=True)

    keras.utils.set_random_seed(args.seed)
    train = kseg.data.load(
        "synthetic",
        split="train",
        num_images=args.train,
        image_size=size,
        seed=args.seed,
        augment=True,
        crop_size=size,
        batch_size=16,
        drop_remainder=True,
    )
    model = kseg.models.create(
        "unet", num_classes=6, input_shape=(*size, 3), base_filters=8, depth=3
    )
    steps = args.epochs * (args.train // 16)
    kseg.engine.compile_model(model, 6, learning_rate=3e-3, total_steps=steps, metrics=[])
    start = time.perf_counter()
    model.fit(train, epochs=args.epochs, verbose=2)
    train_seconds = time.perf_counter() - start
    start = time.process_time()
    predicted = kseg.engine.predict_labels(model, images, batch_size=16)
    seconds = (time.process_time() - start) / args.test
    result = kseg.metrics.scores(kseg.metrics.confusion_matrix(labels, predicted, 6))
    label = f"U-Net ({model.count_params():,} params, {train_seconds:.0f} s training)"
    rows[label] = {k: result[k] for k in ("mean_iou", "pixel_accuracy", "mean_accuracy")}
    rows[label]["cpu_s_per_image"] = seconds
    rows[label]["segments_per_image"] = float("nan")  # it predicts classes, not segments

    print(
        f"\n{'method':55s} {'mIoU':>6s} {'pix acc':>8s} {'mean acc':>8s} {'CPU s/img':>9s} "
        f"{'segments':>8s}"
    )
    for method, s in rows.items():
        print(
            f"{method:55s} {s['mean_iou']:6.3f} {s['pixel_accuracy']:8.3f} "
            f"{s['mean_accuracy']:8.3f} {s['cpu_s_per_image']:9.3f} "
            f"{s['segments_per_image']:8.1f}"
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"arguments": vars(args), "scores": rows}, f, indent=2)


if __name__ == "__main__":
    main()

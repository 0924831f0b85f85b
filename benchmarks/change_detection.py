"""Change detection on synthetic pairs with illumination changes: FC-EF / FC-Siam-conc /
FC-Siam-diff against classic image differencing (|A - B| thresholded by Otsu).

Pairs (``kseg.data.synthetic_change``): objects appear, vanish and move between A and B, and B
is seen under another light (gain, offset, colour cast, smooth shading) that must not count as
change. Each network trains on the same pairs (random crops, flips and separate photometric
jitter of A and B) for the same number of steps and is scored on held-out pairs with
``kseg.metrics.change_scores`` (precision, recall, F1 and IoU of the change class, overall
accuracy, Cohen's kappa). The classic peer needs no training: the per-pixel colour distance
between A and B, thresholded by Otsu's method (change vector analysis).

    python benchmarks/change_detection.py [--models fc_siam_diff,fc_ef,fc_siam_conc]
        [--train 1000] [--test 200] [--epochs 12] [--size 64] [--seed 0] [--dropout 0.2]
        [--output FILE]
"""

import argparse
import json
import time

import numpy as np


def classic_differencing(pairs):
    """Change vector analysis: ``|A - B|`` per pixel, thresholded by Otsu over the test set."""
    from skimage.filters import threshold_otsu

    distance = np.linalg.norm(pairs[..., :3] - pairs[..., 3:], axis=-1)
    return (distance > threshold_otsu(distance)).astype(np.int32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fc_siam_diff,fc_ef,fc_siam_conc")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--illumination", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dropout", type=float, default=None, help="the models' dropout (default: the paper's 0.2)"
    )
    parser.add_argument("--output", help="write the scores as JSON")
    args = parser.parse_args()

    import keras

    import kseg
    from kseg.data import SYNTHETIC_SPLITS, synthetic_change, synthetic_change_numpy

    size = (args.size, args.size)
    test_pairs, test_labels = synthetic_change_numpy(
        args.test,
        size,
        seed=args.seed,
        first_index=SYNTHETIC_SPLITS["test"][0],
        illumination=args.illumination,
    )
    print(f"test pairs: {args.test}, changed pixels {test_labels.mean():.1%}")
    rows = {}
    cm = kseg.metrics.confusion_matrix(test_labels, classic_differencing(test_pairs), 2)
    rows["|A-B| + Otsu (classic)"] = {**kseg.metrics.change_scores(cm), "seconds": 0.0}
    for name in args.models.split(","):
        keras.utils.set_random_seed(args.seed)
        train = synthetic_change(
            args.train,
            size,
            seed=args.seed,
            illumination=args.illumination,
            augment=True,
            crop_size=size,
            batch_size=args.batch_size,
            drop_remainder=True,
        )
        options = {} if args.dropout is None else {"dropout": args.dropout}
        model = kseg.models.create(name, input_shape=(*size, 6), **options)
        steps = args.epochs * (args.train // args.batch_size)
        kseg.engine.compile_model(
            model, 2, learning_rate=1e-3, total_steps=steps, optimizer="adam", metrics=[]
        )
        start = time.perf_counter()
        model.fit(train, epochs=args.epochs, verbose=2)
        seconds = time.perf_counter() - start
        predicted = kseg.engine.predict_labels(model, test_pairs, batch_size=32)
        cm = kseg.metrics.confusion_matrix(test_labels, predicted, 2)
        rows[f"{type(model).__name__} ({model.count_params():,} params)"] = {
            **kseg.metrics.change_scores(cm),
            "seconds": seconds,
        }
        keras.backend.clear_session()
    print(
        f"\n{'method':40s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'IoU':>6s} "
        f"{'OA':>6s} {'kappa':>6s} {'train s':>8s}"
    )
    for method, s in rows.items():
        print(
            f"{method:40s} {s['precision']:9.3f} {s['recall']:7.3f} {s['f1']:6.3f} "
            f"{s['iou']:6.3f} {s['overall_accuracy']:6.3f} {s['kappa']:6.3f} {s['seconds']:8.0f}"
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"arguments": vars(args), "scores": rows}, f, indent=2)


if __name__ == "__main__":
    main()

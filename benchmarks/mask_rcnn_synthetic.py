"""Mask R-CNN learning run on the synthetic instance scenes, scored by pycocotools' COCOeval.

Trains a small Mask R-CNN (ResNet-18-FPN by default) on touching and overlapping objects of
one class for a wall-clock budget, then reports COCO bbox and mask AP on held-out scenes.

    flock /tmp/kseg-heavy.lock python benchmarks/mask_rcnn_synthetic.py --minutes 20
"""

import argparse
import json
import time

import keras

import kseg
from kseg.instance import MaskRCNN, evaluate, pad_targets


class TimeBudget(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--fpn-filters", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--difficulty", type=float, default=0.0)
    parser.add_argument("--output", default=None, help="JSON file for the scores")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    size = (args.image_size, args.image_size)

    def scenes(count, first_index):
        ds = kseg.data.synthetic_instances(
            count, size, seed=0, first_index=first_index, difficulty=args.difficulty, min_area=8
        )
        return [{k: v.numpy() for k, v in s.items()} for s in ds]

    train = scenes(args.train, 0)
    held_out = scenes(args.val, 1_000_000_000)
    images, targets = pad_targets(train)
    scale = args.image_size / 128.0
    model = MaskRCNN(
        num_classes=6,
        backbone=args.backbone,
        fpn_filters=args.fpn_filters,
        input_shape=(*size, 3),
        roi_samples=128,
        train_proposals=300,
        test_proposals=300,
        max_detections=30,
        anchor_sizes=tuple(s * scale for s in (32, 64, 128, 256, 512)),
    )
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate, clipnorm=10.0))
    budget = TimeBudget(args.minutes * 60.0)
    start = time.perf_counter()
    model.fit(
        images, targets, batch_size=args.batch_size, epochs=1000, callbacks=[budget], verbose=2
    )
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = evaluate(model, held_out, batch_size=8)
    report = {
        "train_seconds": round(train_seconds, 1),
        "train_steps": int(model.optimizer.iterations.numpy()),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "params": model.count_params(),
        "args": vars(args),
        **{f"{t}_{k}": round(v, 4) for t in scores for k, v in scores[t].items()},
    }
    print(json.dumps(report, indent=1))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

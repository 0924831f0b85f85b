"""Attention-to-Scale against same-budget baselines on scenes with objects at several scales.

All models share one trunk (MobileNetV2 x0.35 at output stride 8, fc6/fc7 64 wide) and train
the same number of Adam steps on the same synthetic scenes, whose object radii span 4 % to
45 % of the image side (``object_size`` knob); held-out scenes (another seed) are scored with
kseg's metrics. The peers: the trunk on one scale (the paper's DeepLab baseline), and the
three scales merged by average pooling (the paper's other baseline). The CPU time of each
run is printed beside its scores. The trunk's batch norms use momentum ``--bn-momentum`` (0.9):
keras.applications' 0.999 leaves the moving statistics near their initial values after a few
hundred steps from scratch, and every model then predicts background at inference.

    python benchmarks/architectures.py --model attention_to_scale [--epochs 10] [--size 96]
    python benchmarks/architectures.py --model single_scale
    python benchmarks/architectures.py --model average_scale
"""

import argparse
import json
import time

import keras
import numpy as np

import kseg
from kseg import metrics
from kseg.data import synthetic_numpy

TRUNK = dict(
    backbone="mobilenetv2",
    backbone_options={"alpha": 0.35},
    fc_channels=64,
    fc6_dilation=4,
    attention_channels=32,
    dropout=0.1,
)
MODELS = {
    "attention_to_scale": dict(scales=(1.0, 0.75, 0.5), merge="attention"),
    "average_scale": dict(scales=(1.0, 0.75, 0.5), merge="average"),
    "single_scale": dict(scales=(1.0,)),
}
SCENES = dict(object_size=(0.04, 0.45), min_objects=2, max_objects=6)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--train", type=int, default=480)
    parser.add_argument("--val", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bn-momentum", type=float, default=0.9)
    args = parser.parse_args()

    size = (args.size, args.size)
    x_train, y_train = synthetic_numpy(args.train, size, seed=10 + args.seed, **SCENES)
    x_val, y_val = synthetic_numpy(args.val, size, seed=1000, **SCENES)
    keras.utils.set_random_seed(args.seed)
    trunk = dict(
        TRUNK, backbone_options={**TRUNK["backbone_options"], "bn_momentum": args.bn_momentum}
    )
    model = kseg.models.AttentionToScale(
        num_classes=6, input_shape=(*size, 3), **trunk, **MODELS[args.model]
    )
    outputs = len(model.outputs)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        keras.optimizers.Adam(1e-3),
        loss=[ce] * outputs if outputs > 1 else ce,
        loss_weights=model.loss_weights_for_outputs if outputs > 1 else None,
    )
    targets = tuple([y_train] * outputs) if outputs > 1 else y_train
    cpu, wall = time.process_time(), time.perf_counter()
    model.fit(x_train, targets, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall

    logits = model.inference_model().predict(x_val, batch_size=16, verbose=0)
    cm = metrics.confusion_matrix(y_val, logits.argmax(-1), 6, 255)
    scores = metrics.scores(cm)
    steps = args.epochs * int(np.ceil(args.train / args.batch_size))
    result = {
        "model": args.model,
        "params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "steps": steps,
        "bn_momentum": args.bn_momentum,
        "seed": args.seed,
        "train_cpu_s": round(cpu, 1),
        "train_wall_s": round(wall, 1),
        "mean_iou": round(float(scores["mean_iou"]), 4),
        "pixel_accuracy": round(float(scores["pixel_accuracy"]), 4),
        "class_iou": [round(float(v), 4) for v in scores["iou"]],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

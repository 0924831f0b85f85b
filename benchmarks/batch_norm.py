"""kseg.layers.BatchNormalization (fused training kernel) against keras.layers.BatchNormalization.

Times training steps of the demo's U-Net (``kseg.demo.RECIPE``: 8 filters, depth 4, 96×96
synthetic scenes) with each batch-norm implementation, interleaved over several rounds so that
load from other processes hits both alike, and reports process CPU time and wall time per scene
and the paired ratio (Keras / kseg) per round, with its median.

    flock /tmp/kseg-heavy.lock python benchmarks/batch_norm.py --rounds 3 --batch-sizes 8 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras

import kseg
from kseg import engine
from kseg.layers import batch_norm


def _use(fused):
    # The models are built with kseg's layer; Keras's path is forced by refusing the fusion. The
    # choice is made when the train step is traced, so it is set before each model's first fit.
    batch_norm.BatchNormalization._fusable = (
        _FUSABLE if fused else (lambda self, inputs, training, mask: False)
    )


def _model():
    keras.utils.set_random_seed(0)
    recipe = kseg.demo.RECIPE
    model = kseg.models.UNet(
        num_classes=len(kseg.data.SYNTHETIC_CLASSES),
        input_shape=(*recipe["image_size"], 3),
        base_filters=recipe["unet_filters"],
        depth=recipe["unet_depth"],
    )
    engine.compile_model(
        model,
        len(kseg.data.SYNTHETIC_CLASSES),
        learning_rate=recipe["learning_rate"],
        total_steps=10_000,
        metrics=[],
        steps_per_execution=recipe["steps_per_execution"],
    )
    return model


_FUSABLE = batch_norm.BatchNormalization._fusable


def _time(model, images, labels, batch_size):
    cpu, wall = time.process_time(), time.perf_counter()
    model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    count = len(images)
    return (time.process_time() - cpu) / count * 1e3, (time.perf_counter() - wall) / count * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenes", type=int, default=512, help="scenes timed per round")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args(argv)

    images, labels = next(
        kseg.data.load(
            "synthetic",
            split="train",
            num_images=args.scenes,
            image_size=kseg.demo.RECIPE["image_size"],
        )
        .batch(args.scenes)
        .as_numpy_iterator()
    )
    print("| batch | Keras CPU ms/scene | kseg CPU ms/scene | Keras wall | kseg wall | CPU ratio |")
    print("|---|---|---|---|---|---|")
    for batch_size in args.batch_sizes:
        models = {name: _model() for name in ("keras", "kseg")}
        for name, model in models.items():  # warm-up: tracing and first steps
            _use(name == "kseg")
            model.fit(images[:128], labels[:128], batch_size=batch_size, epochs=1, verbose=0)
        results = {"keras": [], "kseg": []}
        for _ in range(args.rounds):
            for name in ("keras", "kseg"):
                results[name].append(_time(models[name], images, labels, batch_size))
        ratios = [k[0] / f[0] for k, f in zip(results["keras"], results["kseg"])]
        keras_cpu = statistics.median(r[0] for r in results["keras"])
        kseg_cpu = statistics.median(r[0] for r in results["kseg"])
        keras_wall = statistics.median(r[1] for r in results["keras"])
        kseg_wall = statistics.median(r[1] for r in results["kseg"])
        print(
            f"| {batch_size} | {keras_cpu:.2f} | {kseg_cpu:.2f} | {keras_wall:.2f} | "
            f"{kseg_wall:.2f} | {statistics.median(ratios):.2f}x |"
        )


if __name__ == "__main__":
    main()

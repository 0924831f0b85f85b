"""The built-in end-to-end demo: train a small U-Net on synthetic scenes, evaluate, predict.

``kseg demo`` runs it from a shell. Scenes are procedural (``kseg.data.synthetic``) with exact
ground truth; the held-out scenes come from a different seed than the training scenes.

Example:
    >>> import kseg.demo
    >>> result = kseg.demo.run(output_dir="kseg_runs/demo")  # doctest: +SKIP
    >>> result["mean_iou"] > 0.9  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

RECIPE = {
    "image_size": (96, 96),
    "num_train": 2000,
    "num_val": 200,
    "epochs": 20,
    "batch_size": 16,
    "learning_rate": 5e-3,
    "unet_filters": 8,
}
"""The demo's training recipe; ``run`` arguments override single entries."""


def run(output_dir="kseg_runs/demo", epochs=None, num_train=None, num_val=None, image_size=None, seed=0,
        num_pictures=4, verbose=None):
    """Trains, evaluates and predicts; returns the evaluation dict plus the written paths.

    Writes into ``output_dir``: ``model.keras``, ``metrics.json``, ``confusion_matrix.png``,
    and ``prediction_<i>.png`` panels (image | truth | prediction | overlay).
    """
    import keras

    import kseg
    from kseg import engine, viz
    from kseg.cli.main import format_scores, write_evaluation

    recipe = dict(RECIPE)
    for key, value in (("epochs", epochs), ("num_train", num_train), ("num_val", num_val), ("image_size", image_size)):
        if value is not None:
            recipe[key] = value
    height, width = recipe["image_size"]
    verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)
    os.makedirs(output_dir, exist_ok=True)
    started = time.time()

    print(f"[1/4] generating {recipe['num_train']} training and {recipe['num_val']} held-out "
          f"{height}x{width} synthetic scenes (seeds {seed} and {seed + 1})")
    train_images, train_labels = kseg.data.synthetic_numpy(recipe["num_train"], image_size=(height, width), seed=seed)
    val_images, val_labels = kseg.data.synthetic_numpy(recipe["num_val"], image_size=(height, width), seed=seed + 1)
    class_names = list(kseg.data.SYNTHETIC_CLASSES)
    num_classes = len(class_names)

    keras.utils.set_random_seed(seed)
    model = kseg.models.UNet(num_classes=num_classes, input_shape=(height, width, 3), base_filters=recipe["unet_filters"])
    steps_per_epoch = recipe["num_train"] // recipe["batch_size"]
    engine.compile_model(model, num_classes, learning_rate=recipe["learning_rate"],
                         total_steps=steps_per_epoch * recipe["epochs"])
    print(f"[2/4] training {model.name} ({model.count_params():,} parameters) for {recipe['epochs']} epochs")
    model.fit(train_images, train_labels, batch_size=recipe["batch_size"], epochs=recipe["epochs"],
              shuffle=True, verbose=verbose)
    model_path = os.path.join(output_dir, "model.keras")
    model.save(model_path)

    print("[3/4] evaluating on the held-out scenes")
    import tensorflow as tf

    val_ds = tf.data.Dataset.from_tensor_slices((val_images, val_labels)).batch(32)
    result = engine.evaluate(model, val_ds, num_classes, progress=False)
    print(format_scores(result, class_names))
    metrics_path, cm_path = write_evaluation(result, output_dir, class_names)

    print(f"[4/4] predicting {num_pictures} held-out scenes")
    predicted = engine.predict_labels(model, val_images[:num_pictures])
    pictures = []
    for i in range(min(num_pictures, len(predicted))):
        path = os.path.join(output_dir, f"prediction_{i}.png")
        viz.save_png(viz.panel(val_images[i], val_labels[i], predicted[i]), path)
        pictures.append(path)

    elapsed = time.time() - started
    print(f"\nheld-out mean IoU {result['mean_iou']:.4f} (pixel accuracy {result['pixel_accuracy']:.4f}) "
          f"after {elapsed:.0f} s")
    print(f"model:             {model_path}")
    print(f"metrics:           {metrics_path}")
    print(f"confusion matrix:  {cm_path}")
    print(f"pictures:          {', '.join(pictures)}  (image | truth | prediction | overlay)")
    result.update(model_path=model_path, metrics_path=metrics_path, confusion_matrix_path=cm_path,
                  pictures=pictures, seconds=elapsed)
    return result

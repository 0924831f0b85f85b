"""The built-in end-to-end demo: train a small U-Net on synthetic scenes, evaluate, predict.

``kseg demo`` runs it from a shell. Scenes are procedural (``kseg.data.synthetic``) with exact
ground truth; training and held-out scenes are the "train" and "val" splits of
``kseg.data.load("synthetic", seed=seed)``, disjoint scene ranges of one seed.

Example:
    >>> import kseg.demo
    >>> result = kseg.demo.run(output_dir="kseg_runs/demo")  # doctest: +SKIP
    >>> result["mean_iou"] > 0.85  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import sys
import time

RECIPE = {
    "image_size": (96, 96),
    "num_train": 4000,
    "num_val": 200,
    "epochs": 7,
    "batch_size": 8,
    "learning_rate": 5e-3,
    "warmup_fraction": 0.03,
    "dice_weight": 0.0,
    "class_weight_power": 0.25,
    "unet_filters": 8,
    "unet_depth": 4,
    "unet_space_to_depth": 1,
    "steps_per_execution": 8,
    "flip_average": True,
    "dihedral_augment": True,
    "dense_crf": {
        "iterations": 10,
        "gaussian_sxy": 3.0,
        "gaussian_compat": 3.0,
        "bilateral_sxy": 80.0,
        "bilateral_srgb": 13.0,
        "bilateral_compat": 10.0,
    },
}
"""The demo's training recipe; ``run`` arguments override single entries.

4000 scenes seen 8 times each (4000 steps of 8), each time in one of the eight symmetries of
the square (``dihedral_augment``), and the held-out scenes averaged over all eight views.
Almost all of the demo's cost is training steps, and a step's cost grows with its pixels, so the
number of scene passes sets the time. The U-Net's batch normalisation trains with TensorFlow's
fused kernel (``kseg.layers.BatchNormalization``), ~15 % less CPU a step than Keras's layer
(``benchmarks/batch_norm.py``). Measured single runs (2 vCPUs, shared): the symmetries lifted
seed 0 from 0.914 to 0.925 (0.929 with 8 views) and seed 1 from 0.861 to 0.871; 8000 scenes
seen 5 times in batches of 16 (about the same CPU) gave seed 1 0.884 but seed 0 only 0.888.
Also tried and dropped: a ``space_to_depth=2`` U-Net (1.6x cheaper a step, 0.873 on seed 0 at
10 passes), depth 5 (35 % dearer a step), class weights of power 0.5, XLA (25 % dearer a step
on CPU), batches of 4, 64x64 scenes. ``benchmarks/RESULTS.md`` (Demo) has the figures.
The loss is cross-entropy weighted per class by ``frequency ** -class_weight_power`` (measured
on the training labels; the objects count more than the background, which lifts the objects'
IoU), plus ``dice_weight`` · Dice when non-zero (0.5 scored lower). Training tracks only the
loss and runs ``steps_per_execution`` steps per graph call: both save per-step overhead. The
learning rate warms up linearly over the first ``warmup_fraction`` of the steps, then follows
the poly policy. With ``flip_average`` the held-out evaluation averages the logits of the image
and its horizontal, vertical and double flips, and their transposes when the model was trained
on them (the single-pass figure is reported too). ``dense_crf`` (``kseg.layers.DenseCRF``
arguments; None leaves it out) then refines those logits with a fully connected CRF on the
scene's colours: the objects are flat-coloured, so the CRF pulls each object's pixels to one
class, where the network alone mixes ellipse, rectangle and triangle inside an object. The
settings are the reference implementation's (``DenseCRF``'s defaults), checked against 21 others
on the synthetic "test" split (scenes disjoint from the "val" scenes the demo reports): none
scored more than 0.001 above them. The CRF costs about 1 CPU-second for the 200 scenes.
"""


def _split_arrays(split, count, image_size, seed):
    # The synthetic splits are defined once, in kseg.data.load; the demo fits numpy arrays.
    import kseg

    dataset = kseg.data.load(
        "synthetic", split=split, num_images=count, image_size=image_size, seed=seed
    )
    return next(dataset.batch(count).as_numpy_iterator())


def _random_dihedral(images, labels):
    """Each example of a batch flipped left-right, up-down and transposed, each with p = 0.5.

    The eight symmetries of the square keep every shape class a shape of the same class, so a
    pass over the scenes shows the model up to eight different views of each.
    """
    import tensorflow as tf

    batch = tf.shape(images)[0]
    labels4 = labels[..., None]

    def where(flags, transformed, original):
        return tf.where(flags[:, None, None, None], transformed, original)

    for axes in ([2], [1]):
        flags = tf.random.uniform([batch]) < 0.5
        images = where(flags, tf.reverse(images, axes), images)
        labels4 = where(flags, tf.reverse(labels4, axes), labels4)
    if images.shape[1] == images.shape[2]:
        flags = tf.random.uniform([batch]) < 0.5
        images = where(flags, tf.transpose(images, [0, 2, 1, 3]), images)
        labels4 = where(flags, tf.transpose(labels4, [0, 2, 1, 3]), labels4)
    return images, labels4[..., 0]


def _training_batches(images, labels, batch_size, seed):
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(_random_dihedral, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


class _CRFRefined:
    """A predictor's logits refined by ``kseg.layers.DenseCRF`` on the images themselves.

    Callable like a model (``engine.evaluate`` and ``engine.predict_labels`` accept it);
    returns the CRF's probabilities.

    Example:
        >>> refined = _CRFRefined(model, {"iterations": 3})  # doctest: +SKIP
        >>> kseg.engine.predict_labels(refined, images)  # doctest: +SKIP
    """

    def __init__(self, predictor, crf_arguments):
        import kseg

        self.predictor = predictor
        self.crf = kseg.layers.DenseCRF(from_logits=True, **crf_arguments)

    def __call__(self, images, training=False):
        import keras

        logits = self.predictor(images, training=training)
        return keras.ops.convert_to_numpy(self.crf([images, logits]))


def _available_crf(crf_arguments):
    """``crf_arguments`` when the compiled CRF op loads, else None with a printed reason.

    Checked before training, so that a missing ``kseg_ops`` library costs the demo its CRF
    figure, not its run.
    """
    if not crf_arguments:
        return None
    import kseg_ops

    try:
        kseg_ops.load_ops_library()
    except ImportError as error:
        print(f"note: the dense CRF is left out, its op does not load: {error}")
        return None
    return crf_arguments


PANEL_SIZE = 256
"""Smallest side of each picture panel in pixels: scenes are enlarged by an integer factor
(nearest neighbour) so that the boundaries the model gets right or wrong can be seen."""


def run(
    output_dir="kseg_runs/demo",
    epochs=None,
    num_train=None,
    num_val=None,
    image_size=None,
    seed=0,
    num_pictures=4,
    verbose=None,
):
    """Trains, evaluates and predicts; returns the evaluation dict plus the written paths.

    Writes into ``output_dir``: ``model.keras``, ``metrics.json``, ``confusion_matrix.png``,
    and ``prediction_<i>.png`` panels (image | truth | prediction | overlay), each tile enlarged
    to at least ``PANEL_SIZE`` pixels.
    """
    import keras

    import kseg
    from kseg import engine, fileio, viz
    from kseg.report import format_scores, write_evaluation

    recipe = dict(RECIPE)
    for key, value in (
        ("epochs", epochs),
        ("num_train", num_train),
        ("num_val", num_val),
        ("image_size", image_size),
    ):
        if value is not None:
            recipe[key] = value
    recipe["dense_crf"] = _available_crf(recipe["dense_crf"])
    height, width = recipe["image_size"]
    verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)
    os.makedirs(output_dir, exist_ok=True)
    started = time.time()

    print(
        f"[1/4] generating {recipe['num_train']} training and {recipe['num_val']} held-out "
        f"{height}x{width} synthetic scenes (splits train and val of seed {seed})"
    )
    train_images, train_labels = _split_arrays("train", recipe["num_train"], (height, width), seed)
    val_images, val_labels = _split_arrays("val", recipe["num_val"], (height, width), seed)
    class_names = list(kseg.data.SYNTHETIC_CLASSES)
    num_classes = len(class_names)

    keras.utils.set_random_seed(seed)
    model = kseg.models.UNet(
        num_classes=num_classes,
        input_shape=(height, width, 3),
        base_filters=recipe["unet_filters"],
        depth=recipe["unet_depth"],
        space_to_depth=recipe["unet_space_to_depth"],
    )
    steps_per_epoch = max(1, -(-recipe["num_train"] // recipe["batch_size"]))
    total_steps = steps_per_epoch * recipe["epochs"]
    weights = None
    if recipe["class_weight_power"]:
        weights = kseg.losses.class_weights_from_frequency(
            train_labels, num_classes, recipe["class_weight_power"]
        )
    loss = kseg.losses.CrossEntropy(class_weights=weights)
    if recipe["dice_weight"]:
        loss = loss + recipe["dice_weight"] * kseg.losses.Dice()
    engine.compile_model(
        model,
        num_classes,
        learning_rate=recipe["learning_rate"],
        total_steps=total_steps,
        loss=loss,
        warmup_steps=int(recipe["warmup_fraction"] * total_steps),
        metrics=[],
        steps_per_execution=recipe["steps_per_execution"],
    )
    print(
        f"[2/4] training {model.name} ({model.count_params():,} parameters) for {recipe['epochs']} epochs"
    )
    if recipe["dihedral_augment"]:
        batches = _training_batches(train_images, train_labels, recipe["batch_size"], seed)
        model.fit(batches, epochs=recipe["epochs"], verbose=verbose)
    else:
        model.fit(
            train_images,
            train_labels,
            batch_size=recipe["batch_size"],
            epochs=recipe["epochs"],
            shuffle=True,
            verbose=verbose,
        )
    model_path = os.path.join(output_dir, "model.keras")
    fileio.save_model(model, model_path)

    print("[3/4] evaluating on the held-out scenes")
    import tensorflow as tf

    val_ds = tf.data.Dataset.from_tensor_slices((val_images, val_labels)).batch(32)
    result = engine.evaluate(model, val_ds, num_classes, progress=False)
    single_pass = result["mean_iou"]
    predictor = model
    if recipe["flip_average"]:
        # A model trained on the eight symmetries of the square is averaged over all of them.
        transpose = bool(recipe["dihedral_augment"])
        predictor = engine.FlipAverage(model, transpose=transpose)
        views = "8 flips and transposes" if transpose else "4 flips"
        print(f"single pass: mean IoU {single_pass:.4f}; with the logits averaged over {views}:")
        result = engine.evaluate(predictor, val_ds, num_classes, progress=False)
    averaged = result["mean_iou"]
    if recipe["dense_crf"]:
        predictor = _CRFRefined(predictor, recipe["dense_crf"])
        print(f"mean IoU {averaged:.4f}; refined by a dense CRF on the scene's colours:")
        result = engine.evaluate(predictor, val_ds, num_classes, progress=False)
    result["mean_iou_single_pass"] = single_pass
    result["mean_iou_before_crf"] = averaged
    result["flip_average"] = bool(recipe["flip_average"])
    result["dense_crf"] = dict(recipe["dense_crf"]) if recipe["dense_crf"] else None
    print(format_scores(result, class_names))
    metrics_path, cm_path = write_evaluation(result, output_dir, class_names)

    print(f"[4/4] predicting {num_pictures} held-out scenes")
    predicted = engine.predict_labels(predictor, val_images[:num_pictures])
    scale = viz.scale_for((height, width), PANEL_SIZE)
    pictures = []
    for i in range(min(num_pictures, len(predicted))):
        path = os.path.join(output_dir, f"prediction_{i}.png")
        viz.save_png(viz.panel(val_images[i], val_labels[i], predicted[i], scale=scale), path)
        pictures.append(path)

    elapsed = time.time() - started
    views = 8 if recipe["dihedral_augment"] else 4
    how = f"{views}-view average; " if recipe["flip_average"] else ""
    if recipe["dense_crf"]:
        how = f"{how}dense CRF; before the CRF {averaged:.4f}, "
    if how:
        how += f"single pass {single_pass:.4f}, "
    print(
        f"\nheld-out mean IoU {result['mean_iou']:.4f} ({how}pixel accuracy {result['pixel_accuracy']:.4f}) "
        f"after {elapsed:.0f} s"
    )
    print(f"model:             {model_path}")
    print(f"metrics:           {metrics_path}")
    print(f"confusion matrix:  {cm_path}")
    print(f"pictures:          {', '.join(pictures)}  (image | truth | prediction | overlay)")
    result.update(
        model_path=model_path,
        metrics_path=metrics_path,
        confusion_matrix_path=cm_path,
        pictures=pictures,
        seconds=elapsed,
    )
    return result

"""``kseg evaluate --task change`` and ``kseg predict --task change``: bi-temporal change detection.

Change models (``fc_siam_diff``, ``fc_siam_conc``, ``fc_ef``) take a 6-channel pair: image A's
RGB then image B's. Evaluation adds the change scores (precision, recall, F1 and IoU of the
change class, overall accuracy, Cohen's kappa) to the usual per-class table; prediction reads
pairs of files and writes each pair's change mask as a LEVIR-CD PNG (255 changed, 0 not) and
an overlay of the changed pixels on image B.

Example (shell):
    kseg evaluate --task change --model runs/cd/model.keras --dataset change \\
                  --data-root LEVIR-CD --split test
    kseg predict --task change --model runs/cd/model.keras LEVIR-CD/test/A LEVIR-CD/test/B
"""

from __future__ import annotations

import os

import numpy as np

CHANGE_SCORES = ("precision", "recall", "f1", "iou", "overall_accuracy", "kappa")


def check_change_model(model, flag="--model"):
    """Raises unless ``model`` takes 6-channel image pairs and predicts 2 classes.

    Example:
        >>> check_change_model(kseg.models.create("fc_ef", num_classes=2))  # doctest: +SKIP
    """
    channels = model.inputs[0].shape[-1]
    classes = model.outputs[0].shape[-1]
    if channels != 6 or classes != 2:
        raise ValueError(
            "--task change needs a change model taking image pairs (6 input channels) and "
            f"predicting 2 classes (unchanged, changed). Received: {flag} with "
            f"{channels} input channels and {classes} classes"
        )


def refuse_change_model(model, task):
    """Raises when a change model is given to a task other than ``change``, saying what to use.

    Example:
        >>> refuse_change_model(kseg.load_model("cd.keras"), "semantic")  # doctest: +SKIP
        Traceback (most recent call last):
        ValueError: ... use --task change. Received: --task=semantic
    """
    from kseg.models.change import ChangeDetectionNet

    if isinstance(model, ChangeDetectionNet):
        raise ValueError(
            f"{type(model).__name__} is a change model taking image pairs: use --task change. "
            f"Received: --task={task}"
        )


def format_change_scores(scores):
    """The change scores as plain-text lines.

    Example:
        >>> print(format_change_scores(dict(precision=0.5, recall=1.0, f1=2 / 3, iou=0.5,
        ...                                 overall_accuracy=0.9, kappa=0.6)).splitlines()[0])
        change precision      0.5000
    """
    return "\n".join(
        f"change {name.replace('_', ' '):<12}{scores[name]:9.4f}" for name in CHANGE_SCORES
    )


def run_evaluate(args, model, dataset, names):
    """Evaluates a change model on a dataset of (pair, label) examples; writes metrics.json.

    ``metrics.json`` holds the per-class scores of ``kseg evaluate`` and, under ``"change"``,
    :func:`kseg.metrics.change_scores` of the confusion matrix.

    Example:
        >>> main(["evaluate", "--task", "change", "--model", "cd.keras"])  # doctest: +SKIP
    """
    import kseg
    from kseg import engine, metrics
    from kseg.report import format_scores, write_evaluation

    check_change_model(model)
    predictor = engine.FlipAverage(model) if args.flip_average else model
    batches = kseg.data.batch_by_size(dataset, args.batch_size)
    result = engine.evaluate(predictor, batches, 2)
    result["change"] = metrics.change_scores(result["confusion_matrix"])
    print(format_scores(result, names))
    print()
    print(format_change_scores(result["change"]))
    metrics_path, cm_path = write_evaluation(result, args.output, names)
    print(f"wrote {metrics_path} and {cm_path}")
    return 0


def _images_by_stem(folder):
    from kseg.data.io import IMAGE_EXTENSIONS

    found = {}
    for entry in sorted(os.listdir(folder)):
        stem, extension = os.path.splitext(entry)
        if extension.lower() in IMAGE_EXTENSIONS:
            found.setdefault(stem, os.path.join(folder, entry))
    return found


def change_inputs(inputs):
    """Pairs the ``predict --task change`` inputs: ``[(stem, path A, path B), ...]``.

    ``inputs`` is two image files (A then B), two folders (paired by file name without
    extension) or one folder holding ``A/`` and ``B/`` (LEVIR-CD's layout). An image without a
    partner is an error naming it.

    Example:
        >>> change_inputs(["before.png", "after.png"])  # doctest: +SKIP
        [('before', 'before.png', 'after.png')]
    """
    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        inputs = [os.path.join(inputs[0], "A"), os.path.join(inputs[0], "B")]
        if not all(os.path.isdir(folder) for folder in inputs):
            raise ValueError(
                "--task change reads two images, two folders, or one folder holding A/ and B/. "
                f"Received: a folder without A/ and B/: {os.path.dirname(inputs[0])!r}"
            )
    if len(inputs) != 2:
        raise ValueError(
            "--task change reads two images (A then B), two folders, or one folder holding A/ "
            f"and B/. Received: {len(inputs)} inputs {list(inputs)}"
        )
    first, second = inputs
    for path in inputs:
        if not os.path.exists(path):
            raise FileNotFoundError(f"input {path!r} is neither an image file nor a folder")
    if os.path.isfile(first) and os.path.isfile(second):
        return [(os.path.splitext(os.path.basename(first))[0], first, second)]
    if not (os.path.isdir(first) and os.path.isdir(second)):
        raise ValueError(
            "--task change pairs two files or two folders, not one of each. "
            f"Received: {first!r} and {second!r}"
        )
    found_a, found_b = _images_by_stem(first), _images_by_stem(second)
    if not found_a:
        raise ValueError(f"folder A {first!r} holds no images")
    for stem, path in sorted({**found_a, **found_b}.items()):
        folder = second if stem in found_a else first
        if stem not in found_a or stem not in found_b:
            raise FileNotFoundError(
                f"image {path!r} has no partner: expected {os.path.join(folder, stem)}.* "
                "(an image file of the same name)"
            )
    return [(stem, found_a[stem], found_b[stem]) for stem in sorted(found_a)]


def predict_pair(predictor, model, pair):
    """Change labels ``int32 [H, W]`` (1 changed) of one pair ``[H, W, 6]`` at its own size.

    A model of fixed input size sees the pair resized to it; its labels are resized back
    (nearest neighbour), so masks always align with the input files.

    Example:
        >>> labels = predict_pair(model, model, np.zeros((64, 64, 6)))  # doctest: +SKIP
    """
    import tensorflow as tf

    from kseg import engine

    fixed = tuple(model.input_shape[1:3])
    size = pair.shape[:2]
    inputs = pair
    if None not in fixed and size != fixed:
        inputs = tf.image.resize(pair, fixed).numpy()
    labels = engine.predict_labels(predictor, inputs[None])[0]
    if labels.shape != size:
        labels = tf.image.resize(labels[..., None], size, method="nearest").numpy()[..., 0]
    return labels.astype(np.int32)


def run_predict(args, model):
    """Writes ``<stem>_change.png`` (255 changed) and ``<stem>_overlay.png`` for each pair.

    Example:
        >>> main(["predict", "--task", "change", "--model", "cd.keras", "A/", "B/"])  # doctest: +SKIP
    """
    import keras

    from kseg import engine, viz
    from kseg.data import read_change_pair

    check_change_model(model)
    predictor = engine.FlipAverage(model) if args.flip_average else model
    pairs = change_inputs(args.inputs)
    os.makedirs(args.output, exist_ok=True)
    bar = keras.utils.Progbar(len(pairs), unit_name="pair")
    # Changed pixels in red over image B.
    palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    changed = 0
    for i, (stem, path_a, path_b) in enumerate(pairs):
        pair = read_change_pair(path_a, path_b)
        labels = predict_pair(predictor, model, pair)
        changed += int(labels.sum())
        mask = (labels * 255).astype(np.uint8)  # greyscale, LEVIR-CD's convention
        viz.save_png(mask, os.path.join(args.output, f"{stem}_change.png"))
        viz.save_png(
            viz.overlay(pair[..., 3:], labels, palette=palette),
            os.path.join(args.output, f"{stem}_overlay.png"),
        )
        bar.update(i + 1)
    print(
        f"wrote change masks (255 = changed) and overlays of {len(pairs)} pairs to "
        f"{args.output}; {changed} pixels changed"
    )
    return 0


__all__ = [
    "change_inputs",
    "check_change_model",
    "format_change_scores",
    "predict_pair",
    "refuse_change_model",
]

"""``kseg train/evaluate/predict --task instance|panoptic`` and ``kseg demo --task instance``.

Training fits a Mask R-CNN or a Panoptic-DeepLab; evaluation gives COCO AP of an instance model
(pycocotools) or PQ of a panoptic one; prediction writes COCO results JSON or COCO panoptic
PNG + JSON, and pictures with one colour per instance.

Example:
    >>> main(["evaluate", "--task", "instance", "--model", "m.keras"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os

import numpy as np

INSTANCE_DATASETS = ("synthetic", "coco", "pennfudan")
PANOPTIC_DATASETS = ("synthetic", "coco_panoptic")


def _require(value, flag, dataset):
    if not value:
        raise ValueError(f"--dataset {dataset} needs {flag}. Received: {flag}={value!r}")
    return value


def _synthetic(args):
    import kseg
    from kseg.data import SYNTHETIC_SPLITS

    if args.split not in SYNTHETIC_SPLITS:
        raise ValueError(
            f"synthetic split must be one of {', '.join(SYNTHETIC_SPLITS)}. Received: split={args.split!r}"
        )
    first, count = SYNTHETIC_SPLITS[args.split]
    ds = kseg.data.synthetic_instances(
        args.num_images or count,
        tuple(args.image_size),
        seed=args.seed,
        first_index=first,
        num_classes=args.num_classes or 6,
    )
    return [{k: v.numpy() for k, v in s.items()} for s in ds]


def instance_samples(args):
    """The evaluation samples of ``--task instance``."""
    import kseg

    if args.dataset == "synthetic":
        return _synthetic(args)
    if args.dataset == "coco":
        ds = kseg.data.coco_instances(
            _require(args.annotations, "--annotations", "coco"),
            _require(args.data_root, "--data-root", "coco"),
        )
    elif args.dataset == "pennfudan":
        ds = kseg.data.pennfudan(_require(args.data_root, "--data-root", "pennfudan"))
    else:
        raise ValueError(
            f"--task instance reads {', '.join(INSTANCE_DATASETS)}. Received: --dataset={args.dataset!r}"
        )
    return _numpy_samples(ds, args)


def _numpy_samples(ds, args):
    if args.num_images:
        ds = ds.take(args.num_images)
    return [{k: v.numpy() for k, v in s.items()} for s in ds]


def panoptic_samples(args):
    """The evaluation samples and thing classes of ``--task panoptic``."""
    import kseg

    if args.dataset == "synthetic":
        num_classes = args.num_classes or 6
        return _synthetic(args), list(range(1, num_classes))
    if args.dataset != "coco_panoptic":
        raise ValueError(
            f"--task panoptic reads {', '.join(PANOPTIC_DATASETS)}. Received: --dataset={args.dataset!r}"
        )
    annotations = _require(args.annotations, "--annotations", "coco_panoptic")
    _, _, categories = kseg.data.read_coco_panoptic(annotations)
    things = [k for k, c in enumerate(categories) if c.get("isthing", 1)]
    ds = kseg.data.coco_panoptic(
        annotations,
        _require(args.data_root, "--data-root", "coco_panoptic"),
        _require(args.panoptic_dir, "--panoptic-dir", "coco_panoptic"),
    )
    return _numpy_samples(ds, args), things


def _panoptic_maps(model, images):
    """Panoptic maps of a model: its ``predict`` gives ``{"panoptic": [B, H, W]}`` or the map."""
    out = model.predict(images, verbose=0)
    if isinstance(out, dict):
        if "panoptic" not in out:
            raise ValueError(
                "a panoptic model's predict must return a 'panoptic' map. "
                f"Received: keys={sorted(out)}"
            )
        out = out["panoptic"]
    out = np.asarray(out)
    if out.ndim == 4 and out.shape[-1] == 1:
        out = out[..., 0]
    return np.rint(out).astype(np.int64)


def run_evaluate_task(args, model):
    """Scores ``model`` for ``args.task``, prints the scores and writes ``metrics.json``."""
    from kseg.instance.evaluate import evaluate
    from kseg.instance_metrics import panoptic_quality
    from kseg.models.panoptic_deeplab import PanopticDeepLab

    if isinstance(model, PanopticDeepLab):
        model = model.panoptic_model()  # the network and its grouping: images -> panoptic map
    if args.task == "instance":
        samples = instance_samples(args)
        scores = evaluate(model, samples, batch_size=args.batch_size)
        lines = [
            f"{t:5s} " + "  ".join(f"{k} {v:.4f}" for k, v in s.items() if k.startswith("AP"))
            for t, s in scores.items()
        ]
    else:
        samples, things = panoptic_samples(args)
        preds = []
        for start in range(0, len(samples), args.batch_size):
            chunk = samples[start : start + args.batch_size]
            preds += list(_panoptic_maps(model, np.stack([s["image"] for s in chunk])))
        scores = panoptic_quality(preds, [s["panoptic"] for s in samples], thing_classes=things)
        scores["per_class"] = {str(k): v for k, v in scores["per_class"].items()}
        lines = [
            f"{part:6s} PQ {scores[part]['pq']:.4f}  SQ {scores[part]['sq']:.4f}  "
            f"RQ {scores[part]['rq']:.4f}  ({scores[part]['n']} classes)"
            for part in ("all", "things", "stuff")
        ]
    print(f"{args.task} scores on {len(samples)} images")
    print("\n".join(lines))
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "metrics.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"task": args.task, **scores}, f, indent=1)
    print(f"wrote {path}")
    return 0


# -- train --------------------------------------------------------------------------------


def _resize_sample(sample, size):
    """A sample at ``size``: image bilinear, masks and panoptic map nearest, boxes scaled."""
    import tensorflow as tf

    height, width = sample["image"].shape[:2]
    if (height, width) == tuple(size):
        return sample
    out = dict(sample)
    out["image"] = tf.image.resize(sample["image"], size).numpy()
    scale = np.array([size[0] / height, size[1] / width] * 2, np.float32)
    if "masks" in sample:
        masks = np.asarray(sample["masks"])[..., None]
        resized = tf.image.resize(masks, size, method="nearest") if len(masks) else None
        out["masks"] = (
            resized.numpy()[..., 0] if resized is not None else np.zeros((0, *size), np.uint8)
        )
        out["boxes"] = np.asarray(sample["boxes"], np.float32) * scale
        # Objects that vanish at the new size are dropped (no mask pixel: no target).
        keep = out["masks"].reshape(len(out["masks"]), -1).any(axis=1)
        for key in ("masks", "boxes", "classes", "is_crowd"):
            if key in out:
                out[key] = np.asarray(out[key])[keep]
    if "panoptic" in sample:
        panoptic = np.asarray(sample["panoptic"])[..., None]
        out["panoptic"] = tf.image.resize(panoptic, size, method="nearest").numpy()[..., 0]
    return out


def _instance_classes(args):
    """Classes (background included) of ``--task instance`` training data."""
    import kseg

    if args.num_classes:
        return args.num_classes
    if args.dataset == "coco":
        _, category_ids = kseg.data.read_coco_instances(
            _require(args.annotations, "--annotations", "coco")
        )
        return 1 + len(category_ids)
    return 2 if args.dataset == "pennfudan" else 6


def _optimizer(args, steps):
    import keras

    from kseg.engine import poly_schedule

    schedule = poly_schedule(args.lr, max(steps, 1))
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, clipnorm=10.0)
    if args.optimizer == "adam":
        return keras.optimizers.Adam(schedule, clipnorm=10.0)
    return keras.optimizers.AdamW(schedule, weight_decay=1e-4, clipnorm=10.0)


def _whole_batches(count, batch_size, what):
    usable = count - count % batch_size
    if usable == 0:
        raise ValueError(
            f"{what} needs at least one whole batch of images. Received: {count} images, "
            f"--batch-size={batch_size}"
        )
    return usable


def run_train_task(args, model_options):
    """``kseg train --task instance|panoptic``: fits a Mask R-CNN or a Panoptic-DeepLab on
    the training samples (held in memory; real images resized to ``--image-size``) and saves
    ``model.keras`` and ``history.json`` in ``--output``."""
    import keras

    import kseg
    from kseg import fileio
    from kseg.instance.mask_rcnn import pad_targets

    # The semantic training loop's extras (kseg.engine.train) are not wired to these models.
    for flag, value, default in (
        ("--strategy", args.strategy, "default"),
        ("--prune", args.prune, None),
        ("--init-model", args.init_model, None),
    ):
        if value != default:
            raise ValueError(
                f"--task {args.task} trains on one device without pruning or --init-model. "
                f"Received: {flag}={value}"
            )
    size = tuple(args.image_size)
    keras.utils.set_random_seed(args.seed)
    if args.task == "instance":
        samples = [_resize_sample(s, size) for s in instance_samples(args)]
        num_classes = _instance_classes(args)
        name = args.model or "mask_rcnn"
    else:
        samples, things = panoptic_samples(args)
        samples = [_resize_sample(s, size) for s in samples]
        num_classes = args.num_classes or (1 + max(things, default=0))
        name = args.model or "panoptic_deeplab"
        model_options = {"thing_classes": tuple(things), **model_options}
    builder = kseg.models.MODELS.get(name)
    if builder.task != args.task:
        raise ValueError(
            f"--task {args.task} trains a model of that task "
            f"({', '.join(kseg.models.names(task=args.task))}). Received: --model={name}"
        )
    usable = _whole_batches(len(samples), args.batch_size, f"--task {args.task}")
    samples = samples[:usable]
    kwargs = {"num_classes": num_classes, "input_shape": (*size, 3), **model_options}
    if args.backbone:
        kwargs["backbone"] = args.backbone
    if args.weights:
        kwargs["weights"] = args.weights
    model = kseg.models.create(name, **kwargs)
    steps = usable // args.batch_size * args.epochs
    if args.task == "instance":
        # Images without objects stay in: their targets are all padding (all background).
        images, targets = pad_targets(samples)
        model.compile(optimizer=_optimizer(args, steps))
    else:
        images = np.stack([s["image"] for s in samples]).astype(np.float32)
        targets = kseg.panoptic.training_targets(
            np.stack([s["panoptic"] for s in samples]), model.thing_classes
        )
        model.compile(
            optimizer=_optimizer(args, steps),
            loss=model.default_losses(),
            loss_weights=model.loss_weights_for_outputs,
        )
    print(f"{name}: {usable} training images of {size[0]}x{size[1]}, {steps} steps")
    history = model.fit(
        images,
        targets,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=2,
    ).history
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model.keras")
    fileio.save_model(model, path)
    with fileio.atomic_open(os.path.join(args.output, "history.json"), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.items()}, f, indent=2)
    print(f"saved {path}")
    return 0


# -- predict ------------------------------------------------------------------------------


def instance_colors(count, seed=0):
    """``count`` distinct, saturated RGB colours (uint8 ``[count, 3]``), one per instance.

    Hues step by the golden ratio, so neighbouring indices differ strongly.

    Example:
        >>> instance_colors(3).shape
        (3, 3)
    """
    import colorsys

    hues = (seed * 0.1 + np.arange(count) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues]
    return np.round(np.asarray(rgb, np.float64).reshape(-1, 3) * 255).astype(np.uint8)


def draw_instances(image, boxes, classes, masks, scores=None, class_names=None, alpha=0.5):
    """A picture of detections: each instance's mask in its own colour, its box outlined and
    labelled with its class name (and score).

    Args:
        image: ``[H, W, 3]`` RGB 0..255.
        boxes: ``[N, 4]`` (ymin, xmin, ymax, xmax) pixels; classes ``[N]``; masks ``[N, H, W]``
            (binary or probabilities, thresholded at 0.5); scores ``[N]`` or None.
        class_names: names by class index (default: the indices).

    Returns:
        uint8 ``[H, W, 3]``.

    Example:
        >>> picture = draw_instances(np.zeros((8, 8, 3)), [[1, 1, 5, 5]], [1],
        ...                          np.ones((1, 8, 8)))
        >>> picture.shape, picture.dtype.name
        ((8, 8, 3), 'uint8')
    """
    from PIL import Image, ImageDraw

    picture = np.clip(np.asarray(image, np.float32), 0, 255)
    masks = np.asarray(masks) >= 0.5
    colors = instance_colors(len(masks))
    for mask, color in zip(masks, colors):
        picture[mask] = (1 - alpha) * picture[mask] + alpha * color
    canvas = Image.fromarray(picture.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for n, (box, cls) in enumerate(zip(np.asarray(boxes), np.asarray(classes))):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        color = tuple(int(c) for c in colors[n])
        draw.rectangle([xmin, ymin, max(xmax - 1, xmin), max(ymax - 1, ymin)], outline=color)
        label = class_names[int(cls)] if class_names is not None else str(int(cls))
        if scores is not None:
            label += f" {float(scores[n]):.2f}"
        draw.text((xmin + 1, ymin), label, fill=color)
    return np.asarray(canvas)


def _panoptic_picture(image, panoptic, label_divisor=1000, alpha=0.5):
    """Each panoptic segment in its own colour over the image (void left as is)."""
    picture = np.clip(np.asarray(image, np.float32), 0, 255)
    ids = [v for v in np.unique(panoptic).tolist() if v // label_divisor != 255 and v >= 0]
    for value, color in zip(ids, instance_colors(len(ids))):
        mask = panoptic == value
        picture[mask] = (1 - alpha) * picture[mask] + alpha * color
    return picture.astype(np.uint8)


def _model_images(model, files):
    """``(path, image at the model's size)`` of each input file (resized where fixed)."""
    import tensorflow as tf

    from kseg.data import read_image

    fixed = tuple(model.input_shape[1:3])
    for path in files:
        image = read_image(path)
        if None not in fixed and image.shape[:2] != fixed:
            image = tf.image.resize(image, fixed).numpy()
        yield path, image


def run_predict_task(args, model, files, stems):
    """``kseg predict --task instance|panoptic``: writes predictions and pictures.

    instance: ``predictions.json`` (COCO results: ``image_id``, ``category_id`` (class k, or
    the k-th category id of ``--annotations``), ``bbox``, ``score``, RLE ``segmentation``;
    detections scoring ``>= --score-threshold``),
    ``images.json`` (COCO ``images`` entries naming the files) and ``<name>_instances.png``.
    panoptic: ``panoptic/<name>.png`` (COCO panoptic PNG, RGB-encoded segment ids),
    ``panoptic.json`` (COCO panoptic ``annotations`` with ``segments_info``; category =
    class + 1) and ``<name>_panoptic.png`` (segments coloured over the image).
    """
    import keras

    from kseg import viz
    from kseg.data.coco import coco_results
    from kseg.data.coco_panoptic import encode_panoptic_png, segments_from_panoptic
    from kseg.models.panoptic_deeplab import PanopticDeepLab

    os.makedirs(args.output, exist_ok=True)
    bar = keras.utils.Progbar(len(files), unit_name="image")
    results, images, annotations = [], [], []
    if args.task == "panoptic":
        things = list(getattr(model, "thing_classes", ()))
        if isinstance(model, PanopticDeepLab):
            model = model.panoptic_model()
        os.makedirs(os.path.join(args.output, "panoptic"), exist_ok=True)
    elif not hasattr(model, "detect"):
        raise ValueError(
            "--task instance needs an instance model (a MaskRCNN .keras file). "
            f"Received: --model={args.model}"
        )
    category_ids = None
    if args.task == "instance" and getattr(args, "annotations", None):
        from kseg.data.coco import read_coco_instances

        _, category_ids = read_coco_instances(args.annotations)
    for n, (path, image) in enumerate(_model_images(model, files)):
        stem = stems[n]
        height, width = image.shape[:2]
        images.append(
            {"id": n + 1, "file_name": os.path.basename(path), "height": height, "width": width}
        )
        if args.task == "instance":
            out = {k: np.asarray(v)[0] for k, v in model.detect(image[None]).items()}
            count = int(out["num_detections"])
            keep = out["scores"][:count] >= args.score_threshold
            picked = {k: out[k][:count][keep] for k in ("boxes", "scores", "classes", "masks")}
            results += coco_results(
                n + 1,
                picked["boxes"],
                picked["scores"],
                picked["classes"],
                picked["masks"],
                category_ids,
            )
            picture = draw_instances(
                image, picked["boxes"], picked["classes"], picked["masks"], picked["scores"]
            )
            viz.save_png(picture, os.path.join(args.output, f"{stem}_instances.png"))
        else:
            panoptic = _panoptic_maps(model, image[None])[0]
            segment_ids, segments_info = segments_from_panoptic(panoptic, things)
            png = f"{stem}.png"
            viz.save_png(
                encode_panoptic_png(segment_ids), os.path.join(args.output, "panoptic", png)
            )
            annotations.append(
                {"image_id": n + 1, "file_name": png, "segments_info": segments_info}
            )
            viz.save_png(
                _panoptic_picture(image, panoptic),
                os.path.join(args.output, f"{stem}_panoptic.png"),
            )
        bar.update(n + 1)
    if args.task == "instance":
        _write_json(os.path.join(args.output, "predictions.json"), results)
        _write_json(os.path.join(args.output, "images.json"), images)
        print(f"wrote {len(results)} detections of {len(files)} images to {args.output}")
    else:
        _write_json(
            os.path.join(args.output, "panoptic.json"),
            {"images": images, "annotations": annotations},
        )
        print(f"wrote panoptic PNGs and panoptic.json of {len(files)} images to {args.output}")
    return 0


def _write_json(path, value):
    from kseg import fileio

    with fileio.atomic_open(path, "w") as f:
        json.dump(value, f)


# -- demo ---------------------------------------------------------------------------------

DEMO_RECIPE = {
    "image_size": (64, 64),
    "num_train": 800,
    "num_val": 50,
    "steps": 600,
    "batch_size": 4,
    "learning_rate": 3e-4,
}
"""``kseg demo --task instance``: a ResNet-18-FPN Mask R-CNN (64 FPN channels) on clean
(difficulty 0) synthetic instance scenes, Adam with gradient clipping; the scale of
``benchmarks/mask_rcnn_synthetic.py`` at a smaller step budget."""


def run_instance_demo(args):
    """Trains a small Mask R-CNN on synthetic instance scenes, scores held-out scenes with
    COCOeval and writes ``model.keras``, ``metrics.json`` and ``val_<n>.png`` pictures (truth
    left, prediction right) to ``--output``.

    Example:
        >>> main(["demo", "--task", "instance", "--steps", "2"])  # doctest: +SKIP
    """
    import keras
    import tensorflow as tf

    import kseg
    from kseg import fileio, viz
    from kseg.instance.evaluate import evaluate
    from kseg.instance.mask_rcnn import MaskRCNN, pad_targets

    recipe = dict(DEMO_RECIPE)
    for key in ("image_size", "num_train", "num_val", "steps"):
        if getattr(args, key, None):
            recipe[key] = tuple(args.image_size) if key == "image_size" else getattr(args, key)
    size = recipe["image_size"]
    keras.utils.set_random_seed(args.seed)

    def scenes(count, first_index):
        ds = kseg.data.synthetic_instances(
            count, size, seed=args.seed, first_index=first_index, difficulty=0.0, min_area=8
        )
        return [{k: v.numpy() for k, v in s.items()} for s in ds]

    train = scenes(recipe["num_train"], 0)
    held_out = scenes(recipe["num_val"], kseg.data.SYNTHETIC_SPLITS["val"][0])
    scale = size[0] / 128.0
    model = MaskRCNN(
        num_classes=len(kseg.data.SYNTHETIC_CLASSES),
        backbone="resnet18",
        fpn_filters=64,
        input_shape=(*size, 3),
        roi_samples=128,
        train_proposals=300,
        test_proposals=300,
        max_detections=30,
        anchor_sizes=tuple(s * scale for s in (32, 64, 128, 256, 512)),
    )
    model.compile(optimizer=keras.optimizers.Adam(recipe["learning_rate"], clipnorm=10.0))
    images, targets = pad_targets(train)
    batch = min(recipe["batch_size"], len(train))
    data = (
        tf.data.Dataset.from_tensor_slices((images, targets))
        .shuffle(len(train), seed=args.seed)
        .repeat()
        .batch(batch, drop_remainder=True)
        .prefetch(2)
    )
    steps = recipe["steps"]
    per_epoch = min(100, steps)  # one progress line per 100 steps
    print(
        f"Mask R-CNN (ResNet-18-FPN) on {len(train)} synthetic scenes of {size[0]}x{size[1]}, "
        f"{steps} steps of {batch}; {len(held_out)} held-out scenes"
    )
    model.fit(data, steps_per_epoch=per_epoch, epochs=-(-steps // per_epoch), verbose=2)
    scores = evaluate(model, held_out, batch_size=8)
    os.makedirs(args.output, exist_ok=True)
    fileio.save_model(model, os.path.join(args.output, "model.keras"))
    _write_json(
        os.path.join(args.output, "metrics.json"),
        {"task": "instance", "recipe": {**recipe, "image_size": list(size)}, **scores},
    )
    names = list(kseg.data.SYNTHETIC_CLASSES)
    shown = held_out[:4]
    out = model.detect(np.stack([s["image"] for s in shown]))
    for n, sample in enumerate(shown):
        count = int(out["num_detections"][n])
        keep = np.asarray(out["scores"][n, :count]) >= 0.5
        pick = {
            k: np.asarray(out[k][n, :count])[keep] for k in ("boxes", "classes", "masks", "scores")
        }
        truth = draw_instances(
            sample["image"], sample["boxes"], sample["classes"], sample["masks"], None, names
        )
        prediction = draw_instances(
            sample["image"], pick["boxes"], pick["classes"], pick["masks"], pick["scores"], names
        )
        viz.save_png(
            viz.enlarge(np.concatenate([truth, prediction], axis=1), 4),
            os.path.join(args.output, f"val_{n}.png"),
        )
    print(
        f"held-out mask AP50 {scores['segm']['AP50']:.3f}, AP {scores['segm']['AP']:.3f}; "
        f"box AP50 {scores['bbox']['AP50']:.3f} (pycocotools COCOeval)"
    )
    print(f"wrote model.keras, metrics.json and pictures to {args.output}")
    return 0

"""The ``kseg`` command: train, evaluate, predict, export, bench and demo.

Examples (shell):
    kseg demo                                   # train + evaluate + predict on synthetic scenes
    kseg train --model deeplabv3plus --backbone mobilenetv2 --dataset voc --data-root VOC2012 \\
               --crop-size 512 512 --epochs 50 --batch-size 8 --output runs/voc
    kseg evaluate --model runs/voc/model.keras --dataset voc --data-root VOC2012 --split val
    kseg predict --model runs/voc/model.keras photo1.jpg photos/ --output predictions
    kseg export --model runs/voc/model.keras --format savedmodel --output models --name voc
    kseg export --model runs/voc/model.keras --format tflite --input-size 512 512 \\
                --quantize int8 --calibration-data voc --data-root VOC2012 --output model.tflite
    kseg export --model runs/voc/model.keras --format onnx --output model.onnx
    kseg bench
    kseg data stats --dataset camvid --data-root CamVid   # also: data convert, data show
    kseg tune --dataset synthetic --max-trials 20 --tuner hyperband --epochs 9 --output runs/tune
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

# The argparse number types live in kseg.cli._args (kseg.cli.data uses them too).
from kseg.cli._args import (  # noqa: F401 (_number_type stays importable from here)
    _fraction,
    _layer_ratio,
    _non_negative_int,
    _number_type,
    _positive_float,
    _positive_int,
    _sparsity,
)

# Reporting lives in kseg.report (shared with kseg.demo); the names stay importable from here.
from kseg.report import format_scores, write_evaluation

COMMANDS = ("train", "evaluate", "predict", "export", "bench", "demo", "data", "tune")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _add_savedmodel_arguments(export):
    """The SavedModel layout (--name, --version) and its check's held-out images."""
    group = export.add_argument_group("SavedModel (TF Serving)")
    group.add_argument("--name", help="savedmodel: the model's folder (default: the model's name)")
    group.add_argument(
        "--version",
        type=_positive_int,
        help="savedmodel: the version folder (default: the next free integer)",
    )
    group.add_argument(
        "--verify-data",
        help="savedmodel: held-out images for the check: synthetic (default), voc:ROOT, a folder "
        "or a .npy",
    )


def _add_dataset_arguments(parser, split_default, flag="--dataset", default="synthetic"):
    group = parser.add_argument_group("dataset")
    group.add_argument(
        flag,
        dest="dataset",
        default=default,
        help="synthetic, folder or any kseg.data dataset: voc, voc_aug, cityscapes, kitti, "
        f"synthia, synthia13, ade20k, coco_stuff, ... (default: {default})",
    )
    group.add_argument(
        "--data-root",
        help="dataset root: the folder the dataset's archives were unpacked into (voc: the "
        "folder holding JPEGImages/)",
    )
    group.add_argument(
        "--dataset-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a keyword of the dataset's loader, e.g. mode=coarse for cityscapes (repeatable; "
        "VALUE is read as a Python literal, else as a string)",
    )
    group.add_argument("--images-dir", help="folder dataset: images directory")
    group.add_argument("--masks-dir", help="folder dataset: masks directory (class-index PNGs)")
    group.add_argument(
        "--split", default=split_default, help=f"split name (default: {split_default})"
    )
    group.add_argument(
        "--num-classes",
        type=_positive_int,
        help="number of classes (default: 6 synthetic, 21 voc, the dataset's own otherwise)",
    )
    group.add_argument(
        "--image-size",
        type=_positive_int,
        nargs=2,
        default=(128, 128),
        metavar=("H", "W"),
        help="synthetic scene size (default: 128 128)",
    )
    group.add_argument(
        "--num-images", type=_positive_int, default=None, help="synthetic: number of scenes"
    )
    group.add_argument("--seed", type=int, default=0, help="synthetic scenes seed / shuffling seed")


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="kseg", description="Semantic segmentation with Keras: " + ", ".join(COMMANDS)
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model")
    train.add_argument(
        "--model",
        help="model name (see `kseg bench --list`; default unet, fc_siam_diff for change, "
        "mask_rcnn for instance, panoptic_deeplab for panoptic)",
    )
    train.add_argument(
        "--task",
        default="segment",
        choices=("segment", "change", "instance", "panoptic"),
        help="change: bi-temporal change detection on image pairs (--dataset synthetic for "
        "built-in pairs, or change with --data-root holding LEVIR-CD-style <split>/A, B, label); "
        "instance: Mask R-CNN on synthetic, coco (--annotations, --data-root the image folder) "
        "or pennfudan; panoptic: Panoptic-DeepLab on synthetic or coco_panoptic (--annotations, "
        "--panoptic-dir). Instance/panoptic samples are held in memory and resized to "
        "--image-size",
    )
    train.add_argument("--annotations", help="instance/panoptic: COCO instances or panoptic JSON")
    train.add_argument("--panoptic-dir", help="coco_panoptic: folder of the segment PNGs")
    train.add_argument("--backbone", help="backbone name, for models that take one")
    train.add_argument("--weights", help="backbone weights: imagenet or a weights file")
    train.add_argument("--epochs", type=_positive_int, default=10)
    train.add_argument("--batch-size", type=_positive_int, default=8)
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=1e-3,
        help="initial learning rate of the poly schedule",
    )
    train.add_argument("--optimizer", default="adamw", choices=("adamw", "adam", "sgd"))
    train.add_argument(
        "--crop-size",
        type=_positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="random training crop of the voc and folder datasets, padded with the ImageNet mean "
        "(labels with 255) where an image is smaller (default: 512 512)",
    )
    train.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument of the model's builder, e.g. base_filters=16 (repeatable; VALUE is read "
        "as a Python literal, else as a string)",
    )
    train.add_argument("--val-split", default="val")
    train.add_argument("--output", default="kseg_runs/train", help="checkpoints, logs, history")
    dist = train.add_argument_group("devices and resuming (kseg.engine.train)")
    dist.add_argument(
        "--strategy",
        default="default",
        choices=("default", "mirrored", "multiworker", "tpu"),
        help="tf.distribute strategy: one device, all local GPUs (mirrored), the workers named "
        "by TF_CONFIG (multiworker; run the same command on each) or a TPU; --batch-size is the "
        "global batch, split over the replicas",
    )
    dist.add_argument(
        "--tpu", default=None, help="tpu: the TPU's name or grpc:// address ('local' on a TPU VM)"
    )
    dist.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=100,
        metavar="STEPS",
        help="steps between checkpoints in OUTPUT/checkpoints (every epoch's end writes one too)",
    )
    resume = dist.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        dest="resume",
        action="store_const",
        const="must",
        default=True,
        help="continue from the newest complete checkpoint in OUTPUT/checkpoints (an error if "
        "there is none; without --resume a run continues from one if it exists)",
    )
    resume.add_argument(
        "--no-resume",
        dest="resume",
        action="store_const",
        const=False,
        help="start over: delete OUTPUT/checkpoints",
    )
    _add_precision_argument(train)
    train.add_argument(
        "--init-model",
        help="start from this .keras model (e.g. to prune a trained model) instead of building "
        "--model",
    )
    prune = train.add_argument_group("magnitude pruning (kseg.compress.prune)")
    prune.add_argument(
        "--prune",
        type=_sparsity,
        metavar="SPARSITY",
        help="prune the convolution and dense kernels to this sparsity while training; the saved "
        "model is stripped and sparsity.json holds the per-layer sparsity reached",
    )
    prune.add_argument("--prune-schedule", default="polynomial", choices=("polynomial", "constant"))
    prune.add_argument("--prune-scope", default="layer", choices=("layer", "global"))
    prune.add_argument(
        "--prune-begin", type=_non_negative_int, default=0, help="step of the first mask update"
    )
    prune.add_argument(
        "--prune-end",
        type=_positive_int,
        help="step at which the target is reached (default: 2/3 of the training steps, so the "
        "last third fine-tunes at the final sparsity)",
    )
    prune.add_argument(
        "--prune-frequency",
        type=_positive_int,
        help="steps between mask updates (default: 100, or less so that at least 10 updates "
        "happen)",
    )
    prune.add_argument(
        "--prune-skip",
        action="append",
        default=[],
        metavar="LAYER",
        help="layer name (glob pattern) left dense (repeatable)",
    )
    prune.add_argument(
        "--prune-block",
        type=_positive_int,
        default=1,
        metavar="B",
        help="prune blocks of B consecutive input channels together (default 1: single "
        "weights); 2 or 4 make the TFLite file gzip better at the same sparsity",
    )
    channels = train.add_argument_group("channel pruning (kseg.compress.prune_channels)")
    channels.add_argument(
        "--prune-channels",
        type=_sparsity,
        metavar="RATIO",
        help="before training, remove this fraction of the filters (a narrower, faster model; "
        "with --init-model, of a trained one) and write the kept filters to channels.json",
    )
    channels.add_argument(
        "--prune-channels-scope",
        default="layer",
        choices=("layer", "global"),
        help="layer: RATIO of every layer; global: RATIO of all filters, least important first",
    )
    channels.add_argument(
        "--prune-channels-criterion", default="l1", choices=("l1", "l2", "bn_gamma")
    )
    channels.add_argument(
        "--prune-channels-layers",
        nargs="+",
        type=_layer_ratio,
        metavar="PATTERN=RATIO",
        help="layer scope: each layer its own ratio, the first glob pattern matching its name "
        "deciding, e.g. 'block4_*=0.75' 'block3_conv[12]=0.5' (layers matching none keep all "
        "their filters; kseg.compress.channel_sensitivity tells which layers to cut); given "
        "instead of --prune-channels's RATIO",
    )
    channels.add_argument(
        "--prune-channels-min-keep",
        type=float,
        default=0.1,
        metavar="F",
        help="global scope: the fraction of each layer's filters always kept (default 0.1)",
    )
    _add_dataset_arguments(train, "train")

    evaluate = sub.add_parser(
        "evaluate", help="evaluate a saved model; writes metrics.json and confusion_matrix.png"
    )
    evaluate.add_argument("--model", required=True, help="a .keras file")
    evaluate.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1,
        help="images per batch; images of different sizes go into different batches",
    )
    evaluate.add_argument("--output", default="kseg_runs/evaluate")
    evaluate.add_argument(
        "--flip-average",
        action="store_true",
        help="average the scores over 4 flips of each image (test-time augmentation)",
    )
    evaluate.add_argument(
        "--task",
        default="semantic",
        choices=("semantic", "instance", "panoptic", "change"),
        help="instance: COCO bbox/segm AP (pycocotools) of a Mask R-CNN on synthetic, coco or "
        "pennfudan; panoptic: PQ/SQ/RQ of a model predicting panoptic maps on synthetic or "
        "coco_panoptic; change: precision, recall, F1, IoU of the change class, overall "
        "accuracy and Cohen's kappa of a change model on synthetic pairs or a change folder",
    )
    evaluate.add_argument("--annotations", help="COCO instances or panoptic JSON file")
    evaluate.add_argument("--panoptic-dir", help="coco_panoptic: folder of the segment PNGs")
    _add_dataset_arguments(evaluate, "val")

    predict = sub.add_parser("predict", help="write colour-coded masks and overlays for images")
    predict.add_argument("--model", required=True, help="a .keras file")
    predict.add_argument(
        "--task",
        default="semantic",
        choices=("semantic", "instance", "panoptic", "change"),
        help="instance: COCO results JSON (predictions.json) and pictures with one colour per "
        "instance; panoptic: COCO panoptic PNGs + panoptic.json and pictures; change: INPUTS are "
        "two images (A then B), two folders paired by file name, or a folder holding A/ and B/; "
        "writes <name>_change.png (255 changed) and an overlay on B",
    )
    predict.add_argument(
        "--annotations",
        help="instance: a COCO instances JSON whose category ids the predictions take (class k "
        "= the k-th smallest category id, as kseg.data.coco_instances reads; default: id k)",
    )
    predict.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="instance: detections scoring below this are left out (default 0.5)",
    )
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument("--output", default="kseg_runs/predict")
    predict.add_argument(
        "--flip-average",
        action="store_true",
        help="average the scores over 4 flips of each image (test-time augmentation)",
    )

    export = sub.add_parser(
        "export",
        help="export a saved model to SavedModel, TFLite (MediaPipe metadata) or ONNX",
        description="TFLite and ONNX exports are run on held-out images and compared with the "
        "Keras model before they are written; the figures go to export_report.json.",
    )
    export.add_argument("--model", required=True, help="a .keras file")
    export.add_argument(
        "--format",
        default="savedmodel",
        choices=("savedmodel", "saved_model", "tflite", "onnx"),
        help="savedmodel (TF Serving; also spelled saved_model), tflite or onnx",
    )
    export.add_argument(
        "--quantize",
        default=None,
        choices=("float16", "dynamic", "int8"),
        help="TFLite weight/activation quantization (an error with --format saved_model)",
    )
    export.add_argument(
        "--input-size",
        type=_positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="fixed input size (default: TFLite the model's, SavedModel any)",
    )
    export.add_argument("--calibration-images", help="folder of images for int8 calibration")
    export.add_argument(
        "--calibration-steps",
        type=_positive_int,
        default=100,
        help="int8: calibration images taken from --calibration-data (default 100)",
    )
    export.add_argument(
        "--int8-io",
        nargs="?",
        const="uint8",
        default=None,
        choices=("uint8", "int8"),
        help="int8: integer input and output (uint8 if no value: what MediaPipe feeds)",
    )
    export.add_argument(
        "--class-names",
        help="labels for the TFLite metadata: a file with one name a line, or a comma list "
        "(default: the dataset's names, else class_0, class_1, ...)",
    )
    export.add_argument(
        "--verify-split",
        default="val",
        help="split of --calibration-data whose images check the export (default val)",
    )
    export.add_argument(
        "--verify-images",
        type=_positive_int,
        default=8,
        help="held-out images the export is checked on (default 8)",
    )
    export.add_argument(
        "--min-agreement",
        type=_fraction,
        default=None,
        help="smallest argmax agreement with Keras accepted (default 0.999, int8 0.97); below "
        "it nothing is written",
    )
    export.add_argument(
        "--report",
        default=None,
        help="where to write the export report (default export_report.json beside --output)",
    )
    export.add_argument(
        "--output",
        required=True,
        help="savedmodel: the export root (the model goes to OUTPUT/NAME/VERSION); tflite, onnx: "
        "the file",
    )
    _add_savedmodel_arguments(export)
    _add_dataset_arguments(export, "train", flag="--calibration-data", default=None)
    export.set_defaults(image_size=None)

    bench = sub.add_parser("bench", help="parameters and multiply-adds of the model zoo")
    bench.add_argument("--models", nargs="*", help="model names (default: all)")
    bench.add_argument(
        "--input-size", type=_positive_int, nargs=2, default=(512, 512), metavar=("H", "W")
    )
    bench.add_argument("--list", action="store_true", help="only list the model names")
    bench.add_argument(
        "--latency", action="store_true", help="also time Keras and TFLite fp32/int8 (XNNPACK)"
    )
    bench.add_argument("--input", help="input size HxW (e.g. 512x1024); overrides --input-size")
    bench.add_argument("--threads", type=int, default=2, help="TFLite threads (--latency)")
    bench.add_argument("--runs", type=int, default=10, help="timed runs per median (--latency)")
    bench.add_argument(
        "--int8-io",
        choices=("int8", "uint8"),
        default=None,
        help="--latency: integer input/output for the int8 model (default float32 edges)",
    )
    bench.add_argument(
        "--num-classes", type=int, default=None, help="default 21; 19 with --latency"
    )

    _add_tune_parser(sub)

    demo = sub.add_parser("demo", help="train, evaluate and predict on built-in synthetic scenes")
    demo.add_argument("--output", default="kseg_runs/demo")
    demo.add_argument(
        "--epochs", type=_positive_int, default=None, help="override the recipe's epochs"
    )
    demo.add_argument(
        "--num-train",
        type=_positive_int,
        default=None,
        help="override the recipe's training scenes",
    )
    demo.add_argument(
        "--num-val", type=_positive_int, default=None, help="override the recipe's held-out scenes"
    )
    demo.add_argument("--image-size", type=_positive_int, nargs=2, default=None, metavar=("H", "W"))
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--task",
        default="semantic",
        choices=("semantic", "instance"),
        help="instance: a small Mask R-CNN on synthetic instance scenes, COCO AP, pictures",
    )
    demo.add_argument(
        "--steps", type=_positive_int, default=None, help="instance: training steps (default 600)"
    )

    from kseg.cli import data as data_command  # kseg data stats/convert/show

    data_command.add_parser(sub)
    return parser


def _add_precision_argument(parser):
    parser.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        help="Keras dtype policy the model is built under: mixed_* keep float32 weights and "
        "logits and compute in half precision (default: float32)",
    )


def _add_tune_parser(sub):
    tune = sub.add_parser(
        "tune",
        help="keras-tuner search over models and training settings (kseg.tune)",
        description="Searches a space of models and training settings (kseg.tune.SearchSpace) "
        "for the best val_mean_iou; prints a line per trial and the results table, writes "
        "results.csv, best.keras, best_hyperparameters.json and space.json to --output.",
    )
    tune.add_argument("--max-trials", type=_positive_int, default=10)
    tune.add_argument("--tuner", default="hyperband", choices=("random", "hyperband", "bayesian"))
    tune.add_argument(
        "--epochs",
        type=_positive_int,
        default=1,
        help="epochs per trial (hyperband: the most a trial gets)",
    )
    tune.add_argument(
        "--hyperband-factor", type=_positive_int, default=3, help="hyperband reduction factor"
    )
    tune.add_argument(
        "--space",
        metavar="FILE.json",
        help="the search space (kseg.tune.SearchSpace as JSON; default: kseg.tune.DEFAULT_SPACE)",
    )
    tune.add_argument(
        "--crop-size",
        type=_positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="training crop of the voc and folder datasets (default: 512 512)",
    )
    tune.add_argument("--val-split", default="val")
    tune.add_argument("--output", default="kseg_runs/tune", help="results and the best model")
    _add_precision_argument(tune)
    _add_dataset_arguments(tune, "train")


def _with_precision(run):
    """Runs a command under its --precision dtype policy, restoring the previous one after."""

    def wrapper(args):
        from kseg.precision import use_precision

        with use_precision(getattr(args, "precision", None)):
            return run(args)

    wrapper.__name__ = run.__name__
    wrapper.__doc__ = run.__doc__
    return wrapper


def _user_errors():
    """Errors caused by the input (files, arguments, data), reported in one line, no traceback."""
    kinds = (ValueError, TypeError, OSError)
    tf = sys.modules.get("tensorflow")  # OpError is only possible once TF is imported
    return kinds + ((tf.errors.OpError,) if tf is not None else ())


def _one_line(error):
    # OSError names its file (PermissionError included); OpError keeps its first line.
    if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
        text = f"{error.strerror or error}: {error.filename!r}"
    else:
        text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _fail(message):
    print(f"kseg: error: {message}", file=sys.stderr)
    return 2


DEFAULT_CROP_SIZE = (512, 512)
"""Training crop of the voc and folder datasets when ``--crop-size`` is not given."""


def _dataset(args, split, training=False, crop_size=None):
    """Returns (unbatched dataset, num_classes, class names or None) from ``kseg.data.load``."""
    import kseg

    name = args.dataset.lower()
    options = (
        {"augment": True, "crop_size": crop_size, "seed": args.seed, "deterministic": True}
        if training
        else {}
    )
    if getattr(args, "task", "segment") == "change":
        return _change_dataset(args, name, split, options)
    if name == "synthetic":
        names = list(kseg.data.SYNTHETIC_CLASSES)
        options.pop("crop_size", None)  # scenes are drawn at --image-size
        if args.num_images is not None:
            options["num_images"] = args.num_images
        options.update(image_size=tuple(args.image_size), seed=args.seed, augment=False)
        return kseg.data.load("synthetic", split=split, **options), len(names), names
    if name == "voc":
        if not args.data_root:
            raise ValueError("--data-root is required for the voc dataset")
        num_classes = args.num_classes or 21
        dataset = kseg.data.load("voc", args.data_root, split, num_classes=num_classes, **options)
        return dataset, num_classes, None
    if name == "folder":
        if not (args.images_dir and args.masks_dir):
            raise ValueError("--images-dir and --masks-dir are required for the folder dataset")
        if not args.num_classes:
            raise ValueError("--num-classes is required for the folder dataset")
        dataset = kseg.data.load(
            "folder",
            images_dir=args.images_dir,
            masks_dir=args.masks_dir,
            num_classes=args.num_classes,
            **options,
        )
        return dataset, args.num_classes, None
    if name in kseg.data.INSTANCE_DATASETS + kseg.data.PANOPTIC_DATASETS:
        raise ValueError(
            f"the {name} dataset holds instances or panoptic maps: train it with --task "
            f"instance or --task panoptic. Received: --dataset={args.dataset!r}"
        )
    if name not in kseg.data.DATASETS:
        raise ValueError(
            f"unknown dataset; valid: {', '.join(kseg.data.DATASETS.names())}. "
            f"Received: --dataset={args.dataset!r}"
        )
    # A registered dataset: its metadata fixes the classes and their names.
    if not args.data_root:
        raise ValueError(f"--data-root is required for the {name} dataset")
    info = kseg.data.info(name)
    if args.num_classes and args.num_classes != info.num_classes:
        raise ValueError(
            f"the {name} dataset has {info.num_classes} classes. "
            f"Received: --num-classes={args.num_classes}"
        )
    options.update(_dataset_options(args.dataset_option, options))
    dataset = kseg.data.load(name, args.data_root, split, **options)
    return dataset, info.num_classes, list(info.class_names)


def _dataset_options(options, reserved):
    """Parses ``--dataset-option KEY=VALUE`` strings into loader keywords."""
    import ast

    parsed = {}
    for option in options:
        key, sep, text = option.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(
                f"--dataset-option must be KEY=VALUE. Received: --dataset-option={option}"
            )
        if key in reserved:
            raise ValueError(
                f"--dataset-option {key} is set by the command, not by an option. "
                f"Received: --dataset-option={option}"
            )
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[key] = text  # plain words (mode=coarse) are strings
    return parsed


def _change_dataset(args, name, split, options):
    """The change-detection datasets of ``--task change``: 6-channel pairs, labels 0/1."""
    import kseg

    names = list(kseg.data.CHANGE_CLASSES)
    if name == "synthetic":
        options.pop("crop_size", None)  # pairs are drawn at --image-size
        if args.num_images is not None:
            options["num_images"] = args.num_images
        options.update(image_size=tuple(args.image_size), seed=args.seed)
        return kseg.data.load("synthetic_change", split=split, **options), 2, names
    if name == "change":
        if not args.data_root:
            raise ValueError("--data-root is required for the change dataset")
        return kseg.data.load("change", args.data_root, split, **options), 2, names
    raise ValueError(
        "unknown dataset for --task change; valid: synthetic, change. "
        f"Received: --dataset={args.dataset!r}"
    )


def _model_options(model_name, options):
    """Parses ``--model-option KEY=VALUE`` strings, checked against the model's signature."""
    import ast
    import inspect

    import kseg

    builder = kseg.models.MODELS.get(model_name)
    # Named parameters only: a model's **kwargs go to keras.Model, not to the architecture.
    parameters = inspect.signature(builder).parameters
    valid = sorted(
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in ("self", "num_classes", "input_shape")
    )
    parsed = {}
    for option in options:
        key, sep, text = option.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--model-option must be KEY=VALUE. Received: --model-option={option}")
        if key in ("num_classes", "input_shape"):
            raise ValueError(
                f"--model-option {key} is set by the dataset, not by an option. "
                f"Received: --model-option={option}"
            )
        if key not in valid:
            raise ValueError(
                f"model {model_name!r} has no option {key!r}; valid: {', '.join(valid)}. "
                f"Received: --model-option={option}"
            )
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[key] = text  # plain words (a backbone name) are strings
    return parsed


def _input_shape(args):
    # Real datasets train on crops and validate on whole images of any size.
    channels = 6 if getattr(args, "task", "segment") == "change" else 3  # change: image pairs
    if args.dataset == "synthetic":
        return (*args.image_size, channels)
    return (None, None, channels)


@_with_precision
def _run_train(args):
    import keras

    import kseg
    from kseg import engine, fileio, training

    if args.task in ("instance", "panoptic"):
        from kseg.cli.instance import run_train_task

        name = args.model or ("mask_rcnn" if args.task == "instance" else "panoptic_deeplab")
        return run_train_task(args, _model_options(name, args.model_option))
    if args.model is None:
        args.model = "fc_siam_diff" if args.task == "change" else "unet"
    task = getattr(kseg.models.MODELS.get(args.model), "task", "semantic")
    if task != "semantic":
        raise ValueError(
            f"model {args.model!r} predicts {task} segmentation: train it with --task {task}. "
            f"Received: --model={args.model} with --task {args.task}"
        )
    options = _model_options(args.model, args.model_option)
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow work in the process.
    strategy = training.make_strategy(args.strategy, tpu=args.tpu)
    chief = training.is_chief(strategy)
    crop_size = tuple(args.crop_size) if args.crop_size else DEFAULT_CROP_SIZE
    train_ds, num_classes, _ = _dataset(args, args.split, training=True, crop_size=crop_size)
    val_ds, _, _ = _dataset(args, args.val_split)
    kwargs = {"num_classes": num_classes, "input_shape": _input_shape(args), **options}
    if args.backbone:
        kwargs["backbone"] = args.backbone
    if args.weights:
        kwargs["weights"] = args.weights
    # Seeded: a run restarted before its first checkpoint starts from the same weights.
    keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = (
            _load_model(args.init_model)
            if args.init_model
            else kseg.models.create(args.model, **kwargs)
        )
    if args.prune_channels is not None or args.prune_channels_layers:
        with strategy.scope():
            model = _prune_channels(args, model)
    # Seeded and deterministic, so the batches of step s are the same in every run: a resumed
    # run skips the steps it has done and sees what an uninterrupted run would.
    train_batches = train_ds.shuffle(256, seed=args.seed).batch(
        args.batch_size, drop_remainder=True
    )
    train_batches = train_batches.prefetch(-1)
    steps = int(train_batches.cardinality())
    steps = steps if steps > 0 else 1000
    samples = list(val_ds.take(4).as_numpy_iterator())
    pruning = None
    if args.prune is not None:
        with strategy.scope():
            pruning = _pruning(args, model, steps * args.epochs)
    best = os.path.join(args.output, "best.keras")
    best_checkpoint = (
        engine.BestModelCheckpoint(best, monitor="val_mean_iou", mode="max")
        if pruning is None
        else _pruned_best_checkpoint(pruning, best, monitor="val_mean_iou", mode="max")
    )
    callbacks = [pruning] if pruning is not None else []
    if (
        chief
        and samples
        and samples[0][0].shape[-1] == 3  # RGB pictures (not change pairs)
        and all(s[0].shape == samples[0][0].shape for s in samples)
    ):
        callbacks.append(
            engine.ImageSummary(
                os.path.join(args.output, "logs"), [s[0] for s in samples], [s[1] for s in samples]
            )
        )
    val_batches = val_ds.batch(1 if args.dataset != "synthetic" else args.batch_size)
    result = engine.train(
        model,
        train_batches,
        val_batches,
        epochs=args.epochs,
        steps_per_epoch=steps,
        strategy=strategy,
        checkpoint_dir=os.path.join(args.output, "checkpoints"),
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        best_path=best_checkpoint,
        log_dir=os.path.join(args.output, "logs"),
        callbacks=callbacks,
    )
    model = result.model
    if not chief:
        return 0
    final_path = os.path.join(args.output, "model.keras")
    if pruning is not None:
        _finish_pruning(args, model, pruning)
    fileio.save_model(model, final_path)
    with fileio.atomic_open(os.path.join(args.output, "history.json"), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in result.history.items()}, f, indent=2)
    print(
        f"saved {final_path} (best by val mIoU: {os.path.join(args.output, 'best.keras')}); "
        f"TensorBoard logs in {os.path.join(args.output, 'logs')}"
    )
    return 0


def _prune_channels(args, model):
    """The narrower model of ``kseg train --prune-channels``; channels.json says what is kept."""
    from kseg import compress, fileio

    if not 0.0 <= args.prune_channels_min_keep <= 1.0:
        raise ValueError(
            "--prune-channels-min-keep must be a fraction in [0, 1]. "
            f"Received: --prune-channels-min-keep={args.prune_channels_min_keep}"
        )
    ratio = args.prune_channels
    if args.prune_channels_layers:
        if ratio is not None or args.prune_channels_scope != "layer":
            raise ValueError(
                "--prune-channels-layers gives each layer its ratio: use it without "
                "--prune-channels and with --prune-channels-scope layer. Received: "
                f"--prune-channels={ratio}, --prune-channels-scope={args.prune_channels_scope}"
            )
        ratio = dict(args.prune_channels_layers)
    narrow, report = compress.prune_channels(
        model,
        ratio,
        criterion=args.prune_channels_criterion,
        scope=args.prune_channels_scope,
        min_keep=args.prune_channels_min_keep,
    )
    print(
        f"channel pruning ({args.prune_channels_scope} scope, {args.prune_channels_criterion}): "
        f"removed {report['removed']} of {report['filters']} filters; parameters "
        f"{model.count_params():,} -> {narrow.count_params():,}"
    )
    os.makedirs(args.output, exist_ok=True)
    with fileio.atomic_open(os.path.join(args.output, "channels.json"), "w") as f:
        json.dump(report, f, indent=2)
    return narrow


def _pruning(args, model, total_steps):
    """The pruning callback of ``kseg train --prune``; the model's kernels get their masks."""
    from kseg import compress

    end = args.prune_end or max(1, total_steps * 2 // 3)
    if end < args.prune_begin:
        raise ValueError(
            f"--prune-end must be >= --prune-begin ({args.prune_begin}). Received: "
            f"--prune-end={end}"
        )
    frequency = args.prune_frequency or max(1, min(100, (end - args.prune_begin) // 10))
    _, callback = compress.prune(
        model,
        args.prune,
        schedule=args.prune_schedule,
        begin_step=args.prune_begin,
        end_step=end,
        frequency=frequency,
        scope=args.prune_scope,
        skip=tuple(args.prune_skip),
        block_size=args.prune_block,
    )
    print(
        f"pruning to {args.prune:.0%} ({args.prune_schedule}, {args.prune_scope} scope): "
        f"steps {args.prune_begin}..{end}, masks updated every {frequency} steps"
    )
    return callback


def _finish_pruning(args, model, pruning):
    from kseg import compress, fileio

    compress.strip(model)
    report = compress.sparsity_report(model)
    report["target_sparsity"] = args.prune
    report["schedule_completed"] = bool(pruning.done)
    print(compress.format_sparsity_report(report))
    if not pruning.done:
        print(
            f"warning: training ended at sparsity {pruning.sparsity:.4f}, before --prune-end "
            f"{pruning.end_step}; the target {args.prune} was not reached"
        )
    with fileio.atomic_open(os.path.join(args.output, "sparsity.json"), "w") as f:
        json.dump(report, f, indent=2)


def _pruned_best_checkpoint(pruning, *args, **kwargs):
    """A ``BestModelCheckpoint`` that only considers epochs ending at the final sparsity."""
    from kseg import engine

    class PrunedBestCheckpoint(engine.BestModelCheckpoint):
        def on_epoch_end(self, epoch, logs=None):
            if pruning.done:
                super().on_epoch_end(epoch, logs)

    return PrunedBestCheckpoint(*args, **kwargs)


def _load_model(path):
    import kseg

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    try:
        return kseg.load_model(path)
    except Exception as error:  # Keras raises many types for corrupt archives
        raise ValueError(f"could not load model file {path!r}: {error}") from error


def _run_evaluate(args):
    import kseg
    from kseg import engine

    model = _load_model(args.model)
    if args.task == "change":
        from kseg.cli import change

        change.check_change_model(model)
        ds, _, names = _dataset(args, args.split)
        return change.run_evaluate(args, model, ds, names)
    if args.task == "semantic":
        from kseg.cli.change import refuse_change_model

        refuse_change_model(model, args.task)
    if args.task != "semantic":
        from kseg.cli.instance import run_evaluate_task

        return run_evaluate_task(args, model)
    ds, num_classes, names = _dataset(args, args.split)
    predictor = engine.FlipAverage(model) if args.flip_average else model
    # Batches hold images of one size: padding a smaller image would change its prediction.
    batches = kseg.data.batch_by_size(ds, args.batch_size)
    result = engine.evaluate(predictor, batches, num_classes)
    print(format_scores(result, names))
    metrics_path, cm_path = write_evaluation(result, args.output, names)
    print(f"wrote {metrics_path} and {cm_path}")
    return 0


def _image_files(inputs):
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_SUFFIXES)
            )
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item!r} is neither an image file nor a folder")
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {inputs}")
    return files


def _output_stems(files):
    """One distinct output name per input: ``a/x.jpg`` and ``b/x.png`` never overwrite each other.

    Names are the file stems; where two inputs share a stem, their paths below the inputs'
    common folder are used instead (separators and the extension's dot become ``_``).
    """
    stems = [os.path.splitext(os.path.basename(path))[0] for path in files]
    counts = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    absolute = [os.path.abspath(path) for path in files]
    common = os.path.commonpath([os.path.dirname(path) for path in absolute])
    result = []
    for stem, path in zip(stems, absolute):
        if counts[stem] > 1:
            stem = os.path.relpath(path, common).replace(os.sep, "_").replace(".", "_")
        result.append(stem)
    return result


def _run_predict(args):
    import keras

    from kseg import engine, viz
    from kseg.data import read_image

    model = _load_model(args.model)
    if args.task == "change":
        from kseg.cli import change

        return change.run_predict(args, model)
    if args.task != "semantic":
        from kseg.cli.instance import run_predict_task

        files = _image_files(args.inputs)
        return run_predict_task(args, model, files, _output_stems(files))
    from kseg.cli.change import refuse_change_model

    refuse_change_model(model, args.task)
    predictor = engine.FlipAverage(model) if args.flip_average else model
    os.makedirs(args.output, exist_ok=True)
    files = _image_files(args.inputs)
    bar = keras.utils.Progbar(len(files), unit_name="image")
    fixed = model.input_shape[1:3]
    stems = _output_stems(files)
    for i, path in enumerate(files):
        image = read_image(path)
        if None not in fixed and image.shape[:2] != tuple(fixed):
            import tensorflow as tf

            image = tf.image.resize(image, fixed).numpy()
        labels = engine.predict_labels(predictor, image[None])[0]
        stem = stems[i]
        viz.save_png(viz.colorize(labels), os.path.join(args.output, f"{stem}_mask.png"))
        viz.save_png(viz.overlay(image, labels), os.path.join(args.output, f"{stem}_overlay.png"))
        bar.update(i + 1)
    print(f"wrote masks and overlays of {len(files)} images to {args.output}")
    return 0


def _class_names_argument(text):
    if text is None:
        return None
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as file:
            return [line.strip() for line in file if line.strip()]
    return [name.strip() for name in text.split(",")]


def _run_export_savedmodel(args, model):
    from kseg import export

    options = {}
    if args.input_size:
        channels = model.inputs[0].shape[-1] or 3
        options.update(input_shape=(*args.input_size, channels), dynamic_size=False)
    if args.min_agreement is not None:
        options["min_agreement"] = args.min_agreement
    return export.saved_model(
        model,
        args.output,
        name=args.name or model.name,
        version=args.version,
        class_names=_class_names_argument(args.class_names),
        verify_data=args.verify_data,
        verify_images=args.verify_images,
        **options,
    )


def _class_names(args, num_classes, dataset_names):
    """--class-names (a file or a comma list), else the dataset's names, else class_<i>."""
    if args.class_names:
        if os.path.isfile(args.class_names):
            with open(args.class_names, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        else:
            names = [n.strip() for n in args.class_names.split(",") if n.strip()]
        if len(names) != num_classes:
            raise ValueError(
                f"--class-names must name the model's {num_classes} classes. "
                f"Received: {len(names)} names in --class-names={args.class_names}"
            )
        return names
    if dataset_names and len(dataset_names) >= num_classes:
        return list(dataset_names[:num_classes])
    return [f"class_{i}" for i in range(num_classes)]


def _export_images(dataset, count, size, skip=0):
    """``count`` images of an unbatched (image, label) dataset, resized to ``size`` (H, W)."""
    import numpy as np
    import tensorflow as tf

    images = []
    for image, _ in dataset.skip(skip).take(count):
        if size is not None and tuple(image.shape[:2]) != tuple(size):
            image = tf.image.resize(image, size)
        images.append(np.asarray(image, np.float32))
    if not images:
        raise ValueError(f"the dataset yielded no images (after skipping {skip})")
    return np.stack(images)


def _export_data(args, num_classes, size):
    """Calibration images (int8), held-out images and class names for an export check."""
    import kseg

    calibration = None
    names = None
    if args.dataset is None:
        if args.quantize == "int8" and not args.calibration_images:
            raise ValueError(
                "--quantize int8 needs calibration images: --calibration-data synthetic|voc|"
                "folder (with its dataset options) or --calibration-images FOLDER"
            )
        # No dataset named: the export is checked on synthetic scenes of its input size.
        held_size = size or (128, 128)
        held_out = kseg.data.load(
            "synthetic", split="test", num_images=args.verify_images, image_size=held_size
        )
        held_out = _export_images(held_out, args.verify_images, size)
        source = f"synthetic test scenes {held_size[0]}x{held_size[1]}"
    else:
        if args.dataset == "synthetic" and args.image_size is None:
            args.image_size = tuple(size or (128, 128))
        elif args.image_size is None:
            args.image_size = (128, 128)
        dataset, _, names = _dataset(args, args.split)
        if args.quantize == "int8":
            calibration = _export_images(dataset, args.calibration_steps, size)
        if args.dataset == "folder":  # one image set: the images after the calibration ones
            skip = args.calibration_steps if args.quantize == "int8" else 0
            held_out = _export_images(dataset, args.verify_images, size, skip=skip)
            source = f"folder images after the first {skip}"
        else:
            verify, _, _ = _dataset(args, args.verify_split)
            held_out = _export_images(verify, args.verify_images, size)
            source = f"{args.dataset} split {args.verify_split!r}"
        if args.split == args.verify_split and args.dataset != "folder":
            raise ValueError(
                "the export is checked on held-out images, not the calibration ones: "
                "--verify-split must differ from --split. "
                f"Received: --split={args.split} and --verify-split={args.verify_split}"
            )
    if calibration is None and args.calibration_images:
        from kseg.data import read_image

        files = _image_files([args.calibration_images])[: args.calibration_steps]
        calibration = [read_image(p)[None] for p in files]
    return calibration, held_out, source, _class_names(args, num_classes, names)


def _run_export_detections(args, model):
    """``kseg export`` of a MaskRCNN or PanopticDeepLab: their own exports, post-processing
    included (``kseg.instance.export``, ``kseg.panoptic.export``)."""
    if model.task == "instance":
        from kseg.instance import export as task_export
    else:
        from kseg.panoptic import export as task_export
    if args.format == "onnx" or args.quantize:
        value = f"--quantize={args.quantize}" if args.quantize else "--format=onnx"
        raise ValueError(
            f"a {model.task} model exports as float32 SavedModel or TFLite only. Received: {value}"
        )
    shape = (*args.input_size, 3) if args.input_size else None
    if args.format == "tflite":
        path = task_export.tflite(model, args.output, input_shape=shape)
    else:
        path = task_export.saved_model(model, args.output, input_shape=shape)
    print(f"exported the {model.task} model {args.model} to {path}")
    return 0


def _run_export(args):
    from kseg import export, export_checks

    if args.format != "tflite" and (args.quantize or args.int8_io):
        name = "--quantize" if args.quantize else "--int8-io"
        value = args.quantize or args.int8_io
        raise ValueError(
            f"{name} applies only to --format tflite (SavedModel and ONNX keep float32 weights). "
            f"Received: {name}={value} with --format={args.format}"
        )
    if args.int8_io and args.quantize != "int8":
        raise ValueError(
            "--int8-io needs --quantize int8 (a full-integer model). "
            f"Received: --int8-io={args.int8_io} with --quantize={args.quantize}"
        )
    if args.min_agreement is not None and not 0.0 <= args.min_agreement <= 1.0:
        raise ValueError(
            f"--min-agreement must be a fraction in [0, 1]. Received: --min-agreement="
            f"{args.min_agreement}"
        )
    model = _load_model(args.model)
    if getattr(model, "task", "semantic") != "semantic":
        return _run_export_detections(args, model)
    if args.format in ("savedmodel", "saved_model"):
        path = _run_export_savedmodel(args, model)
        print(f"exported {args.model} to {path} (report: {path}/export_report.json)")
        return 0

    channels = model.inputs[0].shape[-1] or 3
    declared = tuple(model.inputs[0].shape[1:3])
    size = tuple(args.input_size) if args.input_size else declared
    if args.format == "tflite" and None in size:
        raise ValueError(
            "--format tflite writes a fixed-size model (MediaPipe's ImageSegmenter needs one): "
            f"pass --input-size H W. Received: model input size {declared}"
        )
    size = None if None in size else size
    num_classes = int(export._first_output(model.outputs).shape[-1])
    calibration, held_out, source, names = _export_data(args, num_classes, size)
    output = os.path.abspath(args.output)
    staging = os.path.join(
        os.path.dirname(output),
        f".{os.path.basename(output)}.checking{os.path.splitext(output)[1]}",
    )
    spec = {
        "shape": [1 if args.format == "tflite" else None, *(size or (None, None)), channels],
        "dtype": args.int8_io or "float32",
        "pixels": "RGB 0..255" + (" - 128" if args.int8_io == "int8" else ""),
    }
    try:
        if args.format == "tflite":
            export.tflite(
                model,
                staging,
                quantize=args.quantize,
                representative_data=calibration,
                input_shape=(*size, channels),
                num_calibration_images=args.calibration_steps,
                io_dtype=args.int8_io,
                class_names=names,
            )
        else:
            export.onnx(model, staging, input_shape=(*(size or (None, None)), channels))
        record = export_checks.check_export(
            model,
            staging,
            held_out,
            format=args.format,
            quantize=args.quantize,
            min_agreement=args.min_agreement,
            input_spec=spec,
            extra={
                "model": os.path.abspath(args.model),
                "held_out": source,
                "calibration_images": 0 if calibration is None else len(calibration),
                "class_names": names,
            },
        )
        record["path"] = output
        report = args.report or os.path.join(os.path.dirname(output), "export_report.json")
        export_checks.write_report(report, record)
        export_checks.require_agreement(record)
        os.replace(staging, output)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    print(
        f"exported {args.model} to {args.output}: {record['size_bytes']} bytes, argmax agreement "
        f"{100 * record['argmax_agreement']:.2f} % on {record['held_out_images']} held-out images "
        f"({source}); report {report}"
    )
    return 0


def _run_bench(args):
    import kseg

    if args.list:
        print("\n".join(kseg.models.names(task="semantic")))
        return 0
    # --models takes names separated by spaces or commas
    models = [n for item in args.models or [] for n in item.split(",") if n] or None
    size = tuple(args.input_size)
    if args.input:
        try:
            size = tuple(int(d) for d in args.input.lower().split("x"))
            assert len(size) == 2 and min(size) > 0
        except (ValueError, AssertionError):
            return _fail(f"--input must be HxW, e.g. 512x1024. Received: --input {args.input}")
    if args.latency:
        rows = kseg.bench.latency_rows(
            models or kseg.models.names(task="semantic"),
            (*size, 3),
            num_classes=args.num_classes or 19,
            threads=args.threads,
            runs=args.runs,
            int8_io=args.int8_io,
        )
        print(kseg.bench.format_latency_rows(rows))
        for row in rows:
            for mode, error in row["tflite_errors"].items():
                print(f"{row['name']}: TFLite {mode} failed: {error.splitlines()[0]}")
        return 0
    print(
        kseg.bench.zoo_table(
            models=models, input_shape=(*size, 3), num_classes=args.num_classes or 21
        )
    )
    return 0


def _run_tune(args):
    from kseg import tune

    train_ds, num_classes, _ = _dataset(args, args.split)
    val_ds, _, _ = _dataset(args, args.val_split)
    crop_size = None
    if args.dataset != "synthetic":
        crop_size = tuple(args.crop_size) if args.crop_size else DEFAULT_CROP_SIZE
    tune.search(
        train_ds,
        val_ds,
        num_classes,
        _input_shape(args),
        args.output,
        space=args.space,
        tuner=args.tuner,
        max_trials=args.max_trials,
        epochs=args.epochs,
        hyperband_factor=args.hyperband_factor,
        crop_size=crop_size,
        precision=args.precision,
        seed=args.seed,
    )
    return 0


def _run_demo(args):
    from kseg import demo

    if args.task == "instance":
        from kseg.cli.instance import run_instance_demo

        return run_instance_demo(args)
    result = demo.run(
        output_dir=args.output,
        epochs=args.epochs,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=tuple(args.image_size) if args.image_size else None,
        seed=args.seed,
    )
    return 1 if math.isnan(result["mean_iou"]) else 0


def _run_data(args):
    from kseg.cli import data as data_command

    return data_command.run(args)


def main(argv=None):
    """Entry point of the ``kseg`` console command."""
    args = _build_parser().parse_args(argv)
    runner = {
        "data": _run_data,
        "train": _run_train,
        "evaluate": _run_evaluate,
        "predict": _run_predict,
        "export": _run_export,
        "bench": _run_bench,
        "demo": _run_demo,
        "tune": _run_tune,
    }[args.command]
    started = time.time()
    try:
        code = runner(args)
    except Exception as error:  # noqa: BLE001 -- the expected kinds end in one line, exit 2
        if not isinstance(error, _user_errors()):
            raise
        return _fail(_one_line(error))
    if args.command in ("train", "demo", "tune"):
        print(f"done in {time.time() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``kseg evaluate --task instance|panoptic``: COCO AP of an instance model, PQ of a panoptic one.

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
    return [{k: v.numpy() for k, v in s.items()} for s in ds], things


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

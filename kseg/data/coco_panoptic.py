"""COCO panoptic format: PNGs of RGB-encoded segment ids plus a JSON of ``segments_info``.

A segment id is ``R + 256 G + 256^2 B``; id 0 is void. The JSON lists, per image, the
PNG's ``file_name`` and each segment's ``id``, ``category_id`` and ``iscrowd``; its
``categories`` say which are things (``isthing``).

kseg's panoptic maps are int32 ``class * 1000 + instance`` (:data:`kseg.constants.PANOPTIC_LABEL_DIVISOR`):
class ``k`` is the category of rank ``k`` among the file's sorted category ids (the writer
writes class ``k`` as category ``k + 1``, so files written here read back unchanged); things
are numbered 1, 2, ... per class in ``segments_info`` order; stuff and crowd segments have
instance 0; void is ``255 * 1000``.

Example:
    >>> ds = kseg.data.coco_panoptic("panoptic_val2017.json", "val2017", "panoptic_val2017")  # doctest: +SKIP
    >>> sorted(next(iter(ds)))  # doctest: +SKIP
    ['image', 'image_id', 'panoptic']
"""

from __future__ import annotations

import json
import os

import numpy as np

from kseg.constants import IGNORE_INDEX, PANOPTIC_LABEL_DIVISOR, PANOPTIC_VOID


def decode_panoptic_png(rgb):
    """RGB ``uint8 [H, W, 3]`` -> segment ids ``int32 [H, W]`` (``R + 256 G + 256^2 B``).

    Example:
        >>> decode_panoptic_png(np.array([[[1, 2, 0]]], np.uint8)).tolist()
        [[513]]
    """
    rgb = np.asarray(rgb).astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def encode_panoptic_png(segment_ids):
    """Segment ids ``[H, W]`` (0 .. 256^3 - 1) -> RGB ``uint8 [H, W, 3]``.

    Example:
        >>> encode_panoptic_png(np.array([[513]])).tolist()
        [[[1, 2, 0]]]
    """
    ids = np.asarray(segment_ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(
            "segment ids must lie in [0, 256**3). "
            f"Received: segment_ids with min {ids.min()} and max {ids.max()}"
        )
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_coco_panoptic(json_file):
    """Parses a COCO panoptic JSON: ``(annotations by image id, images by id, categories)``.

    ``categories`` is sorted by id; its position is the kseg class.

    Example:
        >>> annotations, images, categories = read_coco_panoptic("panoptic_val2017.json")  # doctest: +SKIP
        >>> len(categories)  # doctest: +SKIP
        133
    """
    path = os.fspath(json_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"panoptic JSON {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"panoptic JSON {path!r} has no list {key!r}")
    categories = sorted(data["categories"], key=lambda c: int(c["id"]))
    known = {int(c["id"]) for c in categories}
    for annotation in data["annotations"]:
        for segment in annotation.get("segments_info", []):
            if segment.get("category_id") not in known:
                raise ValueError(
                    f"panoptic JSON {path!r}, image id {annotation.get('image_id')!r}, segment "
                    f"id {segment.get('id')!r}: unknown category id. "
                    f"Received: category_id={segment.get('category_id')!r}"
                )
    annotations = {a["image_id"]: a for a in data["annotations"]}
    images = {i["id"]: i for i in data.get("images", [])}
    return annotations, images, categories


def panoptic_from_segments(
    segment_ids, segments_info, categories, png_name="<png>", json_name="<json>"
):
    """COCO segment ids + ``segments_info`` -> kseg panoptic map ``int32 [H, W]``.

    Raises ``ValueError`` naming the PNG, the JSON and the ids when the PNG holds a segment
    id (other than 0, void) that ``segments_info`` does not list.

    Example:
        >>> categories = [{"id": 1, "isthing": 0}, {"id": 2, "isthing": 1}]
        >>> info = [{"id": 5, "category_id": 2, "iscrowd": 0}, {"id": 9, "category_id": 1}]
        >>> panoptic_from_segments(np.array([[5, 9, 0]]), info, categories).tolist()
        [[1001, 0, 255000]]
    """
    segment_ids = np.asarray(segment_ids)
    class_of = {int(c["id"]): k for k, c in enumerate(categories)}
    isthing = {int(c["id"]): bool(c.get("isthing", 1)) for c in categories}
    listed = {int(s["id"]) for s in segments_info}
    present = set(np.unique(segment_ids).tolist()) - {0}
    missing = sorted(present - listed)
    if missing:
        raise ValueError(
            f"panoptic PNG {png_name!r} holds segment ids {missing[:10]} that its entry in "
            f"{json_name!r} does not list (segments_info ids: {sorted(listed)[:20]})"
        )
    panoptic = np.full(segment_ids.shape, PANOPTIC_VOID, dtype=np.int32)
    counts = {}
    for segment in segments_info:
        category = int(segment["category_id"])
        if category not in class_of:
            raise ValueError(
                f"panoptic JSON {json_name!r}, segment id {segment['id']!r}: unknown category "
                f"id. Received: category_id={category!r}"
            )
        cls = class_of[category]
        instance = 0
        if isthing[category] and not segment.get("iscrowd", 0):
            counts[cls] = counts.get(cls, 0) + 1
            instance = counts[cls]
        panoptic[segment_ids == int(segment["id"])] = cls * PANOPTIC_LABEL_DIVISOR + instance
    return panoptic


def segments_from_panoptic(panoptic, thing_classes):
    """kseg panoptic map -> ``(segment ids int32 [H, W], segments_info)`` (category = class + 1).

    Segments are numbered from 1 in increasing panoptic id; void (semantic part 255) becomes
    id 0; instance 0 of a thing class is a crowd segment.

    Example:
        >>> ids, info = segments_from_panoptic(np.array([[0, 1001, 255000]]), thing_classes=[1])
        >>> ids.tolist(), [(s["id"], s["category_id"], s["iscrowd"]) for s in info]
        ([[1, 2, 0]], [(1, 1, 0), (2, 2, 0)])
    """
    panoptic = np.asarray(panoptic).astype(np.int64)
    things = {int(k) for k in thing_classes}
    segment_ids = np.zeros(panoptic.shape, dtype=np.int32)
    segments_info = []
    for value in np.unique(panoptic).tolist():
        cls, instance = divmod(value, PANOPTIC_LABEL_DIVISOR)
        if cls == IGNORE_INDEX or value < 0:
            continue
        mask = panoptic == value
        segment_ids[mask] = len(segments_info) + 1
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        segments_info.append(
            {
                "id": len(segments_info) + 1,
                "category_id": int(cls) + 1,
                "iscrowd": int(cls in things and instance == 0),
                "bbox": [
                    int(cols[0]),
                    int(rows[0]),
                    int(cols[-1] - cols[0] + 1),
                    int(rows[-1] - rows[0] + 1),
                ],
                "area": int(mask.sum()),
            }
        )
    return segment_ids, segments_info


def write_coco_panoptic(samples, json_file, image_dir, panoptic_dir, class_names, thing_classes):
    """Writes ``image`` + ``panoptic`` samples in the COCO panoptic format.

    Args:
        samples: iterable of dicts with ``image`` ``[H, W, 3]`` and ``panoptic`` ``[H, W]``
            (kseg ids, as :func:`kseg.data.synthetic_instances` gives).
        json_file: the JSON to write; PNG segment maps go to ``panoptic_dir``, images (PNG)
            to ``image_dir``, both as ``000000.png``, ...
        class_names: names of classes ``0..K-1``, written as categories ``1..K``.
        thing_classes: the classes that are things (``isthing`` 1).

    Example:
        >>> ds = kseg.data.synthetic_instances(4, image_size=(64, 64))
        >>> write_coco_panoptic(ds, "/tmp/p/panoptic.json", "/tmp/p/images", "/tmp/p/panoptic",
        ...                     kseg.data.SYNTHETIC_CLASSES, thing_classes=range(1, 6))  # doctest: +SKIP
    """
    from PIL import Image

    things = {int(k) for k in thing_classes}
    for directory in (image_dir, panoptic_dir, os.path.dirname(os.fspath(json_file))):
        if directory:
            os.makedirs(directory, exist_ok=True)
    images, annotations = [], []
    for n, sample in enumerate(samples):
        image = np.asarray(sample["image"])
        panoptic = np.asarray(sample["panoptic"])
        classes = np.unique(panoptic) // PANOPTIC_LABEL_DIVISOR
        unknown = sorted(set(classes.tolist()) - set(range(len(class_names))) - {IGNORE_INDEX})
        if unknown:
            raise ValueError(
                f"sample {n}: panoptic classes {unknown} are not among the {len(class_names)} "
                f"class_names. Received: class_names={list(class_names)!r}"
            )
        file_name = f"{n:06d}.png"
        Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(
            os.path.join(image_dir, file_name)
        )
        segment_ids, segments_info = segments_from_panoptic(panoptic, things)
        Image.fromarray(encode_panoptic_png(segment_ids)).save(
            os.path.join(panoptic_dir, file_name)
        )
        height, width = panoptic.shape
        images.append({"id": n + 1, "file_name": file_name, "height": height, "width": width})
        annotations.append(
            {"image_id": n + 1, "file_name": file_name, "segments_info": segments_info}
        )
    categories = [
        {"id": k + 1, "name": str(name), "isthing": int(k in things), "supercategory": "object"}
        for k, name in enumerate(class_names)
    ]
    with open(json_file, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def coco_panoptic(json_file, image_dir, panoptic_dir):
    """A COCO panoptic dataset: ``tf.data.Dataset`` of ``{image, panoptic, image_id}`` dicts.

    ``image`` float32 ``[H, W, 3]`` in 0..255 (the image of the annotation's name, with any
    extension: COCO pairs ``x.png`` segment maps with ``x.jpg`` images); ``panoptic`` int32
    ``[H, W]`` kseg ids (see the module notes); ``image_id`` as in the JSON, as a string.
    A PNG holding a segment id that its JSON entry does not list is an error naming both.

    Example:
        >>> ds = coco_panoptic("panoptic_val2017.json", "val2017", "panoptic_val2017")  # doctest: +SKIP
        >>> next(iter(ds))["panoptic"].dtype.name  # doctest: +SKIP
        'int32'
    """
    import tensorflow as tf
    from PIL import Image

    from kseg.data.io import read_image

    annotations, images, categories = read_coco_panoptic(json_file)
    records = list(annotations.values())
    json_name = os.fspath(json_file)

    def image_path(record):
        info = images.get(record["image_id"])
        if info is not None:
            return os.path.join(image_dir, info["file_name"])
        stem = os.path.splitext(record["file_name"])[0]
        for extension in (".jpg", ".png", ".jpeg"):
            candidate = os.path.join(image_dir, stem + extension)
            if os.path.isfile(candidate):
                return candidate
        return os.path.join(image_dir, stem + ".jpg")

    def load(index):
        record = records[int(index)]
        png = os.path.join(panoptic_dir, record["file_name"])
        with Image.open(png) as opened:
            segment_ids = decode_panoptic_png(np.asarray(opened.convert("RGB")))
        panoptic = panoptic_from_segments(
            segment_ids, record["segments_info"], categories, png, json_name
        )
        image = read_image(image_path(record))
        if image.shape[:2] != panoptic.shape:
            raise ValueError(
                f"image {image_path(record)!r} is {image.shape[0]}x{image.shape[1]} but its "
                f"panoptic PNG {png!r} is {panoptic.shape[0]}x{panoptic.shape[1]}"
            )
        return image, panoptic, str(record["image_id"])

    def read(index):
        image, panoptic, image_id = tf.numpy_function(
            load, [index], (tf.float32, tf.int32, tf.string), stateful=False
        )
        image.set_shape((None, None, 3))
        panoptic.set_shape((None, None))
        image_id.set_shape(())
        return {"image": image, "panoptic": panoptic, "image_id": image_id}

    return tf.data.Dataset.range(len(records)).map(read)


__all__ = [
    "coco_panoptic",
    "decode_panoptic_png",
    "encode_panoptic_png",
    "panoptic_from_segments",
    "read_coco_panoptic",
    "segments_from_panoptic",
    "write_coco_panoptic",
]

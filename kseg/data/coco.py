"""COCO object-instance format: ``instances_*.json`` (polygon and RLE masks), reading and writing.

Masks are decoded by ``pycocotools`` (``pip install pycocotools``, the ``[coco]`` extra), the
same code that scores them in :func:`kseg.metrics.coco_evaluate`.

Classes: an annotation's ``category_id`` becomes class ``1 + `` its rank among the file's sorted
category ids (0 is the background); :func:`write_coco_instances` writes class ``k`` as category
``k``, so a file written here reads back with the same classes.

Boxes everywhere in kseg are ``(ymin, xmin, ymax, xmax)`` in pixels (COCO's ``[x, y, w, h]``
converted); a mask box's ``max`` is one past the last pixel, as ``pycocotools.mask.toBbox``.

Example:
    >>> ds = kseg.data.coco_instances("annotations/instances_val2017.json", "val2017")  # doctest: +SKIP
    >>> sample = next(iter(ds))  # doctest: +SKIP
    >>> sorted(sample)  # doctest: +SKIP
    ['boxes', 'classes', 'image', 'image_id', 'is_crowd', 'masks']
"""

from __future__ import annotations

import json
import numbers
import os

import numpy as np

BOX_TOLERANCE = 1.0
"""Pixels a COCO box may reach past the image border (rounding in real files) before it is an error."""

COCO_INSTANCE_KEYS = ("image", "boxes", "classes", "masks", "is_crowd", "image_id")
"""Keys of the samples of :func:`coco_instances`."""


def _pycocotools_mask():
    try:
        from pycocotools import mask
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "COCO-format masks need pycocotools: pip install pycocotools "
            "(or pip install 'kseg[coco]')"
        ) from error
    return mask


def _load_json(annotation_file):
    path = os.fspath(annotation_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            return path, json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"annotation file {path!r} is not valid JSON: {error}") from None


def _require(condition, path, annotation, message):
    if not condition:
        raise ValueError(
            f"annotation file {path!r}, annotation id {annotation.get('id')!r} "
            f"(image id {annotation.get('image_id')!r}): {message}"
        )


def annotation_to_rle(segmentation, height, width, path="<memory>", annotation=None):
    """Turns a COCO ``segmentation`` (polygons, uncompressed or compressed RLE) into one RLE.

    Raises ``ValueError`` naming the file, the annotation id and the value for a polygon of
    fewer than three points or an RLE whose size is not the image's.

    Example:
        >>> rle = annotation_to_rle([[1, 1, 5, 1, 5, 4, 1, 4]], 8, 8)
        >>> int(pycocotools.mask.area(rle))  # doctest: +SKIP
        12
    """
    mask_api = _pycocotools_mask()
    annotation = annotation or {}
    if isinstance(segmentation, list):
        _require(len(segmentation) > 0, path, annotation, "segmentation is an empty list")
        for polygon in segmentation:
            _require(
                isinstance(polygon, list)
                and all(isinstance(v, numbers.Real) for v in polygon)
                and len(polygon) % 2 == 0,
                path,
                annotation,
                f"a polygon must be a flat list of x, y numbers. Received: polygon={polygon!r}",
            )
            _require(
                len(polygon) >= 6,
                path,
                annotation,
                f"a polygon needs at least three points. Received: polygon={polygon!r} "
                f"({len(polygon) // 2} points)",
            )
        return mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
    _require(
        isinstance(segmentation, dict) and {"size", "counts"} <= set(segmentation),
        path,
        annotation,
        f"segmentation must be polygons or an RLE with 'size' and 'counts'. "
        f"Received: segmentation={str(segmentation)[:80]}",
    )
    _require(
        list(segmentation["size"]) == [height, width],
        path,
        annotation,
        f"the RLE size must be the image's [{height}, {width}]. "
        f"Received: size={segmentation['size']!r}",
    )
    if isinstance(segmentation["counts"], list):
        return mask_api.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {
        "size": [height, width],
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }


def read_coco_instances(annotation_file):
    """Parses and checks an ``instances_*.json`` file.

    Returns ``(images, category_ids)``: ``images`` a list (in file order) of dicts with the
    image's ``id``, ``file_name``, ``height``, ``width`` and its ``annotations`` (each with
    ``class`` set); ``category_ids[k - 1]`` is the COCO id of class ``k``.

    Raises ``ValueError`` naming the file, the annotation id and the value for a polygon of
    fewer than three points, a box outside the image (beyond :data:`BOX_TOLERANCE`) or of
    no size, an unknown category id or an unknown image id.

    Example:
        >>> images, category_ids = read_coco_instances("instances_val2017.json")  # doctest: +SKIP
        >>> len(category_ids)  # doctest: +SKIP
        80
    """
    path, data = _load_json(annotation_file)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"annotation file {path!r} has no list {key!r}")
    category_ids = sorted(int(c["id"]) for c in data["categories"])
    class_of = {cid: k + 1 for k, cid in enumerate(category_ids)}
    images, by_id = [], {}
    for image in data["images"]:
        record = {
            "id": image["id"],
            "file_name": image["file_name"],
            "height": int(image["height"]),
            "width": int(image["width"]),
            "annotations": [],
        }
        images.append(record)
        by_id[image["id"]] = record
    for annotation in data["annotations"]:
        image = by_id.get(annotation.get("image_id"))
        _require(
            image is not None,
            path,
            annotation,
            f"unknown image id. Received: image_id={annotation.get('image_id')!r}",
        )
        category = annotation.get("category_id")
        _require(
            category in class_of,
            path,
            annotation,
            f"unknown category id (the file lists {category_ids}). "
            f"Received: category_id={category!r}",
        )
        height, width = image["height"], image["width"]
        if "bbox" in annotation:
            bbox = annotation["bbox"]
            _require(
                isinstance(bbox, list)
                and len(bbox) == 4
                and all(isinstance(v, numbers.Real) for v in bbox),
                path,
                annotation,
                f"bbox must be [x, y, width, height]. Received: bbox={bbox!r}",
            )
            x, y, w, h = bbox
            _require(
                w > 0 and h > 0,
                path,
                annotation,
                f"the box has no size. Received: bbox={bbox!r}",
            )
            _require(
                x >= -BOX_TOLERANCE
                and y >= -BOX_TOLERANCE
                and x + w <= width + BOX_TOLERANCE
                and y + h <= height + BOX_TOLERANCE,
                path,
                annotation,
                f"the box lies outside the {width}x{height} image. Received: bbox={bbox!r}",
            )
        segmentation = annotation.get("segmentation")
        rle = None
        if segmentation is not None:
            rle = annotation_to_rle(segmentation, height, width, path, annotation)
        _require(
            "bbox" in annotation or rle is not None,
            path,
            annotation,
            "the annotation has neither a bbox nor a segmentation",
        )
        image["annotations"].append(
            {
                "id": annotation.get("id"),
                "class": class_of[category],
                "bbox": annotation.get("bbox"),
                "rle": rle,
                "iscrowd": bool(annotation.get("iscrowd", 0)),
            }
        )
    return images, category_ids


def decode_instances(record, include_crowd=True):
    """Decodes one image record of :func:`read_coco_instances` to numpy arrays.

    Returns a dict with ``boxes`` float32 ``[N, 4]`` (ymin, xmin, ymax, xmax; from the
    annotation's bbox, or from its mask when there is none), ``classes`` int32 ``[N]``,
    ``masks`` uint8 ``[N, H, W]`` (a box-only annotation fills its box) and ``is_crowd`` bool
    ``[N]``. An image without annotations gives ``N = 0``: an all-background image.

    Example:
        >>> images, _ = read_coco_instances("instances_val2017.json")  # doctest: +SKIP
        >>> decode_instances(images[0])["masks"].dtype  # doctest: +SKIP
        dtype('uint8')
    """
    mask_api = _pycocotools_mask()
    height, width = record["height"], record["width"]
    annotations = [a for a in record["annotations"] if include_crowd or not a["iscrowd"]]
    masks = np.zeros((len(annotations), height, width), dtype=np.uint8)
    boxes = np.zeros((len(annotations), 4), dtype=np.float32)
    for n, annotation in enumerate(annotations):
        if annotation["bbox"] is not None:
            x, y, w, h = annotation["bbox"]
        else:
            x, y, w, h = mask_api.toBbox(annotation["rle"]).tolist()
        boxes[n] = (
            max(y, 0.0),
            max(x, 0.0),
            min(y + h, float(height)),
            min(x + w, float(width)),
        )
        if annotation["rle"] is not None:
            masks[n] = mask_api.decode(annotation["rle"])
        else:
            y0, x0 = int(np.floor(boxes[n, 0])), int(np.floor(boxes[n, 1]))
            masks[n, y0 : int(np.ceil(boxes[n, 2])), x0 : int(np.ceil(boxes[n, 3]))] = 1
    return {
        "boxes": boxes,
        "classes": np.asarray([a["class"] for a in annotations], dtype=np.int32),
        "masks": masks,
        "is_crowd": np.asarray([a["iscrowd"] for a in annotations], dtype=bool),
    }


def coco_instances(annotation_file, image_dir, *, include_crowd=True):
    """A COCO instances dataset: ``tf.data.Dataset`` of dicts, one per image of the file.

    Args:
        annotation_file: an ``instances_*.json`` file (checked on the spot, see
            :func:`read_coco_instances`).
        image_dir: the folder of the images named by the file's ``file_name``.
        include_crowd: keep ``iscrowd`` annotations (flagged by ``is_crowd``: training skips
            them as targets and evaluation ignores detections on them); False drops them.

    Returns:
        Dicts of ``image`` float32 ``[H, W, 3]`` in 0..255, ``boxes`` float32 ``[N, 4]``
        (ymin, xmin, ymax, xmax in pixels), ``classes`` int32 ``[N]`` (1 + the category's rank,
        see the module notes), ``masks`` uint8 ``[N, H, W]``, ``is_crowd`` bool ``[N]``,
        ``image_id`` int64. An image without annotations has ``N = 0`` (all background).

    Example:
        >>> ds = coco_instances("annotations/instances_val2017.json", "val2017")  # doctest: +SKIP
        >>> next(iter(ds))["masks"].shape  # doctest: +SKIP
        TensorShape([7, 480, 640])
    """
    import tensorflow as tf

    from kseg.data.io import read_image

    images, _ = read_coco_instances(annotation_file)
    image_dir = os.fspath(image_dir)

    def load(index):
        record = images[int(index)]
        image = read_image(os.path.join(image_dir, record["file_name"]))
        if image.shape[:2] != (record["height"], record["width"]):
            raise ValueError(
                f"image {record['file_name']!r} is {image.shape[0]}x{image.shape[1]} but "
                f"{os.fspath(annotation_file)!r} says {record['height']}x{record['width']}"
            )
        instances = decode_instances(record, include_crowd)
        return (
            image,
            instances["boxes"],
            instances["classes"],
            instances["masks"],
            instances["is_crowd"],
            np.int64(record["id"]),
        )

    def read(index):
        values = tf.numpy_function(
            load,
            [index],
            (tf.float32, tf.float32, tf.int32, tf.uint8, tf.bool, tf.int64),
            stateful=False,
        )
        for value, shape in zip(values, ((None, None, 3), (None, 4), (None,), (None, None, None))):
            value.set_shape(shape)
        values[4].set_shape((None,))
        values[5].set_shape(())
        return dict(zip(COCO_INSTANCE_KEYS, values))

    return tf.data.Dataset.range(len(images)).map(read)


def _numpy(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def mask_to_rle(mask):
    """Encodes a binary ``[H, W]`` mask as COCO compressed RLE with a ``str`` ``counts``.

    Example:
        >>> rle = mask_to_rle(np.eye(4, dtype=np.uint8))
        >>> rle["size"]
        [4, 4]
    """
    rle = _pycocotools_mask().encode(np.asfortranarray(_numpy(mask).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def instances_to_coco(samples, class_names=None, image_dir=None):
    """Instance samples as a COCO instances dict (what :func:`write_coco_instances` writes).

    With ``image_dir`` the images are written there as ``000000.png``, ...; without it only
    the annotations are built (enough for :func:`kseg.metrics.coco_evaluate`). Masks are
    compressed RLE (crowd masks uncompressed RLE, as in COCO), boxes and areas come from the
    masks; image ids count from 1; class ``k`` is category ``k``.

    Example:
        >>> coco = instances_to_coco(kseg.data.synthetic_instances(4, (64, 64)))  # doctest: +SKIP
        >>> len(coco["images"])  # doctest: +SKIP
        4
    """
    from PIL import Image

    mask_api = _pycocotools_mask()
    if image_dir is not None:
        image_dir = os.fspath(image_dir)
        os.makedirs(image_dir, exist_ok=True)
    images, annotations, seen = [], [], set()
    for n, sample in enumerate(samples):
        image = _numpy(sample["image"])
        masks = _numpy(sample["masks"]).astype(np.uint8)
        classes = _numpy(sample["classes"]).astype(np.int64)
        crowd = (
            _numpy(sample["is_crowd"]).astype(bool)
            if "is_crowd" in sample
            else np.zeros(len(classes), bool)
        )
        height, width = image.shape[:2]
        file_name = f"{n:06d}.png"
        if image_dir is not None:
            Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(
                os.path.join(image_dir, file_name)
            )
        images.append({"id": n + 1, "file_name": file_name, "height": height, "width": width})
        for mask, cls, is_crowd in zip(masks, classes, crowd):
            if cls < 1:
                raise ValueError(
                    f"sample {n}: instance classes must be >= 1 (0 is the background). "
                    f"Received: classes={classes.tolist()}"
                )
            rle = mask_api.encode(np.asfortranarray(mask))
            x, y, w, h = (float(v) for v in mask_api.toBbox(rle))
            if is_crowd:
                segmentation = _uncompressed_rle(mask)
            else:
                segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
            seen.add(int(cls))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n + 1,
                    "category_id": int(cls),
                    "segmentation": segmentation,
                    "area": float(mask_api.area(rle)),
                    "bbox": [x, y, w, h],
                    "iscrowd": int(is_crowd),
                }
            )
    count = len(class_names) if class_names is not None else max(seen, default=0) + 1
    names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(count)]
    categories = [{"id": k, "name": names[k], "supercategory": "object"} for k in range(1, count)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_instances(samples, annotation_file, image_dir, class_names=None):
    """Writes instance samples as an ``instances_*.json`` file and PNG images.

    Args:
        samples: an iterable (a list or a ``tf.data.Dataset``) of dicts with ``image``
            ``[H, W, 3]`` and ``masks`` ``[N, H, W]``, ``classes`` ``[N]`` (>= 1), optionally
            ``is_crowd`` ``[N]``, as :func:`kseg.data.synthetic_instances` gives.
        annotation_file: the JSON file to write.
        image_dir: folder for the images, ``000000.png``, ``000001.png``, ...
        class_names: names of classes ``0..K-1`` (0, the background, is not written);
            default ``"class_k"`` for every class seen.

    See :func:`instances_to_coco` for what is written.

    Example:
        >>> ds = kseg.data.synthetic_instances(8, image_size=(64, 64))
        >>> write_coco_instances(ds, "/tmp/c/instances.json", "/tmp/c/images")  # doctest: +SKIP
    """
    data = instances_to_coco(samples, class_names, image_dir)
    directory = os.path.dirname(os.fspath(annotation_file))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(annotation_file, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def coco_results(image_id, boxes, scores, classes, masks=None, category_ids=None):
    """Turns one image's detections into COCO result dicts for :func:`kseg.metrics.coco_evaluate`.

    Args:
        image_id: the COCO image id.
        boxes: ``[N, 4]`` (ymin, xmin, ymax, xmax) in pixels.
        scores: ``[N]`` confidences.
        classes: ``[N]`` kseg classes (``>= 1``).
        masks: optional ``[N, H, W]`` binary (or probability, thresholded at 0.5) masks.
        category_ids: ``category_ids[k - 1]`` is the COCO id of class ``k`` (the second value
            of :func:`read_coco_instances`); default: class ``k`` is category ``k``.

    Example:
        >>> coco_results(1, [[0, 0, 2, 3]], [0.9], [1])[0]["bbox"]
        [0.0, 0.0, 3.0, 2.0]
    """
    boxes = _numpy(boxes).astype(np.float64).reshape(-1, 4)
    scores = _numpy(scores).reshape(-1)
    classes = _numpy(classes).reshape(-1)
    results = []
    for n, (box, score, cls) in enumerate(zip(boxes, scores, classes)):
        category = int(cls) if category_ids is None else int(category_ids[int(cls) - 1])
        ymin, xmin, ymax, xmax = box.tolist()
        result = {
            "image_id": int(image_id),
            "category_id": category,
            "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
            "score": float(score),
        }
        if masks is not None:
            result["segmentation"] = mask_to_rle(_numpy(masks[n]) >= 0.5)
        results.append(result)
    return results


__all__ = [
    "BOX_TOLERANCE",
    "COCO_INSTANCE_KEYS",
    "annotation_to_rle",
    "coco_instances",
    "coco_results",
    "decode_instances",
    "instances_to_coco",
    "mask_to_rle",
    "read_coco_instances",
    "write_coco_instances",
]

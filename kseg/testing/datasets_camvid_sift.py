"""Tiny CamVid, SIFT Flow and TFRecord datasets written in the real layouts, for tests.

Each writer puts a few small images in the file names, encodings and label ids of the real
release and returns what it wrote (the raw ids, before any mapping), so that a test can check
every loaded pixel against the dataset's official mapping.

Example:
    >>> import tempfile
    >>> from kseg.testing.datasets_camvid_sift import write_camvid
    >>> written = write_camvid(tempfile.mkdtemp())
    >>> sorted(written), written["train"][0][0]
    (['test', 'train', 'val'], '0001TP_006690.png')
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# Real CamVid frame names (sequence prefix, frame number).
CAMVID_NAMES = {
    "train": ("0001TP_006690.png", "0006R0_f00930.png", "0016E5_00390.png"),
    "val": ("0016E5_07959.png", "0016E5_07961.png"),
    "test": ("0001TP_008550.png", "Seq05VD_f00000.png"),
}
# Two sizes per split: the tests check that both are read at their own size.
SIZES = ((24, 32), (20, 28))


def _image(rng, size, smooth=False):
    if not smooth:
        return rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    # Gradients survive JPEG nearly unchanged, so a test can compare the decoded pixels.
    rows, cols = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]), indexing="ij")
    base = rng.uniform(30, 220, 3)
    slope = rng.uniform(-25, 25, (2, 3))
    image = base + rows[..., None] * slope[0] + cols[..., None] * slope[1]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def write_camvid(root, names=None, seed=0):
    """SegNet's CamVid layout: ``<split>/<name>.png`` RGB and ``<split>annot/<name>.png`` ids.

    Ids are 0..11 (11 = Unlabelled), every id present in each split. Returns
    ``{split: [(name, image uint8, ids uint8), ...]}``.

    Example:
        >>> import tempfile
        >>> len(write_camvid(tempfile.mkdtemp())["val"])
        2
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, split_names in (names or CAMVID_NAMES).items():
        os.makedirs(os.path.join(root, split), exist_ok=True)
        os.makedirs(os.path.join(root, split + "annot"), exist_ok=True)
        written[split] = []
        for index, name in enumerate(split_names):
            size = SIZES[index % len(SIZES)]
            image = _image(rng, size)
            ids = rng.integers(0, 12, size, dtype=np.uint8)
            ids.flat[:12] = np.arange(12)  # every id, Unlabelled included
            Image.fromarray(image, "RGB").save(os.path.join(root, split, name))
            Image.fromarray(ids, "L").save(os.path.join(root, split + "annot", name))
            written[split].append((name, image, ids))
        with open(os.path.join(root, split + ".txt"), "w", encoding="utf-8") as handle:
            for name, _, _ in written[split]:
                handle.write(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n")
    return written


def write_camvid32(root, names=None, seed=0):
    """The original CamVid layout with colour-coded labels and ``label_colors.txt``.

    Writes ``701_StillsRaw_full/<name>.png``, ``LabeledApproved_full/<stem>_L.png`` (RGB, the
    32 official colours, Void included), ``label_colors.txt`` (``r g b<TAB>Name``) and
    SegNet's ``<split>.txt`` lists. Returns ``{split: [(name, image, colours uint8 [H, W, 3])]}``.

    Example:
        >>> import tempfile
        >>> written = write_camvid32(tempfile.mkdtemp())
        >>> written["train"][0][2].shape[-1]
        3
    """
    from kseg.data.camvid import _LABEL_COLORS

    rng = np.random.default_rng(seed)
    colours = np.asarray([colour for colour, _ in _LABEL_COLORS], np.uint8)
    os.makedirs(os.path.join(root, "701_StillsRaw_full"), exist_ok=True)
    os.makedirs(os.path.join(root, "LabeledApproved_full"), exist_ok=True)
    with open(os.path.join(root, "label_colors.txt"), "w", encoding="utf-8") as handle:
        for (r, g, b), name in _LABEL_COLORS:
            handle.write(f"{r} {g} {b}\t{name}\n")
    written = {}
    for split, split_names in (names or CAMVID_NAMES).items():
        written[split] = []
        for index, name in enumerate(split_names):
            size = SIZES[index % len(SIZES)]
            image = _image(rng, size)
            positions = rng.integers(0, len(colours), size)
            positions.flat[: len(colours)] = np.arange(len(colours))  # Void and all 31 classes
            label = colours[positions]
            stem = os.path.splitext(name)[0]
            Image.fromarray(image, "RGB").save(os.path.join(root, "701_StillsRaw_full", name))
            Image.fromarray(label, "RGB").save(
                os.path.join(root, "LabeledApproved_full", stem + "_L.png")
            )
            written[split].append((name, image, label))
        with open(os.path.join(root, split + ".txt"), "w", encoding="utf-8") as handle:
            for name, _, _ in written[split]:
                handle.write(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n")
    return written


# Two names from FCN's test list and three training names of the real release.
SIFT_FLOW_NAMES = {
    "test": ("coast_natu975", "insidecity_art947"),
    "train": ("forest_for121", "street_bost64", "tallbuilding_a812069"),
}


def write_sift_flow(root, names=None, seed=0, unannotated=True):
    """The SIFT Flow layout: ``Images/<subdir>/<name>.jpg`` and ``SemanticLabels/<subdir>/<name>.mat``.

    The ``.mat`` files hold ``S`` (double, ids 0..33 with 0 = unlabelled) and ``names``, as the
    release does. With ``unannotated``, ``highway_bost181`` (one of the two images without
    annotations, left out of training) is written too, with an all-zero ``S``. Returns
    ``{split: [(name, image uint8, ids), ...]}`` (the extra image under "unannotated"); the images are smooth gradients, so the
    JPEG-decoded pixels stay within a few levels of ``image``.

    Example:
        >>> import tempfile
        >>> sorted(write_sift_flow(tempfile.mkdtemp()))
        ['test', 'train', 'unannotated']
    """
    import scipy.io

    from kseg.data.sift_flow import SIFT_FLOW_CLASSES, SIFT_FLOW_SUBDIR

    rng = np.random.default_rng(seed)
    image_dir = os.path.join(root, "Images", SIFT_FLOW_SUBDIR)
    label_dir = os.path.join(root, "SemanticLabels", SIFT_FLOW_SUBDIR)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    class_names = np.empty((1, len(SIFT_FLOW_CLASSES)), dtype=object)
    class_names[0, :] = SIFT_FLOW_CLASSES
    written = {}
    extra = {"unannotated": ("highway_bost181",)} if unannotated else {}
    for split, split_names in {**(names or SIFT_FLOW_NAMES), **extra}.items():
        written[split] = []
        for index, name in enumerate(split_names):
            size = SIZES[index % len(SIZES)]
            image = _image(rng, size, smooth=True)
            ids = rng.integers(0, 34, size).astype(np.float64)
            ids.flat[:34] = np.arange(34)
            if split == "unannotated":
                ids[:] = 0
            Image.fromarray(image, "RGB").save(os.path.join(image_dir, name + ".jpg"), quality=90)
            scipy.io.savemat(
                os.path.join(label_dir, name + ".mat"), {"S": ids, "names": class_names}
            )
            written[split].append((name, image, ids))
    return written


def raw_tfrecord_example(image_bytes, label_png_bytes, height, width, image_format=b"png"):
    """A serialized ``tf.train.Example`` built field by field with the raw protos.

    Independent of :func:`kseg.data.encode_example`: a test checks kseg against the key
    layout of TF Model Garden's segmentation reader with it.

    Example:
        >>> record = raw_tfrecord_example(b"png", b"png", 2, 3)
        >>> isinstance(record, bytes)
        True
    """
    from tensorflow.core.example import example_pb2, feature_pb2

    def bytes_feature(value):
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))

    def int_feature(value):
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))

    feature = {
        "image/encoded": bytes_feature(image_bytes),
        "image/format": bytes_feature(image_format),
        "image/height": int_feature(height),
        "image/width": int_feature(width),
        "image/segmentation/class/encoded": bytes_feature(label_png_bytes),
        "image/segmentation/class/format": bytes_feature(b"png"),
    }
    example = example_pb2.Example(features=feature_pb2.Features(feature=feature))
    return example.SerializeToString()

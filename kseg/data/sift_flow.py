"""SIFT Flow (Liu, Yuen & Torralba): 2,688 LabelMe outdoor scenes at 256x256 with 33 classes.

Layout (``SiftFlowDataset.zip`` unpacked)::

    root/Images/spatial_envelope_256x256_static_8outdoorcategories/<name>.jpg
    root/SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<name>.mat

Each ``.mat`` holds the field ``S``, a 256x256 map of ids: 0 is unlabelled (-> 255) and 1..33
are the classes of :data:`SIFT_FLOW_CLASSES` (-> 0..32), as FCN's ``siftflow_layers.py``
reads them. Splits follow FCN's ``data/sift-flow`` lists, the standard 2,488 / 200 split:
``"test"`` is the 200 images of FCN's ``test.txt`` (kept in this module), ``"train"`` (also
``"trainval"``) every other image of the folder except the two without annotations
(``highway_bost181`` and ``street_urb506``, which FCN's ``trainval.txt`` leaves out too):
2,486 images. A ``root/<split>.txt`` (one name per line, as FCN's files) overrides the
built-in lists. Three classes (cow, desert, moon) never occur in the test images; FCN leaves
them out of its mean IoU, which ``kseg evaluate`` shows as classes without pixels.
SIFT Flow has no official colours: the palette is the PASCAL VOC colour map.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from kseg.data.folder import _check_dir
from kseg.data.io import check_file_id, label_lookup, read_image
from kseg.data.palette import IGNORE_INDEX
from kseg.data.pipeline import build_pipeline

SIFT_FLOW_CLASSES = (
    "awning",
    "balcony",
    "bird",
    "boat",
    "bridge",
    "building",
    "bus",
    "car",
    "cow",
    "crosswalk",
    "desert",
    "door",
    "fence",
    "field",
    "grass",
    "moon",
    "mountain",
    "person",
    "plant",
    "pole",
    "river",
    "road",
    "rock",
    "sand",
    "sea",
    "sidewalk",
    "sign",
    "sky",
    "staircase",
    "streetlight",
    "sun",
    "tree",
    "window",
)
"""The 33 semantic classes, indexed by label value (the ``.mat`` id minus 1)."""

SIFT_FLOW_LABEL_MAP = {0: IGNORE_INDEX, **{i: i - 1 for i in range(1, 34)}}
"""``.mat`` id -> class: 0 (unlabelled) is ignored, 1..33 become 0..32."""

SIFT_FLOW_SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"

SIFT_FLOW_TEST_IDS = tuple(
    """
    coast_natu975 insidecity_art947 insidecity_urb781 highway_bost374 coast_n203085
    insidecity_a223049 mountain_nat116 street_art861 mountain_land188 street_par177
    opencountry_natu524 forest_natu29 highway_gre37 street_bost77 insidecity_art1125
    street_urb521 highway_bost178 street_art760 street_urb885 insidecity_art829 coast_natu804
    mountain_sharp44 coast_natu649 opencountry_land691 insidecity_hous35 tallbuilding_art1719
    mountain_n736026 mountain_moun41 insidecity_urban992 opencountry_land295 tallbuilding_art527
    highway_art238 forest_for114 coast_land296 tallbuilding_sky7 mountain_n44009
    tallbuilding_art1316 forest_nat717 highway_bost164 street_par29 forest_natc52
    tallbuilding_art1004 coast_sun14 opencountry_land206 opencountry_land364 mountain_n219015
    highway_a836030 forest_nat324 opencountry_land493 insidecity_art1598 street_street27
    insidecity_a48009 coast_cdmc889 street_gre295 tallbuilding_a538076 street_boston378
    highway_urb759 street_par151 tallbuilding_urban1003 tallbuilding_urban16 highway_bost151
    opencountry_nat965 highway_gre661 forest_for42 opencountry_n18002 insidecity_art646
    highway_gre55 coast_n295051 forest_bost103 highway_n480036 mountain_land4 forest_nat130
    coast_nat643 insidecity_urb250 street_gre11 street_boston271 opencountry_n490003
    mountain_nat762 street_par86 coast_arnat59 mountain_land787 highway_gre472
    opencountry_tell67 mountain_sharp66 opencountry_land534 insidecity_gre290 highway_bost307
    opencountry_n213059 forest_nat220 forest_cdmc348 tallbuilding_art900 insidecity_art569
    street_urb200 coast_natu468 coast_n672069 insidecity_hous109 forest_land862
    opencountry_natu65 tallbuilding_a805096 opencountry_n291058 forest_natu439 coast_nat799
    tallbuilding_urban991 tallbuilding_sky17 opencountry_land638 opencountry_natu563
    tallbuilding_urb733 forest_cdmc451 mountain_n371066 mountain_n213081 mountain_nat57
    tallbuilding_a463068 forest_natu848 tallbuilding_art306 insidecity_boston92
    insidecity_urb584 tallbuilding_urban1126 coast_n286045 street_gre179 coast_nat1091
    opencountry_nat615 coast_nat901 forest_cdmc291 mountain_natu568 mountain_n18070
    street_bost136 tallbuilding_art425 coast_bea3 tallbuilding_art1616 insidecity_art690
    highway_gre492 highway_bost320 forest_nat400 highway_par23 tallbuilding_a212033
    forest_natu994 tallbuilding_archi296 highway_gre413 tallbuilding_a279033 insidecity_art1277
    coast_cdmc948 forest_for15 street_par68 mountain_natu786 opencountry_open61
    opencountry_nat423 mountain_land143 tallbuilding_a487066 tallbuilding_art1751
    insidecity_hous79 street_par118 highway_bost293 mountain_n213021 opencountry_nat802
    coast_n384099 opencountry_natu998 mountain_n344042 coast_nat1265 forest_text44 forest_for84
    insidecity_a807066 opencountry_nat1117 coast_sun42 insidecity_par180 opencountry_land923
    highway_art580 street_art1328 coast_cdmc838 opencountry_land660 opencountry_cdmc354
    coast_natu825 opencountry_natu38 mountain_nat30 coast_n199066 forest_text124 forest_land222
    tallbuilding_city56 tallbuilding_city22 opencountry_fie36 mountain_ski24 coast_cdmc997
    insidecity_boston232 opencountry_land575 opencountry_land797 insidecity_urb362
    forest_nat1033 mountain_nat891 street_hexp3 tallbuilding_art1474 tallbuilding_urban73
    opencountry_natu852 mountain_nat1008 coast_nat294 mountain_sharp20 opencountry_fie14
    mountain_land275 forest_land760 coast_land374 mountain_nat426 highway_gre141
    """.split()
)
"""FCN's ``data/sift-flow/test.txt``: the 200 test images of the standard split."""

SIFT_FLOW_UNANNOTATED = ("highway_bost181", "street_urb506")
"""The two images whose labels are missing (left out of training, as FCN does)."""

SIFT_FLOW_SPLITS = {"train": 2486, "test": 200}
"""Images per split with the built-in lists (the full release has 2,688 images)."""

_SPLIT_ALIASES = {"train": "train", "trainval": "train", "test": "test"}


def _split_names(root, image_dir, split):
    if not isinstance(split, str) or split not in _SPLIT_ALIASES:
        override = isinstance(split, str) and os.path.isfile(os.path.join(root, f"{split}.txt"))
        if not override:
            raise ValueError(
                "SIFT Flow split must be 'train' (or 'trainval'), 'test', or the name of a "
                f"<root>/<split>.txt list. Received: split={split!r}"
            )
    path = os.path.join(root, f"{split}.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            names = [
                check_file_id(line.strip(), f"line {number} of {path!r}")
                for number, line in enumerate(handle, start=1)
                if line.strip()
            ]
        if not names:
            raise ValueError(f"split list {path!r} is empty: it lists no images")
        return names
    if _SPLIT_ALIASES[split] == "test":
        return list(SIFT_FLOW_TEST_IDS)
    left_out = set(SIFT_FLOW_TEST_IDS) | set(SIFT_FLOW_UNANNOTATED)
    names = sorted(
        name[:-4]
        for name in os.listdir(image_dir)
        if name.lower().endswith(".jpg") and name[:-4] not in left_out
    )
    if not names:
        raise ValueError(f"SIFT Flow image folder {image_dir!r} holds no training .jpg images")
    return names


def sift_flow_pairs(root, split="train"):
    """The ``(image_paths, label_paths)`` of a SIFT Flow split; missing files raise here.

    Example:
        >>> images, labels = sift_flow_pairs("SiftFlowDataset", "test")  # doctest: +SKIP
        >>> len(images)  # doctest: +SKIP
        200
    """
    root = _check_dir("SIFT Flow root", root)
    image_dir = _check_dir("SIFT Flow image folder", os.path.join(root, "Images", SIFT_FLOW_SUBDIR))
    label_dir = os.path.join(root, "SemanticLabels", SIFT_FLOW_SUBDIR)
    image_paths, label_paths = [], []
    for name in _split_names(root, image_dir, split):
        image_path = os.path.join(image_dir, name + ".jpg")
        if not os.path.isfile(image_path):
            raise FileNotFoundError(f"image file {image_path!r} does not exist (split {split!r})")
        label_path = os.path.join(label_dir, name + ".mat")
        if not os.path.isfile(label_path):
            raise FileNotFoundError(
                f"label map {label_path!r} does not exist (image {image_path!r})"
            )
        image_paths.append(image_path)
        label_paths.append(label_path)
    return image_paths, label_paths


def read_sift_flow_label(path, label_map=None):
    """Reads the field ``S`` of a SIFT Flow ``.mat`` file as classes ``int32 [H, W]``.

    ``label_map`` (default :data:`SIFT_FLOW_LABEL_MAP`) maps the stored ids; an id it does not
    list, a non-integer value, a missing ``S`` or an unreadable file is an error naming the
    file and the value.

    Example:
        >>> label = read_sift_flow_label("SemanticLabels/.../coast_natu975.mat")  # doctest: +SKIP
        >>> label.shape, label.dtype  # doctest: +SKIP
        ((256, 256), dtype('int32'))
    """
    import scipy.io

    path = os.fspath(path.decode() if isinstance(path, bytes) else path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label map {path!r} does not exist")
    try:
        contents = scipy.io.loadmat(path)
    except Exception as error:  # noqa: BLE001 - scipy raises several kinds for a bad file
        raise ValueError(f"label map {path!r} is corrupt or not a MATLAB file: {error}") from None
    if "S" not in contents:
        fields = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(f"label map {path!r} has no field 'S'. Received: fields={fields}")
    ids = np.asarray(contents["S"])
    if ids.ndim != 2 or not (
        np.issubdtype(ids.dtype, np.integer) or np.issubdtype(ids.dtype, np.floating)
    ):
        raise ValueError(
            f"label map {path!r}: S must be a 2-D numeric map. Received: shape={ids.shape}, "
            f"dtype={ids.dtype}"
        )
    if np.issubdtype(ids.dtype, np.floating):
        fractional = ids[~np.isfinite(ids) | (ids != np.round(ids))]
        if fractional.size:
            raise ValueError(f"label map {path!r} holds the non-integer id {float(fractional[0])}")
    ids = ids.astype(np.int64)
    table = label_lookup(SIFT_FLOW_LABEL_MAP if label_map is None else label_map)
    outside = (ids < 0) | (ids >= len(table))
    mapped = table[np.where(outside, 0, ids)]
    unknown = outside | (mapped < 0)
    if unknown.any():
        values = np.unique(ids[unknown])
        raise ValueError(
            f"label map {path!r} holds id {int(values[0])}"
            + (f" (and {values[1:].tolist()})" if values.size > 1 else "")
            + ", which the dataset's label mapping does not list"
        )
    return mapped.astype(np.int32)


def sift_flow_reader(label_map=None):
    """The ``(image_path, mat_path) -> (image, label)`` TF function of SIFT Flow.

    Example:
        >>> image, label = sift_flow_reader()(tf.constant("a.jpg"), tf.constant("a.mat"))  # doctest: +SKIP
    """
    if label_map is not None:
        label_map = label_lookup(label_map)

    def read_arrays(image_path, label_path):
        image = read_image(image_path)
        label = read_sift_flow_label(label_path, label_map)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"label map {label_path.decode()!r} is {label.shape[0]}x{label.shape[1]} "
                f"(height x width), but its image {image_path.decode()!r} is "
                f"{image.shape[0]}x{image.shape[1]}"
            )
        return image, label

    def read(image_path, label_path):
        image, label = tf.numpy_function(
            read_arrays, [image_path, label_path], (tf.float32, tf.int32), stateful=False
        )
        image.set_shape((None, None, 3))
        label.set_shape((None, None))
        return image, label

    return read


def sift_flow(
    root,
    split="train",
    *,
    crop_size=None,
    augment=False,
    batch_size=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    drop_remainder=False,
):
    """SIFT Flow as a ``tf.data.Dataset`` of ``(image float32 [256, 256, 3], label int32)``.

    Labels are 0..32 (:data:`SIFT_FLOW_CLASSES`) and 255 for unlabelled pixels. ``split`` is
    ``"train"`` / ``"trainval"`` (2,486 images) or ``"test"`` (200); see the module docstring.
    The other arguments are as in :func:`kseg.data.voc`.

    Errors: a missing folder, image or ``.mat`` file raises when the dataset is created; a
    corrupt image or ``.mat``, an id outside 0..33 or a label whose size differs from its
    image raise ``tf.errors.InvalidArgumentError`` naming the file and the value.

    Example:
        >>> train = sift_flow("SiftFlowDataset", "train", crop_size=256, augment=True,
        ...                   batch_size=8)  # doctest: +SKIP
        >>> test = sift_flow("SiftFlowDataset", "test")  # doctest: +SKIP
    """
    image_paths, label_paths = sift_flow_pairs(root, split)
    sources = tf.data.Dataset.from_tensor_slices((image_paths, label_paths))
    return build_pipeline(
        sources,
        len(image_paths),
        sift_flow_reader(),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )

"""ADE20K as the MIT Scene Parsing benchmark (SceneParsing / ADEChallengeData2016), 150 classes.

Layout (``ADEChallengeData2016.zip`` unpacked)::

    root/images/training/ADE_train_<00000001..00020210>.jpg
    root/images/validation/ADE_val_<00000001..00002000>.jpg
    root/annotations/{training,validation}/<same stem>.png    8-bit greyscale, 0..150

Annotation value 0 is "other objects" (not scored) and becomes 255; 1..150 become 0..149,
the order of the benchmark's ``objectInfo150`` table. Class names are the short names most
code reports (MMSegmentation's): the first synonym of each ``objectInfo150`` entry
(``"building, edifice"`` -> ``"building"``), except ``"television receiver"`` (entry 90 starts
with ``"television"``). Colours are the benchmark's ``color150`` palette, as MMSegmentation
lists it.
"""

from __future__ import annotations

import os

from kseg.data.cityscapes import id_label_reader
from kseg.data.files import check_split, find_root, pair_by_suffix, pairs_pipeline
from kseg.data.info import DatasetInfo, register_info
from kseg.data.palette import IGNORE_INDEX

ADE20K_CLASSES = tuple(
    name.strip()
    for name in """
    wall|building|sky|floor|tree|ceiling|road|bed|windowpane|grass|cabinet|sidewalk|person|earth|
    door|table|mountain|plant|curtain|chair|car|water|painting|sofa|shelf|house|sea|mirror|rug|
    field|armchair|seat|fence|desk|rock|wardrobe|lamp|bathtub|railing|cushion|base|box|column|
    signboard|chest of drawers|counter|sand|sink|skyscraper|fireplace|refrigerator|grandstand|
    path|stairs|runway|case|pool table|pillow|screen door|stairway|river|bridge|bookcase|blind|
    coffee table|toilet|flower|book|hill|bench|countertop|stove|palm|kitchen island|computer|
    swivel chair|boat|bar|arcade machine|hovel|bus|towel|light|truck|tower|chandelier|awning|
    streetlight|booth|television receiver|airplane|dirt track|apparel|pole|land|bannister|
    escalator|ottoman|bottle|buffet|poster|stage|van|ship|fountain|conveyer belt|canopy|washer|
    plaything|swimming pool|stool|barrel|basket|waterfall|tent|bag|minibike|cradle|oven|ball|
    food|step|tank|trade name|microwave|pot|animal|bicycle|lake|dishwasher|screen|blanket|
    sculpture|hood|sconce|vase|traffic light|tray|ashcan|fan|pier|crt screen|plate|monitor|
    bulletin board|shower|radiator|glass|clock|flag
    """.replace("\n", "").split("|")
)
"""The 150 classes, indexed by label value (annotation value - 1)."""

# color150, as hex: one "rrggbb" per class, in class order.
_ADE20K_HEX = """
787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d 787846
08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc
ff095c 7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14
ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff
ff4700 00ebff 00adff 1f00ff 0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00
008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014
ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900
00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070
5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3 ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff
ff007a fff500 0abed4 d6ff00 00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff
4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
"""
ADE20K_PALETTE = tuple(
    (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)) for h in _ADE20K_HEX.split()
)
"""The benchmark's colour of each class."""

ADE20K_LABEL_MAP = {0: IGNORE_INDEX, **{i: i - 1 for i in range(1, 151)}}
"""Annotation value -> class: 0 ("other objects") -> 255, 1..150 -> 0..149."""

_FOLDERS = {"train": "training", "val": "validation"}


def ade20k_pairs(root, split="train"):
    """The ``(image_paths, label_paths)`` of ``images/<folder>`` and ``annotations/<folder>``.

    Example:
        >>> images, labels = ade20k_pairs("ADEChallengeData2016", "val")  # doctest: +SKIP
        >>> os.path.basename(images[0])  # doctest: +SKIP
        'ADE_val_00000001.jpg'
    """
    folder = _FOLDERS[check_split("ade20k", split, tuple(_FOLDERS))]
    root = find_root("ade20k", root, "annotations", ("ADEChallengeData2016",))
    return pair_by_suffix(
        os.path.join(root, "images", folder),
        os.path.join(root, "annotations", folder),
        ".jpg",
        ".png",
    )


def ade20k(
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
    """ADE20K (SceneParsing, 150 classes) as a ``tf.data.Dataset`` of ``(image, label)``.

    Args:
        root: ``ADEChallengeData2016`` (or the folder holding it).
        split: ``"train"`` (20,210 images) or ``"val"`` (2,000).
        crop_size, augment, batch_size, shuffle, seed, deterministic, drop_remainder: as in
            :func:`kseg.data.voc`.

    Errors: a missing annotation raises at creation; a corrupt image or PNG, a value above
    150 and an image/annotation size mismatch name the file and the value when reached.

    Example:
        >>> ds = ade20k("ADEChallengeData2016", "train", crop_size=512, augment=True,
        ...             batch_size=16)  # doctest: +SKIP
    """
    image_paths, label_paths = ade20k_pairs(root, split)
    return pairs_pipeline(
        image_paths,
        label_paths,
        id_label_reader(ADE20K_LABEL_MAP),
        crop_size=crop_size,
        augment=augment,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )


register_info(
    DatasetInfo(
        "ade20k",
        ADE20K_CLASSES,
        ADE20K_PALETTE,
        splits={"train": 20210, "val": 2000},
        description="ADE20K SceneParsing: ADEChallengeData2016.zip (images/, annotations/ "
        "{training,validation}); 0 = other -> 255, 1..150 -> 0..149.",
    )
)

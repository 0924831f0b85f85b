"""COCO-Stuff 164k: the COCO 2017 images with dense labels of 80 thing and 91 stuff classes.

Layout (the COCO-Stuff README's set-up: ``train2017.zip`` and ``val2017.zip`` into
``images/``, ``stuffthingmaps_trainval2017.zip`` into ``annotations/``)::

    root/images/{train2017,val2017}/<12-digit id>.jpg
    root/annotations/{train2017,val2017}/<12-digit id>.png    8-bit greyscale

``root/stuffthingmaps_trainval2017/{train2017,val2017}`` is accepted in place of
``root/annotations``. Following the README, a map value ``v`` in 0..181 is COCO-Stuff id
``v + 1`` of ``labels.txt`` and 255 is "unlabeled". The 11 thing ids that COCO never annotated
(street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door, blender, hair brush)
are dropped, which leaves the usual 171 classes: values 0..181 map to 0..170 in id order
(things 0..79, stuff 80..170), 255 stays 255, and a dropped or larger value is an error.
COCO-Stuff publishes no colour palette; the colours here are the VOC colour map's entries
1..171, so that every class gets a distinct colour.
"""

from __future__ import annotations

import os

from kseg.data.cityscapes import id_label_reader
from kseg.data.files import check_split, find_root, pair_by_suffix, pairs_pipeline
from kseg.data.info import DatasetInfo, register_info
from kseg.data.palette import IGNORE_INDEX, voc_colormap

# labels.txt ids 1..182 in order, "|"-separated.
_ID_NAMES = """
person|bicycle|car|motorcycle|airplane|bus|train|truck|boat|traffic light|fire hydrant|
street sign|stop sign|parking meter|bench|bird|cat|dog|horse|sheep|cow|elephant|bear|zebra|
giraffe|hat|backpack|umbrella|shoe|eye glasses|handbag|tie|suitcase|frisbee|skis|snowboard|
sports ball|kite|baseball bat|baseball glove|skateboard|surfboard|tennis racket|bottle|plate|
wine glass|cup|fork|knife|spoon|bowl|banana|apple|sandwich|orange|broccoli|carrot|hot dog|
pizza|donut|cake|chair|couch|potted plant|bed|mirror|dining table|window|desk|toilet|door|tv|
laptop|mouse|remote|keyboard|cell phone|microwave|oven|toaster|sink|refrigerator|blender|book|
clock|vase|scissors|teddy bear|hair drier|toothbrush|hair brush|banner|blanket|branch|bridge|
building-other|bush|cabinet|cage|cardboard|carpet|ceiling-other|ceiling-tile|cloth|clothes|
clouds|counter|cupboard|curtain|desk-stuff|dirt|door-stuff|fence|floor-marble|floor-other|
floor-stone|floor-tile|floor-wood|flower|fog|food-other|fruit|furniture-other|grass|gravel|
ground-other|hill|house|leaves|light|mat|metal|mirror-stuff|moss|mountain|mud|napkin|net|paper|
pavement|pillow|plant-other|plastic|platform|playingfield|railing|railroad|river|road|rock|roof|
rug|salad|sand|sea|shelf|sky-other|skyscraper|snow|solid-other|stairs|stone|straw|
structural-other|table|tent|textile-other|towel|tree|vegetable|wall-brick|wall-concrete|
wall-other|wall-panel|wall-stone|wall-tile|wall-wood|water-other|waterdrops|window-blind|
window-other|wood
"""
COCO_STUFF_ID_NAMES = {
    index + 1: name.strip() for index, name in enumerate(_ID_NAMES.replace("\n", "").split("|"))
}
"""COCO-Stuff id (1..182) -> name, as in ``labels.txt`` (0 is "unlabeled")."""

COCO_STUFF_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
"""Thing ids of COCO without any segmentation annotation (absent from the label maps)."""

_USED_IDS = tuple(i for i in range(1, 183) if i not in COCO_STUFF_UNUSED_IDS)

COCO_STUFF_CLASSES = tuple(COCO_STUFF_ID_NAMES[i] for i in _USED_IDS)
"""The 171 classes: 80 things (0..79), then 91 stuff classes (80..170)."""

COCO_STUFF_THING_CLASSES = tuple(range(80))
"""Class indices of the 80 thing classes."""

COCO_STUFF_STUFF_CLASSES = tuple(range(80, 171))
"""Class indices of the 91 stuff classes."""

COCO_STUFF_LABEL_MAP = {
    **{coco_id - 1: index for index, coco_id in enumerate(_USED_IDS)},
    IGNORE_INDEX: IGNORE_INDEX,
}
"""Label-map value (COCO-Stuff id - 1) -> class (0..170); 255 ("unlabeled") stays 255."""

COCO_STUFF_PALETTE = tuple(map(tuple, voc_colormap(172)[1:].tolist()))
"""A distinct colour per class (COCO-Stuff has no official palette: VOC colour map 1..171)."""

_FOLDERS = {"train": "train2017", "val": "val2017"}


def coco_stuff_pairs(root, split="train"):
    """The ``(image_paths, label_paths)`` of ``images/<split>2017`` and its label maps.

    Example:
        >>> images, labels = coco_stuff_pairs("cocostuff/dataset", "val")  # doctest: +SKIP
        >>> os.path.basename(labels[0])  # doctest: +SKIP
        '000000000139.png'
    """
    folder = _FOLDERS[check_split("coco_stuff", split, tuple(_FOLDERS))]
    root = find_root("coco_stuff", root, "images", ("dataset",))
    labels = os.path.join(root, "annotations")
    if not os.path.isdir(labels) and os.path.isdir(
        os.path.join(root, "stuffthingmaps_trainval2017")
    ):
        labels = os.path.join(root, "stuffthingmaps_trainval2017")
    return pair_by_suffix(
        os.path.join(root, "images", folder), os.path.join(labels, folder), ".jpg", ".png"
    )


def coco_stuff(
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
    """COCO-Stuff 164k (171 classes) as a ``tf.data.Dataset`` of ``(image, label)``.

    Args:
        root: the folder holding ``images/`` and ``annotations/`` (the README's ``dataset``).
        split: ``"train"`` (118,287 images) or ``"val"`` (5,000).
        crop_size, augment, batch_size, shuffle, seed, deterministic, drop_remainder: as in
            :func:`kseg.data.voc`.

    Errors: a missing label map raises at creation; a corrupt image or PNG, a value that is
    not a used id (an unused thing id, or 182..254) and an image/label size mismatch name the
    file and the value when reached.

    Example:
        >>> ds = coco_stuff("cocostuff/dataset", "train", crop_size=512, augment=True,
        ...                 batch_size=16)  # doctest: +SKIP
    """
    image_paths, label_paths = coco_stuff_pairs(root, split)
    return pairs_pipeline(
        image_paths,
        label_paths,
        id_label_reader(COCO_STUFF_LABEL_MAP),
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
        "coco_stuff",
        COCO_STUFF_CLASSES,
        COCO_STUFF_PALETTE,
        splits={"train": 118287, "val": 5000},
        description="COCO-Stuff 164k: train2017.zip and val2017.zip into images/, "
        "stuffthingmaps_trainval2017.zip into annotations/; ids 1..182 -> 171 classes "
        "(80 things, 91 stuff), 255 = unlabeled.",
    )
)

"""COCO instances, COCO panoptic and PennFudan: round trips through the real formats, bad input."""

import json

import numpy as np
import pytest
from PIL import Image

import kseg
from kseg.constants import PANOPTIC_VOID
from kseg.data import synthetic_instances


def _scenes(count=4, size=(48, 64), seed=3):
    return [
        {k: v.numpy() for k, v in s.items()}
        for s in synthetic_instances(count, size, seed=seed, touching=0.7)
    ]


def _as_numpy(ds):
    return [{k: v.numpy() for k, v in s.items()} for s in ds]


def test_coco_instances_round_trip_with_rle_masks_and_crowd(tmp_path):
    scenes = _scenes()
    scenes[1]["is_crowd"] = np.arange(len(scenes[1]["classes"])) == 0
    kseg.data.write_coco_instances(scenes, tmp_path / "instances.json", tmp_path / "images")
    data = json.loads((tmp_path / "instances.json").read_text())
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"]["counts"], list)
    back = _as_numpy(kseg.data.coco_instances(tmp_path / "instances.json", tmp_path / "images"))
    assert len(back) == len(scenes)
    for scene, sample in zip(scenes, back):
        np.testing.assert_array_equal(sample["image"], scene["image"])
        np.testing.assert_array_equal(sample["masks"], scene["masks"])
        np.testing.assert_array_equal(sample["classes"], scene["classes"])
        np.testing.assert_array_equal(sample["boxes"], scene["boxes"])
    assert back[1]["is_crowd"].tolist() == scenes[1]["is_crowd"].tolist()
    dropped = _as_numpy(
        kseg.data.coco_instances(
            tmp_path / "instances.json", tmp_path / "images", include_crowd=False
        )
    )
    np.testing.assert_array_equal(dropped[1]["masks"], scenes[1]["masks"][1:])


def _write_coco(tmp_path, annotations, categories=(1, 7), size=(10, 12), extra_images=()):
    height, width = size
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png", "height": height, "width": width}]
    for n, name in enumerate(extra_images):
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(tmp_path / name)
        images.append({"id": 2 + n, "file_name": name, "height": height, "width": width})
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
    }
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(data))
    return path


def test_polygons_categories_and_images_without_annotations(tmp_path):
    rectangle = [2, 1, 7, 1, 7, 4, 2, 4]  # x, y corners: pixels rows 1..3, columns 2..6
    path = _write_coco(
        tmp_path,
        [
            {
                "id": 5,
                "image_id": 1,
                "category_id": 7,
                "segmentation": [rectangle],
                "bbox": [2, 1, 5, 3],
                "iscrowd": 0,
            },
            {
                "id": 6,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 5, 4, 5],
                "iscrowd": 0,
                "segmentation": [[0, 5, 4, 5, 0, 10], [8, 8, 12, 8, 12, 10, 8, 10]],
            },
        ],
        extra_images=["empty.png"],
    )
    first, empty = _as_numpy(kseg.data.coco_instances(path, tmp_path))
    expected = np.zeros((10, 12), np.uint8)
    expected[1:4, 2:7] = 1
    np.testing.assert_array_equal(first["masks"][0], expected)
    # Two polygons of one annotation form one mask; category 7 is class 2, category 1 class 1.
    assert first["classes"].tolist() == [2, 1]
    assert first["masks"][1][8:10, 8:12].all() and first["masks"][1][5, 0]
    np.testing.assert_array_equal(first["boxes"], [[1, 2, 4, 7], [5, 0, 10, 4]])
    # An image without annotations is an all-background sample.
    assert empty["masks"].shape == (0, 10, 12) and empty["boxes"].shape == (0, 4)
    assert empty["classes"].shape == (0,)


@pytest.mark.parametrize(
    "annotation, message",
    [
        (
            {"segmentation": [[1, 1, 5, 1]], "bbox": [1, 1, 4, 1]},
            r"'.*instances_x.json', annotation id 41 .*at least three points.*polygon=\[1, 1, 5, 1\]",
        ),
        (
            {"segmentation": [[1, 1, 5, 1, 5, 5]], "bbox": [8, 2, 9, 3]},
            r"annotation id 41 .*outside the 12x10 image.*bbox=\[8, 2, 9, 3\]",
        ),
        (
            {"segmentation": [[1, 1, 5, 1, 5, 5]], "category_id": 99},
            r"annotation id 41 .*unknown category id.*category_id=99",
        ),
    ],
)
def test_bad_annotations_name_the_file_the_annotation_and_the_value(tmp_path, annotation, message):
    path = _write_coco(
        tmp_path, [{"id": 41, "image_id": 1, "category_id": 1, "iscrowd": 0, **annotation}]
    )
    with pytest.raises(ValueError, match=message):
        kseg.data.coco_instances(path, tmp_path)


def test_coco_panoptic_round_trip_and_png_ids_missing_from_the_json(tmp_path):
    scenes = _scenes(3)
    scenes[0]["panoptic"][:3, :3] = PANOPTIC_VOID
    scenes[2]["panoptic"][-4:, -4:] = 2000  # a crowd region of class 2
    root = tmp_path / "pan"
    kseg.data.write_coco_panoptic(
        scenes,
        root / "panoptic.json",
        root / "images",
        root / "png",
        kseg.data.SYNTHETIC_CLASSES,
        thing_classes=range(1, 6),
    )
    data = json.loads((root / "panoptic.json").read_text())
    assert [c["isthing"] for c in data["categories"]] == [0, 1, 1, 1, 1, 1]
    assert any(s["iscrowd"] for s in data["annotations"][2]["segments_info"])
    ids = kseg.data.decode_panoptic_png(np.asarray(Image.open(root / "png" / "000000.png")))
    assert ids[0, 0] == 0  # void
    back = _as_numpy(kseg.data.coco_panoptic(root / "panoptic.json", root / "images", root / "png"))
    for scene, sample in zip(scenes, back):
        np.testing.assert_array_equal(sample["panoptic"], scene["panoptic"])
        np.testing.assert_array_equal(sample["image"], scene["image"])
    # Drop a segment from the JSON: the PNG then holds an id the JSON does not list.
    removed = data["annotations"][1]["segments_info"].pop()
    (root / "panoptic.json").write_text(json.dumps(data))
    ds = kseg.data.coco_panoptic(root / "panoptic.json", root / "images", root / "png")
    with pytest.raises(Exception, match=rf"000001.png.*\[{removed['id']}\].*panoptic.json"):
        list(ds)


def test_panoptic_png_encoding_is_r_plus_256_g_plus_65536_b():
    ids = np.array([[0, 1, 256, 65536 + 2 * 256 + 3]])
    rgb = kseg.data.encode_panoptic_png(ids)
    assert rgb.tolist() == [[[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 2, 1]]]
    np.testing.assert_array_equal(kseg.data.decode_panoptic_png(rgb), ids)


def test_pennfudan_round_trip(tmp_path):
    scenes = _scenes(3)
    kseg.data.write_pennfudan(scenes, tmp_path / "ped")
    ids = np.asarray(Image.open(tmp_path / "ped" / "PedMasks" / "FudanPed00001_mask.png"))
    assert sorted(np.unique(ids).tolist()) == list(range(len(scenes[0]["classes"]) + 1))
    back = _as_numpy(kseg.data.pennfudan(tmp_path / "ped"))
    for scene, sample in zip(scenes, back):
        np.testing.assert_array_equal(sample["masks"], scene["masks"])
        np.testing.assert_array_equal(sample["boxes"], scene["boxes"])
        assert sample["classes"].tolist() == [1] * len(scene["classes"])


def test_instance_and_panoptic_datasets_load_by_name_from_their_release_layouts(tmp_path):
    scenes = _scenes(3)
    root = tmp_path / "coco"
    kseg.data.write_coco_instances(
        scenes,
        root / "annotations" / "instances_val2017.json",
        root / "val2017",
        class_names=kseg.data.SYNTHETIC_CLASSES,
    )
    kseg.data.write_coco_panoptic(
        scenes,
        root / "annotations" / "panoptic_val2017.json",
        root / "val2017",
        root / "annotations" / "panoptic_val2017",
        kseg.data.SYNTHETIC_CLASSES,
        thing_classes=range(1, 6),
    )
    for name in ("coco", "coco_instances"):
        back = _as_numpy(kseg.data.load(name, root, "val"))
        assert len(back) == 3
        for scene, sample in zip(scenes, back):
            np.testing.assert_array_equal(sample["masks"], scene["masks"])
            assert sample["classes"].tolist() == scene["classes"].tolist()
    panoptic = _as_numpy(kseg.data.load("coco_panoptic", root, "val"))
    for scene, sample in zip(scenes, panoptic):
        np.testing.assert_array_equal(sample["panoptic"], scene["panoptic"])
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        kseg.data.load("coco", root, "train")

    kseg.data.write_pennfudan(scenes, tmp_path / "ped")
    split = {
        s: [
            len(x["classes"])
            for x in _as_numpy(kseg.data.load("pennfudan", tmp_path / "ped", s, held_out=1))
        ]
        for s in ("all", "train", "val")
    }
    counts = [len(s["classes"]) for s in scenes]
    assert split == {"all": counts, "train": counts[:2], "val": counts[2:]}
    with pytest.raises(ValueError, match="Received: split='dev'"):
        kseg.data.load("pennfudan", tmp_path / "ped", "dev")

    synthetic = _as_numpy(
        kseg.data.load("synthetic_instances", split="val", num_images=2, image_size=(32, 32))
    )
    expected = _as_numpy(
        synthetic_instances(2, (32, 32), first_index=kseg.data.SYNTHETIC_SPLITS["val"][0])
    )
    np.testing.assert_array_equal(synthetic[1]["panoptic"], expected[1]["panoptic"])
    assert "coco" in kseg.data.INSTANCE_DATASETS and "coco_panoptic" in kseg.data.PANOPTIC_DATASETS

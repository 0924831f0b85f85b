"""kseg evaluate --task instance|panoptic on saved models and synthetic scenes."""

import json

import keras
import numpy as np
import pytest

import kseg
from kseg.cli.main import main


def test_evaluate_instance_task_writes_coco_scores(tmp_path, capsys):
    model = kseg.models.MaskRCNN(
        num_classes=6,
        backbone="resnet18",
        fpn_filters=16,
        input_shape=(48, 48, 3),
        test_proposals=50,
        max_detections=10,
    )
    model.save(tmp_path / "m.keras")
    code = main(
        [
            "evaluate",
            "--task",
            "instance",
            "--model",
            str(tmp_path / "m.keras"),
            "--num-images",
            "3",
            "--image-size",
            "48",
            "48",
            "--batch-size",
            "2",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    scores = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert scores["task"] == "instance"
    for iou_type in ("bbox", "segm"):
        assert set(scores[iou_type]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        assert -1.0 <= scores[iou_type]["AP50"] <= 1.0
    assert "segm" in capsys.readouterr().out


def test_evaluate_panoptic_task_matches_panoptic_quality(tmp_path):
    # A model that calls every pixel background (class 0, stuff): its PQ is computable here.
    images = keras.Input((40, 40, 3))
    zeros = keras.layers.Conv2D(1, 1, kernel_initializer="zeros", bias_initializer="zeros")(images)
    keras.Model(images, zeros).save(tmp_path / "zero.keras")
    code = main(
        [
            "evaluate",
            "--task",
            "panoptic",
            "--model",
            str(tmp_path / "zero.keras"),
            "--num-images",
            "4",
            "--image-size",
            "40",
            "40",
            "--seed",
            "3",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    scores = json.loads((tmp_path / "out" / "metrics.json").read_text())
    truth = [
        s["panoptic"].numpy()
        for s in kseg.data.synthetic_instances(4, (40, 40), seed=3, first_index=1_000_000_000)
    ]
    expected = kseg.metrics.panoptic_quality(
        np.zeros((4, 40, 40), np.int64), np.stack(truth), thing_classes=range(1, 6)
    )
    assert scores["pq"] == expected["pq"] and scores["things"]["pq"] == 0.0
    assert scores["stuff"]["pq"] == expected["stuff"]["pq"] > 0.5


def test_evaluate_task_names_a_missing_option(tmp_path, capsys):
    images = keras.Input((8, 8, 3))
    keras.Model(images, keras.layers.Conv2D(1, 1)(images)).save(tmp_path / "m.keras")
    code = main(
        [
            "evaluate",
            "--task",
            "instance",
            "--model",
            str(tmp_path / "m.keras"),
            "--dataset",
            "coco",
        ]
    )
    assert code != 0
    assert "--annotations" in capsys.readouterr().err


TINY_MASK_RCNN = [
    "--backbone",
    "resnet18",
    "--model-option",
    "fpn_filters=8",
    "--model-option",
    "roi_samples=16",
    "--model-option",
    "train_proposals=40",
    "--model-option",
    "test_proposals=20",
    "--model-option",
    "max_detections=5",
    "--model-option",
    "score_threshold=0.0",
]


def _scenes(count, size, seed):
    return [
        {k: v.numpy() for k, v in s.items()}
        for s in kseg.data.synthetic_instances(count, size, seed=seed)
    ]


@pytest.mark.slow
def test_train_instance_on_coco_with_an_empty_image_then_predict_coco_results(tmp_path):

    scenes = _scenes(2, (32, 32), seed=5)
    empty = {
        "image": scenes[1]["image"],
        "boxes": np.zeros((0, 4), np.float32),
        "classes": np.zeros((0,), np.int32),
        "masks": np.zeros((0, 32, 32), np.uint8),
    }
    kseg.data.write_coco_instances(
        [scenes[0], empty],
        tmp_path / "instances.json",
        tmp_path / "images",
        class_names=kseg.data.SYNTHETIC_CLASSES,
    )
    common = ["--image-size", "32", "32", "--batch-size", "2", "--epochs", "1"]
    code = main(
        ["train", "--task", "instance", "--dataset", "coco", "--annotations"]
        + [str(tmp_path / "instances.json"), "--data-root", str(tmp_path / "images")]
        + common
        + TINY_MASK_RCNN
        + ["--output", str(tmp_path / "run")]
    )
    assert code == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    # The image without annotations is in the batch, trained on as all background.
    for key in ("rpn_objectness", "rpn_box", "box_class", "box_regression", "mask"):
        assert np.isfinite(history[key]).all(), key
    model = kseg.load_model(tmp_path / "run" / "model.keras")
    assert isinstance(model, kseg.models.MaskRCNN) and model.num_classes == 6
    _check_predict_instance(tmp_path, tmp_path / "run" / "model.keras", model, scenes)


def test_predict_instance_task_writes_coco_results_and_pictures(tmp_path):
    keras.utils.set_random_seed(0)
    model = kseg.models.create(
        "mask_rcnn",
        num_classes=6,
        backbone="resnet18",
        fpn_filters=8,
        input_shape=(32, 32, 3),
        test_proposals=20,
        max_detections=5,
        score_threshold=0.0,
    )
    model.save(tmp_path / "m.keras")
    _check_predict_instance(tmp_path, tmp_path / "m.keras", model, _scenes(2, (32, 32), seed=5))
    # With a COCO file, class k is written as its k-th smallest category id.
    categories = [{"id": i, "name": f"c{i}"} for i in (90, 3, 7, 11, 13)]
    (tmp_path / "cats.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": categories})
    )
    code = main(
        ["predict", "--task", "instance", "--model", str(tmp_path / "m.keras")]
        + [str(tmp_path / "in0.png"), "--score-threshold", "0"]
        + ["--annotations", str(tmp_path / "cats.json"), "--output", str(tmp_path / "ids")]
    )
    assert code == 0
    plain = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    mapped = json.loads((tmp_path / "ids" / "predictions.json").read_text())
    to_id = {1: 3, 2: 7, 3: 11, 4: 13, 5: 90}
    assert [to_id[r["category_id"]] for r in plain if r["image_id"] == 1] == [
        r["category_id"] for r in mapped
    ]


def _check_predict_instance(tmp_path, path, model, scenes):
    from PIL import Image

    for n, scene in enumerate(scenes):
        Image.fromarray(scene["image"].astype(np.uint8)).save(tmp_path / f"in{n}.png")
    code = main(
        ["predict", "--task", "instance", "--model", str(path)]
        + [str(tmp_path / "in0.png"), str(tmp_path / "in1.png"), "--score-threshold", "0"]
        + ["--output", str(tmp_path / "pred")]
    )
    assert code == 0
    results = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    images = json.loads((tmp_path / "pred" / "images.json").read_text())
    assert [i["file_name"] for i in images] == ["in0.png", "in1.png"]
    for n in range(2):
        image = np.asarray(Image.open(tmp_path / f"in{n}.png"), np.float32)
        out = {k: np.asarray(v)[0] for k, v in model.detect(image[None]).items()}
        mine = [r for r in results if r["image_id"] == n + 1]
        assert len(mine) == int(out["num_detections"]) == 5
        for r, box, cls in zip(mine, out["boxes"], out["classes"]):
            ymin, xmin, ymax, xmax = box
            np.testing.assert_allclose(r["bbox"], [xmin, ymin, xmax - xmin, ymax - ymin], atol=1e-4)
            assert r["category_id"] == cls and set(r["segmentation"]) == {"size", "counts"}
        picture = np.asarray(Image.open(tmp_path / "pred" / f"in{n}_instances.png"))
        assert picture.shape == (32, 32, 3) and not np.array_equal(picture, image)


def test_instance_datasets_are_refused_by_semantic_training(tmp_path, capsys):
    code = main(["train", "--dataset", "coco", "--data-root", str(tmp_path)])
    assert code != 0
    assert "--task instance" in capsys.readouterr().err
    code = main(
        ["train", "--task", "instance", "--strategy", "mirrored", "--output", str(tmp_path)]
    )
    assert code != 0
    assert "Received: --strategy=mirrored" in capsys.readouterr().err
    assert main(["train", "--model", "panoptic_deeplab", "--output", str(tmp_path)]) != 0
    assert "train it with --task panoptic" in capsys.readouterr().err


def test_draw_instances_colours_each_instance_in_its_own_colour():
    from kseg.cli.instance import draw_instances, instance_colors

    masks = np.zeros((2, 40, 40), np.float32)
    masks[0, 10:20, 2:14] = 1.0
    masks[1, 20:30, 2:14] = 0.9  # touching, same class: still its own colour
    boxes = [[10, 2, 20, 14], [20, 2, 30, 14]]
    picture = draw_instances(np.zeros((40, 40, 3)), boxes, [1, 1], masks)
    colors = instance_colors(2)
    assert not np.array_equal(colors[0], colors[1])
    # inside each mask, right of the class label and left of the box outline (column 13)
    np.testing.assert_allclose(picture[18, 12], 0.5 * colors[0], atol=1)
    np.testing.assert_allclose(picture[28, 12], 0.5 * colors[1], atol=1)
    np.testing.assert_array_equal(picture[10, 13], colors[0])  # the box outline
    assert np.all(picture[:, 20:] == 0) and np.all(picture[32:] == 0)


TINY_PANOPTIC_OPTIONS = {
    "aspp_filters": 8,
    "semantic_filters": 8,
    "instance_filters": 8,
    "semantic_projections": (8, 8),
    "instance_projections": (8, 4),
    "semantic_head_filters": 8,
    "instance_head_filters": 8,
}
TINY_PANOPTIC = ["--backbone", "mobilenetv2"] + [
    part for k, v in TINY_PANOPTIC_OPTIONS.items() for part in ("--model-option", f"{k}={v}")
]


@pytest.mark.slow
def test_train_panoptic_then_predict_panoptic_png_and_json_and_evaluate(tmp_path):
    size = ["--image-size", "32", "32"]
    code = main(
        ["train", "--task", "panoptic", "--num-images", "2", "--batch-size", "2", "--epochs", "1"]
        + size
        + TINY_PANOPTIC
        + ["--output", str(tmp_path / "run")]
    )
    assert code == 0
    path = tmp_path / "run" / "model.keras"
    model = kseg.load_model(path)
    assert isinstance(model, kseg.models.PanopticDeepLab) and model.thing_classes == (1, 2, 3, 4, 5)
    _check_predict_and_evaluate_panoptic(tmp_path, path, model)


def test_predict_and_evaluate_panoptic_task_on_a_panoptic_deeplab(tmp_path):
    keras.utils.set_random_seed(0)
    model = kseg.models.create(
        "panoptic_deeplab",
        num_classes=6,
        thing_classes=(1, 2, 3, 4, 5),
        backbone="mobilenetv2",
        input_shape=(32, 32, 3),
        **TINY_PANOPTIC_OPTIONS,
    )
    model.save(tmp_path / "m.keras")
    _check_predict_and_evaluate_panoptic(tmp_path, tmp_path / "m.keras", model)


def _check_predict_and_evaluate_panoptic(tmp_path, path, model):
    from PIL import Image

    size = ["--image-size", "32", "32"]
    scene = _scenes(1, (32, 32), seed=9)[0]
    Image.fromarray(scene["image"].astype(np.uint8)).save(tmp_path / "a.png")
    code = main(
        ["predict", "--task", "panoptic", "--model", str(path), str(tmp_path / "a.png")]
        + ["--output", str(tmp_path / "pred")]
    )
    assert code == 0
    expected = np.asarray(
        model.panoptic_model().predict(
            np.asarray(Image.open(tmp_path / "a.png"), np.float32)[None], verbose=0
        )
    )[0]
    data = json.loads((tmp_path / "pred" / "panoptic.json").read_text())
    (annotation,) = data["annotations"]
    ids = kseg.data.decode_panoptic_png(
        np.asarray(Image.open(tmp_path / "pred" / "panoptic" / annotation["file_name"]))
    )
    # Back through segments_info: category = class + 1; things numbered from 1 per class.
    back = np.full(ids.shape, 255000)
    for segment in annotation["segments_info"]:
        back[ids == segment["id"]] = (segment["category_id"] - 1) * 1000
    np.testing.assert_array_equal(
        back // 1000, np.where(expected // 1000 == 255, 255, expected // 1000)
    )
    assert (tmp_path / "pred" / "a_panoptic.png").exists()
    code = main(
        ["evaluate", "--task", "panoptic", "--model", str(path), "--num-images", "2"]
        + size
        + ["--output", str(tmp_path / "eval")]
    )
    assert code == 0
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= scores["pq"] <= 1.0 and set(scores) >= {"things", "stuff", "per_class"}


@pytest.mark.slow
def test_instance_demo_trains_scores_and_draws(tmp_path):
    code = main(
        ["demo", "--task", "instance", "--steps", "2", "--num-train", "8", "--num-val", "4"]
        + ["--image-size", "32", "32", "--output", str(tmp_path)]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["recipe"]["steps"] == 2 and -1.0 <= metrics["segm"]["AP50"] <= 1.0
    assert isinstance(kseg.load_model(tmp_path / "model.keras"), kseg.models.MaskRCNN)
    assert len(list(tmp_path.glob("val_*.png"))) == 4


@pytest.mark.slow
def test_export_command_writes_the_detection_signature_of_a_mask_rcnn(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = kseg.models.create(
        "mask_rcnn",
        num_classes=3,
        backbone="resnet18",
        fpn_filters=8,
        input_shape=(32, 32, 3),
        test_proposals=10,
        max_detections=3,
        score_threshold=0.0,
    )
    model.save(tmp_path / "m.keras")
    code = main(["export", "--model", str(tmp_path / "m.keras"), "--output", str(tmp_path / "sm")])
    assert code == 0
    images = _scenes(1, (32, 32), seed=2)[0]["image"][None].astype(np.float32)
    got = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](
        images=tf.constant(images)
    )
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(got["masks"].numpy(), expected["masks"], atol=1e-4)
    code = main(
        ["export", "--model", str(tmp_path / "m.keras"), "--format", "onnx"]
        + ["--output", str(tmp_path / "m.onnx")]
    )
    assert code != 0

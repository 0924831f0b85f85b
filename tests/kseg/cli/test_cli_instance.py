"""kseg evaluate --task instance|panoptic on saved models and synthetic scenes."""

import json

import keras
import numpy as np

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

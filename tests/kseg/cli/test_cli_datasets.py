"""The CLI on the registered datasets: classes and names come from kseg.data.info."""

import json

import numpy as np

from kseg.cli.main import main
from kseg.testing.datasets import write_cityscapes

CITYSCAPES_NAMES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]
EVALUATED_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def test_cityscapes_train_evaluate_round_trip_reports_the_19_official_classes(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    written = write_cityscapes(root, {"train": 2, "val": 2})
    data = ["--dataset", "cityscapes", "--data-root", str(root)]
    run = tmp_path / "run"
    train = ["train", "--model", "unet", "--model-option", "base_filters=4", "--epochs", "1"]
    train += ["--batch-size", "2", "--crop-size", "32", "32", "--output", str(run)]
    assert main([*train, *data]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(run / "model.keras"), "--output", str(out), *data]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["class_names"] == CITYSCAPES_NAMES
    assert len(record["iou"]) == 19 and np.asarray(record["confusion_matrix"]).shape == (19, 19)
    # Only the evaluated label ids are scored: the 15 others were mapped to 255.
    scored = sum(int(np.isin(e.ids, EVALUATED_IDS).sum()) for e in written["val"])
    assert record["num_pixels"] == scored
    assert "bicycle" in capsys.readouterr().out


def test_dataset_options_and_bad_arguments_are_reported(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    write_cityscapes(root, {"val": 1}, mode="coarse")
    model = tmp_path / "model.keras"
    import kseg

    kseg.models.create("unet", num_classes=19, base_filters=4).save(model)
    out = tmp_path / "eval"
    data = ["--dataset", "cityscapes", "--data-root", str(root)]
    assert main(["evaluate", "--model", str(model), "--output", str(out), *data]) == 2
    assert "gtFine" in capsys.readouterr().err  # the fine labels are not there
    coarse = [*data, "--dataset-option", "mode=coarse"]
    assert main(["evaluate", "--model", str(model), "--output", str(out), *coarse]) == 0
    assert json.loads((out / "metrics.json").read_text())["class_names"][0] == "road"
    assert main(["evaluate", "--model", str(model), *data, "--num-classes", "21"]) == 2
    assert "has 19 classes. Received: --num-classes=21" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(model), "--dataset", "citiscapes"]) == 2
    error = capsys.readouterr().err
    assert "unknown dataset; valid: " in error and "Received: --dataset='citiscapes'" in error
    listed = error.split("valid: ")[1].split(". Received")[0].split(", ")
    assert {"ade20k", "cityscapes", "coco_stuff", "synthetic", "voc"} <= set(listed)

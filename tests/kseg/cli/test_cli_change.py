"""`kseg train --task change`: change detection on synthetic pairs and on a LEVIR-CD folder."""

import json

import pytest

import kseg
from kseg.cli.main import main
from kseg.data import synthetic_change_numpy, write_change_dataset

TRAIN = ["train", "--task", "change", "--epochs", "1", "--batch-size", "4"]
TINY = ["--model-option", "base_filters=4"]


def test_train_change_on_synthetic_pairs(tmp_path, capsys):
    run = tmp_path / "synthetic"
    synthetic = ["--dataset", "synthetic", "--image-size", "32", "32", "--num-images", "8"]
    assert main([*TRAIN, *TINY, *synthetic, "--output", str(run)]) == 0
    model = kseg.load_model(run / "model.keras")
    assert type(model).__name__ == "FCSiamDiff"  # the change task's default model
    assert tuple(model.input_shape) == (None, 32, 32, 6) and model.output_shape[-1] == 2
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 1 and "val_mean_iou" in history

    capsys.readouterr()
    assert main([*TRAIN, "--dataset", "voc", "--output", str(tmp_path / "bad")]) == 2
    assert "--dataset='voc'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_change_on_a_levir_folder(tmp_path):
    pairs, labels = synthetic_change_numpy(8, (40, 40), seed=2)
    write_change_dataset(pairs[:4], labels[:4], tmp_path / "levir", "train")
    write_change_dataset(pairs[4:], labels[4:], tmp_path / "levir", "val")
    run = tmp_path / "folder"
    root = str(tmp_path / "levir")
    folder = ["--dataset", "change", "--data-root", root, "--crop-size", "32", "32"]
    assert main([*TRAIN, "--model", "fc_ef", *TINY, *folder, "--output", str(run)]) == 0
    model = kseg.load_model(run / "model.keras")
    assert type(model).__name__ == "FCEarlyFusion" and model.input_shape[-1] == 6
    assert json.loads((run / "history.json").read_text())["val_mean_iou"][0] >= 0

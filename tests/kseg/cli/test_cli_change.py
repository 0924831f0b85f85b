"""`kseg train/evaluate/predict --task change`: change detection on image pairs."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg.cli.main import main
from kseg.data import (
    change_files,
    read_change_example,
    read_change_mask,
    read_change_pair,
    synthetic_change_numpy,
    write_change_dataset,
)

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


@pytest.fixture(scope="module")
def change_model(tmp_path_factory):
    # Untrained but seeded: it predicts both classes on these pairs (checked below), so the
    # masks and scores compared with the model's own argmax are not trivially constant.
    keras.utils.set_random_seed(3)
    model = kseg.models.create(
        "fc_siam_diff", num_classes=2, input_shape=(32, 32, 6), base_filters=4
    )
    path = tmp_path_factory.mktemp("model") / "cd.keras"
    model.save(path)
    return model, str(path)


def _argmax(model, pairs):
    return np.asarray(model(np.asarray(pairs, np.float32), training=False)).argmax(-1)


def test_evaluate_change_writes_the_change_scores_of_the_models_predictions(
    change_model, tmp_path, capsys
):
    model, path = change_model
    pairs, labels = synthetic_change_numpy(6, (32, 32), seed=4)
    root = tmp_path / "levir"
    write_change_dataset(pairs, labels, root, "test")
    out = tmp_path / "eval"
    args = ["evaluate", "--task", "change", "--model", path, "--dataset", "change"]
    assert main([*args, "--data-root", str(root), "--split", "test", "--output", str(out)]) == 0
    assert "change kappa" in capsys.readouterr().out
    assert main([*args[:1], *args[3:], "--data-root", str(root), "--split", "test"]) == 2
    assert "FCSiamDiff is a change model" in capsys.readouterr().err
    written = json.loads((out / "metrics.json").read_text())
    # The reference: the files read back (PNG rounding), the model's argmax, numpy counts.
    read = [read_change_example(*files) for files in zip(*change_files(str(root), "test"))]
    predicted = _argmax(model, [p for p, _ in read])
    truth = np.stack([t for _, t in read])
    assert 0 < predicted.mean() < 1
    tp = int(((predicted == 1) & (truth == 1)).sum())
    fp = int(((predicted == 1) & (truth == 0)).sum())
    fn = int(((predicted == 0) & (truth == 1)).sum())
    change = written["change"]
    assert change["precision"] == pytest.approx(tp / (tp + fp))
    assert change["recall"] == pytest.approx(tp / (tp + fn))
    assert change["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert change["overall_accuracy"] == pytest.approx((predicted == truth).mean())
    assert written["class_names"] == ["unchanged", "changed"]

    segmenter = tmp_path / "unet.keras"
    kseg.models.create("unet", num_classes=3, input_shape=(32, 32, 3), base_filters=4).save(
        segmenter
    )
    bad = ["--model", str(segmenter), "--dataset", "synthetic", "--image-size", "32", "32"]
    assert main(["evaluate", "--task", "change", *bad]) == 2
    assert "3 input channels and 3 classes" in capsys.readouterr().err


def test_predict_change_writes_masks_equal_to_the_models_argmax(change_model, tmp_path, capsys):
    model, path = change_model
    pairs, labels = synthetic_change_numpy(3, (32, 32), seed=5)
    root = tmp_path / "pairs"
    write_change_dataset(pairs, labels, root, "test", prefix="p")
    files = change_files(str(root), "test")
    expected = _argmax(model, [read_change_pair(a, b) for a, b in zip(*files[:2])])
    assert 0 < expected.mean() < 1

    out = tmp_path / "folder"  # one folder holding A/ and B/
    assert (
        main(
            [
                "predict",
                "--task",
                "change",
                "--model",
                path,
                str(root / "test"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    for index, stem in enumerate(["p_00000", "p_00001", "p_00002"]):
        np.testing.assert_array_equal(
            read_change_mask(str(out / f"{stem}_change.png")), expected[index]
        )
        assert (out / f"{stem}_overlay.png").is_file()

    # Two files; a pair larger than the model's fixed input is predicted at 32x32 and the mask
    # resized back (nearest) to the files' 40x40.
    big, _ = synthetic_change_numpy(1, (40, 40), seed=6)
    write_change_dataset(big, np.zeros((1, 40, 40)), tmp_path / "big", "x", prefix="b")
    a, b = (str(tmp_path / "big" / "x" / part / "b_00000.png") for part in ("A", "B"))
    small = tf.image.resize(read_change_pair(a, b), (32, 32)).numpy()
    resized = tf.image.resize(_argmax(model, [small])[0][..., None], (40, 40), "nearest")
    assert (
        main(
            [
                "predict",
                "--task",
                "change",
                "--model",
                path,
                a,
                b,
                "--output",
                str(tmp_path / "two"),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        read_change_mask(str(tmp_path / "two" / "b_00000_change.png")), resized.numpy()[..., 0]
    )

    capsys.readouterr()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "odd.png")
    assert main(["predict", "--task", "change", "--model", path, a, str(tmp_path / "odd.png")]) == 2
    err = capsys.readouterr().err
    assert "image pair of different sizes" in err and "odd.png' is 20x24" in err
    (root / "test" / "B" / "p_00001.png").unlink()
    assert main(["predict", "--task", "change", "--model", path, str(root / "test")]) == 2
    assert "A/p_00001.png' has no partner" in capsys.readouterr().err
    assert main(["predict", "--task", "change", "--model", path, a]) == 2
    assert "Received: 1 inputs" in capsys.readouterr().err

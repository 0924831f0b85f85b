"""End-to-end runs of the `kseg` command on tiny synthetic data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kseg.cli.main import main


def test_train_evaluate_predict_round_trip(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--dataset", "synthetic", "--image-size", "48", "64", "--seed", "3"]
    assert (
        main(
            [
                "train",
                "--model",
                "unet",
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--num-images",
                "16",
                "--output",
                str(run),
                *common,
            ]
        )
        == 0
    )
    assert (run / "model.keras").is_file() and (run / "best.keras").is_file()
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 2 and "val_mean_iou" in history
    assert any(name.startswith("events") for _, _, files in os.walk(run / "logs") for name in files)

    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run / "model.keras"),
                "--num-images",
                "6",
                "--output",
                str(out),
                *common,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    record = json.loads((out / "metrics.json").read_text())
    assert f"{record['mean_iou']:.4f}" in printed
    cm = np.array(record["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == record["num_pixels"] == 6 * 48 * 64
    assert (out / "confusion_matrix.png").is_file()

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
        images / "a.png"
    )
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(images / "b.jpg")
    pred = tmp_path / "pred"
    assert (
        main(["predict", "--model", str(run / "model.keras"), str(images), "--output", str(pred)])
        == 0
    )
    for stem in ("a", "b"):
        mask = np.asarray(Image.open(pred / f"{stem}_mask.png"))
        assert mask.shape == (48, 64, 3)
        assert (pred / f"{stem}_overlay.png").is_file()

    # Test-time flip averaging: the mask is the colour-coded FlipAverage prediction.
    import keras

    from kseg import engine, viz

    flipped = tmp_path / "pred_flip"
    assert (
        main(
            [
                "predict",
                "--model",
                str(run / "model.keras"),
                str(images / "a.png"),
                "--output",
                str(flipped),
                "--flip-average",
            ]
        )
        == 0
    )
    model = keras.saving.load_model(run / "model.keras")
    image = np.asarray(Image.open(images / "a.png"), np.float32)
    want = engine.predict_labels(engine.FlipAverage(model), image[None])[0]
    np.testing.assert_array_equal(
        np.asarray(Image.open(flipped / "a_mask.png")), viz.colorize(want)
    )
    flip_eval = tmp_path / "eval_flip"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run / "model.keras"),
                "--num-images",
                "6",
                "--output",
                str(flip_eval),
                "--flip-average",
                *common,
            ]
        )
        == 0
    )
    assert json.loads((flip_eval / "metrics.json").read_text())["num_pixels"] == 6 * 48 * 64


def test_errors_are_reported_not_crashed(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "missing.keras")]) == 2
    assert "missing.keras" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip")
    assert main(["evaluate", "--model", str(corrupt)]) == 2
    assert "corrupt.keras" in capsys.readouterr().err
    assert (
        main(["train", "--model", "no_such_model", "--num-images", "4", "--image-size", "32", "32"])
        == 2
    )
    assert "Valid names" in capsys.readouterr().err

    import keras

    inputs = keras.Input((None, None, 3))
    model_path = tmp_path / "tiny.keras"
    keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs)).save(model_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    assert (
        main(["predict", "--model", str(model_path), str(broken), "--output", str(tmp_path / "p")])
        == 2
    )
    assert "broken.png" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_path), str(tmp_path / "absent.jpg")]) == 2
    assert "absent.jpg" in capsys.readouterr().err


def test_demo_writes_what_it_claims(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kseg.cli.main",
            "demo",
            "--output",
            str(out),
            "--epochs",
            "1",
            "--num-train",
            "32",
            "--num-val",
            "8",
            "--image-size",
            "48",
            "48",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "held-out mean IoU" in result.stdout
    record = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= record["mean_iou"] <= 1.0
    panel = np.asarray(Image.open(out / "prediction_0.png"))
    # 48-pixel scenes are enlarged 6x (nearest neighbour) to 288-pixel tiles
    assert panel.shape == (288, 4 * 288, 3)
    assert (panel[:6, :6] == panel[0, 0]).all()
    assert (out / "model.keras").is_file() and (out / "confusion_matrix.png").is_file()


def test_train_and_evaluate_on_a_voc_folder(tmp_path, capsys):
    import kseg

    root = tmp_path / "voc"
    kseg.data.write_voc(
        kseg.data.synthetic(12, image_size=(40, 56), seed=5),
        str(root),
        splits={"train": 8, "val": 4},
    )
    run = tmp_path / "run"
    voc = ["--dataset", "voc", "--data-root", str(root), "--num-classes", "6"]
    assert (
        main(
            [
                "train",
                "--model",
                "unet",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--crop-size",
                "32",
                "32",
                "--output",
                str(run),
                *voc,
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(run / "model.keras"), "--output", str(out), *voc]) == 0
    record = json.loads((out / "metrics.json").read_text())
    # evaluation runs on the full 40x56 val images (the model is fully convolutional)
    assert record["num_pixels"] == 4 * 40 * 56
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run / "model.keras"),
                "--dataset",
                "voc",
                "--data-root",
                str(tmp_path / "nowhere"),
            ]
        )
        == 2
    )
    assert "nowhere" in capsys.readouterr().err


def test_bench_prints_counted_params_and_madds(capsys):
    import kseg

    assert main(["bench", "--models", "unet", "--input-size", "64", "64"]) == 0
    printed = capsys.readouterr().out
    profile = kseg.bench.profile(
        kseg.models.create("unet", num_classes=21, input_shape=(64, 64, 3)), (64, 64, 3)
    )
    row = next(line for line in printed.splitlines() if line.startswith("| unet"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "64x64x3"
    assert abs(float(cells[2]) - profile["params"] / 1e6) < 0.01
    assert abs(float(cells[3]) - profile["madds"] / 1e9) < 0.01
    assert main(["bench", "--list"]) == 0
    assert "deeplabv3plus" in capsys.readouterr().out.split()


def test_flip_average_averages_the_four_flips():
    import keras

    from kseg import engine
    from kseg.engine import FlipAverage

    inputs = keras.Input((None, None, 3))
    model = keras.Model(
        inputs, keras.layers.Conv2D(2, 3, padding="same", kernel_initializer="he_normal")(inputs)
    )
    images = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    want = (
        sum(
            np.flip(model.predict(np.flip(images, axes).copy(), verbose=0), axes)
            for axes in FlipAverage.FLIPS
        )
        / 4
    )
    got = FlipAverage(model)(images)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        engine.predict_labels(FlipAverage(model), images), want.argmax(-1)
    )
    horizontal = FlipAverage(model, flips=((), (2,)))(images)
    np.testing.assert_allclose(
        horizontal,
        (
            model.predict(images, verbose=0)
            + np.flip(model.predict(np.flip(images, 2).copy(), verbose=0), 2)
        )
        / 2,
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="at least one flip"):
        FlipAverage(model, flips=())
    with pytest.raises(ValueError, match=r"received \(3,\)"):
        FlipAverage(model, flips=((3,),))

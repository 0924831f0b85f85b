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
    # The reported figure is the CRF-refined one; the 8-view and single-pass ones are kept.
    from kseg import demo

    assert record["dense_crf"] == demo.RECIPE["dense_crf"]
    assert 0.0 <= record["mean_iou_before_crf"] <= 1.0
    assert 0.0 <= record["mean_iou_single_pass"] <= 1.0
    assert "dense CRF; before the CRF" in result.stdout
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
    with pytest.raises(ValueError, match=r"Received: axes=\(3,\)"):
        FlipAverage(model, flips=((3,),))
    # transpose=True: the eight symmetries, each undone before averaging (non-square images).
    views = []
    for k in range(4):
        for transposed in (False, True):
            view = images.transpose(0, 2, 1, 3) if transposed else images
            view = np.rot90(view, k, axes=(1, 2)).copy()
            scores = np.rot90(model.predict(view, verbose=0), -k, axes=(1, 2))
            views.append(scores.transpose(0, 2, 1, 3) if transposed else scores)
    np.testing.assert_allclose(
        FlipAverage(model, transpose=True)(images), sum(views) / 8, rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="transpose.*'yes'"):
        FlipAverage(model, transpose="yes")


def _voc_of_two_sizes(root):
    import kseg

    # Train and val each hold images of two sizes (40x56 and 48x32).
    scenes = kseg.data.synthetic(6, image_size=(40, 56), seed=5).concatenate(
        kseg.data.synthetic(6, image_size=(48, 32), seed=6)
    )
    kseg.data.write_voc(
        scenes, str(root), splits={"train": [0, 1, 2, 6, 7, 8], "val": [3, 4, 9, 10, 11]}
    )
    return ["--dataset", "voc", "--data-root", str(root), "--num-classes", "6"]


def test_voc_of_mixed_sizes_trains_without_crop_size_and_evaluates_in_batches(tmp_path, capsys):
    voc = _voc_of_two_sizes(tmp_path / "voc")
    run = tmp_path / "run"
    train = ["train", "--model", "unet", "--model-option", "base_filters=4", "--epochs", "1"]
    # No --crop-size: training crops/pads to the default 512x512, so the batch of 3 stacks.
    assert main([*train, "--batch-size", "3", "--output", str(run), *voc]) == 0
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])

    records = {}
    for batch_size in (1, 2, 3):
        out = tmp_path / f"eval_{batch_size}"
        argv = ["evaluate", "--model", str(run / "model.keras"), "--output", str(out), *voc]
        assert main([*argv, "--batch-size", str(batch_size)]) == 0
        records[batch_size] = json.loads((out / "metrics.json").read_text())
    # Every val pixel counted once at full size, and batching does not change the scores.
    assert records[1]["num_pixels"] == 2 * 40 * 56 + 3 * 48 * 32
    for batch_size in (2, 3):
        np.testing.assert_array_equal(
            records[batch_size]["confusion_matrix"], records[1]["confusion_matrix"]
        )


def test_model_option_reaches_the_builder(tmp_path, capsys):
    import kseg

    run = tmp_path / "run"
    common = ["--dataset", "synthetic", "--image-size", "32", "32", "--num-images", "4"]
    argv = ["train", "--model", "unet", "--epochs", "1", "--batch-size", "2", *common]
    options = ["--model-option", "base_filters=4", "--model-option", "depth=2"]
    assert main([*argv, *options, "--model-option", "variant=same", "--output", str(run)]) == 0
    model = kseg.load_model(run / "model.keras")
    want = kseg.models.UNet(num_classes=6, input_shape=(32, 32, 3), base_filters=4, depth=2)
    assert model.count_params() == want.count_params()
    config = model.get_config()
    assert (config["base_filters"], config["depth"], config["variant"]) == (4, 2, "same")
    capsys.readouterr()

    assert main([*argv, "--model-option", "width=4", "--output", str(run)]) == 2
    err = capsys.readouterr().err
    assert "model 'unet' has no option 'width'; valid: base_filters, depth, dropout" in err
    assert "Received: --model-option=width=4" in err
    assert main([*argv, "--model-option", "base_filters", "--output", str(run)]) == 2
    assert "must be KEY=VALUE. Received: --model-option=base_filters" in capsys.readouterr().err
    assert main([*argv, "--model-option", "num_classes=3", "--output", str(run)]) == 2
    assert "set by the dataset" in capsys.readouterr().err


def test_export_saved_model_and_tflite(tmp_path, capsys):
    import tensorflow as tf

    import kseg

    model = kseg.models.UNet(num_classes=3, input_shape=(None, None, 3), base_filters=4, depth=2)
    path = tmp_path / "m.keras"
    model.save(path)
    images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    want = model.predict(images, verbose=0)

    saved = tmp_path / "saved"
    argv = ["export", "--model", str(path), "--output", str(saved), "--format", "saved_model"]
    assert main(argv) == 0
    # the TF Serving layout: OUTPUT/NAME/VERSION, NAME defaulting to the model's name
    serve = tf.saved_model.load(str(saved / model.name / "1")).signatures["serving_default"]
    got = serve(images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    lite = tmp_path / "m.tflite"
    argv = ["export", "--model", str(path), "--format", "tflite", "--output", str(lite)]
    assert main([*argv, "--input-size", "32", "32"]) == 0
    interpreter = tf.lite.Interpreter(model_path=str(lite))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert tuple(inp["shape"]) == (1, 32, 32, 3)
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), want, rtol=1e-3, atol=1e-3)
    capsys.readouterr()

    # --quantize does not apply to a SavedModel: an error, not silently ignored.
    bad = tmp_path / "bad"
    argv = ["export", "--model", str(path), "--format", "saved_model", "--output", str(bad)]
    assert main([*argv, "--quantize", "int8"]) == 2
    err = capsys.readouterr().err
    assert "--quantize applies only to --format tflite" in err
    assert "Received: --quantize=int8 with --format=saved_model" in err
    assert not bad.exists()


def test_cli_and_demo_synthetic_splits_are_those_of_kseg_data_load(tmp_path):
    import keras

    import kseg
    from kseg import demo, engine

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(6, 3, padding="same")(inputs))
    path = tmp_path / "tiny.keras"
    model.save(path)
    out = tmp_path / "eval"
    common = ["--dataset", "synthetic", "--image-size", "24", "32", "--num-images", "5"]
    argv = ["evaluate", "--model", str(path), "--split", "test", "--seed", "4", *common]
    assert main([*argv, "--output", str(out)]) == 0
    split = kseg.data.load("synthetic", split="test", num_images=5, image_size=(24, 32), seed=4)
    want = engine.evaluate(model, split.batch(1), 6, progress=False)["confusion_matrix"]
    got = json.loads((out / "metrics.json").read_text())["confusion_matrix"]
    np.testing.assert_array_equal(got, want)

    # The demo's training and held-out scenes: the train and val splits of its seed.
    for name in ("train", "val"):
        images, labels = demo._split_arrays(name, 3, (24, 32), 2)
        first = kseg.data.SYNTHETIC_SPLITS[name][0]
        want_images, want_labels = kseg.data.synthetic_numpy(3, (24, 32), seed=2, first_index=first)
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)

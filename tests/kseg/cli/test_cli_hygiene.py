"""The `kseg` command's input hygiene: numbers checked, outputs never clobbered, one-line errors."""

import os

import numpy as np
import pytest
from PIL import Image

from kseg.cli.main import _output_stems, main


@pytest.mark.parametrize(
    "argv, option",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--batch-size", "-1"], "--batch-size"),
        (["train", "--num-classes", "0"], "--num-classes"),
        (["train", "--lr", "-0.1"], "--lr"),
        (["evaluate", "--model", "m.keras", "--num-images", "0"], "--num-images"),
        (["demo", "--epochs", "two"], "--epochs"),
    ],
)
def test_bad_numbers_are_errors_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert option in error and "Received" in error


def test_output_stems_never_collide():
    files = ["in/a/x.jpg", "in/b/x.png", "in/a/y.jpg", "in/a/x.png"]
    stems = _output_stems(files)
    assert len(set(stems)) == len(files)
    assert stems[2] == "y"  # unique names stay as they are
    assert stems[0] == "a_x_jpg" and stems[1] == "b_x_png" and stems[3] == "a_x_png"


def _tiny_model(path):
    import kseg

    model = kseg.models.create("unet", num_classes=2, input_shape=(None, None, 3), base_filters=2)
    model.save(path)
    return model


def test_predict_keeps_one_output_per_input(tmp_path):
    model_path = str(tmp_path / "m.keras")
    _tiny_model(model_path)
    for folder, extension, value in (("a", "jpg", 40), ("b", "png", 200)):
        os.makedirs(tmp_path / folder)
        Image.fromarray(np.full((16, 24, 3), value, np.uint8)).save(
            tmp_path / folder / f"x.{extension}"
        )
    out = tmp_path / "out"
    argv = ["predict", "--model", model_path, str(tmp_path / "a" / "x.jpg")]
    assert main(argv + [str(tmp_path / "b" / "x.png"), "--output", str(out)]) == 0
    overlays = sorted(name for name in os.listdir(out) if name.endswith("_overlay.png"))
    assert overlays == ["a_x_jpg_overlay.png", "b_x_png_overlay.png"]
    # each overlay shows its own image (dark vs bright background)
    dark, bright = (np.asarray(Image.open(out / name)).mean() for name in overlays)
    assert dark < bright


def test_unreadable_and_corrupt_files_end_in_one_line_exit_2(tmp_path, capsys):
    corrupt = tmp_path / "best.keras"
    corrupt.write_bytes(b"not a zip archive")
    assert main(["evaluate", "--model", str(corrupt), "--num-images", "2"]) == 2
    error = capsys.readouterr().err
    assert str(corrupt) in error and error.count("\n") == 1 and "Traceback" not in error

    if os.geteuid() == 0:
        pytest.skip("root reads any file: the permission case needs a normal user")
    model_path = tmp_path / "locked.keras"
    _tiny_model(str(model_path))
    os.chmod(model_path, 0)
    assert main(["evaluate", "--model", str(model_path), "--num-images", "2"]) == 2
    error = capsys.readouterr().err
    assert str(model_path) in error and error.count("\n") == 1


def test_unwritable_output_is_one_line_exit_2(tmp_path, capsys):
    model_path = str(tmp_path / "m.keras")
    _tiny_model(model_path)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the output folder should go")
    assert main(["predict", "--model", model_path, str(image), "--output", str(blocker)]) == 2
    error = capsys.readouterr().err
    assert str(blocker) in error and error.count("\n") == 1 and "Traceback" not in error

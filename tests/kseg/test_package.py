"""The top-level package: a quiet, state-free import and kseg.load_model in a fresh process."""

import os
import subprocess
import sys
import textwrap

import numpy as np

import kseg
from kseg import engine


def _python(code, **env):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=dict(os.environ, **env),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_import_kseg_prints_nothing_and_imports_no_tensorflow():
    result = _python("""
        import sys
        import kseg
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
    """)
    assert result.stdout == "[]\n"
    assert result.stderr == ""


def test_load_model_in_a_fresh_process_restores_model_loss_metrics_and_schedule(tmp_path):
    model = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4)
    engine.compile_model(model, 3, learning_rate=0.01, total_steps=20, warmup_steps=5)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = tmp_path / "unet.keras"
    model.save(path)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "want.npy", model.predict(images, verbose=0))

    # After a bare `import kseg` Keras alone cannot find the classes (they register on import);
    # kseg.load_model imports them first.
    result = _python(
        f"""
        import numpy as np
        import keras
        import kseg
        try:
            keras.saving.load_model({str(path)!r})
            print("KERAS-ALONE loaded")
        except TypeError as error:
            print("KERAS-ALONE", "UNet" in str(error))
        model = kseg.load_model({str(path)!r})
        got = model.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0)
        print("MAX-DIFF", float(np.abs(got - np.load({str(tmp_path / "want.npy")!r})).max()))
        print("LOSS", type(model.loss).__name__, model.loss.ignore_index)
        schedule = model.optimizer._learning_rate
        print("SCHEDULE", type(schedule).__name__, round(float(schedule(2)), 6))
        labels = np.zeros((2, 32, 32), "int32")
        print("METRICS", sorted(model.evaluate(np.load({str(tmp_path / "images.npy")!r}), labels,
                                               verbose=0, return_dict=True)))
    """,
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["KERAS-ALONE"] == "True"
    assert float(lines["MAX-DIFF"]) == 0.0
    assert lines["LOSS"] == "CrossEntropy 255"
    # Warm-up: step 2 of 5 gives 0.01 * 3 / 5.
    assert lines["SCHEDULE"] == "_WarmupSchedule 0.006"
    assert lines["METRICS"] == "['loss', 'mean_iou', 'pixel_accuracy']"

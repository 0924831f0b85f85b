"""Every file a user keeps survives a kill in the middle of its save, and a corrupt checkpoint
is refused by name with the previous one used.

A child process saves with ``KSEG_TEST_SLOW_WRITE`` set, which sleeps inside each write after
the new content is complete and before it replaces the old; the parent kills the child at
several moments around that window and checks the file at the final path.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from kseg import fileio

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# writer name -> child code (``PATH`` is the final path; the model is built before "ready")
WRITERS = {
    "best_checkpoint": """
        import keras, numpy as np
        from kseg import engine
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.layers[0].set_weights([np.full((3, 2), 5, "float32"), np.zeros(2, "float32")])
        checkpoint = engine.BestModelCheckpoint(PATH, monitor="val_mean_iou")
        checkpoint.set_model(model)
        print("ready", flush=True)
        checkpoint.on_epoch_end(0, {"val_mean_iou": 0.5})
    """,
    "history_json": """
        import json
        from kseg import fileio
        print("ready", flush=True)
        with fileio.atomic_open(PATH, "w") as f:
            json.dump({"loss": [5.0] * 1000}, f)
    """,
    "tflite": """
        import keras
        from kseg import export
        model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(5, 1)])
        print("ready", flush=True)
        export.tflite(model, PATH)
    """,
    "saved_model": """
        import keras
        from kseg import export
        model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(5, 1)])
        print("ready", flush=True)
        export.saved_model(model, PATH)
    """,
    "write_voc": """
        import numpy as np
        from kseg.data import write_voc
        images = np.full((2, 8, 8, 3), 200, np.float32)
        labels = np.ones((2, 8, 8), np.int32)
        print("ready", flush=True)
        write_voc((images, labels), PATH, splits={"train": 2})
    """,
}


def _old_state(writer, path):
    """Writes the 'old' file and returns a function reading what a reader would get."""
    if writer == "best_checkpoint":
        import keras

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.layers[0].set_weights([np.ones((3, 2), "float32"), np.zeros(2, "float32")])
        fileio.save_model(model, path)
        return lambda: float(keras.saving.load_model(path).layers[0].get_weights()[0][0, 0])
    if writer == "history_json":
        with open(path, "w") as file:
            file.write('{"loss": [1.0]}')
        import json

        return lambda: json.loads(open(path).read())["loss"][0]
    if writer == "tflite":
        import tensorflow as tf

        with open(path, "wb") as file:
            file.write(b"old")

        def read():
            content = open(path, "rb").read()
            if content == b"old":
                return "old"
            tf.lite.Interpreter(model_content=content).allocate_tensors()
            return "new"

        return read
    if writer == "saved_model":
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "wb") as file:
            file.write(b"old")

        def read():
            import tensorflow as tf

            if open(os.path.join(path, "saved_model.pb"), "rb").read() == b"old":
                return "old"
            tf.saved_model.load(path)
            return "new"

        return read
    # write_voc: an old dataset whose label 000000 is all 0
    from kseg.data import read_label, write_voc

    write_voc((np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8), np.int32)), path)
    return lambda: int(read_label(os.path.join(path, "SegmentationClass", "000000.png")).max())


EXPECTED = {
    "best_checkpoint": (1.0, 5.0),
    "history_json": (1.0, 5.0),
    "tflite": ("old", "new"),
    "saved_model": ("old", "new"),
    "write_voc": (0, 1),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_kill_during_a_save_leaves_the_old_file_or_the_new_one(tmp_path, writer):
    path = str(
        tmp_path / {"tflite": "m.tflite", "best_checkpoint": "best.keras"}.get(writer, "out")
    )
    if writer == "history_json":
        path += ".json"
    read = _old_state(writer, path)
    old, new = EXPECTED[writer]
    outcomes = []
    for delay in (0.05, 0.6, 6.0):
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
        env[fileio.SLOW_WRITE_ENV] = "1.5"
        code = textwrap.dedent(WRITERS[writer]).replace("PATH", repr(path))
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=120)
        state = read()
        assert state in (old, new), f"{writer}: torn file after a kill at {delay} s: {state!r}"
        outcomes.append(state)
        if state == new:
            break
    # The early kills land inside the save: the old file must have survived them.
    assert outcomes[0] == old


def test_best_checkpoint_keeps_the_previous_and_load_falls_back(tmp_path):
    import keras

    from kseg import engine

    path = str(tmp_path / "best.keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    checkpoint = engine.BestModelCheckpoint(path, monitor="val_mean_iou")
    checkpoint.set_model(model)
    for epoch, (score, value) in enumerate([(0.3, 1.0), (0.2, 9.0), (0.6, 2.0)]):
        model.layers[0].set_weights([np.full((3, 2), value, "float32"), np.zeros(2, "float32")])
        checkpoint.on_epoch_end(epoch, {"val_mean_iou": score})
    kernel = keras.saving.load_model(path).layers[0].get_weights()[0]
    assert kernel[0, 0] == 2.0  # epoch 1 did not improve and was not saved
    assert os.path.isfile(str(tmp_path / "best.previous.keras"))

    with open(path, "wb") as file:
        file.write(b"torn")
    warnings = []
    restored = engine.load_checkpoint(path, warn=warnings.append)
    assert restored.layers[0].get_weights()[0][0, 0] == 1.0
    assert "best.keras" in warnings[0] and "best.previous.keras" in warnings[0]

    os.remove(str(tmp_path / "best.previous.keras"))
    with pytest.raises(ValueError, match=r"best\.keras.*unreadable.*best\.previous\.keras"):
        engine.load_checkpoint(path)

"""Atomic writes: processes killed in the middle of a save leave the old file or the new one."""

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


def _spawn(code, slow_write):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    env[fileio.SLOW_WRITE_ENV] = str(slow_write)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _kill_after_ready(process, delay):
    # The child prints "ready" just before the save starts.
    assert process.stdout.readline().strip() == "ready"
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def test_atomic_open_replaces_only_on_success(tmp_path):
    path = tmp_path / "history.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_open(path, "w") as file:
            file.write("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["history.json"]  # no temporary left behind
    fileio.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"


def test_atomic_open_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="Received: mode='r'"):
        with fileio.atomic_open(tmp_path / "x", "r"):
            pass
    # appending would silently drop the old content: refused
    with pytest.raises(ValueError, match="Received: mode='a'"):
        with fileio.atomic_open(tmp_path / "x", "a"):
            pass


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1, 0.3, 1.5])
def test_killed_byte_write_leaves_old_or_new(tmp_path, delay):
    path = tmp_path / "weights.bin"
    old = bytes(range(256)) * 4096
    path.write_bytes(old)
    new = b"\x07" * len(old) * 2
    process = _spawn(
        f"""
        from kseg import fileio
        print("ready", flush=True)
        fileio.write_bytes({str(path)!r}, b"\\x07" * {len(new)})
        """,
        slow_write=0.5,
    )
    _kill_after_ready(process, delay)
    content = path.read_bytes()
    assert content in (old, new)
    if delay < 0.3:  # killed inside the write window: the old file is untouched
        assert content == old


def test_killed_directory_swap_keeps_a_complete_folder(tmp_path):
    path = tmp_path / "export"
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"old model")
    process = _spawn(
        f"""
        import os
        from kseg import fileio
        print("ready", flush=True)
        with fileio.atomic_directory({str(path)!r}) as folder:
            with open(os.path.join(folder, "saved_model.pb"), "wb") as file:
                file.write(b"new model")
        """,
        slow_write=2.0,
    )
    _kill_after_ready(process, 0.5)
    assert (path / "saved_model.pb").read_bytes() == b"old model"
    with fileio.atomic_directory(path) as folder:
        (open(os.path.join(folder, "saved_model.pb"), "wb")).write(b"newer")
    assert os.listdir(path) == ["saved_model.pb"]
    assert (path / "saved_model.pb").read_bytes() == b"newer"


def test_recover_directory_restores_the_previous_folder(tmp_path):
    # The state a kill between the two renames leaves: only the backup exists.
    path = tmp_path / "export"
    backup = tmp_path / ".export.previous"
    backup.mkdir()
    (backup / "saved_model.pb").write_bytes(b"old")
    fileio.recover_directory(path)
    assert (path / "saved_model.pb").read_bytes() == b"old"
    assert not backup.exists()


def test_killed_model_save_leaves_a_loadable_model(tmp_path):
    import keras

    path = str(tmp_path / "model.keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.layers[0].set_weights([np.ones((3, 2), "float32"), np.zeros(2, "float32")])
    fileio.save_model(model, path)
    for delay in (0.0, 0.2, 0.6):
        process = _spawn(
            f"""
            import keras, numpy as np
            from kseg import fileio
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
            model.layers[0].set_weights([np.full((3, 2), 5, "float32"), np.zeros(2, "float32")])
            print("ready", flush=True)
            fileio.save_model(model, {path!r})
            """,
            slow_write=1.0,
        )
        _kill_after_ready(process, delay)
        kernel = keras.saving.load_model(path).layers[0].get_weights()[0]
        np.testing.assert_array_equal(kernel, np.ones((3, 2)))

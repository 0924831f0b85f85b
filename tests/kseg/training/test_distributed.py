"""kseg.engine.train under tf.distribute: 2 mirrored CPU replicas, and 2 workers on 127.0.0.1.

Both run in child processes: splitting the CPU into logical devices and configuring collective
ops are process-wide and must happen before TensorFlow starts, so the test process is untouched.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# A model without batch normalisation: per-replica batch statistics would legitimately differ
# from the global batch's, and that is not what these tests compare.
_COMMON = """
import json, os, sys
import numpy as np
import keras
import tensorflow as tf
import kseg
from kseg.layers import ImageNormalization, Resize

def build():
    images = keras.Input((32, 32, 3))
    x = ImageNormalization("unit")(images)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(6, 1)(x)
    return keras.Model(images, Resize()([x, images]), name="tiny")

def data():
    images, labels = kseg.data.synthetic_numpy(8, image_size=(32, 32), seed=0)
    labels[:, :4] = 255  # ignored pixels reach the loss and the metrics too
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4, drop_remainder=True)

def weights(model):
    return [np.asarray(v.numpy()).tolist() for v in model.trainable_variables]
"""

_MIRRORED = """
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
results = {}
for name in ("one", "two"):
    strategy = (
        tf.distribute.get_strategy()
        if name == "one"
        else kseg.training.make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    )
    keras.utils.set_random_seed(0)
    result = kseg.engine.train(
        build, data(), data(), epochs=3, strategy=strategy, verbose=0, learning_rate=1e-2
    )
    results[name] = {
        "replicas": strategy.num_replicas_in_sync,
        "weights": weights(result.model),
        "history": result.history,
    }
try:
    kseg.engine.train(build, data().unbatch().batch(3, drop_remainder=True), epochs=1, strategy=strategy)
except ValueError as error:
    results["uneven"] = str(error)
print("RESULT " + json.dumps(results))
"""


def _run(code, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_COMMON) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        timeout=timeout,
    )


def _result(process):
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_mirrored_two_cpu_replicas_match_one_device_on_the_same_global_batch():
    results = _result(_run(_MIRRORED))
    one, two = results["one"], results["two"]
    assert one["replicas"] == 1 and two["replicas"] == 2
    # 6 AdamW steps (lr 1e-2) from the same initial weights on the same global batches of 4.
    # Each replica takes 2 images; the gradients are summed across replicas instead of over
    # the whole batch at once, so only float32 summation order differs: measured max |dw|
    # ~1e-7; 1e-5 is two orders of magnitude above it and far below one step (1e-2).
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5)
    start = np.asarray(one["weights"][0])
    assert np.abs(start).max() > 0  # the comparison is of trained, non-trivial kernels
    # The summed per-replica confusion matrices give the single device's scores.
    for key in ("mean_iou", "pixel_accuracy", "val_mean_iou", "val_pixel_accuracy"):
        np.testing.assert_allclose(two["history"][key], one["history"][key], atol=1e-6)
    np.testing.assert_allclose(two["history"]["loss"], one["history"]["loss"], rtol=1e-5)
    assert one["history"]["loss"][-1] < one["history"]["loss"][0]
    assert "multiple of the 2 replicas" in results["uneven"]
    assert "Received: batch size 3" in results["uneven"]


_WORKER = """
index = int(sys.argv[1])
strategy = kseg.training.make_strategy("multiworker")
keras.utils.set_random_seed(0)
output = sys.argv[2]
result = kseg.engine.train(
    build,
    data(),
    data(),
    epochs=2,
    strategy=strategy,
    checkpoint_dir=os.path.join(output, "checkpoints"),
    checkpoint_every=1,
    best_path=os.path.join(output, "best.keras"),
    verbose=0,
    learning_rate=1e-2,
)
print("RESULT " + json.dumps({
    "chief": kseg.training.is_chief(strategy),
    "replicas": strategy.num_replicas_in_sync,
    "weights": weights(result.model),
    "history": result.history,
}))
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multiworker_two_workers_on_localhost_end_with_identical_weights(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    code = textwrap.dedent(_COMMON) + textwrap.dedent(_WORKER)
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "PYTHONPATH": REPO,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps(config),
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", code, str(index), str(tmp_path)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-3000:]
            line = next(line for line in out.splitlines() if line.startswith("RESULT "))
            results.append(json.loads(line[len("RESULT ") :]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [r["chief"] for r in results] == [True, False]
    assert all(r["replicas"] == 2 for r in results)
    for a, b in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # all-reduce: bit-identical
    assert results[0]["history"] == results[1]["history"]
    assert results[0]["history"]["loss"][-1] < results[0]["history"]["loss"][0]
    # Only the chief wrote: one set of checkpoints, the last at the final step (2 epochs x 2).
    states = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.json"))
    assert states[-1] == "ckpt-000000004.json"
    assert (tmp_path / "best.keras").is_file()

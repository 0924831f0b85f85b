"""``kseg train`` killed with SIGKILL three times ends with the weights of a run never killed."""

import json
import os
import random
import re
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import kseg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# 48 scenes, batch 4: 12 steps an epoch, 36 in all; a checkpoint every 2 steps.
ARGS = [
    "train",
    "--model",
    "unet",
    "--model-option",
    "base_filters=4",
    "--model-option",
    "depth=2",
    "--dataset",
    "synthetic",
    "--image-size",
    "32",
    "32",
    "--num-images",
    "48",
    "--batch-size",
    "4",
    "--epochs",
    "3",
    "--checkpoint-every",
    "2",
    "--seed",
    "0",
]


def _launch(output, log):
    return subprocess.Popen(
        [sys.executable, "-m", "kseg.cli.main", *ARGS, "--output", str(output)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _latest_step(checkpoints):
    steps = (
        [int(p.name[5:14]) for p in checkpoints.glob("ckpt-*.json")] if checkpoints.exists() else []
    )
    return max(steps, default=0)


def _check_every_file_is_readable(output):
    """Every file at a final name loads; killed writes leave only hidden temporary files."""
    checkpoints = output / "checkpoints"
    for state_path in checkpoints.glob("ckpt-*.json"):
        state = json.loads(state_path.read_text())
        with np.load(checkpoints / state["arrays"]) as archive:
            for key in archive.files:
                assert np.all(np.isfinite(archive[key])), (state_path, key)
    finals = [*checkpoints.glob("ckpt-*.npz"), *output.glob("*.keras")]
    for archive_path in [p for p in finals if not p.name.startswith(".")]:
        with zipfile.ZipFile(archive_path) as archive:
            assert archive.testzip() is None, archive_path


def _weights(path):
    return kseg.load_model(path).get_weights()


@pytest.mark.slow
def test_kseg_train_resume_after_kill_three_times_equals_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    with open(tmp_path / "reference.log", "wb") as log:
        assert _launch(reference, log).wait(timeout=600) == 0

    rng = random.Random(17)
    output = tmp_path / "killed"
    # Kill once in each epoch, at a random moment after a random checkpoint: mid-step,
    # mid-save, mid-validation, wherever the clock falls.
    thresholds = [rng.randint(2, 10), rng.randint(12, 22), rng.randint(24, 30)]
    resumed_at = []
    for kill, threshold in enumerate(thresholds):
        log_path = tmp_path / f"run{kill}.log"
        with open(log_path, "wb") as log:
            process = _launch(output, log)
            deadline = time.time() + 600
            while _latest_step(output / "checkpoints") < threshold:
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert time.time() < deadline
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
            assert process.poll() is None, "the run ended before it could be killed"
            process.kill()  # SIGKILL: no finally blocks, no atexit
            process.wait()
        _check_every_file_is_readable(output)
        if kill:
            found = re.search(
                r"resuming from checkpoint \S+: step (\d+) of 36", log_path.read_text()
            )
            assert found, log_path.read_text()[-3000:]
            resumed_at.append(int(found.group(1)))
        last_complete = _latest_step(output / "checkpoints")

    with open(tmp_path / "final.log", "wb") as log:
        assert _launch(output, log).wait(timeout=600) == 0
    found = re.search(
        r"resuming from checkpoint \S+: step (\d+) of 36", (tmp_path / "final.log").read_text()
    )
    resumed_at.append(int(found.group(1)))
    assert resumed_at[-1] == last_complete
    # Each restart went on from further than the one before.
    assert resumed_at == sorted(set(resumed_at)) and resumed_at[0] >= thresholds[0]
    print(f"killed at checkpoints {thresholds}+, restarts resumed at steps {resumed_at}")
    _check_every_file_is_readable(output)
    assert not [p for p in (output / "checkpoints").iterdir() if p.name.startswith(".")]

    # Same seed, same batches, same arithmetic: the weights are equal bit for bit.
    for killed, uninterrupted in zip(
        _weights(output / "model.keras"), _weights(reference / "model.keras")
    ):
        np.testing.assert_array_equal(killed, uninterrupted)
    assert json.loads((output / "history.json").read_text()) == json.loads(
        (reference / "history.json").read_text()
    )

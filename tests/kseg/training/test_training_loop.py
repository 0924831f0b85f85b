"""kseg.engine.train: resuming equals not stopping, refused checkpoints, NaN stops by step."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.training import CheckpointError, CheckpointStore, NonFiniteLossError


def _data(num_images=12):
    return kseg.data.load(
        "synthetic",
        split="train",
        num_images=num_images,
        image_size=(32, 32),
        batch_size=4,
        drop_remainder=True,
    ).shuffle(8, seed=0)


def _train(checkpoints, filters=4, **kwargs):
    # UNet has batch normalisation and the AdamW moments: all of it must come back on resume.
    return kseg.engine.train(
        "unet",
        _data(),
        kseg.data.load("synthetic", split="val", num_images=4, image_size=(32, 32), batch_size=4),
        epochs=2,
        num_classes=6,
        input_shape=(32, 32, 3),
        model_options={"base_filters": filters, "depth": 2},
        checkpoint_dir=checkpoints,
        checkpoint_every=2,
        seed=0,
        verbose=0,
        **kwargs,
    )


def _files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, capsys):
    checkpoints = tmp_path / "ckpt"
    full = _train(checkpoints)
    # 3 steps an epoch, checkpoints every 2 steps and at each epoch's end: 2, 3, 4, 6; the
    # newest two are kept.
    assert [s["step"] for s in CheckpointStore(checkpoints).states()] == [4, 6]
    expected = [np.array(v.numpy()) for v in full.model.variables]
    assert full.step == 6 and full.resumed_from is None

    # Forget the last one: the next run resumes mid-epoch 2 from step 4 (data position, BN
    # statistics, optimizer moments and schedule step, running metrics, history).
    os.remove(checkpoints / "ckpt-000000006.json")
    keras.backend.clear_session()
    resumed = _train(checkpoints)
    assert "resuming from checkpoint" in capsys.readouterr().out
    assert resumed.resumed_from == 4 and resumed.step == 6
    for variable, value in zip(resumed.model.variables, expected):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
    assert resumed.history == full.history
    assert np.any([np.any(v != 0) for v in expected])

    # A checkpoint of another model is refused by path and nothing in the folder changes.
    before = _files(checkpoints)
    keras.backend.clear_session()
    with pytest.raises(CheckpointError, match="ckpt-000000006.json.*another training run"):
        _train(checkpoints, filters=8)
    assert _files(checkpoints) == before

    # So is a damaged one (a byte flipped inside the weights archive).
    state = CheckpointStore(checkpoints).latest()
    weights = checkpoints / state["arrays"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = _files(checkpoints)
    keras.backend.clear_session()
    with pytest.raises(CheckpointError, match=state["arrays"]):
        _train(checkpoints)
    assert _files(checkpoints) == before


def test_resume_must_find_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint in .*empty"):
        _train(tmp_path / "empty", resume="must")


def _tiny():
    images = keras.Input((8, 8, 3))
    return keras.Model(images, keras.layers.Conv2D(3, 1)(images))


def test_a_nan_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    images = np.ones((8, 8, 8, 3), np.float32)
    images[5, 2, 2, 0] = np.nan  # in the third batch of 2: step 3
    labels = np.zeros((8, 8, 8), np.int32)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    with pytest.raises(NonFiniteLossError, match=r"nan at step 3 \(epoch 1, batch 3\).*step 2\)"):
        kseg.engine.train(
            _tiny, data, epochs=1, checkpoint_dir=tmp_path, checkpoint_every=2, verbose=0
        )
    store = CheckpointStore(tmp_path)
    assert [s["step"] for s in store.states()] == [2]
    arrays = store.load_arrays(store.latest())
    assert all(np.all(np.isfinite(a)) for a in arrays.values())
    assert int(arrays["optimizer_00000"]) == 2  # the optimizer's step counter


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer. Received: epochs=0"),
        ({"checkpoint_every": 0}, "Received: checkpoint_every=0"),
        ({"resume": "yes"}, "Received: resume='yes'"),
        ({"strategy": "gpus"}, "Received: strategy='gpus'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        kseg.engine.train(_tiny, _data(4), **arguments)

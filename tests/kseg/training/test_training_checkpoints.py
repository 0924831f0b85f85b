"""Checkpoint files, TF_CONFIG checks and the strategy errors, without training."""

import json

import numpy as np
import pytest

from kseg.cli.main import main
from kseg.training import CheckpointError, CheckpointStore, make_strategy, parse_tf_config


def test_a_checkpoint_is_complete_only_with_its_state_file(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (1, 2, 3):
        store.save(step, {"w": np.full(3, step, np.float32)}, {"epoch": 0})
    assert [s["step"] for s in store.states()] == [2, 3]
    assert store.load_arrays(store.latest())["w"].tolist() == [3.0, 3.0, 3.0]
    # Arrays written by a killed save (no state file yet) and its temporary file are ignored,
    # then removed with the weights of the pruned checkpoints.
    (tmp_path / "ckpt-000000004-0123abcd.npz").write_bytes(b"half")
    (tmp_path / ".ckpt-000000004.json.x1y2.tmp").write_text("{")
    assert store.latest()["step"] == 3
    store.remove_leftovers()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert (
        len(names) == 4 and names[1] == "ckpt-000000002.json" and names[3] == "ckpt-000000003.json"
    )


def test_a_rewritten_step_never_replaces_the_weights_its_old_state_names(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(5, {"w": np.zeros(2)}, {"kind": "step"})
    first = store.latest()["arrays"]
    store.save(5, {"w": np.ones(2)}, {"kind": "epoch"})
    state = store.latest()
    assert state["arrays"] != first and state["kind"] == "epoch"
    assert store.load_arrays(state)["w"].tolist() == [1.0, 1.0]
    assert not (tmp_path / first).exists()  # no state names it any more


def test_corrupt_state_files_are_refused_by_path(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(7, {"w": np.zeros(1)}, {})
    path = tmp_path / "ckpt-000000007.json"
    path.write_text('{"step": 7, "arr')
    with pytest.raises(CheckpointError, match=f"{path}.*unreadable"):
        store.latest()
    path.write_text(json.dumps({"step": 7}))
    with pytest.raises(CheckpointError, match=f"{path}.*not a kseg training checkpoint"):
        store.latest()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "needs the TF_CONFIG environment variable.*Received: TF_CONFIG unset"),
        ("{cluster", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no 'cluster'"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG has no 'task'"),
        ('{"cluster": {"worker": ["a"]}, "task": {}}', r"'host:port'.*\['a'\]"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
            "task type must be one of the cluster's \\['worker'\\]. Received: task\\['type'\\]='ps'",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
            r"index must be an integer in \[0, 2\).*Received: task\['index'\]=2",
        ),
    ],
)
def test_tf_config_says_what_is_missing(monkeypatch, text, message):
    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(ValueError, match=message):
        parse_tf_config()


def test_kseg_train_multiworker_without_tf_config_fails_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "--strategy", "multiworker", "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("kseg: error: strategy 'multiworker' needs the TF_CONFIG")
    assert not (tmp_path / "run").exists()


def test_a_machine_without_a_tpu_gets_a_clear_error():
    with pytest.raises(ValueError, match="strategy 'tpu' found no TPU.*Received: tpu=None"):
        make_strategy("tpu")
    assert make_strategy("default").num_replicas_in_sync == 1

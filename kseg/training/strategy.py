"""tf.distribute strategies by name, with ``TF_CONFIG`` checked before TensorFlow reads it.

Example:
    >>> from kseg.training import make_strategy
    >>> make_strategy("default").num_replicas_in_sync
    1
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")

_TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
    '"index": 0}}'
)


def parse_tf_config(text=None):
    """Reads and checks ``TF_CONFIG`` (the environment variable unless ``text`` is given).

    Returns the parsed dict. Raises ``ValueError`` saying what is missing or wrong: the variable
    itself, the JSON, ``cluster``, its ``worker``/``chief`` address lists, ``task``, its
    ``type`` and ``index``.

    Example:
        >>> config = parse_tf_config('{"cluster": {"worker": ["localhost:2222"]}, '
        ...                          '"task": {"type": "worker", "index": 0}}')
        >>> config["task"]["index"]
        0
    """
    if text is None:
        text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "strategy 'multiworker' needs the TF_CONFIG environment variable, which names every "
            f"worker and this process's task, e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}'. "
            "Received: TF_CONFIG unset"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}). Received: TF_CONFIG={text!r}"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object. Received: TF_CONFIG={text!r}")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(
            "TF_CONFIG has no 'cluster' (a map from task type to 'host:port' addresses, e.g. "
            f'{{"worker": ["host1:12345", "host2:12345"]}}). Received: TF_CONFIG={text!r}'
        )
    for kind, addresses in cluster.items():
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and ":" in a for a in addresses)
        ):
            raise ValueError(
                f"TF_CONFIG cluster {kind!r} must be a non-empty list of 'host:port' addresses. "
                f"Received: cluster[{kind!r}]={addresses!r}"
            )
    if "worker" not in cluster and "chief" not in cluster:
        raise ValueError(
            "TF_CONFIG cluster names no 'worker' (or 'chief') addresses. "
            f"Received: cluster keys {sorted(cluster)}"
        )
    task = config.get("task")
    if not isinstance(task, dict):
        raise ValueError(
            "TF_CONFIG has no 'task' (this process's place in the cluster, e.g. "
            f'{{"type": "worker", "index": 0}}). Received: TF_CONFIG={text!r}'
        )
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise ValueError(
            f"TF_CONFIG task type must be one of the cluster's {sorted(cluster)}. "
            f"Received: task['type']={kind!r}"
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(
            f"TF_CONFIG task index must be an integer in [0, {len(cluster[kind])}) for the "
            f"{len(cluster[kind])} {kind!r} addresses. Received: task['index']={index!r}"
        )
    return config


def is_chief(strategy=None):
    """Whether this process writes checkpoints and logs: always, except on a non-chief worker.

    Example:
        >>> is_chief()
        True
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type in (None, "worker") and task_id == 0 and "chief" not in cluster


def make_strategy(name="default", devices=None, tpu=None):
    """A ``tf.distribute.Strategy`` by name: default, mirrored, multiworker or tpu.

    - ``"default"``: one device, TensorFlow's default strategy.
    - ``"mirrored"``: ``MirroredStrategy`` over ``devices`` (default: every GPU; without a GPU,
      every logical CPU device, so ``tf.config.set_logical_device_configuration`` gives
      replicas on a CPU).
    - ``"multiworker"``: ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG`` (checked first; see
      :func:`parse_tf_config`). Create it before any other TensorFlow work in the process.
    - ``"tpu"``: ``TPUStrategy`` through ``TPUClusterResolver(tpu)``; a machine without a TPU gets
      an error saying so.

    Example:
        >>> strategy = make_strategy("mirrored", devices=["/cpu:0"])
        >>> strategy.num_replicas_in_sync
        1
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(
            f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        parse_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            "strategy 'tpu' found no TPU to connect to: run on a Cloud TPU VM (tpu='local') or "
            f"name the TPU (its name or grpc:// address). Received: tpu={tpu!r} ({first})"
        ) from error
    return tf.distribute.TPUStrategy(resolver)

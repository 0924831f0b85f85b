"""The parts of :func:`kseg.engine.train`: strategies, distributed steps, resumable state.

One custom loop (``strategy.run``) serves every strategy: Keras 3 ``fit`` fails under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), and a loop that owns its steps can
checkpoint between any two of them, resume at the exact batch and stop on a NaN loss by step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

from kseg.training.checkpoint import CheckpointError
from kseg.training.strategy import make_strategy


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; raised with the step, after nothing was saved.

    Example:
        >>> raise NonFiniteLossError("loss is nan at step 12")  # doctest: +SKIP
    """


@dataclasses.dataclass
class TrainingResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (built in the strategy's scope).
        history: per-epoch logs, ``{"loss": [...], "val_mean_iou": [...], ...}``.
        step: the number of optimizer steps taken in all, resumed runs included.
        resumed_from: the step of the checkpoint the run resumed from, or None.
        strategy: the ``tf.distribute.Strategy`` used.

    Example:
        >>> result = kseg.engine.train("unet", train_ds, val_ds, epochs=2)  # doctest: +SKIP
        >>> result.history["val_mean_iou"][-1]  # doctest: +SKIP
    """

    model: keras.Model
    history: dict
    step: int
    resumed_from: int | None
    strategy: object


def main_output(outputs):
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def confusion_counts(labels, logits, num_classes):
    # One-hot products instead of bincount: the same ops on CPU, GPU and TPU. Float32 counts are
    # exact up to 2**24 pixels per step and replica; ignored labels (255) one-hot to zeros.
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predicted = tf.reshape(tf.argmax(logits, axis=-1, output_type=tf.int32), [-1])
    truth = tf.one_hot(labels, num_classes, dtype=tf.float32)
    guess = tf.one_hot(predicted, num_classes, dtype=tf.float32)
    return tf.matmul(truth, guess, transpose_a=True)


def resolve_strategy(strategy):
    if strategy is None:
        return tf.distribute.get_strategy()
    if isinstance(strategy, str):
        return make_strategy(strategy)
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    raise ValueError(
        "strategy must be None, a tf.distribute.Strategy or one of 'default', 'mirrored', "
        f"'multiworker', 'tpu'. Received: strategy={strategy!r}"
    )


def created_in_scope(strategy, model):
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return True
    return all(strategy.extended.variable_created_in_scope(v.value) for v in model.variables)


def build_model(model_or_name, strategy, num_classes, input_shape, model_options):
    import kseg

    if isinstance(model_or_name, str):
        if num_classes is None or input_shape is None:
            raise ValueError(
                "a model given by name needs num_classes and input_shape. Received: "
                f"num_classes={num_classes!r}, input_shape={input_shape!r}"
            )
        return kseg.models.create(
            model_or_name, num_classes=num_classes, input_shape=input_shape, **model_options
        )
    if isinstance(model_or_name, keras.Model):
        if created_in_scope(strategy, model_or_name):
            return model_or_name
        # Variables must be created in the strategy's scope: rebuild, then copy the values.
        model = model_or_name.__class__.from_config(model_or_name.get_config())
        model.set_weights(model_or_name.get_weights())
        return model
    if callable(model_or_name):
        return model_or_name()
    raise ValueError(
        "model_or_name must be a registered model name, a keras.Model or a function building "
        f"one. Received: model_or_name={model_or_name!r}"
    )


def describe_run(model, optimizer):
    config = json.dumps(model.get_config(), sort_keys=True, default=str)
    return {
        "class": type(model).__name__,
        "name": model.name,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "variables": [[v.path, list(v.shape)] for v in model.variables],
        "optimizer": type(optimizer).__name__,
        "optimizer_variables": [[v.path, list(v.shape)] for v in optimizer.variables],
    }


def check_same_run(state, description):
    saved = state.get("model") or {}
    path = state["_path"]
    problems = []
    if saved.get("class") != description["class"]:
        problems.append(f"model class {saved.get('class')!r}, this run {description['class']!r}")
    elif saved.get("config_sha256") != description["config_sha256"]:
        problems.append("another configuration of the model (its get_config differs)")
    if [s for _, s in saved.get("variables", [])] != [s for _, s in description["variables"]]:
        problems.append(
            f"{len(saved.get('variables', []))} model variables of other shapes than this run's "
            f"{len(description['variables'])}"
        )
    if saved.get("optimizer") != description["optimizer"] or [
        s for _, s in saved.get("optimizer_variables", [])
    ] != [s for _, s in description["optimizer_variables"]]:
        problems.append(
            f"optimizer {saved.get('optimizer')!r} with "
            f"{len(saved.get('optimizer_variables', []))} variables, this run "
            f"{description['optimizer']!r} with {len(description['optimizer_variables'])}"
        )
    if problems:
        raise CheckpointError(
            f"checkpoint {path!r} belongs to another training run ({'; '.join(problems)}); "
            "nothing was overwritten. Resume it with its own command, or train into another "
            "folder."
        )


def _rng_arrays():
    arrays = {"rng_tf_global": tf.random.get_global_generator().state.numpy()}
    from keras.src.backend.common import global_state

    generator = global_state.get_global_attribute("global_seed_generator")
    if generator is not None:
        arrays["rng_keras_global"] = np.asarray(generator.state.numpy())
    return arrays


def _restore_rng(arrays):
    if "rng_tf_global" in arrays:
        tf.random.get_global_generator().reset(arrays["rng_tf_global"])
    if "rng_keras_global" in arrays:
        from keras.src.random.seed_generator import global_seed_generator

        global_seed_generator().state.assign(arrays["rng_keras_global"])


def snapshot(model, optimizer):
    arrays = {f"model_{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    for i, v in enumerate(optimizer.variables):
        arrays[f"optimizer_{i:05d}"] = np.asarray(v.numpy())
    arrays.update(_rng_arrays())
    return arrays


def restore(model, optimizer, arrays, path):
    for prefix, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        for i, variable in enumerate(variables):
            key = f"{prefix}_{i:05d}"
            if key not in arrays:
                raise CheckpointError(f"checkpoint {path!r} lacks {prefix} variable {i}")
            variable.assign(arrays[key])
    _restore_rng(arrays)


def resolve_steps_per_epoch(dataset, steps_per_epoch):
    if steps_per_epoch is not None:
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int):
            raise ValueError(
                f"steps_per_epoch must be a positive integer. Received: "
                f"steps_per_epoch={steps_per_epoch!r}"
            )
        if steps_per_epoch < 1:
            raise ValueError(
                f"steps_per_epoch must be >= 1. Received: steps_per_epoch={steps_per_epoch}"
            )
        return steps_per_epoch
    cardinality = int(dataset.cardinality())
    if cardinality <= 0:
        raise ValueError(
            "the training dataset's length is unknown or infinite: pass steps_per_epoch. "
            f"Received: train_ds.cardinality()={cardinality}"
        )
    return cardinality


def distribute(strategy, dataset):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Generated datasets have no files to shard: each worker keeps its share of each batch.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = dataset.with_options(options)
    return strategy.experimental_distribute_dataset(dataset)


def check_global_batch(dataset, replicas):
    batch = dataset.element_spec[0].shape[0]
    if batch is not None and batch % replicas:
        raise ValueError(
            f"the global batch size must be a multiple of the {replicas} replicas, so each gets "
            f"the same share. Received: batch size {batch}"
        )


class EpochSummaries:
    """Epoch scalars for TensorBoard, in ``log_dir/train`` and ``log_dir/validation``."""

    def __init__(self, log_dir):
        self.writers = {
            kind: tf.summary.create_file_writer(os.path.join(log_dir, kind))
            for kind in ("train", "validation")
        }

    def write(self, epoch, logs):
        for name, value in logs.items():
            kind = "validation" if name.startswith("val_") else "train"
            tag = "epoch_" + (name[4:] if kind == "validation" else name)
            with self.writers[kind].as_default():
                tf.summary.scalar(tag, value, step=epoch)
        for writer in self.writers.values():
            writer.flush()

    def close(self):
        for writer in self.writers.values():
            writer.close()


def epoch_scores(cm, prefix=""):
    from kseg import metrics as kseg_metrics

    result = kseg_metrics.scores(cm) if cm.sum() > 0 else None
    if result is None:
        return {f"{prefix}mean_iou": float("nan"), f"{prefix}pixel_accuracy": float("nan")}
    return {
        f"{prefix}mean_iou": float(result["mean_iou"]),
        f"{prefix}pixel_accuracy": float(result["pixel_accuracy"]),
    }

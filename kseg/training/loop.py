"""The training loop behind ``kseg train``: any tf.distribute strategy, resumable after a kill.

One custom loop (``strategy.run``) serves every strategy: Keras 3 ``fit`` fails under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), and a loop that owns its steps can
checkpoint between any two of them, resume at the exact batch and stop on a NaN loss by step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from kseg.constants import IGNORE_INDEX
from kseg.training.checkpoint import CheckpointError, CheckpointStore
from kseg.training.strategy import is_chief, make_strategy


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


def _main_output(outputs):
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def _confusion(labels, logits, num_classes):
    # One-hot products instead of bincount: the same ops on CPU, GPU and TPU. Float32 counts are
    # exact up to 2**24 pixels per step and replica; ignored labels (255) one-hot to zeros.
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predicted = tf.reshape(tf.argmax(logits, axis=-1, output_type=tf.int32), [-1])
    truth = tf.one_hot(labels, num_classes, dtype=tf.float32)
    guess = tf.one_hot(predicted, num_classes, dtype=tf.float32)
    return tf.matmul(truth, guess, transpose_a=True)


def _resolve_strategy(strategy):
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


def _in_scope(strategy, model):
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return True
    return all(strategy.extended.variable_created_in_scope(v.value) for v in model.variables)


def _build_model(model_or_name, strategy, num_classes, input_shape, model_options):
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
        if _in_scope(strategy, model_or_name):
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


def _describe(model, optimizer):
    config = json.dumps(model.get_config(), sort_keys=True, default=str)
    return {
        "class": type(model).__name__,
        "name": model.name,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "variables": [[v.path, list(v.shape)] for v in model.variables],
        "optimizer": type(optimizer).__name__,
        "optimizer_variables": [[v.path, list(v.shape)] for v in optimizer.variables],
    }


def _check_same_model(state, description):
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


def _snapshot(model, optimizer):
    arrays = {f"model_{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    for i, v in enumerate(optimizer.variables):
        arrays[f"optimizer_{i:05d}"] = np.asarray(v.numpy())
    arrays.update(_rng_arrays())
    return arrays


def _restore(model, optimizer, arrays, path):
    for prefix, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        for i, variable in enumerate(variables):
            key = f"{prefix}_{i:05d}"
            if key not in arrays:
                raise CheckpointError(f"checkpoint {path!r} lacks {prefix} variable {i}")
            variable.assign(arrays[key])
    _restore_rng(arrays)


def _steps_per_epoch(dataset, steps_per_epoch):
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


def _distribute(strategy, dataset):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Generated datasets have no files to shard: each worker keeps its share of each batch.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = dataset.with_options(options)
    return strategy.experimental_distribute_dataset(dataset)


def _check_global_batch(dataset, replicas):
    batch = dataset.element_spec[0].shape[0]
    if batch is not None and batch % replicas:
        raise ValueError(
            f"the global batch size must be a multiple of the {replicas} replicas, so each gets "
            f"the same share. Received: batch size {batch}"
        )


class _Summaries:
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


def _scores(cm, prefix=""):
    from kseg import metrics as kseg_metrics

    result = kseg_metrics.scores(cm) if cm.sum() > 0 else None
    if result is None:
        return {f"{prefix}mean_iou": float("nan"), f"{prefix}pixel_accuracy": float("nan")}
    return {
        f"{prefix}mean_iou": float(result["mean_iou"]),
        f"{prefix}pixel_accuracy": float(result["pixel_accuracy"]),
    }


def train(
    model_or_name,
    train_ds,
    val_ds=None,
    *,
    epochs,
    num_classes=None,
    input_shape=None,
    model_options=None,
    strategy=None,
    checkpoint_dir=None,
    checkpoint_every=100,
    keep_checkpoints=2,
    resume=True,
    steps_per_epoch=None,
    learning_rate=1e-3,
    optimizer="adamw",
    weight_decay=1e-4,
    warmup_steps=0,
    loss=None,
    compile=True,
    ignore_index=IGNORE_INDEX,
    seed=None,
    best_path=None,
    monitor="val_mean_iou",
    log_dir=None,
    callbacks=None,
    verbose=1,
    print_fn=print,
):
    """Trains a segmentation model on any tf.distribute strategy; resumes after a kill.

    The model and its optimizer (kseg's poly-decayed AdamW/Adam/SGD, see
    :func:`kseg.engine.compile_model`, unless ``compile=False``) are built inside
    ``strategy.scope()``. Each
    element of ``train_ds`` is one *global* batch, split over the replicas
    (``experimental_distribute_dataset``; under ``multiworker`` each worker keeps its share);
    the per-replica confusion matrices are summed across replicas for ``mean_iou`` and
    ``pixel_accuracy`` (``val_`` ones on ``val_ds``, once per epoch).

    With ``checkpoint_dir``, a checkpoint (model, optimizer with its step and schedule, the
    position in the data, the random generators, the epoch's running metrics, the history and
    the best score; see :mod:`kseg.training.checkpoint`) is written atomically every
    ``checkpoint_every`` steps and at the end of every epoch, by the chief only. With
    ``resume=True`` a run continues from the newest complete checkpoint there (``"must"``: and
    fails if there is none; ``False``: deletes them and starts over). A checkpoint written for
    another model or optimizer, or a damaged one, is refused with its path before anything is
    written. The data position is the global step: batch ``s`` of the run is element ``s`` of
    ``train_ds.repeat()``, so a deterministic ``train_ds`` (fixed seeds, deterministic
    ``tf.data`` options) gives a resumed run exactly the batches of an uninterrupted one.

    A NaN or infinite loss stops training with :class:`NonFiniteLossError` naming the step;
    the last checkpoint written before it is kept.

    Args:
        model_or_name: a registered model name (built with ``num_classes``, ``input_shape``
            and ``model_options``), a ``keras.Model`` (rebuilt in the scope from its config
            and weights if its variables were not created there), or a function that builds one.
        train_ds: a ``tf.data.Dataset`` of ``(images, labels)`` global batches.
        val_ds: batched validation data, or None.
        epochs: the number of epochs in all (a resumed run counts the epochs already done).
        strategy: None (the default strategy), a name for
            :func:`kseg.training.make_strategy` or a ``tf.distribute.Strategy``.
        checkpoint_dir: the checkpoint folder (seen by every worker), or None for none.
        checkpoint_every: steps between checkpoints (an epoch's end always writes one).
        steps_per_epoch: default: ``train_ds``'s length.
        seed: if given, ``keras.utils.set_random_seed(seed)`` before the model is built.
        compile: True compiles the model with kseg's loss and optimizer from the arguments
            above; False keeps the model's own compilation (done in the strategy's scope).
        best_path: if given, the model with the best ``monitor`` is saved there atomically
            (or a :class:`kseg.engine.BestModelCheckpoint` to call each epoch).
        log_dir: if given, TensorBoard epoch scalars are written there (chief only).
        callbacks: Keras callbacks, called on every worker (``on_train_batch_end`` too).
        verbose: 1 a progress bar per epoch, 0 nothing but the resume and epoch lines.

    Returns:
        a :class:`TrainingResult` (model, history, steps, resumed_from, strategy).

    Example:
        >>> import kseg
        >>> train_ds = kseg.data.load("synthetic", split="train", num_images=8,
        ...                           image_size=(32, 32), batch_size=4, drop_remainder=True)
        >>> result = kseg.engine.train("unet", train_ds, epochs=1, num_classes=6,
        ...                            input_shape=(32, 32, 3), verbose=0, seed=0,
        ...                            model_options={"base_filters": 4, "depth": 2})
        >>> result.step, sorted(result.history)
        (2, ['loss', 'mean_iou', 'pixel_accuracy'])
    """
    from kseg import engine, losses

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer. Received: epochs={epochs!r}")
    if (
        isinstance(checkpoint_every, bool)
        or not isinstance(checkpoint_every, int)
        or checkpoint_every < 1
    ):
        raise ValueError(
            f"checkpoint_every must be a positive integer. Received: "
            f"checkpoint_every={checkpoint_every!r}"
        )
    if resume not in (True, False, "must"):
        raise ValueError(f"resume must be True, False or 'must'. Received: resume={resume!r}")
    strategy = _resolve_strategy(strategy)
    chief = is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    _check_global_batch(train_ds, replicas)
    steps_per_epoch = _steps_per_epoch(train_ds, steps_per_epoch)
    total_steps = steps_per_epoch * epochs
    if seed is not None:
        keras.utils.set_random_seed(seed)

    with strategy.scope():
        model = _build_model(
            model_or_name, strategy, num_classes, input_shape, dict(model_options or {})
        )
        outputs = len(model.outputs)
        if compile or getattr(model, "optimizer", None) is None:
            loss = loss or losses.CrossEntropy(ignore_index=ignore_index)
            engine.compile_model(
                model,
                int(_main_output(model.outputs).shape[-1]),
                learning_rate=learning_rate,
                total_steps=total_steps,
                optimizer=optimizer,
                weight_decay=weight_decay,
                warmup_steps=warmup_steps,
                loss=[loss] * outputs if outputs > 1 else loss,
                metrics=[],
            )
            if outputs > 1 and getattr(model, "loss_weights_for_outputs", None) is not None:
                model.compile(
                    optimizer=model.optimizer,
                    loss=model.loss,
                    loss_weights=model.loss_weights_for_outputs,
                )
        model.optimizer.build(model.trainable_variables)
    num_classes = int(_main_output(model.outputs).shape[-1])
    optimizer_ = model.optimizer
    description = _describe(model, optimizer_)

    # Everything that can refuse the checkpoint happens before anything is written.
    store = CheckpointStore(checkpoint_dir, keep=keep_checkpoints) if checkpoint_dir else None
    state = None
    if store is not None and resume:
        state = store.latest()
        if state is None and resume == "must":
            raise CheckpointError(
                f"resume: no complete checkpoint in {store.directory!r} (a checkpoint is "
                "complete when its ckpt-<step>.json state file exists)"
            )
        if state is not None:
            _check_same_model(state, description)
            if state.get("steps_per_epoch") != steps_per_epoch:
                raise CheckpointError(
                    f"checkpoint {state['_path']!r} was written with "
                    f"{state.get('steps_per_epoch')} steps per epoch, this run has "
                    f"{steps_per_epoch} (other data or batch size); nothing was overwritten"
                )
            arrays = store.load_arrays(state)
            _restore(model, optimizer_, arrays, state["_path"])
    if store is not None and chief:
        if not resume:
            store.clear()
        store.remove_leftovers()

    step = int(state["step"]) if state else 0
    epochs_done = int(state["epochs_done"]) if state else 0
    history = {k: list(v) for k, v in (state or {}).get("history", {}).items()}
    running = (state or {}).get("running") or {}
    loss_sum = float(running.get("loss_sum", 0.0))
    batches = int(running.get("batches", 0))
    cm = np.asarray(running.get("cm", np.zeros((num_classes, num_classes))), np.float64)
    best = best_path
    if best is not None and not isinstance(best, engine.BestModelCheckpoint):
        best = engine.BestModelCheckpoint(best_path, monitor=monitor)
    if best is not None:
        best.set_model(model)
        best.best = (state or {}).get("best")
    if state is not None:
        print_fn(
            f"resuming from checkpoint {state['_path']}: step {step} of {total_steps} (epoch "
            f"{step // steps_per_epoch + 1}/{epochs}, batch {step % steps_per_epoch} of "
            f"{steps_per_epoch})"
        )

    def checkpoint(kind):
        if store is None or not chief:
            return
        store.save(
            step,
            _snapshot(model, optimizer_),
            {
                "kind": kind,
                "epochs_done": epochs_done,
                "epochs": epochs,
                "steps_per_epoch": steps_per_epoch,
                "running": {"loss_sum": loss_sum, "batches": batches, "cm": cm.tolist()},
                "history": history,
                "best": None if best is None else best.best,
                "model": description,
            },
        )

    @tf.function
    def train_step(iterator):
        def step_fn(images, labels):
            with tf.GradientTape() as tape:
                predictions = model(images, training=True)
                targets = [labels] * outputs if outputs > 1 else labels
                # compute_loss divides by the replica count: the sum over replicas is the mean.
                value = model.compute_loss(x=images, y=targets, y_pred=predictions, training=True)
                scaled = optimizer_.scale_loss(value)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer_.apply_gradients(zip(gradients, model.trainable_variables))
            return value, _confusion(labels, _main_output(predictions), num_classes)

        value, counts = strategy.run(step_fn, args=next(iterator))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, counts, axis=None),
        )

    @tf.function(reduce_retracing=True)
    def val_step(batch):
        def step_fn(images, labels):
            predictions = _main_output(model(images, training=False))
            per_pixel = keras.losses.sparse_categorical_crossentropy(
                tf.where(labels == ignore_index, 0, labels), predictions, from_logits=True
            )
            valid = tf.cast(labels != ignore_index, per_pixel.dtype)
            return (
                tf.reduce_sum(per_pixel * valid),
                tf.reduce_sum(valid),
                _confusion(labels, predictions, num_classes),
            )

        results = strategy.run(step_fn, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

    callback_list = keras.callbacks.CallbackList(
        callbacks or [], model=model, epochs=epochs, steps=steps_per_epoch, verbose=0
    )
    summaries = _Summaries(log_dir) if log_dir and chief else None
    resumed_from = step if state is not None else None
    iterator = iter(_distribute(strategy, train_ds.repeat().skip(step)))
    callback_list.on_train_begin()
    try:
        while epochs_done < epochs:
            epoch = epochs_done
            callback_list.on_epoch_begin(epoch)
            progbar = (
                keras.utils.Progbar(steps_per_epoch, unit_name="step")
                if verbose and chief
                else None
            )
            while step < (epoch + 1) * steps_per_epoch:
                batch_index = step % steps_per_epoch
                callback_list.on_train_batch_begin(batch_index)
                value, counts = train_step(iterator)
                value = float(value)
                if not math.isfinite(value):
                    last = store.latest() if store is not None else None
                    kept = (
                        f"the last good checkpoint is {last['_path']} (step {last['step']})"
                        if last
                        else "no checkpoint was written"
                    )
                    raise NonFiniteLossError(
                        f"training loss is {value} at step {step + 1} (epoch {epoch + 1}, batch "
                        f"{batch_index + 1}); training stopped and {kept}. Lower the learning "
                        "rate or check the data of that batch."
                    )
                step += 1
                loss_sum += value
                batches += 1
                cm += counts.numpy()
                callback_list.on_train_batch_end(batch_index, {"loss": value})
                if progbar is not None:
                    progbar.update(batch_index + 1, [("loss", value)])
                if step % checkpoint_every == 0 and step % steps_per_epoch:
                    checkpoint("step")
            logs = {"loss": loss_sum / max(batches, 1), **_scores(cm)}
            if val_ds is not None:
                val_loss = val_pixels = 0.0
                val_cm = np.zeros((num_classes, num_classes))
                for batch in _distribute(strategy, val_ds):
                    total, pixels, counts = val_step(batch)
                    val_loss += float(total)
                    val_pixels += float(pixels)
                    val_cm += counts.numpy()
                logs["val_loss"] = val_loss / val_pixels if val_pixels else float("nan")
                logs.update(_scores(val_cm, "val_"))
            for name, value in logs.items():
                history.setdefault(name, []).append(float(value))
            if chief:
                print_fn(
                    f"epoch {epoch + 1}/{epochs} (step {step}): "
                    + ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
                )
                if best is not None:
                    best.on_epoch_end(epoch, logs)
                if summaries is not None:
                    summaries.write(epoch, logs)
            callback_list.on_epoch_end(epoch, logs)
            epochs_done += 1
            loss_sum, batches, cm = 0.0, 0, np.zeros((num_classes, num_classes))
            checkpoint("epoch")
        callback_list.on_train_end()
    finally:
        if summaries is not None:
            summaries.close()
    return TrainingResult(model, history, step, resumed_from, strategy)

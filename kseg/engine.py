"""Training, evaluation and prediction loops shared by the Python API and the ``kseg`` command.

Example:
    >>> import kseg
    >>> train = kseg.data.synthetic(64, image_size=(64, 64), seed=0).batch(8)
    >>> model = kseg.models.create("unet", num_classes=6, input_shape=(64, 64, 3))
    >>> kseg.engine.compile_model(model, num_classes=6, learning_rate=1e-3, total_steps=80)
    >>> model.fit(train, epochs=10)  # doctest: +SKIP
    >>> kseg.engine.evaluate(model, val_ds, num_classes=6)["mean_iou"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import tensorflow as tf

from kseg import fileio, losses, viz
from kseg import metrics as kseg_metrics
from kseg.constants import IGNORE_INDEX
from kseg.training import loop
from kseg.training.checkpoint import CheckpointError, CheckpointStore
from kseg.training.loop import NonFiniteLossError, TrainingResult
from kseg.training.strategy import is_chief

__all__ = [
    "poly_schedule",
    "compile_model",
    "ImageSummary",
    "evaluate",
    "predict_labels",
    "FlipAverage",
    "train",
    "TrainingResult",
    "NonFiniteLossError",
]


def poly_schedule(learning_rate, total_steps, power=0.9, end_learning_rate=0.0, warmup_steps=0):
    """The "poly" learning-rate policy of DeepLab/PSPNet: ``lr · (1 - step/total)^power``.

    With ``warmup_steps`` the rate first rises linearly from 0.

    Example:
        >>> schedule = poly_schedule(0.01, total_steps=100)
        >>> round(float(schedule(50)), 6)
        0.005359
    """
    if not (isinstance(total_steps, (int, np.integer)) and total_steps > 0):
        raise ValueError(
            f"total_steps must be a positive integer. Received: total_steps={total_steps!r}"
        )
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0. Received: learning_rate={learning_rate!r}")
    poly = keras.optimizers.schedules.PolynomialDecay(
        learning_rate,
        decay_steps=int(total_steps),
        end_learning_rate=end_learning_rate,
        power=power,
    )
    if not warmup_steps:
        return poly
    return _WarmupSchedule(poly, int(warmup_steps), float(learning_rate))


@keras.saving.register_keras_serializable(package="kseg")
class _WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, schedule, warmup_steps, learning_rate):
        self.schedule = (
            schedule
            if not isinstance(schedule, dict)
            else keras.optimizers.schedules.deserialize(schedule)
        )
        self.warmup_steps = warmup_steps
        self.learning_rate = learning_rate

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.learning_rate * (step + 1) / self.warmup_steps
        return keras.ops.where(step < self.warmup_steps, warm, self.schedule(step))

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "warmup_steps": self.warmup_steps,
            "learning_rate": self.learning_rate,
        }


def compile_model(
    model,
    num_classes,
    learning_rate=1e-3,
    total_steps=1000,
    ignore_index=IGNORE_INDEX,
    loss=None,
    optimizer="adamw",
    weight_decay=1e-4,
    warmup_steps=0,
    metrics=None,
    steps_per_execution=1,
):
    """Compiles ``model`` with kseg's defaults: cross-entropy, poly-decayed AdamW/SGD, mIoU + accuracy.

    ``warmup_steps`` raises the learning rate linearly from 0 over the first steps (see
    ``poly_schedule``). ``metrics=None`` tracks mean IoU and pixel accuracy during training;
    ``metrics=[]`` tracks only the loss (cheaper steps). ``steps_per_execution`` runs that many
    steps per call into the compiled graph, which saves per-step overhead for small models.

    Example:
        >>> compile_model(model, num_classes=21, learning_rate=0.01, total_steps=30000,
        ...               optimizer="sgd")  # doctest: +SKIP
    """
    schedule = poly_schedule(learning_rate, total_steps, warmup_steps=warmup_steps)
    if optimizer == "adamw":
        opt = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = keras.optimizers.Adam(schedule)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=0.9)
    else:
        raise ValueError(
            f"optimizer must be 'adamw', 'adam' or 'sgd'. Received: optimizer={optimizer!r}"
        )
    if metrics is None:
        metrics = [
            kseg_metrics.MeanIoU(num_classes, ignore_index=ignore_index),
            kseg_metrics.PixelAccuracy(num_classes, ignore_index=ignore_index),
        ]
    model.compile(
        optimizer=opt,
        loss=loss or losses.CrossEntropy(ignore_index=ignore_index),
        metrics=metrics,
        steps_per_execution=steps_per_execution,
    )
    return model


def _main_output(outputs):
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


class FlipAverage:
    """Test-time augmentation: a model's scores averaged over flips of each image.

    Wraps a model (logits or probabilities out, ``[N, H, W, C]``; the main output of a
    multi-output model) into a callable that ``predict_labels`` and ``evaluate`` accept. The
    default flips are none, horizontal, vertical and both; each flipped prediction is flipped
    back before averaging, so the result is aligned with the input. With ``transpose=True``
    every flip is also applied to the transposed image (height and width swapped, then swapped
    back): the eight symmetries of the square, for a model trained on all of them.

    Example:
        >>> averaged = FlipAverage(model)  # doctest: +SKIP
        >>> kseg.engine.evaluate(averaged, val_ds.batch(8), num_classes=21)  # doctest: +SKIP
    """

    FLIPS = ((), (2,), (1,), (1, 2))

    def __init__(self, model, flips=FLIPS, transpose=False):
        flips = tuple(tuple(axes) for axes in flips)
        if not flips:
            raise ValueError("FlipAverage needs at least one flip (() is the identity)")
        for axes in flips:
            if not set(axes) <= {1, 2}:
                raise ValueError(
                    f"FlipAverage flips axes 1 (height) and 2 (width) only. Received: axes={axes!r}"
                )
        if not isinstance(transpose, bool):
            raise ValueError(
                f"FlipAverage: transpose must be True or False. Received: transpose={transpose!r}"
            )
        self.model = model
        self.flips = flips
        self.transpose = transpose

    def _scores(self, images, training):
        return keras.ops.convert_to_numpy(_main_output(self.model(images, training=training)))

    def __call__(self, images, training=False):
        images = np.asarray(keras.ops.convert_to_numpy(images), dtype=np.float32)
        total = None
        for transposed in (False, True) if self.transpose else (False,):
            view = np.ascontiguousarray(images.transpose(0, 2, 1, 3)) if transposed else images
            for axes in self.flips:
                flipped = np.ascontiguousarray(np.flip(view, axes)) if axes else view
                scores = self._scores(flipped, training)
                scores = np.flip(scores, axes) if axes else scores
                scores = scores.transpose(0, 2, 1, 3) if transposed else scores
                total = scores if total is None else total + scores
        return total / (len(self.flips) * (2 if self.transpose else 1))


def predict_labels(model, images, batch_size=8):
    """Runs ``model`` (inference mode) on images ``[N, H, W, C]`` and returns int32 label maps ``[N, H, W]``.

    ``C`` is the model's input channel count (3 for RGB; 6 for a change-detection pair).

    Example:
        >>> predict_labels(model, np.zeros((2, 64, 64, 3), np.float32)).shape  # doctest: +SKIP
        (2, 64, 64)
    """
    images = np.asarray(images, dtype=np.float32)
    inputs = getattr(model, "inputs", None)
    channels = (inputs[0].shape[-1] if inputs else None) or 3
    if images.ndim != 4 or images.shape[-1] != channels:
        raise ValueError(
            f"images must have shape [N, H, W, {channels}]. Received: images.shape={images.shape}"
        )
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or Inf values")
    labels = []
    for start in range(0, len(images), batch_size):
        scores = _main_output(model(images[start : start + batch_size], training=False))
        labels.append(np.argmax(keras.ops.convert_to_numpy(scores), axis=-1).astype(np.int32))
    return np.concatenate(labels, axis=0)


def evaluate(model, dataset, num_classes, ignore_index=IGNORE_INDEX, progress=True):
    """Evaluates ``model`` on a dataset of (image, label) batches; returns ``kseg.metrics.scores`` + the matrix.

    Images may differ in size between batches. The returned dict also holds
    ``confusion_matrix`` (int64 ``[C, C]``) and ``num_pixels``.

    Example:
        >>> result = evaluate(model, val_ds.batch(1), num_classes=21)  # doctest: +SKIP
        >>> result["mean_iou"]  # doctest: +SKIP
    """
    cm = np.zeros((num_classes, num_classes), np.int64)
    bar = keras.utils.Progbar(None, unit_name="batch") if progress else None
    batches = 0
    for images, labels in dataset:
        predicted = predict_labels(model, images.numpy(), batch_size=len(images))
        cm += kseg_metrics.confusion_matrix(labels.numpy(), predicted, num_classes, ignore_index)
        batches += 1
        if bar is not None:
            bar.update(batches)
    if bar is not None:
        bar.update(batches, finalize=True)
    result = kseg_metrics.scores(cm)
    result["confusion_matrix"] = cm
    result["num_pixels"] = int(cm.sum())
    return result


class ImageSummary(keras.callbacks.Callback):
    """Writes image | truth | prediction panels of a few fixed samples to TensorBoard each epoch.

    Example:
        >>> cb = ImageSummary(log_dir="runs/logs", images=val_images[:4], labels=val_labels[:4])
        >>> model.fit(train_ds, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, log_dir, images, labels, palette=None, every=1):
        super().__init__()
        self.log_dir = os.path.join(log_dir, "images")
        self.images = np.asarray(images, dtype=np.float32)
        self.labels = np.asarray(labels)
        self.palette = palette
        self.every = max(1, int(every))
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        predicted = predict_labels(self.model, self.images)
        panels = np.stack(
            [
                viz.panel(img, lab, pred, self.palette)
                for img, lab, pred in zip(self.images, self.labels, predicted)
            ]
        )
        with self._writer.as_default():
            tf.summary.image(
                "image_truth_prediction_overlay", panels, step=epoch, max_outputs=len(panels)
            )
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


def _previous_path(path):
    root, extension = os.path.splitext(path)
    return f"{root}.previous{extension}"


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever ``monitor`` improves, atomically, keeping the previous best.

    Each save writes a temporary file beside ``filepath`` and renames it over the old one, so a
    kill during a save leaves a complete file; the file it replaces is kept as
    ``<name>.previous.keras``, which :func:`load_checkpoint` falls back to if the newest is
    unreadable.

    Example:
        >>> checkpoint = BestModelCheckpoint("runs/best.keras", monitor="val_mean_iou")
        >>> # model.fit(..., callbacks=[checkpoint])
    """

    def __init__(self, filepath, monitor="val_mean_iou", mode="max"):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'. Received: mode={mode!r}")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.mode = mode
        self.best = None

    def _improved(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value) or not self._improved(float(value)):
            return
        self.best = float(value)
        if os.path.exists(self.filepath):
            # The current best stays at its path until the new one replaces it.
            fileio.keep_copy(self.filepath, _previous_path(self.filepath))
        fileio.save_model(self.model, self.filepath)


def load_checkpoint(filepath, warn=print):
    """Loads ``filepath``; if it is unreadable, says so by name and loads the previous one.

    The previous checkpoint is ``<name>.previous.keras`` as :class:`BestModelCheckpoint` keeps
    it. Raises ``ValueError`` naming both files when neither loads.

    Example:
        >>> model = load_checkpoint("runs/best.keras")  # doctest: +SKIP
    """
    import kseg

    errors = []
    for path in (os.fspath(filepath), _previous_path(os.fspath(filepath))):
        if not os.path.isfile(path):
            errors.append(f"{path!r} does not exist")
            continue
        try:
            model = kseg.load_model(path)
        except Exception as error:  # noqa: BLE001 -- Keras raises many types for corrupt files
            errors.append(f"{path!r} is unreadable ({type(error).__name__}: {error})")
            continue
        if errors:
            warn(f"checkpoint {errors[0]}; using the previous one, {path!r}")
        return model
    raise ValueError(f"no loadable checkpoint: {'; '.join(errors)}")


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
            (or a :class:`kseg.BestModelCheckpoint` to call each epoch).
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
    strategy = loop.resolve_strategy(strategy)
    chief = is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    loop.check_global_batch(train_ds, replicas)
    steps_per_epoch = loop.resolve_steps_per_epoch(train_ds, steps_per_epoch)
    total_steps = steps_per_epoch * epochs
    if seed is not None:
        keras.utils.set_random_seed(seed)

    with strategy.scope():
        model = loop.build_model(
            model_or_name, strategy, num_classes, input_shape, dict(model_options or {})
        )
        outputs = len(model.outputs)
        if compile or getattr(model, "optimizer", None) is None:
            loss = loss or losses.CrossEntropy(ignore_index=ignore_index)
            compile_model(
                model,
                int(loop.main_output(model.outputs).shape[-1]),
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
    num_classes = int(loop.main_output(model.outputs).shape[-1])
    optimizer_ = model.optimizer
    description = loop.describe_run(model, optimizer_)

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
            loop.check_same_run(state, description)
            if state.get("steps_per_epoch") != steps_per_epoch:
                raise CheckpointError(
                    f"checkpoint {state['_path']!r} was written with "
                    f"{state.get('steps_per_epoch')} steps per epoch, this run has "
                    f"{steps_per_epoch} (other data or batch size); nothing was overwritten"
                )
            arrays = store.load_arrays(state)
            loop.restore(model, optimizer_, arrays, state["_path"])
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
    if best is not None and not isinstance(best, BestModelCheckpoint):
        best = BestModelCheckpoint(best_path, monitor=monitor)
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
            loop.snapshot(model, optimizer_),
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
            return value, loop.confusion_counts(labels, loop.main_output(predictions), num_classes)

        value, counts = strategy.run(step_fn, args=next(iterator))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, counts, axis=None),
        )

    @tf.function(reduce_retracing=True)
    def val_step(batch):
        def step_fn(images, labels):
            predictions = loop.main_output(model(images, training=False))
            per_pixel = keras.losses.sparse_categorical_crossentropy(
                tf.where(labels == ignore_index, 0, labels), predictions, from_logits=True
            )
            valid = tf.cast(labels != ignore_index, per_pixel.dtype)
            return (
                tf.reduce_sum(per_pixel * valid),
                tf.reduce_sum(valid),
                loop.confusion_counts(labels, predictions, num_classes),
            )

        results = strategy.run(step_fn, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

    callback_list = keras.callbacks.CallbackList(
        callbacks or [], model=model, epochs=epochs, steps=steps_per_epoch, verbose=0
    )
    summaries = loop.EpochSummaries(log_dir) if log_dir and chief else None
    resumed_from = step if state is not None else None
    iterator = iter(loop.distribute(strategy, train_ds.repeat().skip(step)))
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
            logs = {"loss": loss_sum / max(batches, 1), **loop.epoch_scores(cm)}
            if val_ds is not None:
                val_loss = val_pixels = 0.0
                val_cm = np.zeros((num_classes, num_classes))
                for batch in loop.distribute(strategy, val_ds):
                    total, pixels, counts = val_step(batch)
                    val_loss += float(total)
                    val_pixels += float(pixels)
                    val_cm += counts.numpy()
                logs["val_loss"] = val_loss / val_pixels if val_pixels else float("nan")
                logs.update(loop.epoch_scores(val_cm, "val_"))
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

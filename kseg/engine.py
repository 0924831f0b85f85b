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

import os

import keras
import numpy as np
import tensorflow as tf

from kseg import fileio, losses, viz
from kseg import metrics as kseg_metrics
from kseg.constants import IGNORE_INDEX

__all__ = [
    "poly_schedule",
    "compile_model",
    "ImageSummary",
    "evaluate",
    "predict_labels",
    "FlipAverage",
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

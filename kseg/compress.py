"""Model compression for Keras 3: magnitude pruning with a sparsity schedule, and channel pruning.

``tensorflow-model-optimization`` does not accept Keras 3 models, so kseg implements both.

**Magnitude pruning** (``prune``, ``PruningCallback``, ``strip``, ``sparsity_report``) zeroes the
smallest-magnitude weights of the convolution and dense kernels, raising the sparsity along a
schedule while the model fine-tunes (Zhu & Gupta 2017, "To prune, or not to prune"). The masks
are kept in non-trainable variables and applied as the kernels' Keras *constraints*, which every
Keras 3 optimizer applies after each update inside the compiled train step: a pruned weight is
exactly zero after every step, also with ``steps_per_execution > 1``. No layer is wrapped, so the
model keeps its class and ``strip`` only detaches the masks. The sparse kernels make the TFLite
file compress (gzip) but not run faster; ``block_size`` prunes runs of consecutive input
channels, which TFLite stores next to each other, so the file compresses better still.

**Channel pruning** (``prune_channels``) removes whole filters (smallest L1 norms) and rebuilds a
narrower functional model, which runs faster: the consumers of each removed channel (batch norm,
depthwise convolutions, the next convolution's input channels, concatenations, residual adds,
max-unpooling indices) are narrowed with it; layers it cannot narrow safely are left and listed.
It removes the same share of every layer (``scope="layer"``) or ranks all filters of the model
together (``scope="global"``, network slimming: ``criterion="bn_gamma"``, with ``bn_sparsity``
for a sparsity phase before the cut). ``Distiller`` fine-tunes the pruned model with the
unpruned one as its teacher (knowledge distillation).

Example:
    >>> import kseg
    >>> model = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4)
    >>> model.compile("adam", kseg.losses.CrossEntropy())
    >>> model, callback = kseg.compress.prune(model, 0.5, end_step=100, frequency=10)
    >>> # model.fit(train, epochs=..., callbacks=[callback])
    >>> model = kseg.compress.strip(model)
    >>> narrow, report = kseg.compress.prune_channels(model, 0.5)
    >>> narrow.get_layer("down1_conv1").filters
    2
"""

from __future__ import annotations

import fnmatch
import math

import keras
import numpy as np

from kseg.training.loop import main_output

SCHEDULES = ("polynomial", "constant")
SCOPES = ("layer", "global")
CRITERIA = ("l1", "l2")
CHANNEL_CRITERIA = ("l1", "l2", "bn_gamma")
CHANNEL_COSTS = (None, "madds")


# --------------------------------------------------------------------------- argument checks


def _check_sparsity(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 <= float(value) < 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def _check_step(name, value, low=0, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}. Received: {name}={value!r}")
    return int(value)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}. Received: {name}={value!r}")
    return value


# --------------------------------------------------------------------------- schedules


def polynomial_sparsity(step, target_sparsity, begin_step, end_step, initial_sparsity=0.0, power=3):
    """The sparsity of Zhu & Gupta (2017) at ``step``.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (end_step - t0)) ** power``, held at ``s_i``
    before ``begin_step`` (``t0``) and at ``s_f`` after ``end_step`` (the paper's ``t0 + nΔt``).

    Example:
        >>> round(polynomial_sparsity(50, 0.8, 0, 100), 6)  # 0.8 + (0 - 0.8) * 0.5 ** 3
        0.7
        >>> polynomial_sparsity(100, 0.8, 0, 100), polynomial_sparsity(0, 0.8, 0, 100)
        (0.8, 0.0)
    """
    progress = min(1.0, max(0.0, (step - begin_step) / max(1, end_step - begin_step)))
    return target_sparsity + (initial_sparsity - target_sparsity) * (1.0 - progress) ** power


PRUNABLE_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)
"""Layer classes whose kernels ``prune`` masks (subclasses included)."""


def _is_prunable(layer):
    return isinstance(layer, PRUNABLE_LAYERS)


def _kernels(layer):
    # Separable convolutions carry two kernels; the others one, called ``kernel``.
    names = (
        ("depthwise_kernel", "pointwise_kernel")
        if hasattr(layer, "pointwise_kernel")
        else ("kernel",)
    )
    return [getattr(layer, n) for n in names if getattr(layer, n, None) is not None]


def _matches(layer, skip):
    for item in skip:
        if isinstance(item, str):
            if fnmatch.fnmatchcase(layer.name, item):
                return True
        elif isinstance(item, type) and isinstance(layer, item):
            return True
    return False


def _layer_ratio(layer_ratios, name):
    """The ratio of the first pattern of ``layer_ratios`` matching ``name``; 0 if none does."""
    for pattern, value in layer_ratios.items():
        if fnmatch.fnmatchcase(name, pattern):
            return value
    return 0.0


def _check_skip(skip):
    if skip is None:
        return ()
    if isinstance(skip, (str, type)):
        skip = (skip,)
    skip = tuple(skip)
    for item in skip:
        if not isinstance(item, (str, type)):
            raise ValueError(
                "skip must hold layer names (glob patterns allowed) or layer classes. "
                f"Received: skip={skip!r}"
            )
    return skip


def _leaf_layers(model):
    seen, result = set(), []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) not in seen:
            seen.add(id(layer))
            result.append(layer)
    return result


def _block_axis(layer):
    # The input-channel axis of the kernel: TFLite stores weights [out, ..., in] (OHWI), so
    # consecutive input channels are consecutive bytes there. Keras keeps transposed kernels as
    # [..., out, in], all others as [..., in, out].
    transposed = (
        keras.layers.Conv1DTranspose,
        keras.layers.Conv2DTranspose,
        keras.layers.Conv3DTranspose,
    )
    return -1 if isinstance(layer, transposed) else -2


def _block_scores(values, axis, block):
    """``(scores, sizes, expand)``: the mean magnitude and the size of every block of ``block``
    consecutive entries along ``axis`` (the last block of an axis may be shorter), and a function
    mapping a per-block boolean array back to the kernel's shape."""
    magnitude = np.abs(np.asarray(values, np.float64))
    if block == 1:
        return magnitude, np.ones(magnitude.shape, np.int64), lambda drop: drop
    moved = np.moveaxis(magnitude, axis, -1)
    length = moved.shape[-1]
    count = -(-length // block)
    padded = np.full(moved.shape[:-1] + (count * block,), np.nan)
    padded[..., :length] = moved
    padded = padded.reshape(moved.shape[:-1] + (count, block))
    sizes = np.sum(~np.isnan(padded), axis=-1)
    scores = np.nanmean(padded, axis=-1)

    def expand(drop):
        return np.moveaxis(np.repeat(drop, block, axis=-1)[..., :length], -1, axis)

    return scores, sizes, expand


def _apply_mask(values, keep):
    # np.where, not values * mask: a negative weight times 0 is -0.0, whose bytes (00 00 00 80)
    # break the runs of zero bytes that make a pruned TFLite file compress.
    return np.where(keep, values, np.zeros((), values.dtype))


class _MaskConstraint:
    """Multiplies a kernel by its mask after the constraint the layer had before (if any)."""

    def __init__(self, mask, previous=None):
        self.mask = mask
        self.previous = previous

    def __call__(self, w):
        from keras import ops

        if self.previous is not None:
            w = self.previous(w)
        return ops.multiply(w, ops.cast(self.mask, w.dtype))

    def get_config(self):  # never serialized: layer configs read ``kernel_constraint``
        return {}


class PruningCallback(keras.callbacks.Callback):
    """Raises the kernels' sparsity along the schedule; built by :func:`prune`.

    After each training step whose step number (the optimizer's
    ``iterations``) passed a scheduled update — ``begin_step``, then every ``frequency`` steps,
    and ``end_step`` — it recomputes the masks from the weights' magnitudes for that update's
    sparsity and zeroes the pruned weights; the kernels' constraints keep them zero between
    updates.

    Attributes:
        sparsity: the sparsity of the last mask update (0 before the first).
        last_update_step: the step of that update, or None.
        done: whether the final (``end_step``) update has been made.

    Example:
        >>> model, callback = kseg.compress.prune(model, 0.5, end_step=1000)  # doctest: +SKIP
        >>> model.fit(train, epochs=5, callbacks=[callback])                  # doctest: +SKIP
        >>> callback.sparsity                                                 # doctest: +SKIP
        0.5
    """

    def __init__(
        self,
        entries,
        target_sparsity,
        schedule,
        begin_step,
        end_step,
        frequency,
        scope,
        initial_sparsity,
        power,
        model=None,
        block_size=1,
    ):
        super().__init__()
        self.entries = entries
        self.target_sparsity = target_sparsity
        self.schedule = schedule
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        self.scope = scope
        self.initial_sparsity = initial_sparsity
        self.power = power
        self.block_size = block_size
        self.sparsity = 0.0
        self.last_update_step = None
        self.done = False
        self._pruned_model = model

    # -- schedule
    def sparsity_at(self, step):
        """The scheduled sparsity at ``step`` (0 before ``begin_step``).

        Example:
            >>> callback.sparsity_at(callback.end_step) == callback.target_sparsity  # doctest: +SKIP
            True
        """
        if step < self.begin_step:
            return 0.0
        if self.schedule == "constant":
            return self.target_sparsity
        return polynomial_sparsity(
            step,
            self.target_sparsity,
            self.begin_step,
            self.end_step,
            self.initial_sparsity,
            self.power,
        )

    def update_point(self, step):
        """The last scheduled update at or before ``step`` (None before ``begin_step``).

        Example:
            >>> callback.update_point(250)  # begin 0, frequency 100   # doctest: +SKIP
            200
        """
        if step < self.begin_step:
            return None
        point = self.begin_step + (step - self.begin_step) // self.frequency * self.frequency
        if self.end_step is not None and step >= self.end_step:
            point = self.end_step
        return point

    # -- masks
    def update_masks(self, sparsity):
        """Recomputes every mask for ``sparsity`` (of the layer's or of all kernels) and zeroes
        the pruned weights now.

        Example:
            >>> callback.update_masks(0.5)   # doctest: +SKIP
        """
        # Scores per group: one weight, or a block of ``block_size`` consecutive input channels.
        groups = [
            _block_scores(np.asarray(e["variable"].numpy()), e["block_axis"], self.block_size)
            for e in self.entries
        ]
        if self.scope == "global":
            scores = np.concatenate([g[0].ravel() for g in groups]) if groups else np.zeros(0)
            sizes = np.concatenate([g[1].ravel() for g in groups]) if groups else np.zeros(0)
            # Blocks of the smallest mean magnitude first, until the weights reach the sparsity;
            # a stable sort keeps the already-zero weights first, so pruned weights stay pruned.
            order = np.argsort(scores, kind="stable")
            target = int(round(sparsity * sizes.sum()))  # weights to zero
            count = int(np.searchsorted(np.cumsum(sizes[order]), target)) + 1 if target else 0
            count = min(count, order.size)
            drop = np.zeros(scores.size, bool)
            drop[order[:count]] = True
            offset, drops = 0, []
            for g in groups:
                drops.append(drop[offset : offset + g[0].size].reshape(g[0].shape))
                offset += g[0].size
        else:
            drops = []
            for score, _, _ in groups:
                count = int(round(sparsity * score.size))
                drop = np.zeros(score.size, bool)
                drop[np.argsort(score.ravel(), kind="stable")[:count]] = True
                drops.append(drop.reshape(score.shape))
        for entry, (_, _, expand), drop in zip(self.entries, groups, drops):
            variable = entry["variable"]
            keep = ~expand(drop)
            entry["mask"].assign(keep.astype(entry["mask"].dtype))
            variable.assign(_apply_mask(np.asarray(variable.numpy()), keep))
        self.sparsity = float(sparsity)

    def _step(self):
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        return int(iterations.numpy()) if iterations is not None else 0

    def _maybe_update(self):
        step = self._step()
        point = self.update_point(step)
        if point is None or point == self.last_update_step:
            return
        self.update_masks(self.sparsity_at(point))
        self.last_update_step = point
        self.done = self.end_step is not None and point >= self.end_step

    def on_train_begin(self, logs=None):
        if self._pruned_model is not None and self.model is not self._pruned_model:
            raise ValueError(
                f"this PruningCallback prunes the model {self._pruned_model.name!r}; it was "
                f"given to the fit of another model. Received: model={self.model.name!r}"
            )
        self._maybe_update()

    def on_train_batch_end(self, batch, logs=None):
        self._maybe_update()


def prune(
    model,
    target_sparsity,
    schedule="polynomial",
    begin_step=0,
    end_step=None,
    frequency=100,
    scope="layer",
    skip=(),
    initial_sparsity=0.0,
    power=3,
    block_size=1,
):
    """Prepares ``model`` for magnitude pruning; returns ``(model, callback)``.

    The kernels of the model's ``Conv1D/2D/3D``, ``Conv*DTranspose``, ``DepthwiseConv*``,
    ``SeparableConv*`` (both kernels) and ``Dense`` layers get a mask, applied as their
    constraint after every optimizer update (the weights stay exactly zero where the mask is
    zero). Fine-tune with ``model.fit(..., callbacks=[callback])``: the callback raises the
    sparsity along the schedule, then ``strip(model)`` detaches the masks for export. The model
    is changed in place and returned (it keeps its class; no wrapper). Biases, batch norm and
    other weights are never pruned.

    Args:
        model: a built Keras model (compiled or not; compile before ``fit`` as usual).
        target_sparsity: final fraction of zero weights, in [0, 1).
        schedule: "polynomial" (Zhu & Gupta 2017: ``s_t = s_f + (s_i - s_f)(1 - (t - t0) /
            (end_step - t0))^power`` for ``t`` in ``begin_step, begin_step + frequency, ...,
            end_step``) or "constant" (``target_sparsity`` from ``begin_step`` on).
        begin_step: training step (optimizer iteration) of the first mask update.
        end_step: step of the last update, where the target is reached; needed for
            "polynomial"; None for "constant" means the masks are refreshed every ``frequency``
            steps for as long as training runs.
        frequency: steps between mask updates (TF-MOT's default 100; smaller for short runs).
        scope: "layer" (each kernel pruned to the sparsity: exact per layer) or "global" (one
            magnitude threshold over all kernels: layers end with different sparsities, the
            total is the target).
        skip: layer names (``fnmatch`` patterns, e.g. ``"logits"`` or ``"up*"``) or classes
            whose kernels are left dense.
        initial_sparsity: ``s_i`` of the polynomial schedule.
        power: exponent of the polynomial schedule (3 in the paper).
        block_size: weights pruned together: 1 prunes single weights; ``b`` prunes blocks of
            ``b`` consecutive input channels of one filter at one kernel position (ranked by
            their mean magnitude). TFLite stores kernels ``[out, kh, kw, in]``, so a pruned
            block is a run of ``4 b`` zero bytes there, which gzip codes far more cheaply than
            scattered zeros (``benchmarks/RESULTS.md``, Compression).

    Returns:
        ``(model, PruningCallback)``.

    Raises:
        ValueError: a sparsity outside [0, 1), steps or frequency out of range, an unknown
            schedule or scope, or a model without prunable kernels (after ``skip``).

    Example:
        >>> import numpy as np, keras, kseg
        >>> inputs = keras.Input((8, 8, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
        >>> model.compile("sgd", "mse")
        >>> model, callback = kseg.compress.prune(model, 0.5, end_step=4, frequency=2)
        >>> x = np.ones((2, 8, 8, 3), "float32")
        >>> _ = model.fit(x, np.zeros((2, 8, 8, 4)), epochs=4, callbacks=[callback], verbose=0)
        >>> kseg.compress.sparsity_report(kseg.compress.strip(model))["total"]["sparsity"]
        0.5
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model. Received: model of type {type(model).__name__}"
        )
    target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
    initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
    _check_choice("schedule", schedule, SCHEDULES)
    _check_choice("scope", scope, SCOPES)
    begin_step = _check_step("begin_step", begin_step)
    frequency = _check_step("frequency", frequency, low=1)
    end_step = _check_step("end_step", end_step, allow_none=schedule == "constant")
    if end_step is not None and end_step < begin_step:
        raise ValueError(
            f"end_step must be >= begin_step ({begin_step}). Received: end_step={end_step!r}"
        )
    if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
        raise ValueError(f"power must be a positive number. Received: power={power!r}")
    skip = _check_skip(skip)
    block_size = _check_step("block_size", block_size, low=1)
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built before pruning")
    if any(isinstance(v.constraint, _MaskConstraint) for v in model.weights):
        raise ValueError(
            f"model {model.name!r} is already being pruned; call kseg.compress.strip(model) first"
        )

    entries = []
    for layer in _leaf_layers(model):
        if not _is_prunable(layer) or _matches(layer, skip):
            continue
        for variable in _kernels(layer):
            mask = keras.Variable(
                np.ones(variable.shape, "float32"),
                trainable=False,
                dtype="float32",
                name=f"{variable.name}_prune_mask",
            )
            previous = variable.constraint
            variable.constraint = _MaskConstraint(mask, previous)
            entries.append(
                {
                    "layer": layer,
                    "variable": variable,
                    "mask": mask,
                    "previous": previous,
                    "block_axis": _block_axis(layer),
                }
            )
    if not entries:
        raise ValueError(
            f"model {model.name!r} has no convolution or dense kernel to prune "
            f"(after skip). Received: skip={skip!r}"
        )
    # A train function traced before the constraints existed would not apply them.
    model.train_function = None
    callback = PruningCallback(
        entries,
        target_sparsity,
        schedule,
        begin_step,
        end_step,
        frequency,
        scope,
        initial_sparsity,
        power,
        model=model,
        block_size=block_size,
    )
    return model, callback


def strip(model):
    """Detaches the pruning masks: returns the same model, plain, with the masked weights zero.

    Every kernel's constraint goes back to what it was before :func:`prune`; the weights keep
    their zeros (the masks are applied one last time, as +0.0). The model has its own class and config,
    so it saves, loads and exports like the unpruned one. A model that was never pruned is
    returned unchanged.

    Example:
        >>> model = kseg.compress.strip(model)   # doctest: +SKIP
        >>> model.save("pruned.keras")           # doctest: +SKIP
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model. Received: model of type {type(model).__name__}"
        )
    for variable in model.weights:
        constraint = variable.constraint
        if isinstance(constraint, _MaskConstraint):
            keep = np.asarray(constraint.mask.numpy()) != 0
            variable.assign(_apply_mask(np.asarray(variable.numpy()), keep))
            variable.constraint = constraint.previous
    model.train_function = None
    return model


def sparsity_report(model):
    """Fraction of exactly-zero weights in each prunable kernel of ``model``.

    Returns:
        ``{"layers": {name: {"weights": n, "zeros": z, "sparsity": z / n}}, "total": {...}}``
        over the kernels ``prune`` handles (pruned or not).

    Example:
        >>> import keras, kseg
        >>> inputs = keras.Input((4, 4, 2))
        >>> layer = keras.layers.Conv2D(2, 1, use_bias=False)
        >>> model = keras.Model(inputs, layer(inputs))
        >>> _ = layer.kernel.assign([[[[0.0, 1.0], [0.0, 2.0]]]])
        >>> kseg.compress.sparsity_report(model)["layers"]["conv2d"]["sparsity"]  # doctest: +SKIP
        0.5
    """
    layers = {}
    total_n = total_z = 0
    for layer in _leaf_layers(model):
        if not _is_prunable(layer):
            continue
        n = z = 0
        for variable in _kernels(layer):
            values = np.asarray(variable.numpy())
            n += values.size
            z += int(np.count_nonzero(values == 0))
        if n:
            layers[layer.name] = {"weights": n, "zeros": z, "sparsity": z / n}
            total_n += n
            total_z += z
    return {
        "layers": layers,
        "total": {
            "weights": total_n,
            "zeros": total_z,
            "sparsity": total_z / total_n if total_n else 0.0,
        },
    }


def format_sparsity_report(report):
    """The report of :func:`sparsity_report` as an aligned text table.

    Example:
        >>> print(format_sparsity_report(kseg.compress.sparsity_report(model)))  # doctest: +SKIP
    """
    rows = [(name, v["weights"], v["sparsity"]) for name, v in report["layers"].items()]
    rows.append(("total", report["total"]["weights"], report["total"]["sparsity"]))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'layer':<{width}}  {'weights':>10}  sparsity"]
    lines += [f"{name:<{width}}  {n:>10,}  {s:8.4f}" for name, n, s in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- channel pruning


class _Channels:
    """Union-find over channel identities; a set may be blocked (kept whole) with a reason."""

    def __init__(self):
        self.parent = {}
        self.blocked = {}

    def find(self, cid):
        self.parent.setdefault(cid, cid)
        root = cid
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[cid] != root:  # path compression
            self.parent[cid], cid = root, self.parent[cid]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        reason = self.blocked.pop(rb, None)
        if reason is not None:
            self.blocked.setdefault(ra, reason)

    def block(self, cid, reason):
        self.blocked.setdefault(self.find(cid), reason)

    def reason(self, cid):
        return self.blocked.get(self.find(cid))


def _channel_count(tensor):
    shape = tuple(tensor.shape)
    return shape[-1] if shape and isinstance(shape[-1], int) else None


# Layers that act on each channel separately and keep their order (weightless ones, and batch
# norm, whose weights are sliced). Others with a size-reference second input are listed apart.
_CHANNELWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Identity,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    keras.layers.Resizing,
)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)


def _kseg_channelwise():
    # kseg's own layers that keep channels: (class, how many leading inputs carry channels).
    from kseg.layers.crop import CropLike, PadToMultiple
    from kseg.layers.pyramid_pooling import AdaptiveAveragePooling2D
    from kseg.layers.resize import Resize
    from kseg.layers.unpooling import MaxPoolingWithArgmax2D

    return (CropLike, PadToMultiple, Resize, MaxPoolingWithArgmax2D, AdaptiveAveragePooling2D)


def _producer_kind(layer):
    """ "conv" (kernel ``[..., in, out]``), "transpose" (``[..., out, in]``), "separable",
    "depthwise" or None; with the reason when the layer cannot take part."""
    L = keras.layers
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        if layer.depth_multiplier != 1:
            return None, "a separable convolution with depth_multiplier != 1"
        return "separable", None
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        if layer.depth_multiplier != 1:
            return None, "a depthwise convolution with depth_multiplier != 1"
        return "depthwise", None
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return "transpose", None
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        if getattr(layer, "groups", 1) != 1:
            return None, "a grouped convolution"
        return "conv", None
    if isinstance(layer, L.Dense):
        return "conv", None
    return None, None


def _trace_channels(model, skip):
    """Walks the functional graph, giving every tensor channel a channel identity.

    A producer (convolution, transposed convolution, dense) creates the identities
    ``(layer name, filter)``; channel-wise layers pass them on; concatenation concatenates;
    element-wise merges and max-unpooling (values with their pooling indices) unite the
    operands' identities position by position; anything else blocks the identities it
    receives, as do the model outputs and skipped layers.
    """
    channels = _Channels()
    ids = {}  # id(KerasTensor) -> list of channel identities (or None: not channels-last)
    consumers = {}  # layer name -> (kind, identities of its input channels)
    producers = {}  # layer name -> (kind, number of filters)
    layer_by_name = {}
    kseg_channelwise = _kseg_channelwise()
    from kseg.layers.unpooling import MaxUnpooling2D

    def fresh(tensor, tag, reason):
        count = _channel_count(tensor)
        if count is None:
            return None
        out = [(tag, j) for j in range(count)]
        for cid in out:
            channels.block(cid, reason)
        return out

    def block_all(lists, reason):
        for lst in lists:
            for cid in lst or ():
                channels.block(cid, reason)

    for x in model.inputs:
        ids[id(x)] = fresh(x, f"<input {x.name}>", "model input")

    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if layer is None or node.is_input:
                continue
            inputs = [ids.get(id(t)) for t in node.input_tensors]
            outputs = node.outputs
            name = getattr(layer, "name", type(layer).__name__)
            layer_by_name[name] = layer
            cls = type(layer).__name__
            unknown = f"feeds {name!r} ({cls}), which prune_channels cannot narrow"
            kind, why_not = _producer_kind(layer)
            if getattr(layer, "data_format", None) == "channels_first":
                kind, why_not = None, "a channels_first layer"
            first = inputs[0] if inputs else None
            if why_not is not None:
                block_all(inputs, f"feeds {name!r}: {why_not}")
                result = [fresh(t, f"<{name}>", why_not) for t in outputs]
            elif kind in ("conv", "transpose", "separable") and len(inputs) == 1:
                previous = consumers.get(name)
                if previous is not None and first is not None:  # a shared layer
                    for a, b in zip(previous[1], first):
                        channels.union(a, b)
                consumers[name] = (kind, first)
                count = _channel_count(outputs[0])
                producers[name] = (kind, count)
                result = [[(name, j) for j in range(count)]]
                if _matches(layer, skip):
                    block_all(result, f"skipped (skip={skip!r})")
            elif kind == "depthwise" and len(inputs) == 1:
                consumers[name] = (kind, first)
                result = [first]
            elif isinstance(layer, keras.layers.BatchNormalization) and layer.axis in (
                -1,
                len(outputs[0].shape) - 1,
                [len(outputs[0].shape) - 1],
            ):
                consumers[name] = ("batchnorm", first)
                result = [first]
            elif isinstance(layer, _CHANNELWISE) or isinstance(layer, kseg_channelwise):
                # Resize/CropLike's second input only gives a size.
                result = [first for _ in outputs]
            elif isinstance(layer, _MERGES) and all(i is not None for i in inputs):
                longest = max(inputs, key=len)
                for other in inputs:
                    if len(other) == len(longest):
                        for a, b in zip(longest, other):
                            channels.union(a, b)
                    elif len(other) != 1:
                        block_all(inputs, unknown)
                result = [longest]
            elif isinstance(layer, keras.layers.Concatenate) and all(i is not None for i in inputs):
                rank = len(outputs[0].shape)
                if layer.axis in (-1, rank - 1):
                    result = [[cid for lst in inputs for cid in lst]]
                else:  # concatenated along space: the channels line up position by position
                    for other in inputs[1:]:
                        for a, b in zip(first, other):
                            channels.union(a, b)
                    result = [first]
            elif isinstance(layer, MaxUnpooling2D) and inputs[0] is not None and inputs[1]:
                for a, b in zip(inputs[0], inputs[1]):  # values and their pooling indices
                    channels.union(a, b)
                result = [first]
            else:
                block_all(inputs, unknown)
                result = [fresh(t, f"<{name}>", f"produced by {name!r} ({cls})") for t in outputs]
            for tensor, value in zip(outputs, result):
                ids[id(tensor)] = value

    for x in model.outputs:
        block_all([ids.get(id(x))], "reaches the model output")
    return channels, consumers, producers, layer_by_name


def _filter_norms(layer, kind, criterion):
    kernel = np.asarray(layer.get_weights()[0] if kind != "separable" else layer.get_weights()[1])
    # Output channels: the last kernel axis, or the second last for a transposed convolution.
    axis = kernel.ndim - 2 if kind == "transpose" else kernel.ndim - 1
    moved = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
    if criterion == "l2":
        return np.sqrt((moved.astype(np.float64) ** 2).sum(axis=1))
    return np.abs(moved).sum(axis=1)  # "l1", and "bn_gamma" for channels no batch norm scales


def _bn_gammas(channels, consumers, layer_by_name):
    """``{group root: mean |gamma|}`` over the batch norms that scale the group's channels."""
    sums = {}
    for name, (kind, in_ids) in consumers.items():
        layer = layer_by_name[name]
        if kind != "batchnorm" or in_ids is None or not layer.scale:
            continue
        gamma = np.abs(np.asarray(layer.gamma.numpy(), np.float64))
        for cid, value in zip(in_ids, gamma):
            total, count = sums.get(channels.find(cid), (0.0, 0))
            sums[channels.find(cid)] = (total + float(value), count + 1)
    return {root: total / count for root, (total, count) in sums.items()}


def _layer_pixels(model, probe):
    """``{layer name: (input pixels, output pixels)}`` with the model run at its input size,
    ``probe`` standing in for each spatial size left None (a fully convolutional model's
    relative costs do not depend on it)."""
    inputs = []
    for x in model.inputs:
        shape = tuple(x.shape[1:])
        spatial = [probe if d is None else d for d in shape[:-1]]
        inputs.append(keras.Input((*spatial, shape[-1]), batch_size=1, dtype=x.dtype))
    try:
        probe_model = keras.models.clone_model(
            model,
            input_tensors=inputs if len(inputs) > 1 else inputs[0],
            clone_function=lambda layer: layer,
        )
    except Exception:  # noqa: BLE001 - a model that cannot be re-run at a fixed size: no sizes
        return {}

    def pixels(tensor):
        shape = tuple(tensor.shape)[1:-1]
        return int(np.prod([d for d in shape if isinstance(d, int)])) if shape else 1

    sizes = {}
    for depth in probe_model._nodes_by_depth:
        for node in probe_model._nodes_by_depth[depth]:
            layer = node.operation
            if layer is None or node.is_input or not node.outputs:
                continue
            sizes.setdefault(
                layer.name,
                (
                    pixels(node.input_tensors[0]) if node.input_tensors else 1,
                    pixels(node.outputs[0]),
                ),
            )
    return sizes


def _channel_costs(channels, consumers, producers, layer_by_name, sizes):
    """``{group root: multiply-adds per image}`` that removing the group saves: what its
    producers spend computing each of its channels plus what its consumers spend reading them,
    each at the resolution it runs at."""
    costs = {}

    def add(cid, value):
        root = channels.find(cid)
        costs[root] = costs.get(root, 0.0) + float(value)

    for name, (kind, count) in producers.items():
        layer = layer_by_name[name]
        in_px, out_px = sizes.get(name, (1, 1))
        if kind == "separable":
            pointwise = layer.get_weights()[1].shape
            per_filter = int(np.prod(pointwise[:-1])) * out_px
        else:
            kernel = layer.get_weights()[0].shape
            window = int(np.prod(kernel[:-2])) if len(kernel) > 2 else 1
            if kind == "transpose":  # [..., out, in]: each input pixel scatters a window
                per_filter = window * kernel[-1] * in_px
            else:
                per_filter = window * kernel[-2] * out_px
        for j in range(count):
            add((name, j), per_filter)
    for name, (kind, in_ids) in consumers.items():
        if in_ids is None or kind == "batchnorm":  # folded into the convolution at inference
            continue
        layer = layer_by_name[name]
        in_px, out_px = sizes.get(name, (1, 1))
        weights = layer.get_weights()
        if kind == "depthwise":
            per_channel = int(np.prod(weights[0].shape[:-2])) * out_px
        elif kind == "separable":
            depthwise, pointwise = weights[0].shape, weights[1].shape
            per_channel = (int(np.prod(depthwise[:-2])) + pointwise[-1]) * out_px
        else:
            kernel = weights[0].shape
            window = int(np.prod(kernel[:-2])) if len(kernel) > 2 else 1
            if kind == "transpose":
                per_channel = window * kernel[-2] * in_px
            else:
                per_channel = window * kernel[-1] * out_px
        for cid in in_ids:
            add(cid, per_channel)
    return costs


def _madds_removed(consumers, producers, layer_by_name, sizes, keep_in, keep_out):
    """The share of the convolution and dense layers' multiply-adds that the cut removes."""
    before = after = 0.0
    for name, (kind, in_ids) in consumers.items():
        if kind == "batchnorm" or in_ids is None:
            continue
        weights = layer_by_name[name].get_weights()
        in_px, out_px = sizes.get(name, (1, 1))
        cin = len(in_ids)
        cin_kept = len(keep_in.get(name, range(cin)))
        if kind == "depthwise":
            per = int(np.prod(weights[0].shape[:-2])) * out_px
            before, after = before + per * cin, after + per * cin_kept
            continue
        count = producers[name][1]
        cout_kept = len(keep_out.get(name, range(count)))
        if kind == "separable":
            window = int(np.prod(weights[0].shape[:-2]))
            before += (window * cin + cin * count) * out_px
            after += (window * cin_kept + cin_kept * cout_kept) * out_px
            continue
        shape = weights[0].shape
        window = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        px = in_px if kind == "transpose" else out_px
        before += window * cin * count * px
        after += window * cin_kept * cout_kept * px
    return 1.0 - after / before if before > 0 else 0.0


def _check_fraction(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 <= float(value) <= 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1]. Received: {name}={value!r}")
    return float(value)


def _slice(array, axis, keep):
    return np.take(array, keep, axis=axis) if keep is not None else array


def prune_channels(
    model,
    ratio,
    criterion="l1",
    skip=(),
    scope="layer",
    min_keep=0.1,
    cost=None,
    cost_power=1.0,
    cost_input_size=256,
):
    """Removes whole filters from the convolutions and rebuilds a narrower functional model.

    Which filters go (``scope``):

    - "layer" (the default, Li et al. 2017): every ``Conv*D``, ``Conv*DTranspose``,
      ``SeparableConv*D`` and ``Dense`` layer loses the ``floor(ratio * filters)`` filters of
      smallest importance, so every layer keeps the same share.
    - "global" (network slimming, Liu et al. 2017): one ranking over all prunable filters of the
      model removes ``floor(ratio * filters)`` of them in total, the least important first, so the
      layers that matter keep more and the redundant ones lose more; no layer keeps fewer than
      ``max(1, ceil(min_keep * filters))``. The multiply-adds saved are then whatever the
      chosen filters cost (the report says how many were removed).

    - ``ratio={layer pattern: ratio}`` (layer scope): each layer its own share, the first
      ``fnmatch`` pattern matching its name deciding (layers matching none keep all their
      filters), e.g. ratios chosen from a sensitivity scan (:func:`channel_sensitivity`), as
      Li et al. prune VGG's insensitive late stages harder than its early ones. Coupled producers
      (a residual add's operands, SegNet's encoder output and the decoder convolution unpooled
      to its indices) share their channels and are cut by the smallest ratio among them.

    Importance (``criterion``): "l1" or "l2", the norm of each filter's kernel weights, or
    "bn_gamma", the ``|gamma|`` of the batch norm that scales the filter's output channel
    (network slimming; a channel with a small gamma is nearly a constant). For the global
    ranking the norms are divided by their layer's mean norm, so layers of different fan-in
    compare; under "bn_gamma" a channel no batch norm scales (a transposed convolution feeding a
    concatenation, say) gets that normalised L1 norm times the mean ``|gamma|`` of the model.

    Cost-aware ranking (``cost="madds"``): each filter's importance is divided by
    ``(c / mean c) ** cost_power``, ``c`` the multiply-adds per image its removal saves, i.e.
    what its layer spends computing it plus what every consumer spends reading it (the next
    convolution's input channel), each at the resolution that layer runs at. A filter of a
    full-resolution layer then costs many times one of a deep, low-resolution layer, so with
    the same number of filters removed the cut takes more of the multiply-adds (and of the
    memory traffic, which follows the resolution) from the shallow layers that dominate the
    latency. ``cost_power`` sets how far cost outweighs importance (0: not at all). The sizes are
    those of ``model``'s input, ``cost_input_size`` standing in for a height or width left None.

    Everything reading a removed channel is narrowed with it: batch
    norm (its four vectors sliced), depthwise convolutions (they follow their input), the next
    convolution's input channels, concatenations (at the channel offsets of each operand),
    residual adds and other element-wise merges (their operands share one set of channels: a
    position is removed from all operands or from none, chosen by the summed importances) and
    ``MaxUnpooling2D`` (the decoder values and the encoder's pooling indices, as in SegNet,
    share their channels likewise). Channels that reach a model output, that feed a layer it
    does not know (custom layers, reshapes, channel-mixing normalisations, grouped
    convolutions) or whose producer is in ``skip`` are kept; such layers are listed in the
    report with the reason.

    The new model is a plain ``keras.Model`` (``Functional``) cloned from ``model`` with the
    narrower layer configs and the kept weights (``keras.models.clone_model``, which compiles it
    like the original when that was compiled, with a new optimizer): fine-tune it, ideally with
    the unpruned model as a teacher (:class:`Distiller`). Removed filters whose outputs were
    already zero (zero kernel and bias, as after magnitude pruning of whole filters) leave the
    outputs unchanged.

    Args:
        model: a functional Keras model (kseg's models are).
        ratio: fraction of the filters to remove (of each layer, or of all), in [0, 1); or
            ``{layer name or glob pattern: fraction}`` under ``scope="layer"`` (see above).
        criterion: "l1", "l2" or "bn_gamma" (see above).
        skip: layer names (``fnmatch`` patterns) or classes whose filters are all kept.
        scope: "layer" or "global" (see above).
        min_keep: under "global", the fraction of each layer's filters always kept, in [0, 1]
            (at least one filter is kept whatever the value); or, under either scope,
            ``{layer name: filters}``, the number each named layer keeps at least (others: 1),
            e.g. the floors of the unpruned model when a model is cut in several rounds, or
            each layer's share of a gradual schedule (a ratio near 1 then cuts every named
            layer down to its count).
        cost: None (rank by importance alone) or "madds" (importance per multiply-add saved,
            see above).
        cost_power: exponent of the normalised cost under ``cost="madds"``, >= 0.
        cost_input_size: the height and width used for the costs where the model's are None.

    Returns:
        ``(narrow_model, report)``; ``report`` holds ``ratio``, ``criterion``, ``scope``,
        ``cost``, ``filters`` (prunable filters before) and ``removed`` (filters removed),
        ``madds_removed`` (the share of the convolution and dense layers' multiply-adds the cut
        removes, at the sizes the costs use), ``layers``
        (``{name: {"filters": before, "kept": after}}`` for every layer narrowed)
        and ``left`` (``{name: reason}`` for every convolution or dense layer kept whole).

    Raises:
        ValueError: for ``ratio`` outside [0, 1) (or a ratio dict with ``scope="global"``),
            ``min_keep`` outside [0, 1], an unknown
            ``criterion``, ``scope`` or ``cost``, a negative ``cost_power``, a
            ``cost_input_size`` below 1, or a model that is not functional.

    Example:
        >>> import kseg
        >>> model = kseg.models.SegNet(num_classes=3, input_shape=(32, 32, 3),
        ...                            stage_filters=(8, 8, 16, 16, 16))
        >>> narrow, report = kseg.compress.prune_channels(model, 0.5)
        >>> narrow.get_layer("block1_conv1").filters, report["left"]["logits"]
        (4, 'reaches the model output')
        >>> slim, report = kseg.compress.prune_channels(
        ...     model, 0.5, criterion="bn_gamma", scope="global", min_keep=0.25)
        >>> report["removed"] == report["filters"] // 2
        True
        >>> late, report = kseg.compress.prune_channels(
        ...     model, {"block4_*": 0.75, "block5_*": 0.5})
        >>> late.get_layer("block4_conv1").filters, late.get_layer("block1_conv1").filters
        (4, 8)
        >>> cheap, report = kseg.compress.prune_channels(
        ...     model, 0.5, criterion="bn_gamma", scope="global", min_keep=0.25, cost="madds")
        >>> report["madds_removed"] > 0.5
        True
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "prune_channels needs a functional keras.Model. "
            f"Received: model of type {type(model).__name__}"
        )
    _check_choice("criterion", criterion, CHANNEL_CRITERIA)
    _check_choice("scope", scope, SCOPES)
    layer_ratios = None
    if isinstance(ratio, dict):
        if scope != "layer":
            raise ValueError(
                "ratio as {layer pattern: ratio} needs scope='layer' (a global ranking takes one "
                f"ratio of all filters). Received: ratio={ratio!r}, scope={scope!r}"
            )
        layer_ratios = {}
        for pattern, value in ratio.items():
            if not isinstance(pattern, str):
                raise ValueError(
                    f"ratio's keys must be layer names or glob patterns. Received: {pattern!r}"
                )
            layer_ratios[pattern] = _check_sparsity(f"ratio[{pattern!r}]", value)
        ratio = dict(layer_ratios)
    else:
        ratio = _check_sparsity("ratio", ratio)
    if isinstance(min_keep, dict):
        for key, value in min_keep.items():
            if (
                not isinstance(key, str)
                or isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < 0
            ):
                raise ValueError(
                    "min_keep must map layer names to filter counts >= 0. "
                    f"Received: min_keep={min_keep!r}"
                )
    else:
        min_keep = _check_fraction("min_keep", min_keep)
    skip = _check_skip(skip)
    if cost not in CHANNEL_COSTS:
        raise ValueError(f"cost must be one of {CHANNEL_COSTS}. Received: cost={cost!r}")
    if (
        isinstance(cost_power, bool)
        or not isinstance(cost_power, (int, float, np.integer, np.floating))
        or not 0.0 <= float(cost_power) < math.inf
    ):
        raise ValueError(f"cost_power must be a number >= 0. Received: cost_power={cost_power!r}")
    if isinstance(cost_input_size, bool) or not isinstance(cost_input_size, (int, np.integer)):
        raise ValueError(
            f"cost_input_size must be a positive integer. Received: cost_input_size={cost_input_size!r}"
        )
    if cost_input_size < 1:
        raise ValueError(
            f"cost_input_size must be a positive integer. Received: cost_input_size={cost_input_size!r}"
        )

    channels, consumers, producers, layer_by_name = _trace_channels(model, skip)

    # Groups: sets of (layer, filter) removed together; clusters: producers sharing groups.
    comparable = scope == "global" or criterion == "bn_gamma"
    groups = {}
    for name, (kind, count) in producers.items():
        norms = _filter_norms(layer_by_name[name], kind, criterion)
        if comparable:  # a layer's norms over their mean: layers of any fan-in compare
            mean = float(np.mean(norms)) if norms.size else 0.0
            norms = norms / mean if mean > 0 else np.zeros_like(norms)
        for j in range(count):
            root = channels.find((name, j))
            groups.setdefault(root, []).append((name, j, float(norms[j])))
    gammas = _bn_gammas(channels, consumers, layer_by_name) if criterion == "bn_gamma" else {}
    gamma_scale = float(np.mean(list(gammas.values()))) if gammas else 1.0

    sizes = _layer_pixels(model, cost_input_size)
    costs = _channel_costs(channels, consumers, producers, layer_by_name, sizes)
    mean_cost = float(np.mean([costs.get(r, 0.0) for r in groups])) if groups else 0.0

    def importance(root):
        # Per filter of the group, so that groups of several coupled filters compare globally.
        members = groups[root]
        if criterion == "bn_gamma":
            if root in gammas:
                value = gammas[root]
            else:
                value = gamma_scale * sum(n for _, _, n in members) / len(members)
        elif comparable:
            value = sum(n for _, _, n in members) / len(members)
        else:
            value = sum(n for _, _, n in members)
        if cost == "madds" and mean_cost > 0:
            value /= max(costs.get(root, 0.0) / mean_cost, 1e-12) ** float(cost_power)
        return value

    cluster_of = {name: name for name in producers}

    def cluster(name):
        while cluster_of[name] != name:
            name = cluster_of[name]
        return name

    for members in groups.values():
        first = cluster(members[0][0])
        for name, _, _ in members[1:]:
            cluster_of[cluster(name)] = first
    clusters = {}
    for root, members in groups.items():
        clusters.setdefault(cluster(members[0][0]), []).append(root)

    removed = set()
    left = {}
    frees = {
        key: [r for r in roots if channels.reason(r) is None] for key, roots in clusters.items()
    }
    prunable = sum(len(groups[r]) for free in frees.values() for r in free)

    def floor(roots):
        if isinstance(min_keep, dict):
            names = {n for r in roots for n, _, _ in groups[r]}
            return max([1] + [int(min_keep.get(n, 1)) for n in names])
        return max(1, math.ceil(min_keep * len(roots) - 1e-9))

    if scope == "global":
        # The least important filters of the whole model first, each layer (cluster) down to
        # its floor; a removed group removes all its coupled filters.

        quota = {
            key: max(0, min(len(frees[key]), len(roots) - floor(roots)))
            for key, roots in clusters.items()
        }
        target = int(math.floor(ratio * prunable + 1e-9))
        ranked = sorted(
            ((importance(r), key, r) for key, free in frees.items() for r in free),
            key=lambda item: item[0],
        )
        count = 0
        for _, key, root in ranked:
            if count >= target:
                break
            if quota[key] > 0:
                quota[key] -= 1
                removed.add(root)
                count += len(groups[root])
    else:
        for key, roots in clusters.items():
            free = list(frees[key])
            share = ratio
            if layer_ratios is not None:
                # Coupled producers share their channels: the least-cut one decides.
                names = {n for r in roots for n, _, _ in groups[r]}
                share = min(_layer_ratio(layer_ratios, n) for n in names)
            # Per producer of the cluster, ratio of its filters; coupled producers share groups.
            count = min(int(math.floor(share * len(roots) + 1e-9)), len(free))
            if free and count >= len(free) and len(free) == len(roots):
                count = len(free) - 1  # keep at least one channel
            if isinstance(min_keep, dict):  # floors in filters apply to either scope
                count = max(0, min(count, len(roots) - floor(roots)))
            free.sort(key=importance)
            removed.update(free[:count])
    for key, roots in clusters.items():
        if not any(r in removed for r in roots):
            names = sorted({n for r in roots for n, _, _ in groups[r]})
            reasons = [channels.reason(r) for r in roots if channels.reason(r) is not None]
            fallback = (
                "its filters rank above the global threshold"
                if scope == "global" and frees[key]
                else "nothing to remove at this ratio"
            )
            for n in names:
                left[n] = reasons[0] if reasons else fallback

    def kept(cid):
        return channels.find(cid) not in removed

    keep_out = {}
    report_layers = {}
    for name, (_, count) in producers.items():
        keep = [j for j in range(count) if kept((name, j))]
        if len(keep) < count:
            keep_out[name] = keep
            report_layers[name] = {"filters": count, "kept": len(keep)}
        elif name not in left:
            left[name] = "its channels are shared with a layer that keeps them"
    keep_in = {}
    for name, (_, in_ids) in consumers.items():
        if in_ids is None:
            continue
        keep = [i for i, cid in enumerate(in_ids) if kept(cid)]
        if len(keep) < len(in_ids):
            keep_in[name] = keep

    def clone(layer):
        config = layer.get_config()
        if layer.name in keep_out:
            key = "units" if isinstance(layer, keras.layers.Dense) else "filters"
            config[key] = len(keep_out[layer.name])
        return layer.__class__.from_config(config)

    narrow = keras.models.clone_model(model, clone_function=clone)
    if not isinstance(narrow, keras.Model):  # pragma: no cover - clone_model returns a Model
        raise TypeError(type(narrow).__name__)
    for old in model.layers:  # top level: a nested model is cloned whole
        weights = old.get_weights()
        if not weights:
            continue
        new = narrow.get_layer(old.name)
        kind = consumers.get(old.name, (None,))[0]
        cin, cout = keep_in.get(old.name), keep_out.get(old.name)
        if kind == "conv":
            kernel = _slice(_slice(weights[0], -2, cin), -1, cout)
            weights = [kernel] + [_slice(w, 0, cout) for w in weights[1:]]
        elif kind == "transpose":
            kernel = _slice(_slice(weights[0], -1, cin), -2, cout)
            weights = [kernel] + [_slice(w, 0, cout) for w in weights[1:]]
        elif kind == "separable":
            depthwise = _slice(weights[0], -2, cin)
            pointwise = _slice(_slice(weights[1], -2, cin), -1, cout)
            weights = [depthwise, pointwise] + [_slice(w, 0, cout) for w in weights[2:]]
        elif kind == "depthwise":
            weights = [_slice(weights[0], -2, cin)] + [_slice(w, 0, cin) for w in weights[1:]]
        elif kind == "batchnorm":
            weights = [_slice(w, 0, cin) for w in weights]
        new.set_weights(weights)
    report = {
        "ratio": ratio,
        "criterion": criterion,
        "cost": cost,
        "scope": scope,
        "filters": prunable,
        "removed": sum(len(groups[r]) for r in removed),
        "madds_removed": _madds_removed(
            consumers, producers, layer_by_name, sizes, keep_in, keep_out
        ),
        "layers": report_layers,
        "left": dict(sorted(left.items())),
    }
    return narrow, report


# --------------------------------------------------------------------------- fine-tuning aids


class Distiller(keras.Model):
    """Trains ``student`` on its compiled loss plus the soft targets of a frozen ``teacher``.

    Knowledge distillation (Hinton et al. 2015), per pixel: the loss is
    ``(1 - alpha) * hard + alpha * T² * KL(softmax(t / T) || softmax(s / T))``, with ``hard``
    the loss given to ``compile`` on the student's logits ``s`` and the labels, ``t`` the
    teacher's logits for the same (augmented) images, ``T`` the temperature; the KL is averaged
    over all pixels (the teacher answers also where the labels say "ignore"), or, with
    ``class_weights``, weighted by the weight of each pixel's label class (pixels labelled
    ``ignore_index`` weigh 0), as a class-weighted hard loss weights them: without that, the
    soft targets of a frequent background pull a student trained for mIoU towards it.
    Regularization losses are added unweighted. Only the first output of either model is used (auxiliary heads
    are left to the hard loss). The teacher is set non-trainable and runs in inference mode (its
    batch norms keep their statistics); the student's layers are shared, so fitting the
    distiller trains ``student`` itself, which is what to save and export.

    Use it to fine-tune a channel-pruned model (:func:`prune_channels`) from the unpruned one:
    the unpruned model is its own teacher, so the reference it is compared with is fine-tuned
    on the hard loss alone.

    Args:
        student: the model to train (e.g. the pruned model).
        teacher: a model with the same input and the same number of classes (e.g. the
            unpruned model).
        temperature: ``T`` > 0, softening both distributions.
        alpha: weight of the distillation term, in [0, 1].
        class_weights: None, or one weight per class for the pixels of the distillation term
            (e.g. those of the hard loss, ``kseg.losses.class_weights_from_frequency``).
        ignore_index: the label value whose pixels get no distillation weight (with
            ``class_weights``).

    Example:
        >>> import kseg
        >>> teacher = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4)
        >>> student, _ = kseg.compress.prune_channels(teacher, 0.5)
        >>> distiller = kseg.compress.Distiller(student, teacher, temperature=2.0, alpha=0.5)
        >>> distiller.compile("adam", kseg.losses.CrossEntropy())
        >>> # distiller.fit(train, epochs=...); then save or export ``student``
    """

    def __init__(
        self,
        student,
        teacher,
        temperature=2.0,
        alpha=0.5,
        class_weights=None,
        ignore_index=255,
        **kwargs,
    ):
        for arg, value in (("student", student), ("teacher", teacher)):
            if not isinstance(value, keras.Model):
                raise ValueError(
                    f"{arg} must be a keras.Model. Received: {arg} of type {type(value).__name__}"
                )
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or temperature <= 0
        ):
            raise ValueError(
                f"temperature must be a positive number. Received: temperature={temperature!r}"
            )
        alpha = _check_fraction("alpha", alpha)
        classes = [
            main_output(m.outputs).shape[-1] if getattr(m, "outputs", None) else None
            for m in (student, teacher)
        ]
        if None not in classes and classes[0] != classes[1]:
            raise ValueError(
                "the teacher must predict the student's classes: the student has "
                f"{classes[0]}. Received: teacher with {classes[1]} classes"
            )
        super().__init__(name=kwargs.pop("name", f"{student.name}_distiller"), **kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.alpha = alpha
        if class_weights is not None:
            class_weights = np.asarray(class_weights, "float32").reshape(-1)
            if classes[0] is not None and class_weights.size != classes[0]:
                raise ValueError(
                    f"class_weights must hold one weight per class ({classes[0]}). "
                    f"Received: class_weights of size {class_weights.size}"
                )
        self.class_weights = class_weights
        self.ignore_index = ignore_index

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def distillation_loss(self, student_logits, teacher_logits, labels=None):
        """``T² · KL(softmax(t / T) || softmax(s / T))`` averaged over the pixels (weighted
        by the labels' ``class_weights`` when both are given).

        Example:
            >>> distiller.distillation_loss(logits, logits)  # 0 for equal logits  # doctest: +SKIP
        """
        from keras import ops

        t = ops.cast(teacher_logits, "float32") / self.temperature
        s = ops.cast(student_logits, "float32") / self.temperature
        target = ops.softmax(t, axis=-1)
        kl = ops.sum(target * (ops.log_softmax(t, axis=-1) - ops.log_softmax(s, axis=-1)), -1)
        if self.class_weights is None or labels is None:
            return self.temperature**2 * ops.mean(kl)
        labels = ops.cast(labels, "int32")
        if len(labels.shape) == len(kl.shape) + 1:
            labels = ops.squeeze(labels, -1)
        valid = ops.not_equal(labels, self.ignore_index)
        index = ops.where(valid, labels, ops.zeros_like(labels))
        weights = ops.take(ops.convert_to_tensor(self.class_weights), index)
        weights = ops.where(valid, weights, ops.zeros_like(weights))
        total = ops.maximum(ops.sum(weights), 1e-12)
        return self.temperature**2 * ops.sum(weights * kl) / total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        from keras import ops

        total = super().compute_loss(x, y, y_pred, sample_weight, training)
        regularization = ops.sum(self.losses) if self.losses else 0.0
        hard = total - regularization
        if self.alpha == 0.0:
            return total
        teacher_logits = main_output(self.teacher(x, training=False))
        soft = self.distillation_loss(main_output(y_pred), ops.stop_gradient(teacher_logits), y)
        return (1.0 - self.alpha) * hard + self.alpha * soft + regularization


def bn_sparsity(model, strength):
    """Adds (``strength > 0``) or removes (0) an L1 penalty on every batch norm's gamma.

    Network slimming's sparsity training (Liu et al. 2017): a short phase of training with
    ``strength * sum |gamma|`` added to the loss drives the gammas of the unneeded channels
    towards zero, so that :func:`prune_channels` with ``criterion="bn_gamma"`` finds them and
    removing them costs little. The penalty is set as the gamma variables' regularizer (not in
    the layer configs: a saved model does not carry it); call ``bn_sparsity(model, 0)`` before
    the fine-tuning that follows the pruning (``prune_channels`` builds new layers without it
    anyway). Recompile or fit again after changing it (the train function is reset).

    Returns:
        the number of batch norms penalised (or released).

    Example:
        >>> import kseg
        >>> model = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4)
        >>> kseg.compress.bn_sparsity(model, 1e-4) > 0
        True
        >>> # model.fit(...); narrow, _ = kseg.compress.prune_channels(model, 0.5,
        >>> #     criterion="bn_gamma", scope="global")
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or strength < 0:
        raise ValueError(f"strength must be a number >= 0. Received: strength={strength!r}")
    count = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
            layer.gamma.regularizer = keras.regularizers.L1(strength) if strength else None
            count += 1
    model.train_function = None
    return count


def recalibrate_batch_norm(model, images, batch_size=32, batches=20, seed=0):
    """Sets every batch norm's moving statistics to their mean over ``batches`` batches.

    "Precise BN": after :func:`prune_channels` the remaining channels of a layer see inputs of
    other statistics than those the moving averages hold (their producers lost filters), so a
    narrow model often predicts badly until trained. Recomputing the statistics on a few batches
    of training images, weights unchanged, shows what the cut itself cost (the figure a
    sensitivity scan needs); it also repairs models whose moving averages had too few steps to
    settle (momentum 0.999). The momentum of each layer is restored afterwards.

    Args:
        model: a Keras model with ``BatchNormalization`` layers (nested ones included).
        images: array ``[N, H, W, C]`` the batches are drawn from (without replacement each).
        batch_size: images per batch (at most ``N``).
        batches: batches averaged, >= 1.
        seed: seed of the draw.

    Returns:
        the number of batch norms recalibrated.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4)
        >>> images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
        >>> kseg.compress.recalibrate_batch_norm(model, images, batch_size=4, batches=2) > 0
        True
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"images must be an array [N, H, W, C] with N >= 1. Received: images.shape={images.shape}"
        )
    batch_size = _check_step("batch_size", batch_size, low=1)
    batches = _check_step("batches", batches, low=1)
    if batch_size > len(images):
        raise ValueError(
            f"batch_size must be at most the number of images ({len(images)}). "
            f"Received: batch_size={batch_size}"
        )
    norms = [
        layer for layer in _leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    saved = [layer.momentum for layer in norms]
    rng = np.random.default_rng(seed)
    try:
        for step in range(batches):
            for layer in norms:  # momentum step / (step + 1): the running mean of the batches
                layer.momentum = step / (step + 1)
            index = rng.choice(len(images), batch_size, replace=False)
            model(images[index], training=True)
    finally:
        for layer, momentum in zip(norms, saved):
            layer.momentum = momentum
    return len(norms)


def channel_sensitivity(
    model,
    evaluate,
    groups=None,
    ratios=(0.25, 0.5, 0.75),
    criterion="l1",
    calibration_images=None,
    calibration_batches=20,
    batch_size=32,
):
    """Sensitivity scan of channel pruning (Li et al. 2017): each group of layers cut alone.

    For every group and ratio, :func:`prune_channels` removes that ratio of the filters of the
    group's layers only (``ratio={pattern: r}``), the batch norms are recalibrated on
    ``calibration_images`` (:func:`recalibrate_batch_norm`, when given), and ``evaluate`` scores
    the narrow model. Groups whose score falls little are the ones to cut hard: pass the ratios
    chosen from the scan to ``prune_channels`` as a dict. Li et al. found VGG's late,
    low-resolution stages insensitive and its first layers sensitive; so does kseg's SegNet on
    synthetic scenes (benchmarks/RESULTS.md).

    Args:
        model: a functional Keras model.
        evaluate: ``evaluate(narrow_model) -> float`` (e.g. held-out mIoU).
        groups: ``{label: [layer patterns]}``; None: one group per convolution or dense layer.
        ratios: the fractions to try, each in [0, 1).
        criterion: the filter importance (``prune_channels``'s).
        calibration_images: None, or images ``[N, H, W, C]`` to recalibrate batch norm with.
        calibration_batches: batches of ``batch_size`` for the recalibration.
        batch_size: see above.

    Returns:
        a list of ``{"group", "ratio", "score", "removed", "filters", "madds_removed"}``, the
        unpruned model first (``group`` None, ``ratio`` 0), then the groups in order, each
        with its ratios in order; ``filters`` counts the whole model's prunable filters.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.SegNet(num_classes=3, input_shape=(32, 32, 3),
        ...                            stage_filters=(4, 4, 8, 8, 8))
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> def evaluate(m):
        ...     return float(np.mean(m.predict(images, verbose=0).argmax(-1) == 0))
        >>> rows = kseg.compress.channel_sensitivity(
        ...     model, evaluate, {"late": ["block5_*", "decoder5_*"]}, ratios=(0.5,))
        >>> [(row["group"], row["ratio"]) for row in rows]
        [(None, 0.0), ('late', 0.5)]
    """
    if not callable(evaluate):
        raise ValueError(f"evaluate must be callable. Received: evaluate={evaluate!r}")
    ratios = tuple(_check_sparsity("ratios", r) for r in ratios)
    if groups is None:
        groups = {
            layer.name: [layer.name]
            for layer in model.layers
            if _producer_kind(layer)[0] in ("conv", "transpose", "separable")
        }
    elif not isinstance(groups, dict) or not all(
        isinstance(patterns, (list, tuple)) and all(isinstance(p, str) for p in patterns)
        for patterns in groups.values()
    ):
        raise ValueError(
            f"groups must map labels to lists of layer patterns. Received: groups={groups!r}"
        )
    _, full = prune_channels(model, 0.0, criterion=criterion)
    rows = [
        {
            "group": None,
            "ratio": 0.0,
            "score": float(evaluate(model)),
            "removed": 0,
            "filters": full["filters"],
            "madds_removed": 0.0,
        }
    ]
    for label, patterns in groups.items():
        for r in ratios:
            narrow, report = prune_channels(model, dict.fromkeys(patterns, r), criterion=criterion)
            if calibration_images is not None:
                recalibrate_batch_norm(narrow, calibration_images, batch_size, calibration_batches)
            rows.append(
                {
                    "group": label,
                    "ratio": r,
                    "score": float(evaluate(narrow)),
                    "removed": report["removed"],
                    "filters": report["filters"],
                    "madds_removed": report["madds_removed"],
                }
            )
    return rows

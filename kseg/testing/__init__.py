"""Shared checks for kseg layers and models, so that each test is a few lines.

``check_layer`` and ``check_model`` run what every layer and model must pass: config and
``.keras`` round-trips, eager vs. symbolic/graph calls, a training step, dtypes. They raise
``AssertionError`` with a message naming the failed check. Their parts are public for tests
that need one check alone: ``assert_inference_paths_agree``, ``assert_training_reduces_loss``,
``assert_keras_round_trip``; ``synthetic_batch`` makes the learnable batch they run on.

Example:
    >>> import kseg
    >>> from kseg.testing import check_model
    >>> results = check_model(
    ...     lambda shape: kseg.models.create("segnet", num_classes=3, input_shape=shape,
    ...                                      stage_filters=(8,) * 5),
    ...     input_shapes=[(32, 48, 3)], num_classes=3)
    >>> results[0]["losses"][-1] < results[0]["losses"][0]
    True
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def synthetic_batch(batch_size, height, width, num_classes, channels=3, seed=0, *, kind="blocks"):
    """A small learnable batch ``(images float32 [B, H, W, C] in 0..255, labels int32 [B, H, W])``.

    ``kind="blocks"``: label maps of 4x4 blocks, images coloured by class plus noise (any channel
    count; cheapest). ``kind="scenes"``: the shapes scenes of ``kseg.data.synthetic_numpy``
    (3 channels), closer to what a model trains on.

    Args:
        batch_size: the number of images.
        height, width: the image size.
        num_classes: labels are in ``[0, num_classes)``.
        channels: image channels (3 for ``"scenes"``).
        seed: the same seed gives the same batch.
        kind: ``"blocks"`` or ``"scenes"``.

    Example:
        >>> images, labels = synthetic_batch(2, 16, 24, num_classes=4)
        >>> images.shape, labels.shape, int(labels.max()) < 4
        ((2, 16, 24, 3), (2, 16, 24), True)
        >>> synthetic_batch(1, 32, 32, num_classes=6, kind="scenes")[0].shape
        (1, 32, 32, 3)
    """
    if kind == "scenes":
        if channels != 3:
            raise ValueError(
                f"kind='scenes' renders RGB images, so channels must be 3. Received: "
                f"channels={channels!r}"
            )
        from kseg.data.synthetic import synthetic_numpy

        return synthetic_numpy(
            batch_size, image_size=(height, width), seed=seed, num_classes=num_classes
        )
    if kind != "blocks":
        raise ValueError(f"kind must be 'blocks' or 'scenes'. Received: kind={kind!r}")
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, num_classes, (batch_size, -(-height // 4), -(-width // 4)))
    labels = np.repeat(np.repeat(grid, 4, axis=1), 4, axis=2)[:, :height, :width]
    palette = rng.uniform(30, 225, (num_classes, channels))
    images = palette[labels] + rng.normal(0, 10, (batch_size, height, width, channels))
    return np.clip(images, 0, 255).astype("float32"), labels.astype("int32")


def _first(outputs):
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def _to_numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


def _check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_model(
    model_fn,
    input_shapes,
    num_classes,
    batch_size=2,
    train_steps=3,
    learning_rate=1e-3,
    atol=1e-4,
    round_trip=True,
    tmp_dir=None,
    loss=None,
    use_fit=False,
):
    """Runs the model contract on ``model_fn(input_shape)`` for each of ``input_shapes``.

    For every shape: the symbolic and real logits are ``[B, H, W, num_classes]``, float32 and
    finite. For the first shape also: ``predict`` (graph) agrees with the eager call
    ``model(x, training=False)``, and so does ``model(x)``; uint8 and float64 images give the
    float32 result; ``train_steps`` optimiser steps on one fixed synthetic batch bring the
    training loss down (eager GradientTape steps, or ``fit``'s ``train_on_batch`` with
    ``use_fit=True``); after training a ``.keras`` round-trip restores the class, the config and
    identical outputs.

    Args:
        model_fn: ``input_shape -> keras.Model``.
        input_shapes: list of ``(H, W, C)``.
        num_classes: the number of classes the model predicts.
        batch_size, train_steps, learning_rate: the training check.
        atol: tolerance between eager and graph calls.
        round_trip: run the ``.keras`` round-trip.
        tmp_dir: where to save the ``.keras`` file (default: a temporary directory).
        loss: training loss (default sparse cross-entropy from logits). With several outputs
            (auxiliary heads) every output gets it on the same labels, weighted by the model's
            ``loss_weights_for_outputs`` when it has that attribute.
        use_fit: train through ``compile``/``train_on_batch`` (traces a training graph: slower,
            but also checks the model works with ``fit``).

    Returns:
        One dict per shape: ``model``, ``images``, ``labels``, ``logits`` (eager output, before
        training) and, for the first shape, ``losses`` (training losses, one per step plus the
        final one).

    Example:
        >>> results = check_model(lambda s: kseg.models.create(
        ...     "segnet", num_classes=2, input_shape=s, stage_filters=(4,) * 5),
        ...     [(32, 32, 3), (40, 24, 3)], num_classes=2)   # doctest: +SKIP
    """
    import keras

    results = []
    for position, input_shape in enumerate(input_shapes):
        height, width, channels = input_shape
        model = model_fn(tuple(input_shape))
        name = getattr(model, "name", type(model).__name__)
        where = f"{name} at {tuple(input_shape)}"
        _check(isinstance(model, keras.Model), f"{where}: model_fn returned {type(model)}")
        images, labels = synthetic_batch(
            batch_size, height, width, num_classes, channels, seed=position
        )
        declared = (
            tuple(model.output_shape)
            if not isinstance(model.output_shape, list)
            else tuple(model.output_shape[0])
        )
        _check(
            len(declared) == 4
            and declared[-1] == num_classes
            and all(d is None or d == s for d, s in zip(declared[1:3], (height, width))),
            f"{where}: symbolic output shape {declared} is not [B, {height}, {width}, "
            f"{num_classes}]",
        )
        eager = _first(model(images, training=False))
        _check(
            str(eager.dtype) == "float32" or getattr(eager.dtype, "name", "") == "float32",
            f"{where}: logits dtype is {eager.dtype}, expected float32",
        )
        eager = _to_numpy(eager)
        _check(
            eager.shape == (batch_size, height, width, num_classes),
            f"{where}: logits shape {eager.shape}, expected "
            f"{(batch_size, height, width, num_classes)}",
        )
        _check(np.all(np.isfinite(eager)), f"{where}: logits are not finite")
        result = {"model": model, "images": images, "labels": labels, "logits": eager}
        if position == 0:
            assert_inference_paths_agree(model, images, atol=atol)
            rounded = images.round()
            as_float = _to_numpy(_first(model(rounded, training=False)))
            for dtype in ("uint8", "float64"):
                typed = _to_numpy(_first(model(rounded.astype(dtype), training=False)))
                np.testing.assert_allclose(
                    typed,
                    as_float,
                    atol=atol,
                    rtol=atol,
                    err_msg=f"{where}: {dtype} images give other logits",
                )
        if position == 0 and train_steps:
            result["losses"] = assert_training_reduces_loss(
                model,
                images,
                labels,
                steps=train_steps,
                learning_rate=learning_rate,
                loss=loss,
                use_fit=use_fit,
                max_ratio=1.0,
            )
        if position == 0 and round_trip:
            # a tuple saved to a .keras file comes back as a list: compare configs as JSON
            assert_keras_round_trip(model, images, tmp_dir=tmp_dir, exact_config=False)
        results.append(result)
    return results


def _outputs(outputs):
    if isinstance(outputs, dict):
        return list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _name(model):
    return getattr(model, "name", type(model).__name__)


def assert_inference_paths_agree(model, images, atol=1e-4):
    """``model(x)``, ``model(x, training=False)`` and ``model.predict(x)`` give the same outputs.

    The two eager calls run the same ops and must agree to ``min(atol, 1e-5)``; ``predict`` runs
    a compiled graph and must agree to ``atol``. Every output of a multi-output model is compared.

    Args:
        model: a ``keras.Model``.
        images: the input batch.
        atol: tolerance (absolute and relative) for ``predict``.

    Returns:
        The eager ``training=False`` output as numpy (the first one for several outputs).

    Example:
        >>> import keras
        >>> inputs = keras.Input((8, 8, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
        >>> images, _ = synthetic_batch(2, 8, 8, num_classes=2)
        >>> assert_inference_paths_agree(model, images).shape
        (2, 8, 8, 2)
    """
    where = _name(model)
    inference = [_to_numpy(t) for t in _outputs(model(images, training=False))]
    direct = [_to_numpy(t) for t in _outputs(model(images))]
    predicted = [np.asarray(t) for t in _outputs(model.predict(images, verbose=0))]
    eager_atol = min(atol, 1e-5)
    for index, (call, graph, reference) in enumerate(zip(direct, predicted, inference)):
        np.testing.assert_allclose(
            call,
            reference,
            atol=eager_atol,
            rtol=eager_atol,
            err_msg=f"{where}: output {index} of model(x) differs from training=False",
        )
        np.testing.assert_allclose(
            graph,
            reference,
            atol=atol,
            rtol=atol,
            err_msg=f"{where}: output {index} of predict() differs from the eager call",
        )
    return inference[0]


def _output_weights(model, count):
    weights = getattr(model, "loss_weights_for_outputs", None)
    if weights is None:
        return [1.0] * count
    return list(weights)


def _total_loss(loss, labels, outputs, weights):
    """The loss of a single output, or the weighted sum over all outputs on the same labels."""
    if not isinstance(outputs, (list, tuple)):
        return loss(labels, outputs)
    return sum(w * loss(labels, out) for w, out in zip(weights, outputs))


def assert_training_reduces_loss(
    model,
    images,
    labels,
    steps=8,
    learning_rate=1e-3,
    loss=None,
    loss_weights=None,
    use_fit=True,
    max_ratio=0.9,
):
    """``steps`` Adam updates on one fixed batch bring the training loss below ``max_ratio``
    times its first value, and every trainable weight receives a gradient.

    With several outputs (auxiliary heads) each output gets ``loss`` on the same labels, weighted
    by ``loss_weights`` (default: the model's ``loss_weights_for_outputs`` when it has that
    attribute, else 1 each).

    Args:
        model: a ``keras.Model``.
        images, labels: the batch (labels sparse ``[B, H', W']`` matching the output size).
        steps: the number of optimiser updates.
        learning_rate: Adam's learning rate.
        loss: the loss (default sparse cross-entropy from logits).
        loss_weights: one weight per output.
        use_fit: train through ``compile``/``train_on_batch`` (traces the training graph, as
            ``fit`` does); ``False`` takes eager ``GradientTape`` steps (faster on small inputs)
            and also checks that no trainable weight is left without a gradient.
        max_ratio: the final loss must be below ``max_ratio * losses[0]``.

    Returns:
        The ``steps + 1`` training losses: before each update, then after the last.

    Example:
        >>> import keras
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Rescaling(1 / 255)(inputs)
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))
        >>> images, labels = synthetic_batch(2, 8, 8, num_classes=2)
        >>> losses = assert_training_reduces_loss(model, images, labels, steps=3,
        ...                                       learning_rate=0.1, use_fit=False)
        >>> len(losses)
        4
    """
    import keras
    import tensorflow as tf

    where = _name(model)
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam(learning_rate)
    count = len(model.outputs)
    weights = list(loss_weights) if loss_weights is not None else _output_weights(model, count)
    if use_fit:
        model.compile(
            optimizer=optimizer,
            loss=[loss] * count if count > 1 else loss,
            loss_weights=weights if count > 1 else None,
        )
        targets = tuple([labels] * count) if count > 1 else labels
        # steps + 1 calls: the last returns the loss after `steps` updates
        losses = [
            float(np.asarray(_first(model.train_on_batch(images, targets))))
            for _ in range(steps + 1)
        ]
    else:
        # Eager steps: the same updates as fit() without tracing a training graph, which
        # dominates the time of a check on small inputs.
        images_t, labels_t = tf.constant(images), tf.constant(labels)
        losses = []
        for step in range(steps + 1):
            with tf.GradientTape() as tape:
                outputs = model(images_t, training=True)
                value = _total_loss(loss, labels_t, outputs, weights)
                if model.losses:
                    value = value + tf.add_n(model.losses)
            losses.append(float(value))
            if step < steps:
                grads = tape.gradient(value, model.trainable_weights)
                missing = [w.path for w, g in zip(model.trainable_weights, grads) if g is None]
                _check(not missing, f"{where}: no gradient reaches {missing[:5]}")
                optimizer.apply_gradients(zip(grads, model.trainable_weights))
    _check(np.all(np.isfinite(losses)), f"{where}: training losses are not finite: {losses}")
    _check(
        losses[-1] < max_ratio * losses[0],
        f"{where}: {steps} training steps did not bring the loss down to {max_ratio} x its "
        f"first value: {losses}",
    )
    return losses


def _as_json(config):
    return json.loads(json.dumps(config, default=repr, sort_keys=True))


def assert_keras_round_trip(model, images, path=None, *, tmp_dir=None, exact_config=True):
    """Saving ``model`` to ``.keras`` and loading it restores the class, the config and
    identical outputs (every output, ``training=False``).

    Args:
        model: a ``keras.Model``.
        images: the input batch to compare outputs on.
        path: where to save the ``.keras`` file (default: a temporary directory under
            ``tmp_dir``, removed afterwards).
        tmp_dir: parent of that temporary directory.
        exact_config: compare configs with ``==``; ``False`` compares them as JSON, where a
            tuple and a list of the same items are equal.

    Returns:
        The loaded model.

    Example:
        >>> import keras
        >>> inputs = keras.Input((8, 8, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
        >>> images, _ = synthetic_batch(1, 8, 8, num_classes=2)
        >>> loaded = assert_keras_round_trip(model, images, exact_config=False)
        >>> type(loaded).__name__
        'Functional'
    """
    import keras

    where = _name(model)
    if path is None:
        with tempfile.TemporaryDirectory(dir=tmp_dir) as directory:
            return assert_keras_round_trip(
                model, images, os.path.join(directory, "model.keras"), exact_config=exact_config
            )
    model.save(path)
    loaded = keras.saving.load_model(path)
    _check(
        type(loaded) is type(model),
        f"{where}: .keras round-trip gave {type(loaded).__name__}, not {type(model).__name__}",
    )
    before, after = model.get_config(), loaded.get_config()
    same = before == after if exact_config else _as_json(before) == _as_json(after)
    _check(same, f"{where}: config changed in the .keras round-trip:\n{before}\n{after}")
    ours = _outputs(loaded(images, training=False))
    theirs = _outputs(model(images, training=False))
    _check(
        len(ours) == len(theirs),
        f"{where}: {len(theirs)} outputs before the .keras round-trip, {len(ours)} after",
    )
    for index, (got, want) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(
            _to_numpy(got),
            _to_numpy(want),
            err_msg=f"{where}: output {index} changed in the .keras round-trip",
        )
    return loaded


def check_layer(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output=None,
    atol=1e-6,
    check_training=True,
    check_dtypes=True,
    tmp_dir=None,
    input_shapes=None,
):
    """Runs the layer contract on ``layer_cls(**init_kwargs)`` called on ``input_data``.

    Checks: ``from_config(get_config())`` gives the same config; the eager output matches
    ``expected_output`` (when given); a symbolic call gives the eager shapes and dtypes and
    agrees with ``compute_output_shape``; a functional model around it predicts (graph mode)
    the eager output and survives a ``.keras`` round-trip; gradients reach every trainable
    weight and are finite; built with ``dtype="float64"`` and ``"mixed_float16"`` its floating
    outputs have the compute dtype. With ``input_shapes`` holding ``None`` sizes, the symbolic
    call, ``compute_output_shape`` and the graph-mode model run with those sizes unknown.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_data: an array or a list of arrays (first axis the batch).
        expected_output: optional reference for the eager output (array or list).
        atol: tolerance for the comparisons.
        check_training: switch the gradient check off for layers it does not apply to.
        check_dtypes: ``True`` checks the policies ``"float64"`` and ``"mixed_float16"``,
            ``False`` none; a sequence names the policies to check (e.g. ``("float64",)`` for
            a layer whose compiled op has no float16 kernel).
        tmp_dir: where to save the ``.keras`` file.
        input_shapes: the shape of each symbolic input without the batch axis, ``None`` for
            a size unknown when the model is built (e.g. ``(None, None, 3)``); default the
            shapes of ``input_data``.

    Returns:
        The eager output (numpy, or a list of numpy arrays).

    Example:
        >>> import numpy as np, keras
        >>> out = check_layer(keras.layers.Conv2D, {"filters": 2, "kernel_size": 1},
        ...                   np.ones((1, 4, 4, 3), "float32"))
        >>> out.shape
        (1, 4, 4, 2)
    """
    import keras
    import tensorflow as tf

    name = layer_cls.__name__
    multiple = isinstance(input_data, (list, tuple))
    inputs_np = [np.asarray(x) for x in (input_data if multiple else [input_data])]
    call_arg = lambda xs: list(xs) if multiple else xs[0]  # noqa: E731

    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    _check(
        layer_cls.from_config(config).get_config() == config,
        f"{name}: from_config(get_config()) changes the config",
    )

    eager = layer(call_arg([tf.constant(x) for x in inputs_np]))
    eager_list = [_to_numpy(t) for t in (eager if isinstance(eager, (list, tuple)) else [eager])]
    eager_dtypes = [
        str(getattr(t.dtype, "name", t.dtype))
        for t in (eager if isinstance(eager, (list, tuple)) else [eager])
    ]
    if expected_output is not None:
        expected = (
            expected_output if isinstance(expected_output, (list, tuple)) else [expected_output]
        )
        _check(
            len(expected) == len(eager_list),
            f"{name}: {len(eager_list)} outputs, expected {len(expected)}",
        )
        for got, want in zip(eager_list, expected):
            np.testing.assert_allclose(
                got,
                want,
                atol=atol,
                rtol=atol,
                err_msg=f"{name}: eager output differs from expected",
            )

    if input_shapes is None:
        input_shapes = [x.shape[1:] for x in inputs_np]
    elif not multiple:
        input_shapes = [input_shapes]
    _check(
        len(input_shapes) == len(inputs_np),
        f"{name}: {len(input_shapes)} input_shapes for {len(inputs_np)} inputs",
    )
    for shape, x in zip(input_shapes, inputs_np):
        _check(
            len(shape) == x.ndim - 1
            and all(d is None or d == s for d, s in zip(shape, x.shape[1:])),
            f"{name}: input_shapes entry {tuple(shape)} does not fit the data shape {x.shape}",
        )
    symbolic_inputs = [
        keras.Input(tuple(shape), dtype=str(x.dtype)) for shape, x in zip(input_shapes, inputs_np)
    ]
    fresh = layer_cls(**init_kwargs)
    symbolic = fresh(call_arg(symbolic_inputs))
    symbolic_list = list(symbolic) if isinstance(symbolic, (list, tuple)) else [symbolic]
    _check(
        len(symbolic_list) == len(eager_list),
        f"{name}: symbolic call gives {len(symbolic_list)} outputs, eager {len(eager_list)}",
    )
    for sym, got, dtype in zip(symbolic_list, eager_list, eager_dtypes):
        _check(
            all(d is None or d == s for d, s in zip(sym.shape[1:], got.shape[1:]))
            and len(sym.shape) == got.ndim,
            f"{name}: symbolic shape {sym.shape} does not fit the eager shape {got.shape}",
        )
        _check(
            str(sym.dtype) == dtype,
            f"{name}: symbolic dtype {sym.dtype} differs from the eager dtype {dtype}",
        )
    computed = fresh.compute_output_shape(
        [tuple(t.shape) for t in symbolic_inputs] if multiple else tuple(symbolic_inputs[0].shape)
    )
    computed_list = computed if isinstance(computed, list) else [computed]
    for sym, shape in zip(symbolic_list, computed_list):
        _check(
            tuple(sym.shape) == tuple(shape),
            f"{name}: compute_output_shape gives {tuple(shape)}, the symbolic call "
            f"{tuple(sym.shape)}",
        )

    model = keras.Model(symbolic_inputs, symbolic_list)
    fresh.set_weights(layer.get_weights())
    predicted = model.predict(call_arg(inputs_np), verbose=0)
    predicted = predicted if isinstance(predicted, list) else [predicted]
    for got, want in zip(predicted, eager_list):
        np.testing.assert_allclose(
            np.asarray(got),
            want,
            atol=atol,
            rtol=atol,
            err_msg=f"{name}: graph-mode output differs from eager",
        )
    with tempfile.TemporaryDirectory(dir=tmp_dir) as directory:
        path = os.path.join(directory, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    reloaded = loaded.predict(call_arg(inputs_np), verbose=0)
    reloaded = reloaded if isinstance(reloaded, list) else [reloaded]
    for got, want in zip(reloaded, predicted):
        np.testing.assert_array_equal(
            np.asarray(got),
            np.asarray(want),
            err_msg=f"{name}: .keras round-trip changes the output",
        )

    if check_training and layer.trainable_weights:
        with tf.GradientTape() as tape:
            out = layer(call_arg([tf.constant(x) for x in inputs_np]), training=True)
            outs = out if isinstance(out, (list, tuple)) else [out]
            total = tf.add_n(
                [tf.reduce_sum(tf.cast(o, tf.float32) ** 2) for o in outs if o.dtype.is_floating]
            )
        grads = tape.gradient(total, layer.trainable_weights)
        for weight, grad in zip(layer.trainable_weights, grads):
            _check(grad is not None, f"{name}: no gradient reaches weight {weight.path}")
            _check(
                np.all(np.isfinite(_to_numpy(grad))),
                f"{name}: gradient of weight {weight.path} is not finite",
            )

    if check_dtypes is True:
        check_dtypes = ("float64", "mixed_float16")
    if check_dtypes:
        for policy in check_dtypes:
            typed = layer_cls(**init_kwargs, dtype=policy)
            cast = [x.astype("float64") if x.dtype.kind == "f" else x for x in inputs_np]
            out = typed(call_arg([tf.constant(x) for x in cast]))
            for tensor in out if isinstance(out, (list, tuple)) else [out]:
                if tensor.dtype.is_floating:
                    _check(
                        tensor.dtype.name == typed.compute_dtype,
                        f"{name}: with dtype {policy!r} a float output is {tensor.dtype.name}, "
                        f"expected {typed.compute_dtype}",
                    )
    return eager_list if (multiple or len(eager_list) > 1) else eager_list[0]

"""Model profiling: parameters, multiply-adds, memory and throughput.

Multiply-adds (MAdds) are counted from the traced TensorFlow graph of ``model(x, training=False)``
at batch 1, so every convolution is found, also those inside nested models and custom layers.
The convention is the one of the MobileNet and DeepLab papers:

* convolution (incl. dilated and grouped): ``Hout * Wout * kh * kw * Cin / groups * Cout``
* depthwise convolution: ``Hout * Wout * kh * kw * Cin * depth_multiplier``
* separable convolution: its depthwise part plus its 1x1 pointwise part
* transposed convolution: ``Hin * Win * kh * kw * Cin * Cout`` (each input pixel meets the
  whole kernel)
* dense / matmul / einsum: one MAdd per multiplication (``M * K * N``)

Biases, batch normalisation, activations, pooling, resizing, element-wise ops and index
unpooling count zero; ``profile`` lists those op and layer types so nothing is dropped silently.
1 MAdd is about 2 FLOPs.

Example:
    >>> import keras, kseg
    >>> inputs = keras.Input((None, None, 3))
    >>> model = keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(inputs))
    >>> kseg.bench.profile(model, (32, 32, 3))["madds"]   # 32*32 * 3*3*3 * 8
    221184
"""

from __future__ import annotations

import math
import re
import time

import numpy as np

_CONV_OPS = ("Conv2D", "Conv3D")
_DEPTHWISE_OPS = ("DepthwiseConv2dNative",)
_TRANSPOSED_OPS = ("Conv2DBackpropInput", "Conv3DBackpropInputV2")
_MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum")
_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")
# Ops that move no data worth counting as activations (graph plumbing and weights).
_NON_ACTIVATION_OPS = ("Placeholder", "Const", "ReadVariableOp", "NoOp", "VarHandleOp")


def _check_input_shape(model, input_shape):
    if input_shape is None:
        input_shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if input_shape is None or any(d is None for d in input_shape):
        raise ValueError(
            f"input_shape must give every dimension (height, width, channels). Received: "
            f"input_shape={input_shape!r}; the model's own input is {_model_input_shape(model)!r}"
        )
    input_shape = tuple(int(d) for d in input_shape)
    if any(d <= 0 for d in input_shape):
        raise ValueError(f"input_shape must be positive. Received: input_shape={input_shape!r}")
    declared = _model_input_shape(model)
    if declared is not None:
        if len(declared) != len(input_shape) or any(
            d is not None and d != s for d, s in zip(declared, input_shape)
        ):
            raise ValueError(
                f"input_shape {input_shape!r} does not fit the model's input shape {declared!r}"
            )
    return input_shape


def _model_input_shape(model):
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return tuple(inputs[0].shape[1:])


def _trace(model, input_shape, dtype="float32"):
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    return fn.get_concrete_function(tf.TensorSpec((1,) + tuple(input_shape), dtype))


def _num(shape):
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    if dims is None or any(d is None for d in dims):
        return None
    return math.prod(dims)


def _conv_output_elements(op):
    # A dilated convolution is traced as SpaceToBatchND -> Conv2D -> BatchToSpaceND; the Conv2D
    # output there includes the padding of the space-to-batch step, the BatchToSpaceND output not.
    out = op.outputs[0]
    for consumer in out.consumers():
        if consumer.type == "BatchToSpaceND":
            return _num(consumer.outputs[0].shape)
    return _num(out.shape)


def _op_madds(op):
    """MAdds of one graph op, or None when the op is not a counted kind."""
    t = op.type
    if t in _CONV_OPS:
        kernel = op.inputs[1].shape.as_list()  # [kh, kw, Cin / groups, Cout]
        out = _conv_output_elements(op)
        if out is None:
            return None
        return out * math.prod(kernel[:-1])
    if t in _DEPTHWISE_OPS:
        kernel = op.inputs[1].shape.as_list()  # [kh, kw, Cin, multiplier]
        out = _conv_output_elements(op)
        if out is None:
            return None
        return out * kernel[0] * kernel[1]
    if t in _TRANSPOSED_OPS:
        kernel = op.inputs[1].shape.as_list()  # [kh, kw, Cout, Cin]
        inp = _num(op.inputs[2].shape)
        if inp is None:
            return None
        return inp * math.prod(kernel[:-2]) * kernel[-2]
    if t in ("MatMul",):
        a, b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
        m = a[1] if op.get_attr("transpose_a") else a[0]
        k = a[0] if op.get_attr("transpose_a") else a[1]
        n = b[0] if op.get_attr("transpose_b") else b[1]
        return m * k * n
    if t in _MATMUL_OPS:
        # Batched matmul/einsum: every output element is a K-long dot product.
        out = _num(op.outputs[0].shape)
        a_elems = _num(op.inputs[0].shape)
        b_elems = _num(op.inputs[1].shape)
        if None in (out, a_elems, b_elems):
            return None
        # K = sqrt(a * b / out) when the batch dims match (M*K * K*N / (M*N) = K^2).
        k = round(math.sqrt(a_elems * b_elems / out)) if out else 0
        return out * k
    return None


def _walk_graph(graph, prefix, visit):
    for op in graph.get_operations():
        if op.type in _CALL_OPS:
            fn = graph._get_function(op.get_attr("f").name)
            if fn is not None:
                _walk_graph(fn.graph, prefix + op.name + "/", visit)
                continue
        visit(op, prefix + op.name)


def _strip_suffix(name):
    return re.sub(r"_\d+$", "", name)


def _leaf_layers(model):
    layers = []
    stack = list(getattr(model, "layers", []))
    seen = set()
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        children = list(getattr(layer, "_layers", []) or [])
        if children:
            stack.extend(children)
        else:
            layers.append(layer)
    return layers


def _activation_peak_bytes(graph):
    """Peak bytes of live intermediate tensors when ops run in graph order, each tensor freed
    after its last consumer (an inference-time estimate; weights are not included)."""
    ops = [op for op in graph.get_operations()]
    order = {op.name: i for i, op in enumerate(ops)}
    live = 0
    peak = 0
    release_at: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        if op.type in _NON_ACTIVATION_OPS and op.type != "Placeholder":
            continue
        for out in op.outputs:
            n = _num(out.shape)
            if n is None or out.dtype.name in ("resource", "variant", "string"):
                continue
            nbytes = n * out.dtype.size
            last = max([order[c.name] for c in out.consumers()] + [i])
            live += nbytes
            release_at.setdefault(last, []).append(nbytes)
        peak = max(peak, live)
        for nbytes in release_at.pop(i, []):
            live -= nbytes
    return peak


def tflite_activation_traffic(path_or_content):
    """Bytes of activations the ops of a ``.tflite`` model read and write, per op type.

    Every op reads its non-constant inputs and writes its outputs once: the sum is the memory
    traffic a run needs besides the weights, whatever the MAdds. A network of thin layers and
    element-wise ops (PReLUs, adds, batch norms after concatenations) moves many bytes per
    multiply-add, and on a CPU such ops run at memory speed, which is why a model can be slow
    for its MAdds without any op converting badly.

    Returns:
        dict: ``total_bytes``, ``by_op`` (``{op name: bytes}``, largest first) and
        ``weight_bytes`` (the constant tensors, read once).

    Example:
        >>> import keras, kseg
        >>> inputs = keras.Input((8, 8, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(inputs))
        >>> path = kseg.export.tflite(model, "/tmp/conv.tflite")  # doctest: +SKIP
        >>> kseg.bench.tflite_activation_traffic(path)["total_bytes"]  # doctest: +SKIP
        1280
    """
    import tensorflow as tf

    source = (
        {"model_content": bytes(path_or_content)}
        if isinstance(path_or_content, (bytes, bytearray))
        else {"model_path": str(path_or_content)}
    )
    # without XNNPACK: the graph's own ops, not the delegate's partitions
    interpreter = tf.lite.Interpreter(
        **source,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    ops = interpreter._get_ops_details()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    produced = {int(t) for op in ops for t in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}

    def size(index):
        detail = tensors[int(index)]
        return int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize

    by_op: dict[str, int] = {}
    constants: set[int] = set()
    for op in ops:
        moved = 0
        for t in op["inputs"]:
            t = int(t)
            if t < 0:  # an optional input left out
                continue
            if t in produced or t in graph_inputs:
                moved += size(t)
            else:
                constants.add(t)
        moved += sum(size(t) for t in op["outputs"])
        by_op[op["op_name"]] = by_op.get(op["op_name"], 0) + moved
    return {
        "total_bytes": int(sum(by_op.values())),
        "by_op": dict(sorted(by_op.items(), key=lambda item: -item[1])),
        "weight_bytes": int(sum(size(t) for t in constants)),
    }


def profile(
    model,
    input_shape=None,
    dtype="float32",
    *,
    latency=False,
    tflite=("float32", "int8"),
    threads=2,
    representative_data=None,
    agreement_data=None,
    runs=10,
    warmup=2,
    int8_io=None,
):
    """Counts parameters, multiply-adds and memory of ``model`` for one image of ``input_shape``;
    with ``latency=True`` also times it in Keras and TFLite (see ``measure_latency``).

    Args:
        model: a built Keras model taking one image tensor ``[B, H, W, C]``.
        input_shape: ``(H, W, C)``; may be omitted when the model's input shape is fully known.
            Dimensions the model fixes must agree.
        dtype: dtype of the traced input.

    Returns:
        A dict with
        ``params``, ``trainable_params``, ``non_trainable_params``;
        ``madds`` (multiply-adds per image, convention in the module docstring);
        ``madds_by_op`` (op type -> MAdds);
        ``zero_madds_layer_types`` (sorted layer class names that contributed no MAdds,
        e.g. ``BatchNormalization``, ``MaxPooling2D``);
        ``uncounted_op_types`` (compute op types present in the graph and counted as zero);
        ``weight_bytes`` (all weights, in their storage dtype),
        ``activation_bytes`` (estimated inference peak of live intermediate tensors at batch 1,
        ops run in graph order, each tensor freed after its last use) and
        ``memory_bytes`` = ``weight_bytes + activation_bytes``.
        With ``latency=True``, the fields of ``measure_latency`` (``latency_ms``,
        ``int8_agreement``, ``peak_rss_bytes``, ...), given ``tflite``, ``threads``,
        ``representative_data``, ``agreement_data``, ``runs``, ``warmup`` and ``int8_io``.

    Example:
        >>> import keras, kseg
        >>> inputs = keras.Input((16, 16, 4))
        >>> x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
        >>> x = keras.layers.BatchNormalization()(x)
        >>> info = kseg.bench.profile(keras.Model(inputs, x))
        >>> info["madds"], info["params"], info["zero_madds_layer_types"]
        (73728, 328, ['BatchNormalization'])
    """
    if not hasattr(model, "count_params"):
        raise TypeError(
            f"model must be a Keras model, Received: model of type {type(model).__name__}"
        )
    input_shape = _check_input_shape(model, input_shape)
    concrete = _trace(model, input_shape, dtype)

    madds_by_op: dict[str, int] = {}
    counted_scopes: list[str] = []
    uncounted: set[str] = set()
    unknown_shapes: list[str] = []

    def visit(op, full_name):
        madds = _op_madds(op)
        if madds is None:
            if op.type in _CONV_OPS + _DEPTHWISE_OPS + _TRANSPOSED_OPS + _MATMUL_OPS:
                unknown_shapes.append(full_name)
            elif op.type not in _NON_ACTIVATION_OPS + (
                "Identity",
                "IdentityN",
                "Shape",
                "Pack",
                "StridedSlice",
                "Reshape",
                "Squeeze",
                "ExpandDims",
                "Cast",
            ):
                uncounted.add(op.type)
            return
        madds_by_op[op.type] = madds_by_op.get(op.type, 0) + int(madds)
        counted_scopes.append(full_name)

    _walk_graph(concrete.graph, "", visit)
    if unknown_shapes:
        raise ValueError(
            f"cannot count multiply-adds of {unknown_shapes[:3]}: their shapes are not static at "
            f"input_shape {input_shape!r}"
        )

    scope_parts = set()
    for name in counted_scopes:
        scope_parts.update(_strip_suffix(part) for part in name.split("/"))
    zero_types = sorted(
        {type(layer).__name__ for layer in _leaf_layers(model)}
        - {"InputLayer"}
        - {type(layer).__name__ for layer in _leaf_layers(model) if layer.name in scope_parts}
    )

    params = int(sum(math.prod(w.shape) for w in model.weights))
    trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
    weight_bytes = int(sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))
    activation_bytes = int(_activation_peak_bytes(concrete.graph))
    timings = (
        measure_latency(
            model,
            input_shape,
            tflite=tflite,
            threads=threads,
            representative_data=representative_data,
            agreement_data=agreement_data,
            runs=runs,
            warmup=warmup,
            int8_io=int8_io,
        )
        if latency
        else {}
    )
    return {
        "input_shape": input_shape,
        "params": params,
        "trainable_params": trainable,
        "non_trainable_params": params - trainable,
        "madds": int(sum(madds_by_op.values())),
        "madds_by_op": madds_by_op,
        "zero_madds_layer_types": zero_types,
        "uncounted_op_types": sorted(uncounted),
        "weight_bytes": weight_bytes,
        "activation_bytes": activation_bytes,
        "memory_bytes": weight_bytes + activation_bytes,
        **timings,
    }


# The timer of every latency measurement (a test can substitute a fake clock).
_clock = time.perf_counter
TFLITE_MODES = ("float32", "int8")


def _median_ms(run, runs, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = _clock()
        run()
        times.append(_clock() - start)
    return float(np.median(times) * 1000.0)


def _peak_rss_bytes():
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _first(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _scene_images(count, input_shape, seed):
    from kseg.data.synthetic import synthetic_numpy

    images, _ = synthetic_numpy(count, image_size=tuple(input_shape[:2]), seed=seed)
    if input_shape[2] != 3:
        images = np.repeat(images.mean(axis=-1, keepdims=True), input_shape[2], axis=-1)
    return images


def tflite_undelegated_ops(path_or_content, num_threads=2):
    """Ops of a ``.tflite`` model that TFLite's default XNNPACK delegate does not take.

    The interpreter (XNNPACK applied at ``allocate_tensors``) lists the original ops beside one
    ``DELEGATE`` node per partition; an op is left to TFLite's own kernels when none of its
    outputs leaves a partition and every output feeds a partition, a graph output or another
    such op. Those ops run outside XNNPACK, often much slower, and split the graph.

    Returns:
        ``(counts, partitions)``: ``{op name: how many}`` of the ops left out, and the number
        of XNNPACK partitions (1 when XNNPACK runs the whole graph).

    Example:
        >>> import keras, kseg
        >>> inputs = keras.Input((8, 8, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
        >>> path = kseg.export.tflite(model, "/tmp/conv.tflite")  # doctest: +SKIP
        >>> kseg.bench.tflite_undelegated_ops(path)  # doctest: +SKIP
        ({}, 1)
    """
    from collections import Counter

    from kseg import export

    interpreter = export.tflite_interpreter(path_or_content, num_threads=num_threads)
    interpreter.allocate_tensors()
    details = interpreter._get_ops_details()
    delegates = [op for op in details if op["op_name"] == "DELEGATE"]
    ops = [op for op in details if op["op_name"] != "DELEGATE"]
    delegate_inputs = {t for op in delegates for t in op["inputs"]}
    delegate_outputs = {t for op in delegates for t in op["outputs"]}
    graph_outputs = {d["index"] for d in interpreter.get_output_details()}
    consumers: dict[int, list[int]] = {}
    for op in ops:
        for t in op["inputs"]:
            consumers.setdefault(int(t), []).append(op["index"])
    left_out: set[int] = set()
    for op in reversed(ops):  # the ops are in execution order: consumers come later
        outputs = [int(t) for t in op["outputs"]]
        if any(t in delegate_outputs for t in outputs):
            continue
        if all(
            t in delegate_inputs
            or t in graph_outputs
            or any(c in left_out for c in consumers.get(t, ()))
            for t in outputs
        ):
            left_out.add(op["index"])
    names = {op["index"]: op["op_name"] for op in ops}
    return dict(Counter(names[i] for i in sorted(left_out))), len(delegates)


def measure_latency(
    model,
    input_shape=None,
    *,
    tflite=TFLITE_MODES,
    threads=2,
    representative_data=None,
    agreement_data=None,
    runs=10,
    warmup=2,
    seed=0,
    int8_io=None,
):
    """Times one image through ``model`` in Keras and in TFLite; checks int8 against float32.

    Keras: ``model.predict_on_batch`` on one image, ``warmup`` untimed calls, then the median
    of ``runs`` timed calls. TFLite: the model converted by ``kseg.export.tflite`` (built-in
    ops only) for each mode in ``tflite`` ("float32"; "int8" = full-integer, calibrated on
    ``representative_data``), run by the TFLite interpreter with its default XNNPACK delegate
    on ``threads`` threads, timed the same way (``invoke``). The int8 model's argmax is
    compared with the float32 model's (TFLite float32 when converted, else Keras) on
    ``agreement_data``, images other than the calibration ones.

    Args:
        model: a Keras segmentation model taking one image tensor.
        input_shape: ``(H, W, C)``; may be omitted when the model's input shape is known.
        tflite: TFLite modes to time, a subset of ``("float32", "int8")``; ``()`` for none.
        threads: interpreter threads (XNNPACK).
        representative_data: int8 calibration images ``[N, H, W, C]`` (or anything
            ``kseg.export.tflite`` takes); default 8 synthetic scenes (``kseg.data.synthetic``,
            seed 0).
        agreement_data: images for the int8/float32 agreement; default 4 synthetic scenes of
            seed 1 (other scenes than the calibration ones).
        runs, warmup: timed and untimed calls.
        seed: seed of the random timing input.
        int8_io: None (the int8 model takes and returns float32, converted at its edges) or
            "uint8" / "int8": integer input and output, as a camera frame arrives on a phone
            (see ``kseg.export.tflite``'s ``io_dtype``). At 512x1024 the float edges cost as
            much in int8 as in float32 (the output alone is 10 M values for 19 classes), which
            hides the int8 speed-up of a cheap network.

    Returns:
        dict: ``latency_ms`` (``{"keras": ms, "tflite_float32": ms, "tflite_int8": ms}``, a
        mode that failed to convert maps to None), ``tflite_errors`` (mode -> message),
        ``tflite_bytes`` (mode -> flatbuffer size), ``tflite_undelegated`` (mode -> the ops
        XNNPACK does not run, ``tflite_undelegated_ops``), ``int8_agreement`` (fraction of pixels,
        or None), ``tflite_activation_bytes`` (mode -> ``tflite_activation_traffic``'s total),
        ``int8_io``, ``threads``, ``runs`` and ``peak_rss_bytes`` (the process's peak resident
        memory after the runs, a high-water mark: measure one model per process to read it
        as that model's).

    Example:
        >>> import keras, kseg
        >>> inputs = keras.Input((32, 32, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(inputs))
        >>> info = kseg.bench.measure_latency(model, tflite=(), runs=2, warmup=1)
        >>> sorted(info["latency_ms"])
        ['keras']
    """
    import os
    import tempfile

    from kseg import export

    tflite = tuple(tflite or ())
    unknown = [mode for mode in tflite if mode not in TFLITE_MODES]
    if unknown:
        raise ValueError(f"tflite modes must be in {TFLITE_MODES}, received {tflite!r}")
    for name, value, low in (("runs", runs, 1), ("warmup", warmup, 0), ("threads", threads, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, received {value!r}")
    if int8_io not in (None, "uint8", "int8"):
        raise ValueError(f'int8_io must be None, "uint8" or "int8". Received: int8_io={int8_io!r}')
    input_shape = _check_input_shape(model, input_shape)
    image = np.random.default_rng(seed).uniform(0, 255, (1,) + input_shape).astype("float32")

    latency = {"keras": _median_ms(lambda: model.predict_on_batch(image), runs, warmup)}
    errors, sizes, outputs, undelegated, traffic = {}, {}, {}, {}, {}
    if "int8" in tflite and representative_data is None:
        representative_data = _scene_images(8, input_shape, seed=0)
    if agreement_data is None and "int8" in tflite:
        agreement_data = _scene_images(4, input_shape, seed=1)
    with tempfile.TemporaryDirectory() as folder:
        for mode in tflite:
            path = os.path.join(folder, f"model_{mode}.tflite")
            try:
                export.tflite(
                    model,
                    path,
                    quantize=None if mode == "float32" else mode,
                    representative_data=representative_data if mode == "int8" else None,
                    input_shape=input_shape,
                    io_dtype=int8_io if mode == "int8" else None,
                )
            except ValueError as error:
                latency[f"tflite_{mode}"] = None
                errors[mode] = str(error)
                continue
            sizes[mode] = os.path.getsize(path)
            undelegated[mode] = tflite_undelegated_ops(path, num_threads=threads)[0]
            traffic[mode] = tflite_activation_traffic(path)["total_bytes"]
            interpreter = export.tflite_interpreter(path, num_threads=threads)
            interpreter.allocate_tensors()
            detail = interpreter.get_input_details()[0]
            interpreter.set_tensor(detail["index"], export._to_input(image, detail))
            latency[f"tflite_{mode}"] = _median_ms(interpreter.invoke, runs, warmup)
            if agreement_data is not None and "int8" in tflite:
                outputs[mode] = export.run_tflite(path, agreement_data, num_threads=threads)
    agreement = None
    if "int8" in outputs:
        reference = outputs.get("float32")
        if reference is None:
            reference = np.asarray(_first(model.predict(agreement_data, verbose=0)))
        agreement = float(np.mean(outputs["int8"].argmax(-1) == reference.argmax(-1)))
    return {
        "latency_ms": latency,
        "tflite_errors": errors,
        "tflite_bytes": sizes,
        "tflite_undelegated": undelegated,
        "int8_agreement": agreement,
        "tflite_activation_bytes": traffic,
        "int8_io": int8_io,
        "threads": int(threads),
        "runs": int(runs),
        "peak_rss_bytes": _peak_rss_bytes(),
    }


def fps(model, input_shape=None, batch=1, warmup=2, runs=10, seed=0):
    """Measures inference throughput of ``model(x, training=False)`` in images per second.

    The call is wrapped in one ``tf.function``; ``warmup`` calls (tracing included) are not
    timed, then the median of ``runs`` timed calls gives ``batch / median_seconds``.

    Example:
        >>> import keras, kseg
        >>> inputs = keras.Input((64, 64, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
        >>> kseg.bench.fps(model, batch=2, warmup=1, runs=3) > 0
        True
    """
    import tensorflow as tf

    for name, value, low in (("batch", batch, 1), ("warmup", warmup, 0), ("runs", runs, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}. Received: {name}={value!r}")
    input_shape = _check_input_shape(model, input_shape)
    images = tf.constant(
        np.random.default_rng(seed).uniform(0, 255, (batch,) + input_shape).astype("float32")
    )
    fn = tf.function(lambda x: model(x, training=False))
    for _ in range(warmup):
        _ = np.asarray(fn(images))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = fn(images)
        _ = np.asarray(out if not isinstance(out, (list, tuple, dict)) else tf.nest.flatten(out)[0])
        times.append(time.perf_counter() - start)
    return float(batch / np.median(times))


def zoo_rows(models=None, input_shape=(512, 512, 3), num_classes=21, model_kwargs=None):
    """Profiles registered models; returns one dict per model (name plus ``profile`` fields).

    Args:
        models: model names (default: every semantic model, ``kseg.models.names("semantic")``).
        input_shape: ``(H, W, C)`` each model is built and profiled at.
        num_classes: number of classes each model is built with.
        model_kwargs: optional ``{name: {kwarg: value}}`` passed to ``kseg.models.create``.

    Example:
        >>> import kseg
        >>> rows = kseg.bench.zoo_rows(["segnet"], input_shape=(64, 64, 3))
        >>> rows[0]["name"], rows[0]["params"] > 0
        ('segnet', True)
    """
    import keras

    from kseg import models as model_zoo

    names = model_zoo.names(task="semantic") if models is None else list(models)
    model_kwargs = dict(model_kwargs or {})
    rows = []
    for name in names:
        shape = tuple(input_shape)
        if getattr(model_zoo.MODELS.get(name), "image_pair", False):
            shape = (*shape[:2], 2 * shape[2])  # change detection: two images stacked
        kwargs = {"num_classes": num_classes, "input_shape": shape}
        kwargs.update(model_kwargs.get(name, {}))
        model = model_zoo.create(name, **kwargs)
        info = profile(model, shape)
        rows.append({"name": name, **info})
        del model
        keras.backend.clear_session()
    return rows


def format_rows(rows):
    """Formats ``zoo_rows`` output as a Markdown table (params in millions, MAdds in billions).

    Example:
        >>> import kseg
        >>> print(kseg.bench.format_rows([{"name": "m", "params": 1_500_000, "madds": 2e9,
        ...                                 "memory_bytes": 3 * 2**20, "input_shape": (8, 8, 3)}]))
        | model | input | params (M) | MAdds (B) | memory (MiB) |
        |---|---|---:|---:|---:|
        | m | 8x8x3 | 1.50 | 2.00 | 3.0 |
    """
    lines = [
        "| model | input | params (M) | MAdds (B) | memory (MiB) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        shape = "x".join(str(d) for d in row["input_shape"])
        lines.append(
            f"| {row['name']} | {shape} | {row['params'] / 1e6:.2f} | {row['madds'] / 1e9:.2f} "
            f"| {row['memory_bytes'] / 2**20:.1f} |"
        )
    return "\n".join(lines)


def zoo_table(models=None, input_shape=(512, 512, 3), num_classes=21, model_kwargs=None):
    """Returns the Markdown table of params, MAdds and memory for the model zoo
    (what ``kseg bench`` prints).

    Example:
        >>> print(kseg.bench.zoo_table(["segnet"], input_shape=(64, 64, 3)))  # doctest: +SKIP
        | model | input | params (M) | MAdds (B) | memory (MiB) |
        |---|---|---:|---:|---:|
        | segnet | 64x64x3 | 29.46 | 2.51 | 123.4 |
    """
    return format_rows(zoo_rows(models, input_shape, num_classes, model_kwargs))


LATENCY_COLUMNS = (
    "model",
    "input",
    "params (M)",
    "MAdds (B)",
    "Keras ms",
    "TFLite fp32 ms",
    "TFLite int8 ms",
    "int8/fp32 agreement",
)


def latency_rows(
    models,
    input_shape=(512, 1024, 3),
    num_classes=19,
    model_kwargs=None,
    **latency_kwargs,
):
    """Profiles each named model with ``latency=True``; one dict per model (name + fields).

    Args:
        models: model names for ``kseg.models.create``.
        input_shape: ``(H, W, C)`` each model is built and timed at.
        num_classes: classes each model is built with.
        model_kwargs: optional ``{name: {kwarg: value}}`` for ``kseg.models.create``.
        **latency_kwargs: ``tflite``, ``threads``, ``runs``, ``warmup``,
            ``representative_data``, ``int8_io`` of ``profile``.

    Example:
        >>> rows = kseg.bench.latency_rows(["lraspp"], (64, 64, 3), threads=2)  # doctest: +SKIP
    """
    import keras

    from kseg import models as model_zoo

    model_kwargs = dict(model_kwargs or {})
    rows = []
    for name in models:
        kwargs = {"num_classes": num_classes, "input_shape": tuple(input_shape)}
        kwargs.update(model_kwargs.get(name, {}))
        model = model_zoo.create(name, **kwargs)
        info = profile(model, input_shape, latency=True, **latency_kwargs)
        rows.append({"name": name, **info})
        del model
        keras.backend.clear_session()
    return rows


def _ms(value):
    return "n/a" if value is None else f"{value:.1f}"


def format_latency_rows(rows):
    """Formats ``profile(..., latency=True)`` rows (with a ``name``) as a Markdown table.

    Params in millions (all weights), MAdds in billions, latencies in milliseconds (median),
    agreement in percent; "n/a" where a TFLite mode was not measured or did not convert.

    Example:
        >>> print(kseg.bench.format_latency_rows([{"name": "m", "input_shape": (8, 8, 3),
        ...     "params": 2e6, "madds": 3e9, "int8_agreement": 0.985, "latency_ms":
        ...     {"keras": 12.34, "tflite_float32": 5.0, "tflite_int8": None}}]))
        | model | input | params (M) | MAdds (B) | Keras ms | TFLite fp32 ms | TFLite int8 ms | int8/fp32 agreement |
        |---|---|---:|---:|---:|---:|---:|---:|
        | m | 8x8x3 | 2.00 | 3.00 | 12.3 | 5.0 | n/a | 98.5 % |
    """
    lines = ["| " + " | ".join(LATENCY_COLUMNS) + " |", "|---|---|" + "---:|" * 6]
    for row in rows:
        latency = row.get("latency_ms", {})
        agreement = row.get("int8_agreement")
        cells = [
            row["name"],
            "x".join(str(d) for d in row["input_shape"]),
            f"{row['params'] / 1e6:.2f}",
            f"{row['madds'] / 1e9:.2f}",
            _ms(latency.get("keras")),
            _ms(latency.get("tflite_float32")),
            _ms(latency.get("tflite_int8")),
            "n/a" if agreement is None else f"{100 * agreement:.1f} %",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""Compression side by side: quantized, magnitude-pruned and channel-pruned U-Net and SegNet.

Both models are trained once on the demo's scenes (``kseg demo``: 4000 training and 200 held-out
96x96 synthetic scenes of one seed, class-weighted cross-entropy, random flips and transposes);
the U-Net is the demo's own model when ``--unet-model`` names its ``model.keras``
(``--segnet-model``: a trained SegNet); ``--width W`` trains both with W times the filters of
every layer (U-Net ``base_filters`` 8, SegNet ``stage_filters`` 8..64). Every
variant starts from that one trained model, and every fine-tuned variant gets the same step
budget (``--finetune-steps``, the demo's loss and augmentation, AdamW with a poly schedule):

- ``float32`` / ``float16`` / ``dynamic`` / ``int8`` (full integer, calibrated on training
  scenes): post-training quantization of the trained model, no fine-tuning;
- ``float32 + FT``: the trained model fine-tuned for the budget (the fair reference for the
  fine-tuned variants);
- ``magnitude S`` (``--magnitude``; ``blocks of B``: ``block_size=B``; ``L dense``: layer ``L``
  skipped): ``kseg.compress.prune`` (polynomial schedule reaching the target at 2/3 of the
  budget) + fine-tuning, then ``strip``;
- ``channels R`` (``--channels``, each ``R[:global][:l1|l2|bn_gamma][:floor=F][:cost=P]
  [:kd|kd_plain][:slim=N[/S]][:grad=K/S][:layers=NAME]``): ``kseg.compress.prune_channels(
  ratio=R, scope=..., criterion=..., min_keep=F)`` + fine-tuning; ``layers=NAME``: the
  per-layer ratios ``LAYER_RATIOS[NAME]`` instead of R (``R`` then only names the variant);
  ``cost=P``: ranked by importance per
  multiply-add (``cost="madds", cost_power=P``; ``madds=F``: P found by bisection so that
  the cut leaves at most F of the multiply-adds); ``kd``: distilled from the unpruned trained
  model (``kseg.compress.Distiller``, ``--kd-temperature``, ``--kd-alpha``, the KL weighted by
  the hard loss's class weights; ``kd_plain``: unweighted); ``slim=N[/S]``: the first N steps
  of the budget train the unpruned model with ``kseg.compress.bn_sparsity(S)`` (default
  ``--slim-strength``) before the cut; ``grad=K/S``: gradual pruning, K cuts of R/K of the
  original filters each, S steps of fine-tuning apart, the last cut followed by the rest of
  the budget. The unpruned ``float32 + FT`` reference is fine-tuned on the labels alone (it
  would be its own teacher).

Measured per variant: held-out mIoU of the TFLite model's outputs (single pass), stripped-kernel
sparsity, TFLite size raw and ``gzip -9``, MAdds, and TFLite latency (XNNPACK, ``--threads``,
median of ``--runs`` invocations at ``--latency-size``, interleaved over ``--rounds`` rounds).
For magnitude pruning the run also gives the gzip size of the same model with its zeros' signs
randomised (-0.0 for about half, as ``w * mask`` left them before ``strip`` wrote +0.0) and the
size of TFLite's sparse tensor format (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``).

``--sensitivity`` only scans the trained models: each stage cut alone at 25/50/75 % (batch norm
recalibrated, no training; ``kseg.compress.channel_sensitivity``) and each ``LAYER_RATIOS``
allocation, with the held-out mIoU straight after the cut: where the filters can go.

Trained and fine-tuned models are kept in ``--work-dir`` and reused by a later run; only the
latency phase takes ``--lock`` (a ``flock`` file), so training never blocks other timed runs:

    python benchmarks/compression.py --unet-model kseg_runs/demo/model.keras \\
        --work-dir compression_work --models unet --output unet.json
    python benchmarks/compression.py --models unet --width 2 --train-steps 4000 \\
        --work-dir unet_w2 --channels 0.5:global:bn_gamma --output unet_w2.json
    python benchmarks/compression.py --time unet.json      # latency later, if the lock was taken
    python benchmarks/compression.py --tables unet.json segnet.json   # the RESULTS.md tables
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import math
import os
import platform
import tempfile
import time

import numpy as np

import kseg
from kseg import compress, demo, engine, export

BUILDERS = {
    "unet": ("unet", {"base_filters": 8, "depth": 4}),
    "segnet": ("segnet", {"stage_filters": (8, 16, 32, 64, 64)}),
}
NUM_CLASSES = len(kseg.data.SYNTHETIC_CLASSES)
# Per-layer ratios (``--channels R:layers=NAME``) chosen from ``--sensitivity`` scans: SegNet's
# first two stages and the encoder layers whose pooling indices the decoder unpools to (with the
# decoder convolutions sharing their channels) keep all their filters; stage 3 loses half, the
# 128-filter stages 4 and 5 three quarters. Half of all filters in all.
LAYER_RATIOS = {
    "segnet_late": {
        "block3_conv[12]": 0.5,
        "decoder3_conv[23]": 0.5,
        "block4_conv[12]": 0.75,
        "decoder4_conv[23]": 0.75,
        "block5_*": 0.75,
        "decoder5_conv[23]": 0.75,
    },
}
STAGES = {
    "segnet": {f"stage {s}": [f"block{s}_*", f"decoder{s}_*"] for s in range(1, 6)},
    "unet": {
        **{f"level {s}": [f"down{s}_*", f"up{s}_*"] for s in range(1, 5)},
        "bottom": ["bottom_*"],
    },
}


def _data(args):
    size = (args.image_size, args.image_size)
    train = demo._split_arrays("train", args.train_scenes, size, args.seed)
    val = demo._split_arrays("val", args.val_scenes, size, args.seed)
    return train, val


def _fit(model, train, steps, learning_rate, seed, callbacks=(), teacher=None, options=None):
    """The demo's training (weighted cross-entropy, flips and transposes) for ``steps`` steps;
    with ``teacher``, distilled from it (``kseg.compress.Distiller``, ``options`` its
    temperature and alpha)."""
    images, labels = train
    weights = kseg.losses.class_weights_from_frequency(
        labels, NUM_CLASSES, demo.RECIPE["class_weight_power"]
    )
    trained = model
    if teacher is not None:
        options = dict(options or {})
        if options.pop("weighted", True):  # the hard loss's class weights for the KL too
            options["class_weights"] = weights
        model = compress.Distiller(trained, teacher, **options)
    engine.compile_model(
        model,
        NUM_CLASSES,
        learning_rate=learning_rate,
        total_steps=steps,
        loss=kseg.losses.CrossEntropy(class_weights=weights),
        warmup_steps=int(demo.RECIPE["warmup_fraction"] * steps),
        metrics=[],
        steps_per_execution=demo.RECIPE["steps_per_execution"],
    )
    batches = demo._training_batches(images, labels, demo.RECIPE["batch_size"], seed).repeat()
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=list(callbacks))
    return trained


def _any_size(model):
    # The same network for inputs of any size (the demo builds it for 96x96): the latency is
    # measured at another size than the scenes'.
    config = model.get_config()
    if tuple(config.get("input_shape", ()))[:2] == (None, None):
        return model
    config["input_shape"] = (None, None, config["input_shape"][-1])
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _load(path):
    return kseg.load_model(path, compile=False)


def _save(model, path):
    model.save(path)
    return _load(path)


def _miou(logits, labels):
    cm = kseg.metrics.confusion_matrix(labels, logits.argmax(-1), NUM_CLASSES)
    return float(kseg.metrics.scores(np.asarray(cm))["mean_iou"])


def _sizes(data):
    return len(data), len(gzip.compress(data, compresslevel=9))


def _median_ms(interpreter, runs):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        samples.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(samples))


def _negative_zeros(model):
    return sum(
        int(np.signbit(v)[v == 0].sum())
        for v in (np.asarray(w) for w in model.get_weights())
        if v.dtype.kind == "f"
    )


def _signed_zero_copy(model, seed):
    # The zeros with a random sign, as ``w * mask`` left them (the pruned weights' signs).
    copy = _any_size(type(model).from_config(model.get_config()))
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        w = np.array(w)
        zeros = w == 0
        if w.dtype.kind == "f" and zeros.any():
            w[zeros] = np.where(rng.random(int(zeros.sum())) < 0.5, -0.0, 0.0)
        weights.append(w)
    copy.set_weights(weights)
    return copy


def _sparse_format(model, shape, images):
    """TFLite's sparse tensor format (EXPERIMENTAL_SPARSITY): (bytes, argmax agreement with the
    dense export on ``images``)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(
        fn.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    data = converter.convert()
    logits = _run_bytes(data, images)
    expected = np.asarray(model.predict(images, verbose=0))
    return data, float((logits.argmax(-1) == expected.argmax(-1)).mean())


def _run_bytes(data, images):
    with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
        file.write(data)
        file.flush()
        return export.run_tflite(file.name, images)


@contextlib.contextmanager
def _lock(path, timeout):
    """Holds the flock on ``path`` (None: no lock); yields False when ``timeout`` seconds
    passed without getting it."""
    if not path:
        yield True
        return
    with open(path, "a") as file:
        print(f"waiting for {path} (at most {timeout:.0f} s)", flush=True)
        deadline = time.time() + timeout
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    yield False
                    return
                time.sleep(5)
        try:
            yield True
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def time_rows(result, args):
    """Fills ``latency_ms`` of every row from its timing file, all variants interleaved."""
    rows = result["rows"]
    image = np.random.default_rng(0).uniform(0, 255, (1, args.latency_size, args.latency_size, 3))
    with _lock(args.lock, args.lock_timeout) as held:
        if not held:
            print(f"{result['model']}: no latency: {args.lock} stayed taken", flush=True)
            return result
        interpreters = {}
        for label, row in rows.items():
            interpreter = export.tflite_interpreter(row["timing_file"], num_threads=args.threads)
            interpreter.allocate_tensors()
            detail = interpreter.get_input_details()[0]
            interpreter.set_tensor(detail["index"], image.astype(detail["dtype"]))
            for _ in range(3):
                interpreter.invoke()
            interpreters[label] = interpreter
            row["latency_samples"] = []
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for label, interpreter in interpreters.items():
                rows[label]["latency_samples"].append(_median_ms(interpreter, args.runs))
        result["load_average"] = (load, os.getloadavg()[0])
    for row in rows.values():
        row["latency_ms"] = float(np.median(row["latency_samples"]))
        # Kept in the JSON: other jobs share the CPUs (only timed runs take the lock).
        row["latency_best_ms"] = float(np.min(row["latency_samples"]))
    return result


def _builder(name, width):
    """The builder and its options, every filter count multiplied by ``width``."""
    builder, options = BUILDERS[name]
    if name == "unet":
        return builder, {**options, "base_filters": round(options["base_filters"] * width)}
    return builder, {"stage_filters": tuple(round(f * width) for f in options["stage_filters"])}


def _width_label(width):
    return "" if width == 1 else f"{width:g}× the filters of every layer, "


def base_model(name, args, train, val):
    """The trained model: ``--unet-model`` for the U-Net, else trained here once (demo recipe,
    ``--train-steps``) and kept in the work folder."""
    given = {"unet": args.unet_model, "segnet": args.segnet_model}[name]
    if given:
        return _any_size(_load(given)), f"trained model {given}"
    # One file per width, so a work folder never hands back a model of another width.
    suffix = "" if args.width == 1 else f"_w{args.width:g}"
    path = os.path.join(args.work_dir, f"{name}{suffix}_trained.keras")
    if os.path.exists(path):
        return _load(path), f"{_width_label(args.width)}trained {args.train_steps} steps (kept)"
    import keras

    keras.utils.set_random_seed(args.seed)
    builder, options = _builder(name, args.width)
    model = kseg.models.create(
        builder, num_classes=NUM_CLASSES, input_shape=(None, None, 3), **options
    )
    started = time.time()
    _fit(model, train, args.train_steps, args.lr, args.seed)
    print(f"{name}: trained {args.train_steps} steps in {time.time() - started:.0f} s", flush=True)
    return _save(model, path), f"{_width_label(args.width)}trained {args.train_steps} steps"


def _magnitude_spec(spec):
    """``"S[:B[:LAYER,...]]"``: sparsity, block size (default 1), layers left dense."""
    parts = spec.split(":")
    block = int(parts[1]) if len(parts) > 1 else 1
    skip = tuple(parts[2].split(",")) if len(parts) > 2 else ()
    return float(parts[0]), block, skip


def _channel_spec(spec):
    """``"R[:global][:l1|l2|bn_gamma][:floor=F][:cost=P][:kd|kd_plain][:slim=N[/STRENGTH]]
    [:grad=K/S][:layers=NAME]"``: ratio, ``prune_channels`` options (``cost=P``: ``cost="madds"``,
    ``cost_power=P``; ``madds=F``: the power that leaves F of the MAdds), distillation (``kd``: the KL weighted per pixel by the hard loss's class
    weights; ``kd_plain``: unweighted), N steps of batch-norm sparsity training (L1 on the
    gammas, ``--slim-strength``) before the cut, taken out of the same budget, and gradual
    pruning: K cuts of R/K of the original filters each, S steps of fine-tuning apart."""
    parts = spec.split(":")
    options = {"ratio": float(parts[0]), "scope": "layer", "criterion": "l1"}
    label = f"channels {options['ratio']:.0%}"
    extra = []
    for part in parts[1:]:
        if part in ("global", "layer"):
            options["scope"] = part
        elif part in ("l1", "l2", "bn_gamma"):
            options["criterion"] = part
        elif part.startswith("floor="):
            options["min_keep"] = float(part[len("floor=") :])
        elif part in ("kd", "kd_plain"):
            options["distill"] = True
            options["kd_weighted"] = part == "kd"
        elif part.startswith("cost="):  # importance per multiply-add, to this power
            options["cost_power"] = float(part[len("cost=") :])
        elif part.startswith("madds="):  # cost-aware, the power found to leave this share
            options["madds_target"] = float(part[len("madds=") :])
        elif part.startswith("grad="):  # grad=K/S: K cuts S steps apart
            rounds, _, every = part[len("grad=") :].partition("/")
            options["rounds"], options["round_steps"] = int(rounds), int(every)
        elif part.startswith("layers="):  # a named per-layer allocation
            key = part[len("layers=") :]
            if key not in LAYER_RATIOS:
                raise ValueError(
                    f"unknown per-layer ratios {key!r} (known: {sorted(LAYER_RATIOS)}). "
                    f"Received: spec={spec!r}"
                )
            options["layer_ratios"] = key
        elif part.startswith("slim="):  # slim=N or slim=N/STRENGTH
            steps, _, strength = part[len("slim=") :].partition("/")
            options["slim_steps"] = int(steps)
            if strength:
                options["slim_strength"] = float(strength)
        else:
            raise ValueError(f"unknown channel-pruning option {part!r}. Received: spec={spec!r}")
    if options["scope"] == "global" or options["criterion"] != "l1":
        floor = options.get("min_keep", 0.1)
        extra.append(f"{options['scope']} {options['criterion']} (floor {floor:g})")
    if "layer_ratios" in options:
        extra.append(f"per layer ({options['layer_ratios']})")
    if "cost_power" in options:
        extra.append(f"per MAdd^{options['cost_power']:g}")
    if "madds_target" in options:
        extra.append(f"per MAdd to {options['madds_target']:g} of the MAdds")
    if options.get("rounds", 1) > 1:
        extra.append(f"{options['rounds']} cuts every {options['round_steps']} steps")
    if options.get("slim_steps"):
        strength = options.get("slim_strength")
        extra.append(
            f"slimmed {options['slim_steps']} steps" + (f" (λ {strength:g})" if strength else "")
        )
    if options.get("distill"):
        extra.append("distilled" if options["kd_weighted"] else "distilled (unweighted KL)")
    return label + "".join(", " + e for e in extra), options


def _copy(model):
    copy = _any_size(type(model).from_config(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def _keras_miou(model, val):
    return _miou(np.asarray(model.predict(val[0], batch_size=50, verbose=0)), val[1])


def _conv_madds(model):
    return kseg.bench.profile(model, (256, 256, 3))["madds"]


def _power_for(model, ratio, prune_options, target, original):
    """The smallest ``cost_power`` (bisection in [0, 1]) whose cut of ``model`` leaves at most
    ``target`` of ``original``'s multiply-adds (``kseg.bench.profile`` at 256x256)."""
    base = _conv_madds(original)
    options = dict(prune_options, cost="madds")
    low, high = 0.0, 1.0
    for _ in range(8):
        middle = (low + high) / 2
        narrow, _ = compress.prune_channels(model, ratio, **dict(options, cost_power=middle))
        if _conv_madds(narrow) <= target * base:
            high = middle
        else:
            low = middle
    print(f"  cost_power {high:.4f} leaves <= {target:g} of the MAdds", flush=True)
    return high


def _finetune_seed(args):
    return args.seed if args.finetune_seed is None else args.finetune_seed


def _kept_filters(model, original):
    """``{layer: filters}`` of ``model``'s layers that have fewer than in ``original``."""
    kept = {}
    for layer in original.layers:
        before = getattr(layer, "filters", None) or getattr(layer, "units", None)
        try:
            after = model.get_layer(layer.name)
        except ValueError:
            continue
        after = getattr(after, "filters", None) or getattr(after, "units", None)
        if before and after and after < before:
            kept[layer.name] = after
    return kept


def _gradual_cut(model, options, prune_options, steps, train, lr, args, teacher, distill, val=None):
    """Cuts ``options["ratio"]`` of the filters in ``rounds`` equal steps of the original filter
    count, ``round_steps`` training steps apart (each cut rebuilds the narrower model and
    fine-tunes it, distilled when ``teacher`` is set), the last cut followed by the rest of the
    ``steps``. One round: the one-shot cut then ``steps`` of fine-tuning. Returns ``(model,
    report, rounds)``, ``report`` the first cut's with the final filter counts; with ``val``,
    each round records the held-out mIoU (Keras) after its cut and after its training."""
    rounds, every = options.get("rounds", 1), options.get("round_steps", 0)
    if rounds > 1 and every * (rounds - 1) >= steps:
        raise ValueError(
            f"{rounds} cuts {every} steps apart do not fit in {steps} steps. "
            f"Received: rounds={rounds}, round_steps={every}"
        )
    layer_ratios = LAYER_RATIOS.get(options.get("layer_ratios"))
    if layer_ratios is not None and (rounds > 1 or prune_options.get("scope") == "global"):
        raise ValueError(
            "per-layer ratios are one cut of layer scope (no grad=, no global). "
            f"Received: {options}"
        )
    original, current = model, model
    total = removed = None
    prune_options = dict(prune_options)
    if prune_options.get("scope") == "global" and rounds > 1:
        # Each layer's floor counted on the unpruned model, not on the last round's.
        fraction = prune_options.get("min_keep", 0.1)
        prune_options["min_keep"] = {
            layer.name: max(1, math.ceil(fraction * n - 1e-9))
            for layer in original.layers
            if (n := getattr(layer, "filters", None) or getattr(layer, "units", None))
        }
    log = []
    per_layer = prune_options.get("scope", "layer") == "layer" and rounds > 1
    widths = {
        layer.name: n
        for layer in original.layers
        if (n := getattr(layer, "filters", None) or getattr(layer, "units", None))
    }
    for r in range(1, rounds + 1):
        if per_layer:
            # Every layer down to its own share of the schedule, as the one-shot cut at the end
            # (one ratio over the shrinking layers would round the small ones to no cut).
            target = None
            ratio = 0.999
            prune_options["min_keep"] = {
                name: n - int(math.floor(options["ratio"] * n * r / rounds + 1e-9))
                for name, n in widths.items()
            }
        elif layer_ratios is not None:
            ratio = layer_ratios
        elif total is None:
            ratio = options["ratio"] / rounds
        else:  # of the original prunable filters, cumulatively r/rounds of the target
            target = int(round(options["ratio"] * total * r / rounds))
            ratio = (target - removed) / (total - removed)
        before = current
        if "madds_target" in options and r == rounds:
            prune_options["cost_power"] = _power_for(
                before, ratio, prune_options, options["madds_target"], original
            )
            options["cost_power_found"] = prune_options["cost_power"]
        current, report = compress.prune_channels(before, ratio, **prune_options)
        if total is None:
            total, removed, first = report["filters"], 0, report
        elif target is not None and r == rounds and report["removed"] < target - removed:
            # Per-layer rounding (layer scope, floors) fell short of the target: the smallest
            # larger ratio that reaches it, by bisection.
            low, high = ratio, 0.999
            for _ in range(10):
                middle = (low + high) / 2
                trial = compress.prune_channels(before, middle, **prune_options)
                if trial[1]["removed"] >= target - removed:
                    high, ratio, (current, report) = middle, middle, trial
                else:
                    low = middle
        removed += report["removed"]
        segment = every if r < rounds else steps - every * (rounds - 1)
        log.append(
            {
                "ratio": ratio if isinstance(ratio, dict) else round(ratio, 4),
                "removed": report["removed"],
                "madds_removed": round(report["madds_removed"], 4),
                "steps": segment,
            }
        )
        if val is not None:
            log[-1]["miou_after_cut"] = round(_keras_miou(current, val), 4)
        _fit(
            current,
            train,
            segment,
            lr,
            _finetune_seed(args) + r - 1,
            teacher=teacher,
            options=distill,
        )
        if val is not None:
            log[-1]["miou_after_training"] = round(_keras_miou(current, val), 4)
        print(f"  cut {r}/{rounds}: {removed}/{total} filters removed, then {segment} steps")
        print(f"    {log[-1]}", flush=True)
    kept = _kept_filters(current, original)
    first = dict(first, removed=removed, layers={k: {"kept": v} for k, v in kept.items()})
    return current, first, log


def fine_tuned_variants(name, model, args, train, val=None):
    """``{label: (model, notes)}`` of the fine-tuned variants, each cached in the work folder."""
    folder = os.path.join(args.work_dir, name)
    os.makedirs(folder, exist_ok=True)
    import keras

    steps, lr = args.finetune_steps, args.finetune_lr
    seed = _finetune_seed(args)
    plans = [("float32 + FT", "ft", {})]
    if name in args.magnitude_models.split(","):
        for spec in args.magnitude:
            sparsity, block, skip = _magnitude_spec(spec)
            label = f"magnitude {sparsity:.0%}" + (f", blocks of {block}" if block > 1 else "")
            label += "".join(f", {layer} dense" for layer in skip)
            options = {"sparsity": sparsity, "block_size": block, "skip": skip}
            plans.append((label, "magnitude", options))
    for ratio in args.channel_ratios:
        plans.append((f"channels {ratio:.0%}", "channels", {"ratio": ratio}))
    for spec in args.channels:
        label, options = _channel_spec(spec)
        plans.append((label, "channels", options))

    variants = {}
    for label, kind, options in plans:
        stem = os.path.join(folder, label.replace(" ", "_").replace("%", "").replace(",", ""))
        if os.path.exists(stem + ".keras"):
            with open(stem + ".json") as file:
                variants[label] = (_load(stem + ".keras"), json.load(file))
            continue
        if args.fine_tune_only and (kind == "ft") != (args.fine_tune_only == "reference"):
            continue  # another process trains it into the same work folder
        started = time.time()
        # Seeded: the augmentation draws from the global seed (the shuffle from ``seed``).
        keras.utils.set_random_seed(seed)
        copy = _copy(model)
        notes = {}
        if kind == "ft":
            _fit(copy, train, steps, lr, seed)
        elif kind == "magnitude":
            end = max(8, steps * 2 // 3)
            frequency = max(8, end // 20 // 8 * 8)
            _, callback = compress.prune(
                copy,
                options["sparsity"],
                end_step=end,
                frequency=frequency,
                block_size=options["block_size"],
                skip=options["skip"],
            )
            _fit(copy, train, steps, lr, seed, [callback])
            compress.strip(copy)
            report = compress.sparsity_report(copy)
            notes = {
                "target": options["sparsity"],
                "block_size": options["block_size"],
                "sparsity": report["total"]["sparsity"],
                "layer_sparsity": {k: v["sparsity"] for k, v in report["layers"].items()},
                "negative_zeros": _negative_zeros(copy),
            }
        else:
            slim = options.get("slim_steps", 0)
            if slim:  # sparsity training of a copy, inside the budget
                compress.bn_sparsity(copy, options.get("slim_strength", args.slim_strength))
                _fit(copy, train, slim, lr, seed)
                compress.bn_sparsity(copy, 0)
            source = copy if slim else model
            prune_options = {
                k: options[k] for k in ("scope", "criterion", "min_keep") if k in options
            }
            if "cost_power" in options:
                prune_options.update(cost="madds", cost_power=options["cost_power"])
            if "madds_target" in options:
                prune_options.update(cost="madds")
            teacher = _copy(model) if options.get("distill") else None
            distill = {
                "temperature": args.kd_temperature,
                "alpha": args.kd_alpha,
                "weighted": options.get("kd_weighted", True),
            }
            copy, report, rounds = _gradual_cut(
                source, options, prune_options, steps - slim, train, lr, args, teacher, distill, val
            )
            notes = {
                "left": report["left"],
                "narrowed_layers": len(report["layers"]),
                "filters": report["filters"],
                "removed": report["removed"],
                "kept": {k: v["kept"] for k, v in report["layers"].items()},
                "options": options,
                "rounds": rounds,
            }
            if teacher is not None:
                notes["distillation"] = distill
        notes["finetune_seconds"] = round(time.time() - started)
        copy = _save(copy, stem + ".keras")
        with open(stem + ".json", "w") as file:
            json.dump(notes, file, indent=1)
        print(f"{name}: {label}: fine-tuned {steps} steps in {notes['finetune_seconds']} s")
        variants[label] = (copy, notes)
    return variants


def measure(name, args, train, val):
    model, origin = base_model(name, args, train, val)
    val_x, val_y = val
    variants = {"float32": (model, None, {})}
    for quantize in ("float16", "dynamic", "int8"):
        variants[quantize] = (model, quantize, {})
    for label, (tuned, notes) in fine_tuned_variants(name, model, args, train, val).items():
        variants[label] = (tuned, None, notes)

    size = (args.image_size, args.image_size, 3)
    latency_shape = (args.latency_size, args.latency_size, 3)
    rows = {}
    folder = os.path.join(args.work_dir, name, "tflite")
    os.makedirs(folder, exist_ok=True)
    for label, (keras_model, quantize, notes) in variants.items():
        calibration = train[0][:64] if quantize == "int8" else None
        stem = os.path.join(folder, label.replace(" ", "_").replace("%", "").replace(",", ""))
        export.tflite(
            keras_model,
            stem + ".tflite",
            quantize=quantize,
            representative_data=calibration,
            input_shape=size,
        )
        logits = export.run_tflite(stem + ".tflite", val_x, num_threads=args.threads)
        with open(stem + ".tflite", "rb") as file:
            raw, zipped = _sizes(file.read())
        row = {
            "miou": _miou(logits, val_y),
            "bytes": raw,
            "gzip_bytes": zipped,
            "madds": kseg.bench.profile(keras_model, latency_shape)["madds"],
            "params": int(keras_model.count_params()),
            **notes,
        }
        if "target" in notes:
            signed = _signed_zero_copy(keras_model, args.seed)
            export.tflite(signed, stem + "_signed.tflite", input_shape=size)
            with open(stem + "_signed.tflite", "rb") as file:
                row["gzip_bytes_signed_zeros"] = _sizes(file.read())[1]
            data, agreement = _sparse_format(keras_model, size, val_x[:8])
            row["sparse_format_bytes"], row["sparse_format_gzip_bytes"] = _sizes(data)
            row["sparse_format_agreement"] = agreement
        export.tflite(
            keras_model,
            stem + "_timing.tflite",
            quantize=quantize,
            representative_data=calibration,
            input_shape=latency_shape,
        )
        row["timing_file"] = stem + "_timing.tflite"
        rows[label] = row
        print(f"{name}: {label}: mIoU {row['miou']:.4f}, gzip {zipped / 1024:.1f} KiB", flush=True)

    result = {
        "model": name,
        "origin": origin,
        "finetune_steps": args.finetune_steps,
        "rows": rows,
    }
    return time_rows(result, args)


def sensitivity(name, args, train, val):
    """Each stage of the trained model cut alone at each ``--sensitivity-ratios`` (batch norm
    recalibrated on 20 training batches of 32, weights unchanged), then every per-layer allocation
    of ``LAYER_RATIOS`` for this model: held-out mIoU (Keras) straight after the cut."""
    model, origin = base_model(name, args, train, val)

    def evaluate(narrow):
        return _keras_miou(narrow, val)

    rows = compress.channel_sensitivity(
        model,
        evaluate,
        STAGES[name],
        ratios=args.sensitivity_ratios,
        calibration_images=train[0],
    )
    for key, ratios in LAYER_RATIOS.items():
        if not key.startswith(name):
            continue
        narrow, report = compress.prune_channels(model, ratios)
        compress.recalibrate_batch_norm(narrow, train[0])
        rows.append(
            {
                "group": f"allocation {key}",
                "ratio": ratios,
                "score": evaluate(narrow),
                "removed": report["removed"],
                "filters": report["filters"],
                "madds_removed": report["madds_removed"],  # as the stages' rows count it
            }
        )
    return {"model": name, "origin": origin, "sensitivity": rows}


def format_sensitivity(result):
    rows = result["sensitivity"]
    reference = rows[0]["score"]
    lines = [
        f"**{result['model']}** ({result['origin']}; mIoU straight after the cut, batch norm "
        "recalibrated, no training)",
        "",
        "| layers cut | ratio | filters removed (of the model's) | MAdds removed | mIoU | Δ (pts) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "–" if isinstance(row["ratio"], dict) else f"{row['ratio']:.0%}"
        lines.append(
            f"| {row['group'] or 'none (trained model)'} | {ratio} | "
            f"{row['removed']} ({row['removed'] / row['filters']:.0%}) | "
            f"{row['madds_removed']:.0%} | {row['score']:.4f} | "
            f"{100 * (row['score'] - reference):+.2f} |"
        )
    return "\n".join(lines)


def format_table(result):
    rows = result["rows"]
    base = rows["float32"]
    reference = rows.get("float32 + FT", base)
    load = result.get("load_average")
    timing = (
        f"load average {load[0]:.1f} / {load[1]:.1f} around the timing"
        if load
        else "latency not measured: the lock stayed taken"
    )
    lines = [
        f"**{result['model']}** ({result['origin']}; every fine-tuned variant "
        f"{result['finetune_steps']} steps; {timing})",
        "",
        "| variant | mIoU | Δ vs f32 (pts) | Δ vs f32+FT (pts) | sparsity | params | MAdds "
        "| MAdds vs f32 | TFLite KiB | gzip KiB | gzip vs f32 gzip | latency ms | latency vs f32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        tuned = "FT" in label or "magnitude" in label or "channels" in label
        versus_ft = f"{100 * (row['miou'] - reference['miou']):+.2f}" if tuned else ""
        sparsity = f"{row['sparsity']:.4f}" if "sparsity" in row else ""
        lines.append(
            f"| {label} | {row['miou']:.4f} | {100 * (row['miou'] - base['miou']):+.2f} | "
            f"{versus_ft} | {sparsity} | {row['params']:,} | {row['madds'] / 1e6:,.1f} M | "
            f"{row['madds'] / base['madds']:.2f}× | {row['bytes'] / 1024:,.1f} | "
            f"{row['gzip_bytes'] / 1024:,.1f} | {base['gzip_bytes'] / row['gzip_bytes']:.2f}× | "
            + (
                f"{row['latency_ms']:.2f} | {row['latency_ms'] / base['latency_ms']:.2f}× |"
                if "latency_ms" in row
                else "– | – |"
            )
        )
    extra = [(label, row) for label, row in rows.items() if "gzip_bytes_signed_zeros" in row]
    if extra:
        lines += [
            "",
            "| variant | gzip vs f32 gzip: +0.0 zeros (now) | with -0.0 zeros (before) "
            "| sparse tensor format: raw KiB | its gzip vs f32 gzip | its argmax agreement |",
            "|---|---|---|---|---|---|",
        ]
        for label, row in extra:
            lines.append(
                f"| {label} | {base['gzip_bytes'] / row['gzip_bytes']:.2f}× | "
                f"{base['gzip_bytes'] / row['gzip_bytes_signed_zeros']:.2f}× | "
                f"{row['sparse_format_bytes'] / 1024:,.1f} | "
                f"{base['gzip_bytes'] / row['sparse_format_gzip_bytes']:.2f}× | "
                f"{row['sparse_format_agreement']:.4f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="unet,segnet")
    parser.add_argument(
        "--unet-model",
        help="a trained U-Net (e.g. kseg demo's model.keras) instead of training one",
    )
    parser.add_argument("--segnet-model", help="a trained SegNet instead of training one")
    parser.add_argument("--work-dir", default="compression_work")
    parser.add_argument("--image-size", type=int, default=demo.RECIPE["image_size"][0])
    parser.add_argument("--train-scenes", type=int, default=demo.RECIPE["num_train"])
    parser.add_argument("--val-scenes", type=int, default=demo.RECIPE["num_val"])
    parser.add_argument("--train-steps", type=int, default=4000)
    parser.add_argument(
        "--width",
        type=float,
        default=1.0,
        help="multiply every layer's filters of the models trained here (U-Net base_filters 8, "
        "SegNet stage_filters 8..64) by this",
    )
    parser.add_argument("--lr", type=float, default=demo.RECIPE["learning_rate"])
    parser.add_argument("--finetune-steps", type=int, default=1000)
    parser.add_argument("--finetune-lr", type=float, default=2e-3)
    parser.add_argument(
        "--magnitude",
        nargs="+",
        default=["0.5", "0.8", "0.5:4:logits", "0.8:4:logits"],
        help="magnitude-pruned variants, each SPARSITY[:BLOCK[:LAYER,...]] (layers left dense)",
    )
    parser.add_argument("--magnitude-models", default="unet,segnet")
    parser.add_argument("--channel-ratios", type=float, nargs="+", default=[])
    parser.add_argument(
        "--channels",
        nargs="+",
        default=["0.5", "0.5:global:bn_gamma:kd"],
        help="channel-pruned variants, each R[:global][:l1|l2|bn_gamma][:floor=F][:cost=P]"
        "[:madds=F][:kd|kd_plain][:slim=N[/S]][:grad=K/S][:layers=NAME]",
    )
    parser.add_argument("--kd-temperature", type=float, default=2.0)
    parser.add_argument("--kd-alpha", type=float, default=0.5)
    parser.add_argument("--slim-strength", type=float, default=1e-4)
    parser.add_argument("--latency-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lock", default="/tmp/kseg-heavy.lock", help="flock file for timing")
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=3600,
        help="seconds to wait for --lock; then the latency is left out (--time adds it later)",
    )
    parser.add_argument(
        "--finetune-seed",
        type=int,
        help="seed of the fine-tuning batches and augmentation (default --seed); the scenes "
        "stay those of --seed",
    )
    parser.add_argument(
        "--fine-tune-only",
        choices=("reference", "variants"),
        help="train only the float32 + FT reference, or only the other fine-tuned variants "
        "(two processes sharing --work-dir, one core each; a last run without it makes the table)",
    )
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="only scan each stage's sensitivity to channel pruning (and the per-layer "
        "allocations) on the trained models",
    )
    parser.add_argument("--sensitivity-ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--time", nargs="+", help="only add the latency to these JSON files")
    parser.add_argument("--output", help="JSON file for the results")
    parser.add_argument("--tables", nargs="+", help="only print the tables of these JSON files")
    args = parser.parse_args(argv)
    if not args.width > 0:
        parser.error(f"--width must be a positive multiplier. Received: --width={args.width}")

    if args.time:
        for path in args.time:
            with open(path) as file:
                record = json.load(file)
            record["results"] = [time_rows(r, args) for r in record["results"]]
            with open(path, "w") as file:
                json.dump(record, file, indent=2)
            for result in record["results"]:
                print(format_table(result) + "\n")
        return
    if args.tables:
        for path in args.tables:
            with open(path) as file:
                for result in json.load(file)["results"]:
                    form = format_sensitivity if "sensitivity" in result else format_table
                    print(form(result) + "\n")
        return
    os.makedirs(args.work_dir, exist_ok=True)
    train, val = _data(args)
    results = []
    for name in args.models.split(","):
        if args.sensitivity:
            results.append(sensitivity(name, args, train, val))
            print(format_sensitivity(results[-1]) + "\n", flush=True)
            continue
        results.append(measure(name, args, train, val))
        print(format_table(results[-1]) + "\n", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"machine: {machine}; threads {args.threads}; latency at {args.latency_size}²")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

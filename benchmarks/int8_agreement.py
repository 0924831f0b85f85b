"""Why a full-integer int8 TFLite file disagrees with its Keras model, and by how much.

For a model trained on ``kseg.data.synthetic_numpy`` scenes as in
``tests/kseg/test_tflite_metadata.py::test_mediapipe_image_segmenter`` (128x128, 6 classes,
``--scenes`` scenes for ``--epochs`` epochs), one run prints:

- ``int8``: the argmax agreement of the int8 export (``kseg.export.tflite(quantize="int8")``,
  calibrated on the training scenes) with Keras on 6 held-out scenes (index 1000 on);
- ``debugger``: the largest per-op RMSE of ``tf.lite.experimental.QuantizationDebugger``
  (each op fed the same dequantized inputs), in output steps; ~0.29 is plain rounding, more
  means clipping or a badly placed range;
- ``normalize float``: the agreement with the input normalisation left in float
  (the debugger's denylist: a probe, not a full-integer model);
- ``float +0.5 px``: the float model's own argmax agreement when every pixel is brightened by
  0.5 (of 255): the rounding int8 cannot avoid after ``x / 127.5 - 1``, whose 256 values lie
  half-way between int8 steps. When this is below the target, no int8 file can reach it;
- ``float acc`` / ``train acc``: pixel accuracy against the labels (is the model a segmenter?).

    python benchmarks/int8_agreement.py --model deeplabv3 --epochs 24 --seed 1 --quick

(``--quick`` leaves out the debugger and the float-normalisation probe; ``--alpha`` and
``--output-stride`` change the model, ``--seed`` the initialisation and the batches.)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import warnings

import numpy as np

MODELS = {
    # width 1.0 as the test since 2026-12-06 (0.35 before: --alpha 0.35)
    "deeplabv3": {"backbone": "mobilenetv2", "aspp": False, "backbone_options": {"alpha": 1.0}},
    "lraspp": {"backbone": "mobilenetv3_small", "alpha": 0.5},
}
SIZE = (128, 128)


def train(name, scenes, epochs, seed=0, **overrides):
    """``name`` (``MODELS``, updated with ``overrides``: ``alpha``, ``output_stride``) trained
    as the test trains it, with ``keras.utils.set_random_seed(seed)``."""
    import keras

    import kseg

    keras.utils.set_random_seed(seed)
    images, labels = kseg.data.synthetic_numpy(scenes, SIZE, seed=0)
    options = {**MODELS[name], **{k: v for k, v in overrides.items() if k != "alpha"}}
    if "alpha" in overrides:
        key = "backbone_options" if "backbone_options" in options else "alpha"
        options[key] = (
            {"alpha": overrides["alpha"]} if key == "backbone_options" else overrides["alpha"]
        )
    model = kseg.models.create(name, num_classes=6, input_shape=(*SIZE, 3), **options)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5  # as the test: moving statistics follow the data quickly
    weights = kseg.losses.class_weights_from_frequency(labels, 6, power=0.5)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=kseg.losses.CrossEntropy(class_weights=weights),
    )
    model.fit(images, labels, batch_size=8, epochs=epochs, verbose=0)
    return model, images, labels


def debugger(model, calibration, held_out, denylist=()):
    """(largest per-op RMSE in steps, agreement with ``denylist`` ops left float)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from kseg import export
    from kseg._export_common import _first_output

    function = tf.function(lambda x: _first_output(model(x, training=False)))
    spec = tf.TensorSpec((1, *SIZE, 3), tf.float32, name="images")
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(spec))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data = lambda: ([image[None]] for image in held_out)  # noqa: E731
    debug = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=data)
    debug.run()
    dump = io.StringIO()
    debug.layer_statistics_dump(dump)
    rows = list(csv.DictReader(io.StringIO(dump.getvalue())))
    worst = max(float(r["mean_squared_error"]) ** 0.5 / float(r["scale"]) for r in rows)
    names = [
        t["name"] for t in tf.lite.Interpreter(model_content=debug.quant_model).get_tensor_details()
    ]
    nodes = [n for n in names if any(d in n for d in denylist)]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
    probe = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=data, debug_options=options
    ).get_nondebug_quantized_model()
    want = model.predict(held_out, verbose=0).argmax(-1)
    got = export.run_tflite(_write(probe), held_out).argmax(-1)
    return worst, float((got == want).mean())


def _write(content):
    import tempfile

    handle = tempfile.NamedTemporaryFile(suffix=".tflite", delete=False)
    handle.write(content)
    handle.close()
    return handle.name


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="deeplabv3")
    parser.add_argument("--scenes", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="keras.utils.set_random_seed")
    parser.add_argument("--alpha", type=float, help="backbone width (default: MODELS)")
    parser.add_argument("--output-stride", type=int, help="8 or 16 (default: the model's)")
    parser.add_argument("--quick", action="store_true", help="only the int8 and float figures")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import kseg
    from kseg import export

    overrides = {}
    if args.alpha is not None:
        overrides["alpha"] = args.alpha
    if args.output_stride is not None:
        overrides["output_stride"] = args.output_stride
    model, calibration, labels = train(args.model, args.scenes, args.epochs, args.seed, **overrides)
    held_out, held_labels = kseg.data.synthetic_numpy(6, SIZE, seed=0, first_index=1000)
    held_out = np.round(held_out).astype(np.float32)  # 8-bit pixels, as MediaPipe sees them
    want = model.predict(held_out, verbose=0).argmax(-1)
    path = export.tflite(
        model,
        _write(b""),
        quantize="int8",
        representative_data=calibration,
        input_shape=(*SIZE, 3),
    )
    int8 = float((export.run_tflite(path, held_out).argmax(-1) == want).mean())
    worst = normalize_float = float("nan")
    if not args.quick:
        worst, normalize_float = debugger(model, calibration, held_out, denylist=("normalize",))
    brighter = model.predict(held_out + 0.5, verbose=0).argmax(-1)
    trained = model.predict(calibration[:16], verbose=0).argmax(-1)
    figures = {
        "model": args.model,
        **overrides,
        "seed": args.seed,
        "scenes": args.scenes,
        "epochs": args.epochs,
        "int8": round(int8, 4),
        "debugger_worst_rmse_steps": round(worst, 3),
        "normalize_float": round(normalize_float, 4),
        "float_plus_half_pixel": round(float((brighter == want).mean()), 4),
        "float_acc": round(float((want == held_labels).mean()), 4),
        "train_acc": round(float((trained == labels[:16]).mean()), 4),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

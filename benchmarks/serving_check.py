"""The serving acceptance of issue 16 on a trained model: ``kseg export --format savedmodel``,
then ``predict_image_bytes`` on JPEG and PNG images of three sizes in one batch against
``predict`` on the decoded images, through the TF1 session loader (what TF Serving's C++ loader
does) and through ``saved_model_cli run``; the warm-up records parsed with
``tensorflow_serving.apis`` and run; the held-out mIoU through the served labels.

The model's input may be fixed (the demo's is 96x96): the check exports a copy built for any
size with the same weights, so that each image is predicted at its own size.

    python -m kseg.cli.main demo --output kseg_runs/demo
    python benchmarks/serving_check.py --model kseg_runs/demo/model.keras --output serving.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import kseg
from kseg import serving

SIZES = ((96, 96), (75, 130), (144, 112))


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def any_size_copy(model):
    """The same network and weights for inputs of any height and width."""
    config = model.get_config()
    config["input_shape"] = (None, None, config["input_shape"][-1])
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def scenes(seed):
    """One uint8 synthetic scene of each of ``SIZES``, encoded as JPEG and as PNG (6 images)."""
    encoded = []
    for i, size in enumerate(SIZES):
        image = np.rint(kseg.data.synthetic_numpy(1, size, seed=seed + i)[0][0]).astype(np.uint8)
        encoded += [serving.encode_image(image, "jpeg"), serving.encode_image(image, "png")]
    return encoded


def compare(model, encoded, labels, probabilities):
    """Largest probability error and label agreement of served outputs against ``predict``
    on the images as the server decodes them."""
    import tensorflow as tf

    agree = total = 0
    worst = 0.0
    for i, data in enumerate(encoded):
        decoded = tf.io.decode_image(data, channels=3).numpy().astype(np.float32)
        h, w = decoded.shape[:2]
        logits = np.asarray(model.predict(decoded[None], verbose=0))[0]
        agree += int((labels[i, :h, :w] == logits.argmax(-1)).sum())
        total += h * w
        worst = max(worst, float(np.abs(probabilities[i, :h, :w] - softmax(logits)).max()))
        assert (labels[i, h:] == -1).all() and (labels[i, :, w:] == -1).all()
    return {"label_agreement": agree / total, "max_probability_error": worst, "pixels": total}


def run(args):
    import tensorflow as tf

    model = any_size_copy(kseg.load_model(args.model, compile=False))
    work = tempfile.mkdtemp(prefix="serving_check_")
    keras_path = os.path.join(work, "model_any_size.keras")
    model.save(keras_path)
    names = os.path.join(work, "labels.txt")
    with open(names, "w") as file:
        file.write("\n".join(kseg.data.SYNTHETIC_CLASSES) + "\n")
    from kseg.cli.main import main

    code = main(
        [
            "export",
            "--model",
            keras_path,
            "--format",
            "savedmodel",
            "--output",
            os.path.join(work, "models"),
            "--name",
            "demo_unet",
            "--class-names",
            names,
        ]
    )
    assert code == 0, code
    path = os.path.join(work, "models", "demo_unet", "1")
    encoded = scenes(args.seed)
    result = {"model": args.model, "sizes": SIZES, "formats": ["jpeg", "png"] * 3}

    with serving.SessionPredictor(path) as server:
        out = server.run("predict_image_bytes", image_bytes=np.array(encoded, object))
        result["tf1_session"] = compare(model, encoded, out["labels"], out["probabilities"])
        result["tf1_session"]["output_shape"] = list(out["labels"].shape)
        # warm-up records: parsed with the serving protos and run
        from tensorflow_serving.apis import prediction_log_pb2

        records = list(tf.data.TFRecordDataset(os.path.join(path, serving.WARMUP_FILE)))
        signatures = []
        for record in records:
            log = prediction_log_pb2.PredictionLog()
            log.ParseFromString(record.numpy())
            request = log.predict_log.request
            outputs = server.run_request(request)
            signatures.append(request.model_spec.signature_name)
            assert all(np.all(np.isfinite(v)) for v in outputs.values() if v.dtype.kind == "f")
        result["warmup_signatures_run"] = signatures
        # held-out mIoU through the served labels (PNG: lossless) and through Keras
        val_x, val_y = next(
            kseg.data.load(
                "synthetic",
                split="val",
                num_images=args.val_scenes,
                image_size=tuple(args.val_size),
                seed=args.seed,
            )
            .batch(args.val_scenes)
            .as_numpy_iterator()
        )
        served = []
        pngs = [serving.encode_image(np.rint(x).astype(np.uint8), "png") for x in val_x]
        for start in range(0, len(pngs), 25):
            batch = np.array(pngs[start : start + 25], object)
            served.append(server.run("predict_image_bytes", image_bytes=batch)["labels"])
        served = np.concatenate(served)
        keras_labels = np.asarray(model.predict(np.rint(val_x), verbose=0)).argmax(-1)
        for key, labels in (("served", served), ("keras", keras_labels)):
            cm = kseg.metrics.confusion_matrix(val_y, labels, len(kseg.data.SYNTHETIC_CLASSES))
            result[f"val_miou_{key}"] = float(kseg.metrics.scores(np.asarray(cm))["mean_iou"])
        result["val_label_agreement"] = float((served == keras_labels).mean())

    np.save(os.path.join(work, "bytes.npy"), np.array(encoded, object), allow_pickle=True)
    command = [
        sys.executable,
        "-m",
        "tensorflow.python.tools.saved_model_cli",
        "run",
        "--dir",
        path,
        "--tag_set",
        "serve",
        "--signature_def",
        "predict_image_bytes",
        "--inputs",
        f"image_bytes={os.path.join(work, 'bytes.npy')}",
        "--outdir",
        os.path.join(work, "cli"),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result["saved_model_cli"] = compare(
        model,
        encoded,
        np.load(os.path.join(work, "cli", "labels.npy")),
        np.load(os.path.join(work, "cli", "probabilities.npy")),
    )
    result["export_dir"] = path
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a trained .keras segmentation model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-scenes", type=int, default=200)
    parser.add_argument("--val-size", type=int, nargs=2, default=(96, 96))
    parser.add_argument("--output", help="JSON file for the results")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(result, file, indent=1)


if __name__ == "__main__":
    main()

"""The TF Serving SavedModel: every signature == ``model.predict``, run by the TF1 session
loader and ``saved_model_cli`` (what TF Serving's C++ loader does), warm-up records, the REST
format, bad input, the versioned atomic layout and the export check."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
from kseg import export, export_report, fileio, serving

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = list(kseg.data.SYNTHETIC_CLASSES)
SIZES = ((37, 53), (20, 31), (64, 48))


# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("serving")


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def predict_logits(model, image):
    return np.asarray(model.predict(np.asarray(image, np.float32)[None], verbose=0))[0]


def photos(seed=3):
    """Three scenes of different sizes as uint8 RGB."""
    return [
        np.rint(kseg.data.synthetic_numpy(1, size, seed=seed + i)[0][0]).astype(np.uint8)
        for i, size in enumerate(SIZES)
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small U-Net trained a few steps on synthetic scenes (BN statistics moved), exported once."""
    keras.utils.set_random_seed(0)
    model = kseg.models.UNet(num_classes=len(NAMES), base_filters=4, depth=2)
    images, labels = kseg.data.synthetic_numpy(16, (48, 48), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, batch_size=4, epochs=2, verbose=0)
    root = tmp_path_factory.mktemp("models")
    path = export.saved_model(model, root, name="unet", class_names=NAMES)
    return model, path


@pytest.fixture(scope="module")
def server(trained):
    with serving.SessionPredictor(trained[1]) as loaded:
        yield loaded


def png_chunks(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        crc = int.from_bytes(data[offset + 8 + length : offset + 12 + length], "big")
        assert crc == zlib.crc32(kind + body), f"bad CRC in chunk {kind}"
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


def test_layout_assets_and_report(trained, tmp_path):
    model, path = trained
    root, name, version = path.rsplit(os.sep, 2)
    assert (name, version) == ("unet", "1")
    assert sorted(os.listdir(path)) == [
        "assets",
        "assets.extra",
        "export_report.json",
        "fingerprint.pb",
        "saved_model.pb",
        "variables",
    ]
    assert not [n for n in os.listdir(os.path.join(root, name)) if n != "1"]  # no temporaries
    with open(os.path.join(path, "assets", "labels.txt")) as file:
        assert file.read().splitlines() == NAMES
    with open(os.path.join(path, "assets", "preprocessing.json")) as file:
        preprocessing = json.load(file)
    assert preprocessing["mean"] == model.preprocessing["mean"] == [0.0, 0.0, 0.0]
    assert preprocessing["std"] == [255.0, 255.0, 255.0]
    with open(os.path.join(path, "assets", "signatures.json")) as file:
        docs = json.load(file)
    assert docs["class_names"] == NAMES
    assert sorted(docs["signatures"]) == sorted(serving.SIGNATURES)

    (entry,) = export_report.read_report(path)["exports"]
    assert entry["format"] == "savedmodel" and entry["agreement"] == 1.0
    assert set(entry["agreement_by_signature"]) == set(serving.SIGNATURES)
    assert entry["size_bytes"] == export_report.artefact_size(path) - os.path.getsize(
        os.path.join(path, "export_report.json")
    )
    assert entry["input_spec"]["shape"] == [None, None, None, 3]
    assert entry["warmup_requests"] == 4 and entry["latency_ms"] > 0

    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == set(serving.SIGNATURES)

    # the next export becomes version 2; an existing version is refused, never overwritten
    second = export.saved_model(model, root, name="unet", verify_images=1, warmup=False)
    assert second == os.path.join(root, "unet", "2")
    with pytest.raises(FileExistsError, match="already exists"):
        export.saved_model(model, root, name="unet", version=2, verify_images=1)
    with pytest.raises(ValueError, match="version must be a positive int"):
        export.saved_model(model, root, name="unet", version=0)
    with pytest.raises(ValueError, match="class_names must hold 6"):
        export.saved_model(model, tmp_path, name="x", class_names=["a", "b"])


def test_image_bytes_three_sizes_jpeg_and_png_match_predict(trained, server):
    model, _ = trained
    images = photos()
    encoded = [
        serving.encode_image(images[0], "jpeg"),
        serving.encode_image(images[1], "png"),
        serving.encode_image(images[2], "jpeg"),
    ]
    out = server.run("predict_image_bytes", image_bytes=np.array(encoded, object))
    assert out["labels"].shape == (3, 64, 53) and out["probabilities"].shape == (3, 64, 53, 6)
    np.testing.assert_array_equal(out["heights"], [h for h, _ in SIZES])
    np.testing.assert_array_equal(out["widths"], [w for _, w in SIZES])
    palette = kseg.data.voc_colormap(6)
    classes_seen = set()
    for i, (data, (h, w)) in enumerate(zip(encoded, SIZES)):
        # the server's decoder on the same bytes (a JPEG decodes slightly differently elsewhere)
        decoded = tf.io.decode_image(data, channels=3).numpy()
        logits = predict_logits(model, decoded)
        expected = logits.argmax(-1)
        np.testing.assert_array_equal(out["labels"][i, :h, :w], expected)  # labels 100 %
        np.testing.assert_allclose(out["probabilities"][i, :h, :w], softmax(logits), atol=1e-5)
        assert (out["labels"][i, h:] == -1).all() and (out["labels"][i, :, w:] == -1).all()
        assert not out["probabilities"][i, h:].any() and not out["probabilities"][i, :, w:].any()
        classes_seen |= set(np.unique(expected).tolist())
        # the palette PNG: valid chunks, pixel values = class indices, palette = class colours
        png = out["mask_png_bytes"][i]
        kinds = [kind for kind, _ in png_chunks(png)]
        assert kinds[:2] == [b"IHDR", b"PLTE"] and kinds[-1] == b"IEND"
        mask = Image.open(io.BytesIO(png))
        assert mask.mode == "P" and mask.size == (w, h)
        np.testing.assert_array_equal(np.asarray(mask), expected)
        np.testing.assert_array_equal(np.reshape(mask.getpalette()[:18], (6, 3)), palette)
        np.testing.assert_array_equal(tf.io.decode_png(png, channels=3).numpy(), palette[expected])
    assert len(classes_seen) > 1  # a model that paints one class would prove little
    # the TF2 loader runs the same signature to the same result
    signature = tf.saved_model.load(trained[1]).signatures["predict_image_bytes"]
    again = signature(image_bytes=tf.constant(encoded))
    np.testing.assert_array_equal(again["labels"].numpy(), out["labels"])
    assert list(again["mask_png_bytes"].numpy()) == list(out["mask_png_bytes"])


def test_float_tensor_and_example_signatures_match_predict(trained, server):
    model, _ = trained
    image = photos()[0]
    floats = image.astype(np.float32) + 0.25  # non-integer pixels reach the float signature
    logits = predict_logits(model, floats)
    out = server.run("serving_default", images=floats[None])
    np.testing.assert_allclose(out["logits"][0], logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["probabilities"][0], softmax(logits), atol=1e-5)
    np.testing.assert_array_equal(out["labels"][0], logits.argmax(-1))

    batch = np.stack([image, image[::-1]])
    out = server.run("predict_image_tensor", images=batch)
    for i in range(2):
        np.testing.assert_array_equal(out["labels"][i], predict_logits(model, batch[i]).argmax(-1))

    examples = [serving.tf_example(serving.encode_image(x)) for x in photos()[:2]]
    out = server.run("predict_tf_example", tf_example=np.array(examples, object))
    for i, x in enumerate(photos()[:2]):
        h, w = x.shape[:2]
        np.testing.assert_array_equal(out["labels"][i, :h, :w], predict_logits(model, x).argmax(-1))


def test_fixed_size_model_resizes_to_its_input_and_back(tmp_path):
    keras.utils.set_random_seed(1)
    model = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4, depth=2)
    path = export.saved_model(model, tmp_path, name="fixed", verify_images=2)
    images = photos()[:2]
    with serving.SessionPredictor(path) as loaded:
        out = loaded.run(
            "predict_image_bytes",
            image_bytes=np.array([serving.encode_image(x) for x in images], object),
        )
        signature = loaded.signature("serving_default").inputs["images"].tensor_shape
        assert [d.size for d in signature.dim] == [-1, 32, 32, 3]
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        resized = tf.image.resize(image.astype(np.float32), (32, 32)).numpy()
        logits = tf.image.resize(predict_logits(model, resized), (h, w)).numpy()
        np.testing.assert_array_equal(out["labels"][i, :h, :w], logits.argmax(-1))
        np.testing.assert_allclose(out["probabilities"][i, :h, :w], softmax(logits), atol=1e-5)


def test_saved_model_cli_runs_the_float_and_bytes_signatures(trained, tmp_path):
    model, path = trained
    images = np.stack([photos()[1], photos()[1][::-1]]).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    png = serving.encode_image(photos()[0])
    np.save(tmp_path / "bytes.npy", np.array([png], object), allow_pickle=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for signature, inputs, outdir in (
        ("serving_default", f"images={tmp_path / 'images.npy'}", tmp_path / "float"),
        ("predict_image_bytes", f"image_bytes={tmp_path / 'bytes.npy'}", tmp_path / "bytes"),
    ):
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
            signature,
            "--inputs",
            inputs,
            "--outdir",
            str(outdir),
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    expected = np.asarray(model.predict(images, verbose=0))
    np.testing.assert_allclose(np.load(tmp_path / "float" / "logits.npy"), expected, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "float" / "labels.npy"), expected.argmax(-1))
    np.testing.assert_array_equal(
        np.load(tmp_path / "bytes" / "labels.npy")[0],
        predict_logits(model, photos()[0]).argmax(-1),
    )


def test_warmup_records_parse_with_serving_protos_and_run(trained, server):
    from tensorflow_serving.apis import prediction_log_pb2

    model, path = trained
    records = list(tf.data.TFRecordDataset(os.path.join(path, serving.WARMUP_FILE)))
    logs = []
    for record in records:
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        assert log.WhichOneof("log_type") == "predict_log"
        logs.append(log)
    requests = [log.predict_log.request for log in logs]
    assert [r.model_spec.signature_name for r in requests] == list(serving.SIGNATURES)
    assert {r.model_spec.name for r in requests} == {"unet"}
    for request in requests:
        out = server.run_request(request)
        if request.model_spec.signature_name == "predict_image_bytes":
            for i, data in enumerate(tf.make_ndarray(request.inputs["image_bytes"])):
                decoded = tf.io.decode_image(data, channels=3).numpy()
                h, w = decoded.shape[:2]
                np.testing.assert_array_equal(
                    out["labels"][i, :h, :w], predict_logits(model, decoded).argmax(-1)
                )
        elif request.model_spec.signature_name == "serving_default":
            images = tf.make_ndarray(request.inputs["images"])
            np.testing.assert_allclose(
                out["logits"], model.predict(images, verbose=0), atol=1e-5, rtol=1e-5
            )


def _tf_serving_rest_to_tensors(body, signature_def):
    """TF Serving's row-format decoding: one input, so each instance is its value; a JSON
    object {"b64": ...} is base64-decoded into a string element."""
    (name,) = signature_def.inputs
    values = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in body["instances"]]
    return {name: np.array(values, object)}


def _tf_serving_row_response(outputs):
    """TF Serving's row-format encoding: one object per instance; a string output whose name
    ends in "_bytes" becomes {"b64": ...}."""
    predictions = []
    for i in range(len(next(iter(outputs.values())))):
        row = {}
        for name, value in outputs.items():
            item = value[i]
            if name.endswith("_bytes"):
                item = {"b64": base64.b64encode(item).decode("ascii")}
            row[name] = item.tolist() if isinstance(item, np.ndarray) else item
            if isinstance(row[name], np.generic):
                row[name] = row[name].item()
        predictions.append(row)
    return json.loads(json.dumps({"predictions": predictions}))  # must be valid JSON


def test_rest_request_and_response(trained, server):
    model, _ = trained
    images = photos()
    encoded = [serving.encode_image(images[0], "jpeg"), serving.encode_image(images[1])]
    body = json.loads(json.dumps(serving.rest_request([encoded[0], images[1]])))
    assert body["signature_name"] == "predict_image_bytes"
    assert list(body["instances"][0]) == ["b64"]
    tensors = _tf_serving_rest_to_tensors(body, server.signature(body["signature_name"]))
    assert list(tensors["image_bytes"]) == encoded  # the decoded tensors are the images' bytes
    out = server.run(body["signature_name"], **tensors)
    response = _tf_serving_row_response(out)
    labels = serving.labels_from_rest_response(response)
    for i, data in enumerate(encoded):
        expected = predict_logits(model, tf.io.decode_image(data, channels=3).numpy()).argmax(-1)
        np.testing.assert_array_equal(labels[i], expected)
        png = base64.b64decode(response["predictions"][i]["mask_png_bytes"]["b64"])
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)


def test_bad_bytes_name_the_element_and_the_server_lives(trained, server):
    model, _ = trained
    good = serving.encode_image(photos()[1])
    for signature, key, bad in (
        ("predict_image_bytes", "image_bytes", b"this is not an image"),
        ("predict_tf_example", "tf_example", serving.tf_example(b"")),
    ):
        batch = [good, bad, good] if key == "image_bytes" else [serving.tf_example(good), bad]
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            server.run(signature, **{key: np.array(batch, object)})
        assert f"{key}[1] is not an encoded JPEG, PNG, GIF or BMP image" in str(caught.value)
    out = server.run("predict_image_bytes", image_bytes=np.array([good], object))
    np.testing.assert_array_equal(out["labels"][0], predict_logits(model, photos()[1]).argmax(-1))


class Noisy(keras.layers.Layer):
    """Adds fresh noise on every call: an export of it cannot agree with another run."""

    def call(self, x):
        return x + tf.random.normal(tf.shape(x), stddev=100.0)


def test_a_failed_check_writes_nothing_and_names_the_figure(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, Noisy()(keras.layers.Conv2D(4, 1)(inputs)))
    with pytest.raises(export_report.ExportCheckError, match=r"agrees with the Keras model on \d+"):
        export.saved_model(model, tmp_path, name="noisy", verify_images=1, warmup=False)
    assert not os.path.exists(tmp_path / "noisy" / "1")
    assert os.listdir(tmp_path / "noisy") == []  # the temporary folder is gone too
    # the threshold is the caller's: 0 accepts anything
    path = export.saved_model(
        model, tmp_path, name="noisy", verify_images=1, warmup=False, min_agreement=0.0
    )
    assert export_report.read_report(path)["exports"][0]["agreement"] < 0.9
    with pytest.raises(ValueError, match="min_agreement must be a fraction"):
        export.saved_model(model, tmp_path, name="noisy", min_agreement=99.9)


def test_a_kill_mid_export_leaves_no_version_folder(tmp_path):
    code = textwrap.dedent(
        f"""
        import keras
        from kseg import export
        inputs = keras.Input((None, None, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
        print("ready", flush=True)
        export.saved_model(model, {str(tmp_path)!r}, name="m", verify_images=1)
        print("done", flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    # every atomic write pauses this long before its rename: the warm-up file and the report
    # inside the temporary folder, then the folder itself (the window of the "written" kill)
    env[fileio.SLOW_WRITE_ENV] = "5"
    base = tmp_path / "m"
    for moment in ("writing", "written"):
        before = set(os.listdir(base)) if base.exists() else set()
        child = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        deadline = time.time() + 240
        while time.time() < deadline:
            names = set(os.listdir(base)) if base.exists() else set()
            temporaries = [n for n in names - before if n.endswith(".tmp")]
            ready = temporaries and os.path.exists(base / temporaries[0] / "export_report.json")
            # "writing": kill as soon as the temporary folder appears (mid write_out);
            # "written": kill in the pause before the rename, everything checked and written
            if temporaries and (moment == "writing" or ready):
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        assert temporaries, "the export never started"
        assert not (base / "1").exists()
        assert serving.next_version(base) == 1  # a leftover temporary is not a version


def test_write_report_merges_by_path_and_checks_entries(tmp_path):
    entry = {"format": "tflite", "path": "m.tflite", "size_bytes": 10, "input_spec": {}}
    with pytest.raises(ValueError, match="missing \\['agreement'\\]"):
        export_report.write_report(tmp_path, entry)
    with pytest.raises(ValueError, match="Received: agreement=1.5"):
        export_report.write_report(tmp_path, dict(entry, agreement=1.5))
    export_report.write_report(tmp_path, dict(entry, agreement=0.99, latency_ms=np.float32(2.5)))
    export_report.write_report(tmp_path, dict(entry, path="int8.tflite", agreement=0.98))
    export_report.write_report(tmp_path, dict(entry, agreement=0.995))  # replaces m.tflite
    exports = export_report.read_report(tmp_path / "export_report.json")["exports"]
    assert [(e["path"], e["agreement"]) for e in exports] == [
        ("int8.tflite", 0.98),
        ("m.tflite", 0.995),
    ]


def test_held_out_images_from_a_folder_and_npy(tmp_path):
    images = photos()
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    got = export_report.held_out_images(str(tmp_path), num_images=2)
    np.testing.assert_array_equal(got[1], images[1])
    np.save(tmp_path / "x.npy", np.stack([images[2]] * 3))
    got = export_report.held_out_images(str(tmp_path / "x.npy"), 5, image_size=(16, 16), channels=1)
    assert len(got) == 3 and got[0].shape == (16, 16, 1)
    with pytest.raises(ValueError, match="Received: spec='nowhere'"):
        export_report.held_out_images("nowhere")


def test_cli_export_savedmodel(tmp_path, capsys):
    from kseg.cli.main import main

    model = kseg.models.UNet(num_classes=3, base_filters=4, depth=2)
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    names = tmp_path / "labels.txt"
    names.write_text("sky\nroad\ncar\n")
    argv = ["export", "--model", str(model_path), "--format", "savedmodel", "--output"]
    argv += [str(tmp_path / "models"), "--name", "roads", "--class-names", str(names)]
    assert main([*argv, "--verify-images", "1", "--min-agreement", "0.999"]) == 0
    path = tmp_path / "models" / "roads" / "1"
    assert (path / "assets" / "labels.txt").read_text().splitlines() == ["sky", "road", "car"]
    assert "export_report.json" in capsys.readouterr().out
    assert main([*argv, "--verify-images", "1", "--version", "7"]) == 0
    assert (tmp_path / "models" / "roads" / "7" / "saved_model.pb").exists()
    with pytest.raises(SystemExit):
        main([*argv, "--min-agreement", "1.5"])
    assert "must be a fraction in [0, 1]. Received: 1.5" in capsys.readouterr().err

"""SavedModels for TF Serving: image-bytes, image-tensor and tf.Example signatures, warm-up
requests, a versioned layout and a check against Keras before the export is called done.

:func:`export_saved_model` (also ``kseg.export.saved_model`` and ``kseg export --format
savedmodel``) writes, through ``keras.export.ExportArchive`` (a plain ``tf.saved_model.save``
does not load in the TF1 session loader that TF Serving uses), these signatures; every one
calls the model with ``training=False``:

- ``serving_default``: ``images`` float32 ``[B, H, W, C]`` (RGB 0..255) -> ``logits``,
  ``probabilities``, ``labels`` (int32 ``[B, H, W]``);
- ``predict_image_tensor``: ``images`` uint8 ``[B, H, W, C]`` -> the same;
- ``predict_image_bytes``: ``image_bytes`` string ``[B]`` (encoded JPEG / PNG / GIF / BMP of
  any sizes) -> ``labels``, ``probabilities``, ``heights``, ``widths``, ``mask_png_bytes``;
- ``predict_tf_example``: ``tf_example`` string ``[B]`` (serialized ``tf.train.Example`` with
  the encoded image under ``image/encoded``) -> as ``predict_image_bytes``.

Images of one request may differ in size. A signature returns dense tensors only, so
``predict_image_bytes`` runs the model on each image at its own size (``tf.map_fn``; a model
with a fixed input size gets the image resized to it and its logits resized back) and returns
``labels`` ``[B, Hmax, Wmax]`` padded with -1 and ``probabilities`` ``[B, Hmax, Wmax, K]``
padded with 0, plus each image's ``heights`` and ``widths``: image ``i`` is
``labels[i, :heights[i], :widths[i]]``. The images are not padded into one batch before the
model runs because padding changes what the convolutions and any global pooling see near the
border: the labels would then differ from ``predict`` on the image alone. ``mask_png_bytes``
is each image's label map at its own size as an indexed-colour (palette) PNG whose pixel
values are the class indices and whose palette holds the class colours (VOC colours by
default); the name ends in ``_bytes`` because TF Serving's REST API base64-encodes only
string outputs so named (others would be written into JSON as raw bytes).

A string that is not an encoded image fails the request with ``InvalidArgument`` naming its
index (``image_bytes[2] is not an encoded JPEG, PNG, GIF or BMP image``); the server lives on.

Beside the signatures the folder holds ``assets/labels.txt`` (one class name a line),
``assets/preprocessing.json`` (the input convention, from ``model.preprocessing``),
``assets/signatures.json`` (these signature docs), ``assets.extra/tf_serving_warmup_requests``
(``PredictionLog`` records TF Serving replays at load) and ``export_report.json`` (the check).

REST (TF Serving ``--rest_api_port=8501``)::

    curl -d '{"signature_name": "predict_image_bytes",
              "instances": [{"b64": "'$(base64 -w0 photo.jpg)'"}]}' \\
        http://localhost:8501/v1/models/unet:predict

Example:
    >>> import kseg
    >>> model = kseg.models.UNet(num_classes=3, base_filters=4, depth=2)
    >>> path = kseg.serving.export_saved_model(model, "/tmp/models", name="unet")  # doctest: +SKIP
    >>> path                                                                     # doctest: +SKIP
    '/tmp/models/unet/1'
    >>> with kseg.serving.SessionPredictor(path) as server:                      # doctest: +SKIP
    ...     out = server.run("predict_image_bytes", image_bytes=[open("a.jpg", "rb").read()])
"""

from __future__ import annotations

import base64
import io
import json
import os
import zlib

import numpy as np

from kseg import export_report, fileio

FLOAT_SIGNATURE = "serving_default"
TENSOR_SIGNATURE = "predict_image_tensor"
BYTES_SIGNATURE = "predict_image_bytes"
EXAMPLE_SIGNATURE = "predict_tf_example"
SIGNATURES = (FLOAT_SIGNATURE, TENSOR_SIGNATURE, BYTES_SIGNATURE, EXAMPLE_SIGNATURE)
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
EXAMPLE_INPUT = "tf_example"
EXAMPLE_IMAGE_KEY = "image/encoded"
MASK_OUTPUT = "mask_png_bytes"
LABEL_PADDING = -1
ENCODED_CHANNELS = (1, 3)
"""Input channels an encoded image (JPEG/PNG) can carry. Other models (a change-detection
model's 6-channel image pair) get the tensor signatures only: one encoded picture cannot hold
two images."""


def signatures_for(channels):
    """The signatures a SavedModel has for a model taking ``channels`` input channels.

    Example:
        >>> signatures_for(6)
        ('serving_default', 'predict_image_tensor')
    """
    return SIGNATURES if channels in ENCODED_CHANNELS else SIGNATURES[:2]


WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def _png_chunk(kind, data):
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


# ---------------------------------------------------------------------------------------------
# Graph pieces (traced into the signatures)


def _logits(model, images):
    import tensorflow as tf

    from kseg._export_common import _first_output

    return tf.cast(_first_output(model(images, training=False)), tf.float32)


def _logits_at_own_size(model, images, model_size):
    """Logits ``[B, h, w, K]`` of float images ``[B, h, w, C]``: the model runs at ``model_size``
    (resize there and back) when it has a fixed input size."""
    import tensorflow as tf

    if model_size is None:
        return _logits(model, images)
    size = tf.shape(images)[1:3]
    logits = _logits(model, tf.image.resize(images, model_size))
    return tf.image.resize(logits, size)


def _heads(logits):
    import tensorflow as tf

    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "labels": tf.argmax(logits, axis=-1, output_type=tf.int32),
    }


def _crc32(data, length):
    """CRC-32 of a string tensor of static ``length`` bytes (PNG chunk checksums)."""
    import tensorflow as tf

    values = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int64)
    table = tf.constant(_CRC_TABLE, tf.int64)
    crc = tf.constant(0xFFFFFFFF, tf.int64)
    for k in range(length):
        index = tf.bitwise.bitwise_and(tf.bitwise.bitwise_xor(crc, values[k]), 0xFF)
        crc = tf.bitwise.bitwise_xor(tf.gather(table, index), tf.bitwise.right_shift(crc, 8))
    return tf.bitwise.bitwise_xor(crc, tf.constant(0xFFFFFFFF, tf.int64))


def _big_endian_32(value):
    import tensorflow as tf

    shifts = tf.constant([24, 16, 8, 0], tf.int64)
    octets = tf.bitwise.bitwise_and(tf.bitwise.right_shift(value, shifts), 0xFF)
    byte_strings = tf.constant([bytes([i]) for i in range(256)])
    return tf.strings.reduce_join(tf.gather(byte_strings, octets))


def _palette_png(labels, plte_chunk):
    """An indexed-colour PNG of a label map ``[h, w]`` (values < 256).

    TensorFlow encodes greyscale PNGs only; an 8-bit indexed PNG stores its pixels exactly like
    8-bit greyscale, so the greyscale file becomes a palette one by setting the colour type
    in IHDR to 3 (with its checksum) and inserting the PLTE chunk after it.
    """
    import tensorflow as tf

    grey = tf.io.encode_png(tf.cast(labels, tf.uint8)[..., None])
    # grey = signature (8) + IHDR length (4) + "IHDR" + 13 data bytes + CRC (4) + IDAT... IEND.
    # The 13 data bytes: width, height (4 each), bit depth, colour type (offset 25), ...
    ihdr = tf.strings.join(
        [b"IHDR", tf.strings.substr(grey, 16, 9), b"\x03", tf.strings.substr(grey, 26, 3)]
    )
    rest = tf.strings.substr(grey, 33, tf.strings.length(grey) - 33)
    return tf.strings.join(
        [
            _PNG_SIGNATURE,
            b"\x00\x00\x00\x0d",
            ihdr,
            _big_endian_32(_crc32(ihdr, 17)),
            plte_chunk,
            rest,
        ]
    )


def _decode(data, index, channels, input_name):
    """Decodes one encoded image; a string that is no image fails naming its index."""
    import tensorflow as tf

    is_image = tf.reduce_any(
        tf.stack(
            [
                tf.strings.substr(data, 0, 8) == _PNG_SIGNATURE,
                tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff",
                tf.strings.substr(data, 0, 4) == b"GIF8",
                tf.strings.substr(data, 0, 2) == b"BM",
            ]
        )
    )
    message = tf.strings.format(
        input_name + "[{}] is not an encoded JPEG, PNG, GIF or BMP image ({} bytes)",
        (index, tf.strings.length(data)),
    )
    with tf.control_dependencies([tf.debugging.Assert(is_image, [message])]):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def _scatter_padded(flat, heights, widths, fill, channels=None):
    """Ragged per-image rows ``[B, (h*w)(, K)]`` to a padded ``[B, Hmax, Wmax(, K)]``."""
    import tensorflow as tf

    batch = tf.shape(heights)[0]
    hmax = tf.reduce_max(tf.concat([heights, [0]], 0))
    wmax = tf.reduce_max(tf.concat([widths, [0]], 0))
    rows = tf.cast(flat.value_rowids(), tf.int32)
    starts = tf.cast(flat.row_starts(), tf.int32)
    position = tf.range(tf.shape(flat.flat_values)[0], dtype=tf.int32) - tf.gather(starts, rows)
    width = tf.gather(widths, rows)
    indices = tf.stack([rows, position // width, position % width], axis=1)
    shape = [batch, hmax, wmax] + ([channels] if channels else [])
    base = tf.fill(shape, tf.constant(fill, flat.dtype))
    return tf.tensor_scatter_nd_update(base, indices, flat.flat_values)


def _predict_encoded(model, data, model_size, channels, num_classes, plte_chunk, input_name):
    """The outputs of ``predict_image_bytes`` for a batch of encoded images ``[B]``."""
    import tensorflow as tf

    indices = tf.range(tf.shape(data)[0])

    def finish(logits):
        labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        size = tf.shape(labels)
        result = (
            tf.reshape(labels, [-1]),
            tf.reshape(probabilities, [-1, num_classes]),
            size[0],
            size[1],
        )
        if plte_chunk is not None:
            result += (_palette_png(labels, plte_chunk),)
        return result

    signature = (
        tf.RaggedTensorSpec([None], tf.int32, ragged_rank=0),
        tf.RaggedTensorSpec([None, num_classes], tf.float32, ragged_rank=0),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.int32),
    )
    if plte_chunk is not None:
        signature += (tf.TensorSpec([], tf.string),)

    if model_size is None:
        # Each image through the model at its own size.
        def one(args):
            index, item = args
            image = tf.cast(_decode(item, index, channels, input_name), tf.float32)
            return finish(_logits(model, image[None])[0])

        results = tf.map_fn(one, (indices, data), fn_output_signature=signature)
    else:
        # A fixed-size model: decode and resize each image, run the batch at once, then resize
        # each image's logits back to its own size.
        def load(args):
            index, item = args
            image = tf.cast(_decode(item, index, channels, input_name), tf.float32)
            size = tf.shape(image)[:2]
            return tf.image.resize(image, model_size), size[0], size[1]

        resized, heights, widths = tf.map_fn(
            load,
            (indices, data),
            fn_output_signature=(
                tf.TensorSpec([*model_size, channels], tf.float32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.int32),
            ),
        )
        logits = _logits(model, resized)

        def back(args):
            one_logits, height, width = args
            return finish(tf.image.resize(one_logits, tf.stack([height, width])))

        results = tf.map_fn(back, (logits, heights, widths), fn_output_signature=signature)
    flat_labels, flat_probabilities, heights, widths = results[:4]
    outputs = {
        "labels": _scatter_padded(flat_labels, heights, widths, LABEL_PADDING),
        "probabilities": _scatter_padded(flat_probabilities, heights, widths, 0.0, num_classes),
        "heights": heights,
        "widths": widths,
    }
    if plte_chunk is not None:
        outputs[MASK_OUTPUT] = results[4]
    return outputs


# ---------------------------------------------------------------------------------------------
# Export


def _class_names(class_names, num_classes):
    if class_names is None:
        return [f"class_{i}" for i in range(num_classes)]
    if isinstance(class_names, str):
        raise TypeError(
            f"class_names must be a list of names, not one string. Received: class_names={class_names!r}"
        )
    names = [str(name) for name in class_names]
    if len(names) != num_classes or any(not n or "\n" in n for n in names):
        raise ValueError(
            f"class_names must hold {num_classes} non-empty one-line names (one per class). "
            f"Received: class_names={class_names!r}"
        )
    return names


def _palette(palette, num_classes):
    if num_classes > 256:
        return None
    if palette is None:
        from kseg.data import voc_colormap

        return voc_colormap(num_classes)
    colours = np.asarray(palette)
    if colours.shape != (num_classes, 3) or colours.min() < 0 or colours.max() > 255:
        raise ValueError(
            f"palette must be {num_classes} RGB colours in 0..255, shape ({num_classes}, 3). "
            f"Received: palette of shape {colours.shape}"
        )
    return colours.astype(np.uint8)


def _preprocessing(model):
    described = getattr(model, "preprocessing", None)
    if described is None:
        channels = model.inputs[0].shape[-1] or 3
        described = {
            "mode": None,
            "value_range": (0.0, 255.0),
            "mean": None,
            "std": None,
            "channel_order": "RGB",
        }
        described["note"] = (
            f"{model.name!r} has no kseg ImageNormalization layer; {channels} channels"
        )
    return dict(described, applied_by="the model itself: send raw pixel values")


def next_version(base):
    """The next TF Serving version number below ``base``: 1 + the largest integer folder name.

    Example:
        >>> import tempfile
        >>> next_version(tempfile.mkdtemp())
        1
    """
    base = os.fspath(base)
    versions = [int(n) for n in os.listdir(base) if n.isdigit()] if os.path.isdir(base) else []
    return max(versions, default=0) + 1


def _destination(path, name, version):
    path = os.path.abspath(os.fspath(path))
    if name is None and version is None:
        return path, False
    if name is not None and (not str(name) or os.sep in str(name) or str(name).startswith(".")):
        raise ValueError(f"name must be a plain folder name. Received: name={name!r}")
    base = os.path.join(path, str(name)) if name is not None else path
    if version is None or version == "next":
        version = next_version(base)
    elif isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(
            f"version must be a positive int or None (the next one). Received: version={version!r}"
        )
    final = os.path.join(base, str(int(version)))
    if os.path.exists(final):
        raise FileExistsError(
            f"{final!r} already exists: a served version is never overwritten; pass another "
            f"version (or None for the next one, {next_version(base)}). Received: version={version!r}"
        )
    return final, True


def _signature_docs(model, names, preprocessing, model_size, channels, num_classes, mask_png):
    size_text = (
        f"any height and width (the model runs at {model_size[0]}x{model_size[1]}: images are "
        "resized to it and the logits resized back)"
        if model_size is not None
        else "any height and width"
    )
    float_outputs = {
        "logits": f"float32 [B, H, W, {num_classes}]",
        "probabilities": f"float32 [B, H, W, {num_classes}], softmax of the logits",
        "labels": "int32 [B, H, W], the class index per pixel (index into assets/labels.txt)",
    }
    bytes_outputs = {
        "labels": "int32 [B, Hmax, Wmax]; image i is labels[i, :heights[i], :widths[i]], "
        f"the rest is {LABEL_PADDING}",
        "probabilities": f"float32 [B, Hmax, Wmax, {num_classes}], padded with 0",
        "heights": "int32 [B], each image's height",
        "widths": "int32 [B], each image's width",
    }
    if mask_png:
        bytes_outputs[MASK_OUTPUT] = (
            "string [B], each label map as an indexed-colour PNG at the image's own size "
            "(pixel value = class index, palette = class colours); base64 in REST responses"
        )
    return {
        "model": model.name,
        "class_names": names,
        "preprocessing": preprocessing,
        "padding": "images of one request may differ in size: each runs through the model at "
        "its own size and the outputs are padded to the largest, with heights/widths",
        "signatures": {
            FLOAT_SIGNATURE: {
                "inputs": {
                    IMAGES_INPUT: f"float32 [B, H, W, {channels}], RGB 0..255, " + size_text
                },
                "outputs": float_outputs,
            },
            TENSOR_SIGNATURE: {
                "inputs": {IMAGES_INPUT: f"uint8 [B, H, W, {channels}], " + size_text},
                "outputs": float_outputs,
            },
            BYTES_SIGNATURE: {
                "inputs": {
                    BYTES_INPUT: "string [B], encoded JPEG/PNG/GIF/BMP images of any sizes "
                    '(REST: {"instances": [{"b64": "..."}]})'
                },
                "outputs": bytes_outputs,
            },
            EXAMPLE_SIGNATURE: {
                "inputs": {
                    EXAMPLE_INPUT: "string [B], serialized tf.train.Example with the encoded "
                    f"image in the bytes feature {EXAMPLE_IMAGE_KEY!r}"
                },
                "outputs": bytes_outputs,
            },
        },
    }


def _build_archive(model, shape, num_classes, plte_chunk):
    import keras
    import tensorflow as tf

    channels = shape[2]
    model_size = tuple(shape[:2]) if None not in shape[:2] else None
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_float(images):
        return _heads(_logits(model, images))

    def serve_tensor(images):
        return _heads(_logits_at_own_size(model, tf.cast(images, tf.float32), model_size))

    def serve_bytes(image_bytes):
        return _predict_encoded(
            model, image_bytes, model_size, channels, num_classes, plte_chunk, BYTES_INPUT
        )

    def serve_example(tf_example):
        features = tf.io.parse_example(
            tf_example, {EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
        )
        return _predict_encoded(
            model,
            features[EXAMPLE_IMAGE_KEY],
            model_size,
            channels,
            num_classes,
            plte_chunk,
            EXAMPLE_INPUT,
        )

    # serving_default is registered first: ExportArchive aliases nothing else to it.
    archive.add_endpoint(
        FLOAT_SIGNATURE,
        serve_float,
        [tf.TensorSpec((None,) + tuple(shape), tf.float32, name=IMAGES_INPUT)],
    )
    archive.add_endpoint(
        TENSOR_SIGNATURE,
        serve_tensor,
        [tf.TensorSpec((None, None, None, channels), tf.uint8, name=IMAGES_INPUT)],
    )
    if channels not in ENCODED_CHANNELS:
        return archive
    archive.add_endpoint(
        BYTES_SIGNATURE, serve_bytes, [tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)]
    )
    archive.add_endpoint(
        EXAMPLE_SIGNATURE, serve_example, [tf.TensorSpec((None,), tf.string, name=EXAMPLE_INPUT)]
    )
    return archive


def encode_image(image, format="png"):
    """Encodes an RGB (or grey) image ``[H, W, C]`` (0..255) as PNG or JPEG bytes.

    Example:
        >>> import numpy as np
        >>> encode_image(np.zeros((4, 5, 3), np.uint8))[:4]
        b'\\x89PNG'
    """
    from PIL import Image

    array = np.clip(np.rint(np.asarray(image, np.float32)), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if format not in ("png", "jpeg"):
        raise ValueError(f"format must be 'png' or 'jpeg'. Received: format={format!r}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(
        buffer, format=format.upper(), **({"quality": 95} if format == "jpeg" else {})
    )
    return buffer.getvalue()


def tf_example(encoded_image):
    """A serialized ``tf.train.Example`` holding ``encoded_image`` under ``image/encoded``.

    Example:
        >>> len(tf_example(b"\\x89PNG...")) > 0
        True
    """
    import tensorflow as tf

    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded_image]))
    example = tf.train.Example(features=tf.train.Features(feature={EXAMPLE_IMAGE_KEY: feature}))
    return example.SerializeToString()


def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "writing TF Serving warm-up requests needs the tensorflow-serving-api protos: "
            "pip install --no-deps 'tensorflow-serving-api~=2.21.0' (--no-deps: it requires the "
            "full 'tensorflow' wheel, while its protos work with tensorflow-cpu), or export "
            "with warmup=False"
        ) from error
    return predict_pb2, prediction_log_pb2


def warmup_inputs(images):
    """The warm-up requests for held-out ``images`` (float32 ``[H, W, C]`` 0..255): one per
    signature, as ``[(signature_name, {input_name: numpy array})]``.

    ``predict_image_bytes`` gets a JPEG and a PNG (two sizes when two sizes are given).

    Example:
        >>> import numpy as np
        >>> requests = warmup_inputs([np.zeros((8, 8, 3), np.float32)])
        >>> [name for name, _ in requests]
        ['serving_default', 'predict_image_tensor', 'predict_image_bytes', 'predict_tf_example']
    """
    first = np.asarray(images[0], np.float32)
    second = np.asarray(images[-1], np.float32)
    tensors = [
        (FLOAT_SIGNATURE, {IMAGES_INPUT: first[None]}),
        (TENSOR_SIGNATURE, {IMAGES_INPUT: np.clip(np.rint(first), 0, 255).astype(np.uint8)[None]}),
    ]
    if first.shape[-1] not in ENCODED_CHANNELS:
        return tensors
    encoded = np.array([encode_image(first, "jpeg"), encode_image(second, "png")], dtype=object)
    return [
        *tensors,
        (BYTES_SIGNATURE, {BYTES_INPUT: encoded}),
        (EXAMPLE_SIGNATURE, {EXAMPLE_INPUT: np.array([tf_example(encoded[1])], dtype=object)}),
    ]


def write_warmup_requests(path, model_name, requests):
    """Writes TF Serving warm-up records (``PredictionLog`` with a ``PredictRequest``) to ``path``.

    Args:
        path: the file, normally ``<version>/assets.extra/tf_serving_warmup_requests``.
        model_name: the name TF Serving serves the model under.
        requests: ``[(signature_name, {input_name: numpy array})]``, e.g. :func:`warmup_inputs`.

    Example:
        >>> write_warmup_requests("/tmp/m/1/assets.extra/tf_serving_warmup_requests", "m",
        ...                       warmup_inputs(images))  # doctest: +SKIP
    """
    import tensorflow as tf

    predict_pb2, prediction_log_pb2 = _serving_apis()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with fileio.atomic_path(path) as temporary:
        with tf.io.TFRecordWriter(temporary) as writer:
            for signature, inputs in requests:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = model_name
                request.model_spec.signature_name = signature
                for key, value in inputs.items():
                    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
                writer.write(log.SerializeToString())
    return path


def read_warmup_requests(path):
    """The ``PredictionLog`` records of a warm-up file (a SavedModel folder or the file).

    Example:
        >>> logs = read_warmup_requests("/tmp/models/unet/1")  # doctest: +SKIP
        >>> logs[0].predict_log.request.model_spec.signature_name  # doctest: +SKIP
        'serving_default'
    """
    import tensorflow as tf

    _, prediction_log_pb2 = _serving_apis()
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, WARMUP_FILE)
    logs = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


class SessionPredictor:
    """A SavedModel loaded by the TF1 session loader (``serve`` tag), as TF Serving's C++
    loader and ``saved_model_cli run`` load it; runs signatures by name.

    Example:
        >>> with SessionPredictor("/tmp/models/unet/1") as server:   # doctest: +SKIP
        ...     outputs = server.run("predict_image_bytes", image_bytes=[png_bytes])
        ...     outputs["labels"].shape
        (1, 96, 128)
    """

    def __init__(self, path, tags=("serve",)):
        import tensorflow as tf

        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"SavedModel directory {path!r} does not exist")
        self.path = path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, list(tags), path)

    def signature(self, name):
        """The ``SignatureDef`` called ``name``."""
        signatures = self.meta_graph.signature_def
        if name not in signatures:
            raise ValueError(
                f"SavedModel {self.path!r} has no signature {name!r}; it has "
                f"{sorted(signatures)}. Received: signature={name!r}"
            )
        return signatures[name]

    def run(self, signature, **inputs):
        """Runs ``signature`` on named numpy inputs; returns ``{output name: numpy array}``."""
        definition = self.signature(signature)
        unknown = sorted(set(inputs) - set(definition.inputs))
        missing = sorted(set(definition.inputs) - set(inputs))
        if unknown or missing:
            raise ValueError(
                f"signature {signature!r} takes the inputs {sorted(definition.inputs)}. "
                f"Received: inputs={sorted(inputs)}"
            )
        feeds = {definition.inputs[k].name: v for k, v in inputs.items()}
        names = sorted(definition.outputs)
        values = self.session.run([definition.outputs[k].name for k in names], feeds)
        return dict(zip(names, values))

    def run_request(self, request):
        """Runs a ``PredictRequest`` proto (e.g. a warm-up record's) like TF Serving's Predict."""
        import tensorflow as tf

        inputs = {key: tf.make_ndarray(value) for key, value in request.inputs.items()}
        return self.run(request.model_spec.signature_name or FLOAT_SIGNATURE, **inputs)

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _keras_labels(model, image):
    from kseg._export_common import _first_output

    return np.asarray(_first_output(model.predict(image[None], verbose=0))).argmax(-1)[0]


def _check_export(model, path, images, min_agreement, warmup_count):
    """Runs every signature of the SavedModel at ``path`` (TF1 loader) on ``images`` and
    compares the labels with ``model.predict``; returns the report entry."""
    encoded_signatures = images[0].shape[-1] in ENCODED_CHANNELS
    agreements = {name: [0, 0] for name in signatures_for(images[0].shape[-1])}

    def add(name, expected, got):
        agreements[name][0] += int((expected == got).sum())
        agreements[name][1] += int(expected.size)

    with SessionPredictor(path) as server:
        for image in images:
            expected = _keras_labels(model, image)
            add(
                FLOAT_SIGNATURE,
                expected,
                server.run(FLOAT_SIGNATURE, images=image[None])["labels"][0],
            )
            pixels = np.clip(np.rint(image), 0, 255)
            expected = _keras_labels(model, pixels)
            add(
                TENSOR_SIGNATURE,
                expected,
                server.run(TENSOR_SIGNATURE, images=pixels.astype(np.uint8)[None])["labels"][0],
            )
            if not encoded_signatures:
                continue
            encoded = encode_image(pixels, "png")  # lossless: the same pixels
            got = server.run(BYTES_SIGNATURE, image_bytes=np.array([encoded], object))
            add(BYTES_SIGNATURE, expected, got["labels"][0])
            got = server.run(EXAMPLE_SIGNATURE, tf_example=np.array([tf_example(encoded)], object))
            add(EXAMPLE_SIGNATURE, expected, got["labels"][0])
        latency = export_report.median_latency_ms(
            lambda x: server.run(FLOAT_SIGNATURE, images=x[None]), images
        )
        latencies = {FLOAT_SIGNATURE: latency}
        if encoded_signatures:
            encoded_images = [np.array([encode_image(x, "png")], object) for x in images]
            latencies[BYTES_SIGNATURE] = export_report.median_latency_ms(
                lambda x: server.run(BYTES_SIGNATURE, image_bytes=x), encoded_images
            )
        if warmup_count:
            for log in read_warmup_requests(path):
                server.run_request(log.predict_log.request)
    per_signature = {k: matches / max(total, 1) for k, (matches, total) in agreements.items()}
    agreement = min(per_signature.values())
    return {
        "agreement": agreement,
        "agreement_by_signature": per_signature,
        "min_agreement": min_agreement,
        "images": len(images),
        "image_shapes": sorted({tuple(int(d) for d in x.shape) for x in images}),
        "pixels": int(sum(x.shape[0] * x.shape[1] for x in images)),
        "loader": "TF1 session (tf.compat.v1.saved_model.loader.load, tag 'serve')",
        "latency_ms": latency,
        "latency_ms_by_signature": latencies,
        "warmup_requests": warmup_count,
    }


def export_saved_model(
    model,
    path,
    input_shape=None,
    dynamic_size=True,
    *,
    name=None,
    version=None,
    class_names=None,
    palette=None,
    mask_png=True,
    warmup=None,
    verify_data=None,
    verify_images=4,
    min_agreement=export_report.MIN_AGREEMENT["float"],
):
    """Writes ``model`` as a TF Serving SavedModel, checks it against Keras, and returns its folder.

    The folder is built beside its final path, checked, and only then renamed into place: an
    export that is interrupted or fails its check leaves nothing at the final path.

    Args:
        model: a single-input segmentation model (float RGB 0..255 in, logits out).
        path: with ``name`` or ``version``: the export root, and the model goes to
            ``path/name/version`` (TF Serving's ``--model_base_path`` is ``path/name``);
            otherwise the SavedModel folder itself (replaced atomically if it exists).
        input_shape: ``(H, W, C)`` for the signatures; default the model's input shape.
        dynamic_size: leave height and width unknown in ``serving_default`` (when the model
            allows it), so one SavedModel serves any image size.
        name: the model's folder under ``path`` (e.g. ``model.name``).
        version: a positive int, or None for the next free integer (1 for a new model). An
            existing version is never overwritten.
        class_names: one name per class (``assets/labels.txt``); default ``class_0`` ...
        palette: ``[num_classes, 3]`` RGB colours of ``mask_png_bytes``; default VOC colours.
        mask_png: add the ``mask_png_bytes`` output (models of at most 256 classes).
        warmup: write ``assets.extra/tf_serving_warmup_requests``: True (needs
            ``tensorflow-serving-api``), False, or None (when that package is installed).
        verify_data: held-out images for the check: a spec of
            :func:`kseg.export_report.held_out_images` (default synthetic test scenes) or a
            list/array of float images ``[H, W, C]``.
        verify_images: how many held-out images to use from a spec.
        min_agreement: the least fraction of held-out pixels whose label from every signature
            (run by the TF1 loader, as TF Serving does) must match ``model.predict``.

    Returns:
        The SavedModel folder (``path/name/version`` or ``path``).

    Raises:
        kseg.export_report.ExportCheckError: the exported model disagrees with Keras more than
            ``min_agreement`` allows; the message gives the figure, nothing is written.
        FileExistsError: ``version`` already exists.

    Example:
        >>> import kseg
        >>> model = kseg.models.UNet(num_classes=3, base_filters=4, depth=2)
        >>> kseg.serving.export_saved_model(model, "/tmp/export", name="unet",
        ...                                 class_names=["sky", "road", "car"])  # doctest: +SKIP
        '/tmp/export/unet/1'
    """
    from kseg._export_common import _check_model, _resolve_input_shape

    _check_model(model)
    min_agreement = export_report.check_min_agreement(min_agreement)
    shape = _resolve_input_shape(model, input_shape)
    declared = tuple(model.inputs[0].shape[1:])
    if dynamic_size:
        shape = tuple(None if d is None else s for d, s in zip(declared[:2], shape[:2])) + shape[2:]
    if shape[2] is None:
        raise ValueError(f"the model's input channels must be known. Received: input shape {shape}")
    num_classes = model.outputs[0].shape[-1]
    if num_classes is None:
        raise ValueError(
            f"the model's number of classes (last output axis) must be known for {model.name!r}"
        )
    names = _class_names(class_names, num_classes)
    colours = _palette(palette, num_classes) if mask_png else None
    if mask_png and colours is None:
        raise ValueError(
            f"mask_png holds class indices in an 8-bit palette PNG: at most 256 classes, "
            f"{model.name!r} has {num_classes}. Pass mask_png=False."
        )
    if warmup is None:
        try:
            _serving_apis()
            warmup = True
        except ImportError:
            import warnings

            warnings.warn(
                "tensorflow-serving-api is not installed: the SavedModel gets no warm-up "
                "requests (pip install --no-deps 'tensorflow-serving-api~=2.21.0')",
                stacklevel=2,
            )
            warmup = False
    elif warmup:
        _serving_apis()
    model_size = tuple(shape[:2]) if None not in shape[:2] else None
    if verify_data is None or isinstance(verify_data, (str, os.PathLike)):
        images = export_report.held_out_images(
            verify_data, verify_images, image_size=model_size, channels=shape[2]
        )
    else:
        images = [np.asarray(x, np.float32) for x in verify_data]
        if not images or any(x.ndim != 3 or x.shape[-1] != shape[2] for x in images):
            raise ValueError(
                f"verify_data must hold images [H, W, {shape[2]}]. Received: shapes "
                f"{[np.shape(x) for x in images]}"
            )
    if model_size is not None:
        import tensorflow as tf

        images = [
            x if x.shape[:2] == model_size else tf.image.resize(x, model_size).numpy()
            for x in images
        ]

    final, versioned = _destination(path, name, version)
    plte = _png_chunk(b"PLTE", colours.tobytes()) if colours is not None else None
    archive = _build_archive(model, shape, num_classes, plte)
    preprocessing = _preprocessing(model)
    docs = _signature_docs(model, names, preprocessing, model_size, shape[2], num_classes, mask_png)
    docs["signatures"] = {
        k: v for k, v in docs["signatures"].items() if k in signatures_for(shape[2])
    }
    with fileio.atomic_directory(final) as folder:
        archive.write_out(folder, verbose=False)
        assets = os.path.join(folder, "assets")
        os.makedirs(assets, exist_ok=True)
        with open(os.path.join(assets, "labels.txt"), "w", encoding="utf-8") as file:
            file.write("".join(f"{n}\n" for n in names))
        with open(os.path.join(assets, "preprocessing.json"), "w", encoding="utf-8") as file:
            json.dump(preprocessing, file, indent=2)
        with open(os.path.join(assets, "signatures.json"), "w", encoding="utf-8") as file:
            json.dump(docs, file, indent=2)
        requests = warmup_inputs(images) if warmup else []
        if warmup:
            serving_name = name if name is not None else model.name
            write_warmup_requests(os.path.join(folder, WARMUP_FILE), str(serving_name), requests)
        check = _check_export(model, folder, images, min_agreement, len(requests))
        export_report.check_agreement(
            check["agreement"], min_agreement, f"SavedModel {final!r} (TF1 loader, all signatures)"
        )
        entry = {
            "format": "savedmodel",
            "path": ".",
            "size_bytes": export_report.artefact_size(folder),
            "input_spec": {
                "signature": FLOAT_SIGNATURE,
                "name": IMAGES_INPUT,
                "shape": [None, *shape],
                "dtype": "float32",
                "value_range": [0.0, 255.0],
                "preprocessing": preprocessing,
            },
            "signatures": list(signatures_for(shape[2])),
            "versioned": versioned,
            **check,
        }
        export_report.write_report(folder, entry)
    return final


def rest_request(images, signature_name=BYTES_SIGNATURE, format="png"):
    """The JSON body of a TF Serving REST ``:predict`` call on encoded images.

    Args:
        images: encoded image bytes, or arrays ``[H, W, C]`` (encoded as ``format``).
        signature_name: ``predict_image_bytes`` (default).
        format: "png" or "jpeg" for arrays.

    Returns:
        ``{"signature_name": ..., "instances": [{"b64": ...}, ...]}`` (row format: a single
        input, so each instance is the input's value; TF Serving base64-decodes ``{"b64": ..}``).

    Example:
        >>> import json, numpy as np
        >>> body = rest_request([np.zeros((4, 4, 3), np.uint8)])
        >>> sorted(body), list(body["instances"][0])
        (['instances', 'signature_name'], ['b64'])
    """
    instances = []
    for image in images:
        data = image if isinstance(image, (bytes, bytearray)) else encode_image(image, format)
        instances.append({"b64": base64.b64encode(bytes(data)).decode("ascii")})
    return {"signature_name": signature_name, "instances": instances}


def labels_from_rest_response(response):
    """Each image's label map (cropped to its own size) from a REST ``:predict`` response of
    ``predict_image_bytes`` (row format: ``{"predictions": [{"labels": ..., "heights": ...}]}``).

    Example:
        >>> response = {"predictions": [{"labels": [[1, 2, -1]], "heights": 1, "widths": 2}]}
        >>> labels_from_rest_response(response)[0].tolist()
        [[1, 2]]
    """
    result = []
    for prediction in response["predictions"]:
        labels = np.asarray(prediction["labels"], np.int32)
        result.append(labels[: int(prediction["heights"]), : int(prediction["widths"])])
    return result

"""TFLite model metadata for MediaPipe's ImageSegmenter and the TFLite Task Library.

An image-segmentation ``.tflite`` file is usable on Android through MediaPipe Tasks
(``ImageSegmenter``) or the TFLite Task Library only with metadata inside it: the input
normalisation, the class names (a ``TENSOR_AXIS_LABELS`` file on output 0), and for MediaPipe
the activation of the output in the custom metadata ``"SEGMENTER_METADATA"``. MediaPipe also
needs batch 1, a fixed height and width, one subgraph and a single output of per-pixel class
scores (two outputs are read as ``[quality, mask]``).

The metadata is written with ``tflite-support``'s maintained writer
(``metadata_writers.image_segmenter``; install it with ``pip install --no-deps tflite-support``,
as its pinned protobuf conflicts with TensorFlow 2.21, plus Debian's ``libusb-1.0-0``), and the
``SEGMENTER_METADATA`` record with the flatbuffer schema MediaPipe ships
(``mediapipe.tasks.metadata.image_segmenter_metadata_schema_py_generated``). MediaPipe's own
writer does not import from the 1.2.x wheel (``mediapipe.tasks.cc`` is missing).

Normalisation of a float model: kseg models normalise inside themselves and take float RGB in
[0, 255]. MediaPipe feeds a float input ``(pixel - mean) / std`` with the pixel in 0..255, so the
metadata says mean 0 and std 1: the model receives the raw pixel values it was trained on (a
float model without ``NormalizationOptions`` is refused by MediaPipe). A model with uint8 input
(full-integer int8 with ``io_dtype="uint8"``) gets the pixels as they are; its input quantisation
must then be scale 1, zero point 0, which :func:`kseg.export.tflite` ensures.

Example:
    >>> content = open("/tmp/deeplab.tflite", "rb").read()                    # doctest: +SKIP
    >>> content = add_segmenter_metadata(content, ["background", "cat", "dog"])  # doctest: +SKIP
    >>> read_segmenter_metadata(content)["labels"]                           # doctest: +SKIP
    ['background', 'cat', 'dog']
"""

from __future__ import annotations

import os
import tempfile

ACTIVATIONS = ("none", "sigmoid", "softmax")
SEGMENTER_METADATA = "SEGMENTER_METADATA"
LABEL_FILE = "labels.txt"
_SEGMENTER_OPTIONS_IDENTIFIER = b"V001"  # the file identifier MediaPipe's schema declares
_INSTALL_HINT = (
    "install it with `pip install --no-deps tflite-support` (its pinned protobuf conflicts with "
    "TensorFlow; `--no-deps` keeps TensorFlow's) and Debian's libusb-1.0-0 "
    "(`apt-get install libusb-1.0-0`)"
)


def _tflite_support():
    """tflite-support's metadata modules, or an ImportError saying how to install them."""
    try:
        from tensorflow_lite_support.metadata import metadata_schema_py_generated as metadata_fb
        from tensorflow_lite_support.metadata import schema_py_generated as schema_fb
        from tensorflow_lite_support.metadata.python import metadata
        from tensorflow_lite_support.metadata.python.metadata_writers import (
            image_segmenter,
            metadata_info,
        )
    except (ImportError, OSError) as error:  # OSError: libusb-1.0.so missing
        raise ImportError(
            f"writing TFLite metadata needs the tflite-support package; {_INSTALL_HINT}. "
            f"Importing it failed: {error}"
        ) from error
    return metadata_fb, schema_fb, metadata, image_segmenter, metadata_info


def _segmenter_schema():
    """MediaPipe's generated schema of ``ImageSegmenterOptions`` (the SEGMENTER_METADATA)."""
    try:
        import mediapipe  # noqa: F401 - the package must be initialised before its submodules
        from mediapipe.tasks.metadata import image_segmenter_metadata_schema_py_generated as fb
    except ImportError as error:
        raise ImportError(
            "writing or reading the SEGMENTER_METADATA activation needs the schema that the "
            f"mediapipe package ships (`pip install mediapipe`); importing it failed: {error}. "
            "Pass activation=None to leave the record out (MediaPipe then assumes 'none')."
        ) from error
    return fb


def _check_activation(activation):
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be None or one of {ACTIVATIONS}. Received: activation={activation!r}"
        )


def _check_class_names(class_names, num_classes):
    if isinstance(class_names, str) or not hasattr(class_names, "__len__"):
        raise TypeError(
            f"class_names must be a list of strings. Received: class_names={class_names!r}"
        )
    names = list(class_names)
    bad = [n for n in names if not isinstance(n, str) or not n.strip() or "\n" in n or "\r" in n]
    if bad:
        raise ValueError(
            "class_names must be non-empty one-line strings (they become lines of the label "
            f"file). Received: class_names containing {bad[0]!r}"
        )
    if len(names) != num_classes:
        raise ValueError(
            f"class_names must name each of the model's {num_classes} output classes. "
            f"Received: {len(names)} class_names={names!r}"
        )
    return names


def _tensor_type_name(schema_fb, tensor_type):
    for name, value in vars(schema_fb.TensorType).items():
        if value == tensor_type and not name.startswith("_"):
            return name.lower()
    return str(tensor_type)


def _graph_summary(model_content):
    """Inputs and outputs of the model's subgraph(s), as plain values."""
    _, schema_fb, *_ = _tflite_support()
    model = schema_fb.Model.GetRootAsModel(model_content, 0)
    subgraph = model.Subgraphs(0)

    def describe(tensor_index):
        tensor = subgraph.Tensors(tensor_index)
        quantization = tensor.Quantization()
        scale = zero_point = None
        if quantization is not None and quantization.ScaleLength() == 1:
            scale = float(quantization.Scale(0))
            zero_point = int(quantization.ZeroPoint(0))
        shape = [int(tensor.Shape(i)) for i in range(tensor.ShapeLength())]
        signature = [int(tensor.ShapeSignature(i)) for i in range(tensor.ShapeSignatureLength())]
        return {
            "name": tensor.Name().decode(),
            "shape": shape,
            "shape_signature": signature or shape,
            "dtype": _tensor_type_name(schema_fb, tensor.Type()),
            "scale": scale,
            "zero_point": zero_point,
        }

    return {
        "subgraphs": model.SubgraphsLength(),
        "inputs": [describe(subgraph.Inputs(i)) for i in range(subgraph.InputsLength())],
        "outputs": [describe(subgraph.Outputs(i)) for i in range(subgraph.OutputsLength())],
    }


def check_segmenter_graph(model_content):
    """Checks what MediaPipe's ImageSegmenter needs of the graph; returns its summary.

    One subgraph; one input ``[1, H, W, 3]`` of fixed H and W, float32 or uint8; one output
    ``[1, H', W', K]`` of per-pixel class scores.

    Raises:
        ValueError: naming what is wrong and the value found.

    Example:
        >>> check_segmenter_graph(content)["outputs"][0]["shape"]  # doctest: +SKIP
        [1, 128, 128, 6]
    """
    summary = _graph_summary(model_content)
    if summary["subgraphs"] != 1:
        raise ValueError(
            "MediaPipe's ImageSegmenter runs a model of one subgraph. "
            f"Received: a model with {summary['subgraphs']} subgraphs"
        )
    if len(summary["inputs"]) != 1:
        raise ValueError(
            "MediaPipe's ImageSegmenter feeds one image input. "
            f"Received: a model with {len(summary['inputs'])} inputs"
        )
    if len(summary["outputs"]) != 1:
        raise ValueError(
            "MediaPipe's ImageSegmenter reads one output of per-pixel scores (two outputs are "
            "taken as [quality, mask]); export the main logits only. "
            f"Received: a model with {len(summary['outputs'])} outputs"
        )
    image = summary["inputs"][0]
    signature = image["shape_signature"]
    if len(signature) != 4 or signature[0] != 1 or signature[3] != 3 or min(signature) < 1:
        raise ValueError(
            "MediaPipe's ImageSegmenter needs an input [1, H, W, 3] of fixed height and width "
            f"(export with a fixed input_shape). Received: input shape {signature}"
        )
    if image["dtype"] not in ("float32", "uint8"):
        raise ValueError(
            "MediaPipe's ImageSegmenter feeds float32 or uint8 images. "
            f"Received: input dtype {image['dtype']}"
        )
    scores = summary["outputs"][0]
    if len(scores["shape"]) != 4 or scores["shape"][0] != 1:
        raise ValueError(
            "MediaPipe's ImageSegmenter reads an output [1, H, W, num_classes]. "
            f"Received: output shape {scores['shape']}"
        )
    return summary


def add_segmenter_metadata(
    model_content,
    class_names,
    norm_mean=(0.0, 0.0, 0.0),
    norm_std=(1.0, 1.0, 1.0),
    activation="softmax",
    name="kseg image segmenter",
    description=None,
    version=None,
):
    """Returns ``model_content`` (TFLite flatbuffer bytes) with ImageSegmenter metadata.

    Args:
        model_content: the ``.tflite`` bytes, as ``kseg.export.tflite`` writes them.
        class_names: one name per output channel; written as the ``TENSOR_AXIS_LABELS`` file
            ``labels.txt`` of output 0 (MediaPipe reports them as its ``labels``).
        norm_mean, norm_std: per-channel ``NormalizationOptions`` of a float32 input;
            MediaPipe feeds ``(pixel - mean) / std``. kseg models take [0, 255] and normalise
            inside, hence the defaults 0 and 1. Ignored for a uint8 input.
        activation: what MediaPipe applies to the scores for its confidence masks:
            "softmax" (kseg models output logits), "sigmoid", "none", or None to leave the
            ``SEGMENTER_METADATA`` record out. The category mask is the argmax either way.
        name, description, version: the model's general metadata.

    Returns:
        The flatbuffer bytes with the metadata and the label file packed in.

    Raises:
        ValueError: the graph is not one MediaPipe runs (see ``check_segmenter_graph``), or
            ``class_names`` does not match the output channels.
        ImportError: tflite-support (or, for ``activation``, mediapipe) is not installed.

    Example:
        >>> content = kseg.tflite_metadata.add_segmenter_metadata(
        ...     content, ["background", "person"], activation="softmax")   # doctest: +SKIP
    """
    _check_activation(activation)
    metadata_fb, schema_fb, metadata, image_segmenter, metadata_info = _tflite_support()
    model_content = bytes(model_content)
    if metadata.get_metadata_buffer(model_content):
        raise ValueError(
            "model_content already carries TFLite metadata: add it to the file as converted "
            "(kseg.export.tflite without class_names). Received: a model with metadata"
        )
    summary = check_segmenter_graph(model_content)
    names = _check_class_names(class_names, summary["outputs"][0]["shape"][-1])
    is_float = summary["inputs"][0]["dtype"] == "float32"
    mean = [float(m) for m in norm_mean]
    std = [float(s) for s in norm_std]
    if is_float and (len(mean) not in (1, 3) or len(std) != len(mean) or min(std) <= 0):
        raise ValueError(
            "norm_mean and norm_std must be 1 or 3 values each, std > 0. "
            f"Received: norm_mean={norm_mean!r}, norm_std={norm_std!r}"
        )
    input_type = schema_fb.TensorType.FLOAT32 if is_float else schema_fb.TensorType.UINT8
    with tempfile.TemporaryDirectory(prefix="kseg_labels_") as folder:
        label_path = os.path.join(folder, LABEL_FILE)
        with open(label_path, "w", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")
        input_md = metadata_info.InputImageTensorMd(
            name="image",
            description="RGB image, pixel values 0..255" + ("" if is_float else " (uint8)"),
            norm_mean=mean if is_float else None,
            norm_std=std if is_float else None,
            color_space_type=metadata_fb.ColorSpaceType.RGB,
            tensor_type=input_type,
        )
        output_md = metadata_info.TensorMd(
            name="segmentation_masks",
            description="Per-pixel class scores (logits), one channel per label.",
            associated_files=[metadata_info.LabelFileMd(file_path=label_path)],
        )
        general_md = metadata_info.GeneralMd(
            name=name,
            description=description
            or "Semantic segmentation: per-pixel scores of the classes in labels.txt.",
            version=version,
            author="kseg",
        )
        writer = image_segmenter.MetadataWriter.create_from_metadata_info(
            bytearray(model_content), general_md=general_md, input_md=input_md, output_md=output_md
        )
        populated = writer.populate()
        if activation is None:
            return bytes(populated)
        # The tflite-support writer has no field for MediaPipe's SEGMENTER_METADATA: add it to
        # the metadata it built and populate once more, with the same label file.
        model_metadata = metadata_fb.ModelMetadataT.InitFromObj(
            metadata_fb.ModelMetadata.GetRootAsModelMetadata(
                metadata.get_metadata_buffer(populated), 0
            )
        )
        model_metadata.subgraphMetadata[0].customMetadata = [_segmenter_options(activation)]
        import flatbuffers

        builder = flatbuffers.Builder(0)
        builder.Finish(
            model_metadata.Pack(builder), metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER
        )
        populator = metadata.MetadataPopulator.with_model_buffer(bytearray(model_content))
        populator.load_metadata_buffer(builder.Output())
        populator.load_associated_files([label_path])
        populator.populate()
        return bytes(populator.get_model_buffer())


def _segmenter_options(activation):
    """The ``SEGMENTER_METADATA`` custom metadata: an ``ImageSegmenterOptions`` flatbuffer."""
    import flatbuffers

    metadata_fb = _tflite_support()[0]
    fb = _segmenter_schema()
    options = fb.ImageSegmenterOptionsT()
    options.activation = getattr(fb.Activation, activation.upper())
    builder = flatbuffers.Builder(0)
    builder.Finish(options.Pack(builder), _SEGMENTER_OPTIONS_IDENTIFIER)
    custom = metadata_fb.CustomMetadataT()
    custom.name = SEGMENTER_METADATA
    custom.data = bytearray(builder.Output())
    return custom


def read_segmenter_metadata(path_or_content):
    """Reads back what :func:`add_segmenter_metadata` wrote, through tflite-support's
    ``MetadataDisplayer``.

    Returns:
        A dict: ``labels`` (from the ``TENSOR_AXIS_LABELS`` file of output 0), ``label_file``,
        ``norm_mean``/``norm_std`` (None for a uint8 input), ``activation`` (None when there is
        no ``SEGMENTER_METADATA``), ``associated_files``, and the graph's ``inputs`` and
        ``outputs`` (name, shape, dtype, quantisation ``scale``/``zero_point``).

    Raises:
        ValueError: the model has no metadata.

    Example:
        >>> read_segmenter_metadata("/tmp/deeplab.tflite")["activation"]  # doctest: +SKIP
        'softmax'
    """
    metadata_fb, _, metadata, _, _ = _tflite_support()
    if isinstance(path_or_content, (bytes, bytearray)):
        content = bytes(path_or_content)
    else:
        with open(os.fspath(path_or_content), "rb") as f:
            content = f.read()
    displayer = metadata.MetadataDisplayer.with_model_buffer(content)
    model_metadata = metadata_fb.ModelMetadataT.InitFromObj(
        metadata_fb.ModelMetadata.GetRootAsModelMetadata(displayer.get_metadata_buffer(), 0)
    )
    subgraph = model_metadata.subgraphMetadata[0]
    norm_mean = norm_std = None
    for unit in subgraph.inputTensorMetadata[0].processUnits or []:
        if unit.optionsType == metadata_fb.ProcessUnitOptions.NormalizationOptions:
            norm_mean = [float(v) for v in unit.options.mean]
            norm_std = [float(v) for v in unit.options.std]
    label_file = None
    for file in subgraph.outputTensorMetadata[0].associatedFiles or []:
        if file.type == metadata_fb.AssociatedFileType.TENSOR_AXIS_LABELS:
            label_file = file.name.decode() if isinstance(file.name, bytes) else file.name
    labels = None
    if label_file is not None:
        text = displayer.get_associated_file_buffer(label_file).decode("utf-8")
        labels = [line for line in text.splitlines() if line]
    activation = None
    for custom in subgraph.customMetadata or []:
        custom_name = custom.name.decode() if isinstance(custom.name, bytes) else custom.name
        if custom_name == SEGMENTER_METADATA:
            fb = _segmenter_schema()
            options = fb.ImageSegmenterOptions.GetRootAs(bytes(bytearray(custom.data)), 0)
            value = options.Activation()
            activation = next(
                (a for a in ACTIVATIONS if getattr(fb.Activation, a.upper()) == value), value
            )
    summary = _graph_summary(content)
    return {
        "labels": labels,
        "label_file": label_file,
        "norm_mean": norm_mean,
        "norm_std": norm_std,
        "activation": activation,
        "associated_files": displayer.get_packed_associated_file_list(),
        "inputs": summary["inputs"],
        "outputs": summary["outputs"],
    }

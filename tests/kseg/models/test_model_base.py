"""``SegmentationModel``: every registered model is one, with an exact config, a preprocessing
description that matches what its normalisation layer computes, and a ``from_config`` that never
loads the weights a saved config names."""

import json
import sys
import zipfile

import keras
import numpy as np
import pytest
from test_model_matrix import COMPILED_OP_MODELS, MATRIX, ROWS, _require_op_library

import kseg
import kseg.models
from kseg.layers import ImageNormalization
from kseg.models._base import (
    SegmentationModel,
    check_input_shape,
    check_num_classes,
    check_positive_ints,
    check_weights,
    preprocessing_of,
)

NUM_CLASSES = 3
INPUT_SHAPE = (40, 48, 3)


def _input_shape(name):
    # change-detection rows take two images stacked (6 channels)
    return INPUT_SHAPE[:2] + (MATRIX.get(name, {}).get("channels", 3),)


def _build(name, **overrides):
    kwargs = dict(MATRIX.get(name, {}).get("kwargs", {}))
    kwargs.update(overrides)
    return kseg.models.create(
        name, num_classes=NUM_CLASSES, input_shape=_input_shape(name), **kwargs
    )


def _first(outputs):
    return np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)


def _images(seed=0, shape=INPUT_SHAPE):
    return np.random.default_rng(seed).uniform(0, 255, (2,) + shape).astype("float32")


@pytest.mark.parametrize("name", [primary for primary, _ in ROWS])
def test_every_model_is_a_segmentation_model_with_an_exact_config(name):
    model = _build(name)
    assert isinstance(model, SegmentationModel)
    config = model.get_config()
    assert config["num_classes"] == NUM_CLASSES
    assert config["input_shape"] == _input_shape(name)
    assert config["name"] == model.name
    assert config.get("weights", None) is None
    # one attribute per argument (weights and input_shape under non-clashing names)
    assert model.input_shape_ == _input_shape(name)
    for key, value in config.items():
        if key not in ("weights", "input_shape", "name"):
            assert getattr(model, key) == value, key

    # through JSON, as in a .keras file: lists come back where tuples were
    clone = type(model).from_config(json.loads(json.dumps(config)))
    assert type(clone) is type(model)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    images = _images(shape=_input_shape(name))
    if name in COMPILED_OP_MODELS:
        _require_op_library(name)
    expected = _first(model(images, training=False))
    np.testing.assert_array_equal(_first(clone(images, training=False)), expected)
    assert expected.shape == (2,) + INPUT_SHAPE[:2] + (NUM_CLASSES,)


@pytest.mark.parametrize("name", [primary for primary, _ in ROWS])
def test_preprocessing_describes_the_normalisation_layer(name):
    model = _build(name)
    description = model.preprocessing
    assert description["value_range"] == (0.0, 255.0)
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, ImageNormalization)]
    assert layers, name
    images = _images(1, _input_shape(name))
    normalised = np.asarray(layers[0](images))
    mean = np.asarray(description["mean"], "float32")
    std = np.asarray(description["std"], "float32")
    expected = (images - mean) / std
    if description["channel_order"] == "BGR":
        expected = expected[..., ::-1]
    np.testing.assert_allclose(normalised, expected, rtol=1e-5, atol=1e-4)


def test_preprocessing_values_per_mode():
    assert preprocessing_of("caffe")["mean"] == [123.68, 116.779, 103.939]
    assert preprocessing_of("caffe")["std"] == [1.0, 1.0, 1.0]
    assert preprocessing_of("caffe")["channel_order"] == "BGR"
    assert preprocessing_of("tf")["mean"] == [127.5] * 3
    assert preprocessing_of("tf")["std"] == [127.5] * 3
    assert preprocessing_of("unit", channels=1) == {
        "mode": "unit",
        "value_range": (0.0, 255.0),
        "mean": [0.0],
        "std": [255.0],
        "channel_order": "RGB",
    }
    torch = preprocessing_of("torch")
    np.testing.assert_allclose(torch["mean"], [123.675, 116.28, 103.53])
    np.testing.assert_allclose(torch["std"], [58.395, 57.12, 57.375])
    unet = kseg.models.UNet(num_classes=2, input_shape=(16, 16, 1), base_filters=2, depth=1)
    assert unet.preprocessing["mean"] == [0.0] and unet.preprocessing["std"] == [255.0]


def test_shared_checks_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"UNet: num_classes .*Received: num_classes=0"):
        check_num_classes("UNet", 0)
    with pytest.raises(ValueError, match=r"Received: num_classes=True"):
        check_num_classes("UNet", True)
    with pytest.raises(ValueError, match=r"Received: input_shape=\(64, 64\)"):
        check_input_shape("FCN", (64, 64))
    with pytest.raises(ValueError, match=r"3 channels. Received: input_shape=\(8, 8, 1\)"):
        check_input_shape("FCN", (8, 8, 1), channels=(3,))
    assert check_input_shape("FCN", [None, 8, 3]) == (None, 8, 3)
    with pytest.raises(ValueError, match=r"Received: rates=\(6, 0\)"):
        check_positive_ints("DeepLabV2", "rates", (6, 0))
    with pytest.raises(ValueError, match=r"Received: weights=3"):
        check_weights("FCN", 3)
    assert check_weights("FCN", None) is None
    assert check_weights("FCN", "imagenet") == "imagenet"


def test_a_subclass_that_forgets_store_config_is_told():
    class Forgetful(SegmentationModel):
        def __init__(self):
            images = keras.Input((8, 8, 3))
            super().__init__(images, keras.layers.Conv2D(2, 1)(images))

    with pytest.raises(NotImplementedError, match=r"Forgetful must call self._store_config"):
        Forgetful().get_config()


def _forbid_weight_loading(monkeypatch):
    """Any download or weights-file read fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"weights were loaded: {args} {kwargs}")

    def no_weights(backbone, layers, application, weights, *args, **kwargs):
        if weights is not None:
            forbidden(backbone, weights)

    monkeypatch.setattr(keras.utils, "get_file", forbidden)
    monkeypatch.setattr(keras.Model, "load_weights", forbidden)
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("kseg.") and hasattr(
            module, "load_application_weights"
        ):
            monkeypatch.setattr(module, "load_application_weights", no_weights)


def _edit_config(path, key, value):
    with zipfile.ZipFile(path) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    config = json.loads(members["config.json"])
    config["config"][key] = value
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as target:
        for filename, data in members.items():
            target.writestr(filename, data)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("segnet", {"stage_filters": (4, 4, 8, 8, 8)}),
        ("deeplabv3", {"backbone": "mobilenetv2", "backbone_options": {"alpha": 0.35}}),
        ("deeplabv3plus", {"backbone": "xception65", "filters": 8, "decoder_filters": 4}),
    ],
)
@pytest.mark.parametrize("weights", ["imagenet", "path"])
def test_loading_never_reads_the_weights_a_config_names(
    name, kwargs, weights, tmp_path, monkeypatch
):
    model = kseg.models.create(name, num_classes=NUM_CLASSES, input_shape=(33, 33, 3), **kwargs)
    path = tmp_path / "model.keras"
    model.save(path)
    if weights == "path":
        # a file that exists and would fail to load if anything tried
        weights = str(tmp_path / "weights.h5")
        with open(weights, "wb") as file:
            file.write(b"not weights")
    _edit_config(path, "weights", weights)
    _forbid_weight_loading(monkeypatch)
    loaded = kseg.load_model(path, compile=False)
    assert loaded.weights_source is None
    assert loaded.get_config()["weights"] is None
    images = np.random.default_rng(2).uniform(0, 255, (1, 33, 33, 3)).astype("float32")
    np.testing.assert_array_equal(
        _first(loaded(images, training=False)), _first(model(images, training=False))
    )

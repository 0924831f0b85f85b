"""Mixed precision: kseg models build and train under mixed policies with float32 logits.

The models are tiny (32x32 inputs, narrow widths) and train a few eager steps on one fixed
synthetic batch (``kseg.testing.assert_training_reduces_loss``); the ResNet and VGG ones are
marked slow. ``kseg train --precision`` is checked through ``fit``.
"""

import json
import os
import sys

import keras
import numpy as np
import pytest

import kseg
from kseg.cli.main import main
from kseg.precision import PRECISIONS, check_precision, use_precision
from kseg.testing import assert_training_reduces_loss, synthetic_batch

SIZE = 32
NUM_CLASSES = 3


def test_use_precision_sets_and_restores_the_policy():
    assert keras.config.dtype_policy().name == "float32"
    with use_precision("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        with pytest.raises(ValueError, match="boom"), use_precision("mixed_float16"):
            raise ValueError("boom")
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    assert PRECISIONS == ("float32", "mixed_float16", "mixed_bfloat16")
    with pytest.raises(ValueError, match=r"Received: precision='float8'"):
        check_precision("float8")


def test_float32_models_are_unchanged():
    # No cast layer under float32: the layer graph (and so old .keras files) stay as they were.
    model = kseg.models.create("unet", num_classes=2, input_shape=(SIZE, SIZE, 3), base_filters=4)
    assert not any(layer.name.endswith("_float32") for layer in model.layers)


def _train_under(policy, build, steps=3, learning_rate=1e-3, loss_weights=None):
    with use_precision(policy):
        model = build()
    assert model.dtype_policy.name == policy
    images, labels = synthetic_batch(2, SIZE, SIZE, NUM_CLASSES)
    outputs = model(images, training=False)
    for output in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
        assert output.dtype == "float32"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))
    # weights stay float32; the layers compute in the half format
    assert {w.dtype for w in model.weights} == {"float32"}
    half = policy.split("_")[1]
    assert any(layer.compute_dtype == half for layer in model.layers)
    losses = assert_training_reduces_loss(
        model,
        images,
        labels,
        steps=steps,
        learning_rate=learning_rate,
        loss=kseg.losses.CrossEntropy(),
        loss_weights=loss_weights,
        use_fit=False,
        max_ratio=1.0,  # as kseg.testing.check_model: a few steps only have to lower it
    )
    return model, losses


QUICK = {
    "unet": lambda: kseg.models.create(
        "unet", num_classes=NUM_CLASSES, input_shape=(SIZE, SIZE, 3), base_filters=8, depth=3
    ),
    "deeplabv3plus_mobilenetv2": lambda: kseg.models.create(
        "deeplabv3plus",
        num_classes=NUM_CLASSES,
        input_shape=(SIZE, SIZE, 3),
        backbone="mobilenetv2",
        backbone_options={"alpha": 0.35},
        filters=16,
        decoder_filters=8,
    ),
}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_models_train_under_mixed_bfloat16(name):
    _, losses = _train_under("mixed_bfloat16", QUICK[name], steps=5)
    assert losses[-1] < losses[0]


def _with_dense_crf():
    """A U-Net whose logits also go through DenseCRF: [logits, CRF log-probabilities]."""
    unet = QUICK["unet"]()
    images = unet.input
    refined = kseg.layers.DenseCRF(iterations=2, name="crf")([images, unet.output])
    # as SegmentationModel does for its logits: outputs leave the model as float32
    refined = keras.layers.Activation("linear", dtype="float32", name="crf_float32")(refined)
    return keras.Model(images, [unet.output, refined])


def test_a_model_with_dense_crf_trains_under_mixed_bfloat16():
    pytest.importorskip("kseg_ops").load_ops_library()
    # The CRF is not differentiable (mean-field inference, no gradient): the loss on its
    # output has weight 0 and training reaches the U-Net through the logits; the CRF runs in
    # the forward pass of each step, in float32 inside the layer.
    model, losses = _train_under("mixed_bfloat16", _with_dense_crf, loss_weights=[1.0, 0.0])
    assert losses[-1] < losses[0]
    crf = model.get_layer("crf")
    assert crf.compute_dtype == "bfloat16"
    images, _ = synthetic_batch(2, SIZE, SIZE, NUM_CLASSES)
    probabilities = keras.ops.convert_to_numpy(model(images)[1]).astype("float32")
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=3 * 2**-8 * NUM_CLASSES)


def test_kseg_train_precision_option(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["train", "--model", "unet", "--model-option", "base_filters=4", "--model-option",
         "depth=2", "--precision", "mixed_float16", "--epochs", "1", "--batch-size", "4",
         "--num-images", "8", "--image-size", "32", "32", "--output", str(out)]
    )  # fmt: skip
    assert code == 0
    assert keras.config.dtype_policy().name == "float32"  # restored after the command
    # float16 trains through fit with Keras's loss scaling (compile adds it): finite losses
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 1 and np.all(np.isfinite(history["loss"]))
    model = kseg.load_model(str(out / "model.keras"))
    # the file holds float32 weights; it loads under the current (float32) policy
    assert {w.dtype for w in model.weights} == {"float32"}
    images, _ = synthetic_batch(1, SIZE, SIZE, 6)
    assert np.all(np.isfinite(model.predict(images, verbose=0)))
    with pytest.raises(SystemExit):
        main(["train", "--precision", "float8"])
    assert "invalid choice: 'float8'" in capsys.readouterr().err


# --- ResNet / VGG models: slow on CPU ----------------------------------------------------

SLOW = {
    "pspnet_resnet50": (
        lambda: kseg.models.create(
            "pspnet",
            num_classes=NUM_CLASSES,
            input_shape=(SIZE, SIZE, 3),
            backbone="resnet50",
            output_stride=16,
            dropout=0.0,  # dropout noise hides a few steps' progress on one batch
        ),
        1e-5,  # as the model matrix: full-width ResNet-50 diverges at 1e-3 on a batch of 2
    ),
    "gcn_fft": (
        lambda: kseg.models.create(
            "gcn",
            num_classes=NUM_CLASSES,
            input_shape=(SIZE, SIZE, 3),
            backbone="resnet50",
            fft_algorithm="fft",
            kernel_size=7,
        ),
        1e-4,
    ),
    "deeplabv1_dense_crf": (None, 1e-4),
}


def _deeplabv1_with_crf():
    model = kseg.models.create(
        "deeplabv1",
        num_classes=NUM_CLASSES,
        input_shape=(SIZE, SIZE, 3),
        variant="largefov",
        dropout=0.0,  # fc6/fc7 dropout 0.5 hides a few steps' progress on one batch
        crf={"iterations": 2},
    )
    # DeepLab's CRF is post-processing: train the network on the logits before it.
    before_crf = model.get_layer("crf").input[1]
    before_crf = keras.layers.Activation("linear", dtype="float32")(before_crf)
    return keras.Model(model.input, [before_crf, model.output])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW))
def test_resnet_and_vgg_models_train_under_mixed_bfloat16(name):
    build, learning_rate = SLOW[name]
    weights = None
    if name == "deeplabv1_dense_crf":
        build, weights = _deeplabv1_with_crf, [1.0, 0.0]
    if name in ("gcn_fft", "deeplabv1_dense_crf"):
        pytest.importorskip("kseg_ops").load_ops_library()
    model, losses = _train_under(
        "mixed_bfloat16", build, steps=4, learning_rate=learning_rate, loss_weights=weights
    )
    assert losses[-1] < losses[0]
    if name == "gcn_fft":
        ffts = [x for x in model.layers if isinstance(x, kseg.layers.FFTConv2D)]
        assert ffts and all(x.compute_dtype == "bfloat16" for x in ffts)


def _op_library_loads():
    try:
        import kseg_ops

        kseg_ops.load_ops_library()
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_every_registered_model_builds_under_mixed_policies_with_float32_logits(policy):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
    from test_model_matrix import MATRIX, ROWS  # the small configurations of every model

    images, _ = synthetic_batch(1, 64, 96, NUM_CLASSES)
    for primary, _names in ROWS:
        kwargs = MATRIX.get(primary, {}).get("kwargs", {})
        channels = MATRIX.get(primary, {}).get("channels", 3)  # change detection: 6
        with use_precision(policy):
            model = kseg.models.create(
                primary, num_classes=NUM_CLASSES, input_shape=(None, None, channels), **kwargs
            )
        symbolic = model.outputs
        assert all(t.dtype == "float32" for t in symbolic), (primary, symbolic)
        if primary in ("gcn", "crfasrnn") and not _op_library_loads():
            continue
        logits = model(np.concatenate([images] * (channels // 3), axis=-1), training=False)
        logits = logits[0] if isinstance(logits, (list, tuple)) else logits
        assert logits.dtype == "float32", primary
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits))), primary
        keras.backend.clear_session()

"""The serving acceptance on a trained model (``benchmarks/serving_check.py``): the CLI's
SavedModel answers ``predict_image_bytes`` on JPEG and PNG images of three sizes in one batch
exactly as ``predict`` on the decoded images, through the TF1 session loader and
``saved_model_cli run``. The quick versions on a barely trained model are in test_serving.py."""

import argparse
import importlib.util
import os

import keras
import pytest

import kseg
from kseg import demo, engine, serving

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _serving_check():
    spec = importlib.util.spec_from_file_location(
        "serving_check", os.path.join(ROOT, "benchmarks", "serving_check.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_trained_unet_serves_image_bytes_like_predict(tmp_path):
    # A demo-style U-Net with a fixed 64x64 input (as the demo's), trained 320 steps.
    keras.utils.set_random_seed(0)
    names = kseg.data.SYNTHETIC_CLASSES
    images, labels = demo._split_arrays("train", 640, (64, 64), 0)
    model = kseg.models.UNet(
        num_classes=len(names), input_shape=(64, 64, 3), base_filters=8, depth=3
    )
    engine.compile_model(
        model, len(names), learning_rate=5e-3, total_steps=320, metrics=[], steps_per_execution=8
    )
    batches = demo._training_batches(images, labels, 8, 0).repeat()
    model.fit(batches, steps_per_epoch=320, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)

    check = _serving_check()
    args = argparse.Namespace(model=str(path), seed=0, val_scenes=25, val_size=(64, 64))
    result = check.run(args)
    for loader in ("tf1_session", "saved_model_cli"):
        assert result[loader]["label_agreement"] == 1.0, loader
        assert result[loader]["max_probability_error"] <= 1e-5, loader
        assert result[loader]["pixels"] == sum(h * w for h, w in check.SIZES) * 2
    assert result["tf1_session"]["output_shape"] == [6, 144, 130]
    assert result["warmup_signatures_run"] == list(serving.SIGNATURES)
    assert result["val_label_agreement"] == 1.0
    # the same mIoU served as in Keras, of a model that learned (0.44 after these 320 steps)
    assert result["val_miou_served"] == result["val_miou_keras"] > 0.3

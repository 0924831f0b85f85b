"""DeepParsingNetwork: the model checks, the MRF's size, and the MRF learning jointly."""

import numpy as np
import pytest

import kseg
from kseg.testing import check_model

SMALL = {
    "unary": "unet",
    "unary_options": {"base_filters": 4, "depth": 2},
    "window": 3,
    "context_kernel": 3,
    "components": 2,
}


def test_dpn_passes_the_model_checks_and_the_mrf_learns(tmp_path):
    model = kseg.models.create("dpn", num_classes=3, input_shape=(None, None, 3), **SMALL)
    before = model.get_layer("mrf").context.kernel.numpy().copy()
    results = check_model(
        lambda shape: model,
        input_shapes=[(24, 32, 3), (13, 18, 3)],
        num_classes=3,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]
    # the gradient reached the label-context filters through the min-pooling
    after = model.get_layer("mrf").context.kernel.numpy()
    assert np.abs(after - before).max() > 1e-4


def test_the_mrf_adds_its_label_contexts_to_the_unary():
    model = kseg.models.DeepParsingNetwork(
        num_classes=21,
        input_shape=(64, 64, 3),
        **{**SMALL, "window": 9, "context_kernel": 9, "components": 5},
    )
    unary = model.get_layer("unary").count_params()
    assert model.count_params() - unary == (21 * 81 + 1) * 21 * 5 == 178_710
    assert model.preprocessing == model.get_layer("unary").preprocessing


def test_unary_must_be_another_registered_model():
    with pytest.raises(ValueError, match="Received: unary='dpn'"):
        kseg.models.DeepParsingNetwork(num_classes=3, unary="dpn")
    with pytest.raises(ValueError, match="nosuchmodel"):
        kseg.models.DeepParsingNetwork(num_classes=3, unary="nosuchmodel")

"""``.keras`` files saved before the models moved onto ``SegmentationModel`` still load.

``fixtures/`` holds one small model per family with the images it was given and the logits it
returned, written by ``fixtures/make_fixtures.py`` before the change (never regenerate them:
that would hide a break). Each must load with ``kseg.load_model`` and predict the same logits.
"""

import os

import numpy as np
import pytest

import kseg

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
FAMILIES = sorted(name[: -len(".keras")] for name in os.listdir(FOLDER) if name.endswith(".keras"))
# Families whose layers run a compiled kseg_ops op when they predict.
COMPILED_OP = {"crfasrnn": "LatticeFilter", "gcn": "FftConv2D"}


def _require_op_library(family):
    if family not in COMPILED_OP:
        return
    import kseg_ops

    try:
        kseg_ops.load_ops_library()
    except ImportError as error:
        pytest.skip(f"{family} runs the compiled op {COMPILED_OP[family]}, not built: {error}")


def test_one_fixture_per_family():
    assert FAMILIES == [
        "crfasrnn",
        "deconvnet",
        "deeplabv1",
        "deeplabv2",
        "deeplabv3",
        "deeplabv3plus",
        "fcn",
        "gcn",
        "pspnet",
        "segnet",
        "unet",
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_fixture_loads_and_predicts_identically(family):
    _require_op_library(family)
    model = kseg.load_model(os.path.join(FOLDER, f"{family}.keras"), compile=False)
    with np.load(os.path.join(FOLDER, f"{family}.npz")) as saved:
        images, expected = saved["images"], saved["logits"]
    outputs = model.predict(images, verbose=0)
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    outputs = np.asarray(outputs)
    assert outputs.shape == expected.shape
    # the saved logits are far from constant: a model that loaded fresh weights would miss them
    assert expected.std() > 1e-3 * max(1.0, np.abs(expected).max())
    tolerance = 1e-5 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=tolerance)
    np.testing.assert_array_equal(outputs.argmax(-1), expected.argmax(-1))

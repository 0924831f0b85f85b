"""ASPP through the shared layer harness (its branch values are tested in test_deeplab.py)."""

import numpy as np
import pytest

from kseg.layers import ASPP
from kseg.testing import check_layer


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filters": 4, "rates": (1, 2)},
        {"filters": 3, "rates": (2,), "separable": True, "dropout": 0.1, "image_pooling": False},
    ],
)
def test_layer_contract_with_the_shared_harness(kwargs, tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 5)).astype("float32")
    out = check_layer(
        ASPP,
        kwargs,
        x,
        input_shapes=(None, None, 5),
        tmp_dir=tmp_path,
    )
    assert out.shape == (2, 7, 9, kwargs["filters"])
    # every output has passed the projection's ReLU
    assert out.min() >= 0 and out.max() > 0


def test_dtype_policy_reaches_the_branches():
    x = np.random.default_rng(1).normal(size=(1, 5, 5, 3)).astype("float64")
    assert ASPP(filters=2, rates=(1,), dtype="float64")(x).dtype.name == "float64"

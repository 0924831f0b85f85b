"""AdaptiveAveragePooling2D against a brute-force numpy implementation of the bin rule."""

import keras
import numpy as np
import pytest

from kseg.layers import AdaptiveAveragePooling2D
from kseg.testing import check_layer


def adaptive_average_reference(x, bins):
    b, h, w, c = x.shape
    out = np.zeros((b, bins, bins, c))
    for i in range(bins):
        r0, r1 = (i * h) // bins, -(-(i + 1) * h // bins)
        for j in range(bins):
            c0, c1 = (j * w) // bins, -(-(j + 1) * w // bins)
            out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_matches_reference_with_unknown_sizes(bins):
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, AdaptiveAveragePooling2D(bins)(inputs))
    rng = np.random.default_rng(bins)
    for hw in [(12, 12), (13, 7), (65, 33), (4, 5), (2, 9)]:
        x = rng.normal(size=(2, *hw, 2)).astype("float32")
        np.testing.assert_allclose(
            model.predict(x, verbose=0), adaptive_average_reference(x, bins), rtol=1e-5, atol=1e-5
        )


def test_shape_config_and_errors():
    layer = AdaptiveAveragePooling2D(3)
    assert tuple(layer(keras.Input((None, 7, 4))).shape) == (None, 3, 3, 4)
    assert AdaptiveAveragePooling2D.from_config(layer.get_config()).bins == 3
    with pytest.raises(ValueError, match="bins.*0"):
        AdaptiveAveragePooling2D(0)


@pytest.mark.parametrize("input_shape", [(13, 7, 3), (None, None, 3)])
def test_layer_contract_with_the_shared_harness(input_shape, tmp_path):
    x = np.random.default_rng(2).normal(size=(2, 13, 7, 3)).astype("float32")
    check_layer(
        AdaptiveAveragePooling2D,
        {"bins": 3},
        x,
        expected_output=adaptive_average_reference(x.astype("float64"), 3),
        atol=1e-5,
        input_shapes=input_shape,
        tmp_dir=tmp_path,
    )

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


@pytest.mark.parametrize("bins", [6, 11])
def test_tflite_runs_every_op_in_xnnpack_and_keeps_the_values(bins, tmp_path):
    # XNNPACK (TF 2.21) takes a CONCATENATION of at most 5 inputs: the bins are concatenated
    # 5 at a time, else 6 bins left two concatenations on TFLite's reference kernels.
    import kseg

    inputs = keras.Input((12, 22, 4))
    model = keras.Model(inputs, AdaptiveAveragePooling2D(bins)(inputs))
    path = kseg.export.tflite(model, tmp_path / "pool.tflite")
    assert kseg.bench.tflite_undelegated_ops(path) == ({}, 1)
    x = np.random.default_rng(bins).normal(size=(1, 12, 22, 4)).astype("float32")
    np.testing.assert_allclose(
        kseg.export.run_tflite(path, x), adaptive_average_reference(x, bins), atol=1e-5
    )

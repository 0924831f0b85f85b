"""The lattice's int32 keys: features just inside the documented bound work, just outside raise.

Each elevated coordinate is a sum of at most ``d`` terms ``feature[k] * scale[k]``; the kernel
bounds every term by ``2^30 / (d + 1)`` (float64) so that keys, their neighbours and the rank sums
fit in int32, and by ``2^22 / (d + 1)`` in float32, whose 24-bit mantissa must keep the fractions
that choose the simplex. Before the bound was derived this way, features of magnitude 2^26..2^28 crashed the process.
"""

import numpy as np
import pytest
import tensorflow as tf

import kseg_ops


def _scales(d):
    # The elevation's per-axis scale (permutohedral.h, Build).
    return np.sqrt(2.0 / 3.0) * (d + 1) / np.sqrt(np.arange(1, d + 1) * np.arange(2, d + 2))


def _features(d, factor, dtype):
    # float64 keeps keys in int32; float32 also keeps the embedding's fractions (24-bit mantissa).
    limit = (2.0**22 if dtype == "float32" else 2.0**30) / (d + 1)
    features = np.zeros((1, 5, d))
    features[0, 0] = factor * limit / _scales(d)  # every axis at the bound: the largest keys
    features[0, 1] = -factor * limit / _scales(d)
    features[0, 2:] = np.arange(3 * d).reshape(3, d) % 5
    return features


@pytest.mark.parametrize("d", range(1, 17))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_features_inside_the_bound_filter_and_differentiate(d, dtype):
    features = tf.constant(_features(d, 0.999, dtype).astype(dtype))
    values = tf.constant(np.arange(1.0, 11.0).reshape(1, 5, 2).astype(dtype))
    with tf.GradientTape() as tape:
        tape.watch(values)
        out = kseg_ops.lattice_filter(values, features)
    gradient = tape.gradient(out, values)
    assert out.shape == (1, 5, 2) and np.all(np.isfinite(out))
    assert np.all(np.isfinite(gradient))
    # The two far points see only themselves: the filter keeps their values up to the lattice's
    # self-weight, the same for both (to float32's 0.25 ulp at 2^22 in the barycentric weights).
    ratio = out.numpy()[0, :2] / values.numpy()[0, :2]
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=2e-2 if dtype == "float32" else 1e-6)


@pytest.mark.parametrize("d", range(1, 17))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_features_outside_the_bound_are_an_error_naming_them(d, dtype):
    features = _features(d, 1.001 if dtype == "float64" else 1.01, dtype).astype(dtype)
    values = np.ones((1, 5, 1), dtype)
    with pytest.raises(ValueError, match=r"features of point 0 .*int32 keys.*Received: features"):
        kseg_ops.lattice_filter(values, features)

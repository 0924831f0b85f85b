"""ReNet: the four sweeps equal the layer's own RNNs run column by column and row by row."""

import numpy as np
import pytest

from kseg.layers import ReNet
from kseg.testing import check_layer


def test_renet_passes_the_layer_checks(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype("float32")
    out = check_layer(
        ReNet,
        {"units": 3, "patch_size": 2},
        x,
        input_shapes=(None, None, 3),
        check_dtypes=("float64",),
        tmp_dir=tmp_path,
    )
    assert out.shape == (2, 3, 2, 6)


def test_sweeps_match_a_column_then_row_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 4, 3)).astype("float32")  # odd height: padded for 2x2 patches
    layer = ReNet(units=2, patch_size=2)
    out = np.asarray(layer(x))
    # reference: zero-pad to 6x4, flatten 2x2 patches (row-major within the patch)
    padded = np.pad(x, [(0, 0), (0, 1), (0, 0), (0, 0)])
    patches = padded.reshape(2, 3, 2, 2, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 3, 2, 12)
    vertical = np.stack(
        [np.asarray(layer.vertical(patches[:, :, j])) for j in range(2)], axis=2
    )  # each column of patches is one sequence, top to bottom (and back)
    expected = np.stack([np.asarray(layer.horizontal(vertical[:, i])) for i in range(3)], axis=1)
    assert out.shape == (2, 3, 2, 4)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # the backward half of a sweep sees the end of the line: changing the last row of
    # patches changes the first output row (whole-image context)
    changed = x.copy()
    changed[:, -1] += 5
    assert np.abs(np.asarray(layer(changed))[:, 0] - out[:, 0]).max() > 1e-4


def test_parameter_count_is_four_lasagne_grus():
    layer = ReNet(units=100)
    layer.build((None, None, None, 256))
    # two GRUs 256 -> 100 and two 200 -> 100, 3 * (in * h + h * h + h) each
    assert layer.count_params() == 2 * 3 * (256 * 100 + 100 * 100 + 100) + 2 * 3 * (
        200 * 100 + 100 * 100 + 100
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": 0}, "units=0"),
        ({"units": 4, "patch_size": 1.5}, "patch_size=1.5"),
        ({"units": 4, "cell": "rnn"}, "cell='rnn'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        ReNet(**kwargs)

"""SpaceToDepth / DepthToSpace against numpy reshape-transposes, and each other's inverse."""

import numpy as np
import pytest

from kseg.layers.pixel_shuffle import DepthToSpace, SpaceToDepth
from kseg.testing import check_layer


def _numpy_space_to_depth(x, b):
    n, h, w, c = x.shape
    return (
        x.reshape(n, h // b, b, w // b, b, c)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(n, h // b, w // b, b * b * c)
    )


@pytest.mark.parametrize("block, shape", [(2, (2, 4, 6, 3)), (3, (1, 9, 3, 2)), (4, (1, 8, 4, 1))])
def test_space_to_depth_equals_numpy_and_depth_to_space_inverts_it(block, shape):
    x = np.random.default_rng(block).normal(size=shape).astype("float32")
    expected = _numpy_space_to_depth(x, block)
    folded = check_layer(
        SpaceToDepth,
        {"block_size": block},
        x,
        expected_output=expected,
        input_shapes=(None, None, shape[-1]),
        check_training=False,
    )
    unfolded = check_layer(
        DepthToSpace,
        {"block_size": block},
        folded,
        expected_output=x,
        input_shapes=(None, None, folded.shape[-1]),
        check_training=False,
    )
    np.testing.assert_array_equal(unfolded, x)


def test_bad_block_sizes_and_shapes_are_named():
    with pytest.raises(ValueError, match="block_size.*1"):
        SpaceToDepth(1)
    with pytest.raises(ValueError, match="block_size.*'2'"):
        DepthToSpace("2")
    with pytest.raises(ValueError, match="multiples of block_size=2.*\\(1, 5, 4, 3\\)"):
        SpaceToDepth(2)(np.zeros((1, 5, 4, 3), "float32"))
    with pytest.raises(ValueError, match="multiple of block_size\\*\\*2=4.*\\(1, 2, 2, 6\\)"):
        DepthToSpace(2)(np.zeros((1, 2, 2, 6), "float32"))

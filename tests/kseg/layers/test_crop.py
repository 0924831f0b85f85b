"""CropLike, PadToMultiple and the bilinear transposed-convolution kernel."""

import keras
import numpy as np
import pytest

from kseg.layers.crop import CropLike, PadToMultiple
from kseg.layers.resize import BilinearKernel, Resize, bilinear_kernel_1d
from kseg.testing import check_layer


@pytest.mark.parametrize("anchor", ["top_left", "center"])
def test_crop_matches_numpy_slicing_with_unknown_sizes(anchor):
    x_in, ref_in = keras.Input((None, None, 2)), keras.Input((None, None, 1))
    model = keras.Model([x_in, ref_in], CropLike(anchor)([x_in, ref_in]))
    x = np.random.default_rng(0).normal(size=(2, 11, 8, 2)).astype("float32")
    for h, w in [(4, 5), (11, 8), (6, 1)]:
        top, left = ((11 - h) // 2, (8 - w) // 2) if anchor == "center" else (0, 0)
        y = model.predict([x, np.zeros((2, h, w, 1), "float32")], verbose=0)
        np.testing.assert_array_equal(y, x[:, top : top + h, left : left + w])


def test_pad_to_multiple_pads_bottom_right_with_zeros():
    x = np.random.default_rng(1).normal(size=(1, 5, 17, 3)).astype("float32")
    y = PadToMultiple(8)(x).numpy()
    assert y.shape == (1, 8, 24, 3)
    np.testing.assert_array_equal(y[:, :5, :17], x)
    assert not y[:, 5:].any() and not y[:, :, 17:].any()
    assert tuple(PadToMultiple(16)(keras.Input((20, None, 1))).shape) == (None, 32, None, 1)
    np.testing.assert_array_equal(PadToMultiple(4)(x[:, :4, :16]).numpy(), x[:, :4, :16])


def test_bad_arguments():
    with pytest.raises(ValueError, match="'middle'"):
        CropLike("middle")
    with pytest.raises(ValueError, match="multiple.*0"):
        PadToMultiple(0)
    with pytest.raises(ValueError, match="factor"):
        bilinear_kernel_1d(0)
    with pytest.raises(ValueError, match="kernel size 6"):
        BilinearKernel()((6, 6, 1, 1))


def test_bilinear_kernel_values():
    np.testing.assert_allclose(bilinear_kernel_1d(2), [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(bilinear_kernel_1d(3), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    kernel = keras.ops.convert_to_numpy(BilinearKernel()((4, 4, 3, 2)))
    np.testing.assert_allclose(
        kernel[:, :, 1, 1], np.outer(bilinear_kernel_1d(2), bilinear_kernel_1d(2))
    )
    assert not kernel[:, :, 0, 1].any() and not kernel[:, :, 2].any()


@pytest.mark.parametrize("factor", [2, 3, 8, 32])
def test_bilinear_transposed_conv_equals_bilinear_resize_inside(factor):
    # Away from the border (where the transposed convolution sees zeros and resize clamps)
    # the initialised layer is exactly half-pixel-centred bilinear upsampling.
    up = keras.layers.Conv2DTranspose(
        3,
        2 * factor - factor % 2,
        strides=factor,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearKernel(),
    )
    x = np.random.default_rng(2).normal(size=(2, 6, 5, 3)).astype("float32")
    a, b = up(x).numpy(), Resize(scale=factor)(x).numpy()
    assert a.shape == b.shape == (2, 6 * factor, 5 * factor, 3)
    np.testing.assert_allclose(
        a[:, factor:-factor, factor:-factor], b[:, factor:-factor, factor:-factor], atol=1e-5
    )


@pytest.mark.parametrize("anchor", ["top_left", "center"])
def test_crop_like_contract_with_the_shared_harness(anchor, tmp_path):
    x = np.random.default_rng(3).normal(size=(2, 9, 8, 3)).astype("float32")
    reference = np.zeros((2, 4, 5, 1), "float32")
    top, left = (2, 1) if anchor == "center" else (0, 0)
    check_layer(
        CropLike,
        {"anchor": anchor},
        [x, reference],
        expected_output=x[:, top : top + 4, left : left + 5],
        input_shapes=[(None, None, 3), (None, None, 1)],
        tmp_dir=tmp_path,
    )


@pytest.mark.parametrize("input_shape", [(5, 17, 2), (None, None, 2)])
def test_pad_to_multiple_contract_with_the_shared_harness(input_shape, tmp_path):
    x = np.random.default_rng(4).normal(size=(2, 5, 17, 2)).astype("float32")
    check_layer(
        PadToMultiple,
        {"multiple": 8},
        x,
        expected_output=np.pad(x, ((0, 0), (0, 3), (0, 7), (0, 0))),
        input_shapes=input_shape,
        tmp_dir=tmp_path,
    )

"""DPNMRF: one mean-field pass equals a numpy reference of the paper's b12-b15."""

import numpy as np
import pytest

from kseg.layers import DPNMRF
from kseg.testing import check_layer


def reference(images, unary, kernel, bias, components, window, theta_rgb, theta_xy):
    batch, height, width, classes = unary.shape
    shifted = unary - unary.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    p = np.exp(log_p)
    r = window // 2
    smoothed = np.zeros_like(p)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                total, norm = np.zeros(classes), 0.0
                for y in range(max(i - r, 0), min(i + r + 1, height)):
                    for x in range(max(j - r, 0), min(j + r + 1, width)):
                        colour = ((images[b, i, j] - images[b, y, x]) ** 2).sum()
                        w = np.exp(
                            -colour / (2 * theta_rgb**2)
                            - ((i - y) ** 2 + (j - x) ** 2) / (2 * theta_xy**2)
                        )
                        total += w * p[b, y, x]
                        norm += w
                smoothed[b, i, j] = total / norm
    k = kernel.shape[0] // 2
    padded = np.pad(smoothed, [(0, 0), (k, k), (k, k), (0, 0)])
    costs = np.zeros((batch, height, width, kernel.shape[-1])) + bias
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            costs += padded[:, dy : dy + height, dx : dx + width] @ kernel[dy, dx]
    costs = costs.reshape(batch, height, width, classes, components).min(-1)
    return log_p - costs


def test_matches_the_reference_and_passes_the_layer_checks(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 6, 7, 3)).astype("float32")
    unary = rng.normal(0, 2, (2, 6, 7, 3)).astype("float32")
    kwargs = {"components": 2, "context_kernel": 3, "window": 3, "theta_rgb": 40.0}
    layer = DPNMRF(**kwargs)
    layer([images, unary])
    kernel = rng.normal(0, 0.5, layer.context.kernel.shape).astype("float32")
    bias = rng.normal(0, 0.5, layer.context.bias.shape).astype("float32")
    layer.context.set_weights([kernel, bias])
    expected = reference(images, unary, kernel, bias, 2, 3, 40.0, 3.0)
    np.testing.assert_allclose(np.asarray(layer([images, unary])), expected, atol=1e-4)
    out = check_layer(
        DPNMRF,
        kwargs,
        [images, unary],
        input_shapes=[(None, None, 3), (None, None, 3)],
        check_dtypes=("float64",),
        atol=1e-5,
        tmp_dir=tmp_path,
    )
    assert out[0].shape == unary.shape


def test_an_untrained_layer_nearly_passes_the_unary_through():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (1, 8, 8, 3)).astype("float32")
    unary = rng.normal(0, 3, (1, 8, 8, 4)).astype("float32")
    out = np.asarray(DPNMRF(components=5, context_kernel=9, window=5)([images, unary]))
    assert (out.argmax(-1) == unary.argmax(-1)).mean() > 0.95


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": 4}, "window=4"),
        ({"components": 0}, "components=0"),
        ({"theta_rgb": -1.0}, "theta_rgb=-1.0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        DPNMRF(**kwargs)

import numpy as np
import pytest
from PIL import Image

from kseg import viz
from kseg.data.palette import voc_colormap


def test_colorize_uses_voc_colours_and_ignore_colour():
    labels = np.array([[0, 1, 2], [15, 255, 3]])
    rgb = viz.colorize(labels)
    cmap = voc_colormap()
    for (i, j), value in np.ndenumerate(labels):
        assert rgb[i, j].tolist() == cmap[value].tolist()
    assert rgb[1, 1].tolist() == [224, 224, 192]
    custom = viz.colorize(np.array([[0, 1]]), palette=[[1, 2, 3], [4, 5, 6]])
    assert custom.tolist() == [[[1, 2, 3], [4, 5, 6]]]


def test_colorize_rejects_labels_without_colour():
    with pytest.raises(ValueError, match="label 3"):
        viz.colorize(np.array([[3]]), palette=[[0, 0, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match="shape"):
        viz.colorize(np.zeros((2, 2, 2)))


def test_overlay_blends_only_foreground():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [1, 0]])
    out = viz.overlay(image, labels, alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + 128) / 2, (100 + 0) / 2
    with pytest.raises(ValueError, match="size"):
        viz.overlay(image, np.zeros((3, 3), int))


def test_panel_and_confusion_plot_files(tmp_path):
    image = np.random.default_rng(0).uniform(0, 255, (8, 10, 3))
    truth = np.zeros((8, 10), int)
    truth[2:5, 3:7] = 2
    p = viz.panel(image, truth, truth)
    assert p.shape == (8, 40, 3)
    np.testing.assert_array_equal(p[:, 10:20], viz.colorize(truth))
    path = viz.save_png(p, tmp_path / "panel.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), p)
    cm_path = viz.plot_confusion_matrix([[5, 1], [2, 7]], tmp_path / "cm.png", ["bg", "fg"])
    with Image.open(cm_path) as im:
        assert im.format == "PNG" and min(im.size) >= 300
        # the plot is not blank: the darkest cell colour is present
        assert np.asarray(im.convert("L")).min() < 80


def test_enlarge_repeats_each_pixel_as_a_block():
    source = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = viz.enlarge(source, 4)
    assert big.shape == (8, 12, 3)
    for i in range(2):
        for j in range(3):
            block = big[4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
            assert (block == source[i, j]).all()
    np.testing.assert_array_equal(viz.enlarge(source, 1), source)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="scale"):
            viz.enlarge(source, bad)


def test_scale_for_reaches_the_minimum_panel_size():
    assert viz.scale_for((96, 96)) == 3  # 288 px
    assert viz.scale_for((64, 80)) == 4  # the smaller side reaches 256
    assert viz.scale_for(256) == 1 and viz.scale_for(300) == 1
    assert viz.scale_for(100, min_size=200) == 2


def test_enlarged_panel_keeps_every_tile_pixel_exact():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (5, 6, 3))
    truth = rng.integers(0, 6, (5, 6))
    prediction = rng.integers(0, 6, (5, 6))
    small = viz.panel(image, truth, prediction)
    big = viz.panel(image, truth, prediction, scale=3)
    assert big.shape == (15, 72, 3)
    for (i, j), _ in np.ndenumerate(small[..., 0]):
        assert (big[3 * i : 3 * i + 3, 3 * j : 3 * j + 3] == small[i, j]).all()
    # the truth tile, enlarged, is the colour of each source label
    np.testing.assert_array_equal(big[::3, 18:36:3], viz.colorize(truth))

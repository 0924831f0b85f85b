"""The demo's training augmentation: the eight symmetries of the square, image and label alike."""

import numpy as np
import tensorflow as tf

from kseg import demo


def _dihedral_views(array):
    views = []
    for transposed in (array, np.swapaxes(array, 0, 1)):
        for k in range(4):
            views.append(np.rot90(transposed, k))
    return views


def test_random_dihedral_moves_image_and_label_together_through_all_eight_views():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(400, 5, 5)).astype("int32")
    images = np.stack([labels * 10, labels * 20, labels * 30], axis=-1).astype("float32")
    tf.random.set_seed(3)
    out_images, out_labels = (t.numpy() for t in demo._random_dihedral(images, labels))
    np.testing.assert_array_equal(out_images[..., 1], out_labels * 20)
    seen = set()
    for original, augmented in zip(labels, out_labels):
        matches = [
            i for i, v in enumerate(_dihedral_views(original)) if np.array_equal(v, augmented)
        ]
        assert matches, "an augmented label map is not a symmetry of its original"
        seen.add(matches[0])
    # 400 draws of 8 equally likely views: every view appears.
    assert seen == set(range(8))


def test_training_batches_cover_every_scene_once_per_pass():
    images = np.arange(10, dtype="float32").reshape(10, 1, 1, 1) * np.ones((1, 4, 4, 3), "float32")
    labels = np.arange(10, dtype="int32").reshape(10, 1, 1) * np.ones((1, 4, 4), "int32")
    batches = list(demo._training_batches(images, labels, batch_size=4, seed=0))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = sorted(int(b[1][i, 0, 0]) for b in batches for i in range(len(b[1])))
    assert seen == list(range(10))


def _square_scene():
    """A flat red square on grey, with logits that mix classes 1 and 2 inside the square."""
    image = np.full((1, 32, 32, 3), 100.0, "float32")
    image[0, 8:24, 8:24] = (200.0, 50.0, 50.0)
    logits = np.zeros((1, 32, 32, 3), "float32")
    logits[0, ..., 0] = 3.0
    logits[0, 8:24, 8:24] = (0.0, 1.0, 0.0)
    mixed = np.random.default_rng(0).random((16, 16)) < 0.3
    logits[0, 8:24, 8:24][mixed] = (0.0, 0.0, 0.6)
    return image, logits


def test_crf_refined_is_the_dense_crf_of_the_predictors_logits():
    import kseg_ops

    image, logits = _square_scene()
    calls = []

    def predictor(images, training=False):
        calls.append(training)
        return logits

    refined = demo._CRFRefined(predictor, demo.RECIPE["dense_crf"])(image)
    expected = kseg_ops.dense_crf(logits, image, from_logits=True, **demo.RECIPE["dense_crf"])
    np.testing.assert_allclose(refined, expected.numpy(), atol=1e-6)
    assert calls == [False]


def test_the_recipes_crf_gives_a_flat_coloured_object_one_class():
    image, logits = _square_scene()
    before = logits.argmax(-1)[0]
    assert set(np.unique(before[8:24, 8:24])) == {1, 2}
    refined = demo._CRFRefined(lambda x, training=False: logits, demo.RECIPE["dense_crf"])
    after = refined(image).argmax(-1)[0]
    expected = np.zeros((32, 32), "int64")
    expected[8:24, 8:24] = 1
    np.testing.assert_array_equal(after, expected)


def test_a_crf_op_that_does_not_load_leaves_the_crf_out_before_training(monkeypatch, capsys):
    import kseg_ops

    settings = demo.RECIPE["dense_crf"]
    assert demo._available_crf(settings) is settings

    def missing():
        raise ImportError("_kseg_ops.so not found")

    monkeypatch.setattr(kseg_ops, "load_ops_library", missing)
    assert demo._available_crf(settings) is None
    assert "_kseg_ops.so not found" in capsys.readouterr().out
    assert demo._available_crf(None) is None

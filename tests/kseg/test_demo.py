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

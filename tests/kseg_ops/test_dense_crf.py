"""kseg_ops.dense_crf against the reference implementation and an exact O(N^2) mean field."""

import importlib.util
import os
import threading

import numpy as np
import pytest
import tensorflow as tf

import kseg_ops

PARAMS = dict(
    gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10
)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _benchmark_module():
    spec = importlib.util.spec_from_file_location(
        "dense_crf_benchmark", os.path.join(ROOT, "benchmarks", "dense_crf.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exact_mean_field(
    probs,
    image,
    iterations,
    normalization="symmetric",
    gaussian_sxy=3.0,
    gaussian_compat=3.0,
    bilateral_sxy=80.0,
    bilateral_srgb=13.0,
    bilateral_compat=10.0,
):
    """Dense-kernel mean field, O(N^2): the exact Gaussians the lattice approximates."""
    h, w, c = probs.shape
    ys, xs = np.mgrid[0:h, 0:w]
    xy = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    rgb = image.reshape(-1, 3).astype(np.float64)
    unary = -np.log(np.clip(probs.reshape(-1, c).astype(np.float64), 1e-5, 1))

    def kernel(features):
        diff = features[:, None, :] - features[None, :, :]
        return np.exp(-0.5 * (diff**2).sum(-1))

    kernels = []
    for feats, compat in (
        (xy / gaussian_sxy, gaussian_compat),
        (np.concatenate([xy / bilateral_sxy, rgb / bilateral_srgb], 1), bilateral_compat),
    ):
        k = kernel(feats)
        d = k.sum(1)
        if normalization == "symmetric":
            k = k / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
        else:
            k = k / d[:, None]
        kernels.append(compat * k)

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    q = softmax(-unary)
    for _ in range(iterations):
        q = softmax(-unary + sum(k @ q for k in kernels))
    return q.reshape(h, w, c)


def small_scene(seed=0, h=24, w=32, c=4):
    """Two-colour image with a noisy, blocky prediction that disagrees with the edges."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.float32)
    image[:, : w // 2] = (200, 40, 40)
    image[:, w // 2 :] = (30, 60, 210)
    image[h // 2 :, w // 4 : 3 * w // 4] = (40, 200, 60)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), int)
    truth[:, w // 2 :] = 1
    truth[h // 2 :, w // 4 : 3 * w // 4] = 2
    logits = 2.0 * np.eye(c)[truth] + rng.normal(0, 1.3, (h, w, c))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return image, probs.astype(np.float32)


def test_matches_reference_pydensecrf_on_a_realistic_photo():
    pytest.importorskip("pydensecrf")
    bench = _benchmark_module()
    image, probs = bench.make_inputs("chelsea", 375, 500, 21)
    ref = bench.reference_crf(image, probs, 10)
    ours = kseg_ops.dense_crf(probs[None], image[None], iterations=10, **PARAMS).numpy()[0]
    agreement = (ours.argmax(-1) == ref.argmax(-1)).mean()
    changed = (ref.argmax(-1) != probs.argmax(-1)).mean()
    assert changed >= 0.10, changed  # the CRF really acts on this input
    assert agreement >= 0.995, agreement
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("normalization", ["symmetric", "after"])
def test_agrees_with_exact_dense_mean_field(normalization):
    agreements = []
    for seed in range(3):
        image, probs = small_scene(seed)
        exact = exact_mean_field(probs, image, 5, normalization)
        ours = kseg_ops.dense_crf(
            probs[None], image[None], iterations=5, normalization=normalization, **PARAMS
        ).numpy()[0]
        assert (exact.argmax(-1) != probs.argmax(-1)).mean() >= 0.10
        agreements.append((ours.argmax(-1) == exact.argmax(-1)).mean())
    assert np.mean(agreements) >= 0.98, agreements


def test_normalizations_differ_and_outputs_are_distributions():
    image, probs = small_scene(1)
    sym = kseg_ops.dense_crf(probs[None], image[None], normalization="symmetric").numpy()
    after = kseg_ops.dense_crf(probs[None], image[None], normalization="after").numpy()
    assert np.abs(sym - after).max() > 1e-3
    for q in (sym, after):
        np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
        assert q.min() >= 0


def test_zero_iterations_is_the_clipped_softmax_of_the_input():
    image, probs = small_scene(2)
    probs[0, 0] = [1.0, 0.0, 0.0, 0.0]
    q = kseg_ops.dense_crf(probs[None], image[None], iterations=0).numpy()[0]
    clipped = np.clip(probs, 1e-5, 1)
    np.testing.assert_allclose(q, clipped / clipped.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_batch_dtypes_and_logits_agree_with_single_calls():
    (im1, p1), (im2, p2) = small_scene(3), small_scene(4)
    batch = kseg_ops.dense_crf(np.stack([p1, p2]), np.stack([im1, im2])).numpy()
    single = kseg_ops.dense_crf(p2[None], im2[None]).numpy()[0]
    np.testing.assert_array_equal(batch[1], single)
    as_float = kseg_ops.dense_crf(p2[None], im2[None].astype(np.float32)).numpy()[0]
    np.testing.assert_array_equal(as_float, single)
    from_logits = kseg_ops.dense_crf(np.log(p2)[None], im2[None], from_logits=True).numpy()[0]
    np.testing.assert_allclose(from_logits, single, atol=1e-4)
    f64 = kseg_ops.dense_crf(p2[None].astype(np.float64), im2[None]).numpy()[0]
    assert f64.dtype == np.float64
    np.testing.assert_allclose(f64, single, atol=1e-4)
    f16 = kseg_ops.dense_crf(p2[None].astype(np.float16), im2[None])
    assert f16.dtype == tf.float16


def test_works_inside_tf_function_with_unknown_shapes():
    image, probs = small_scene(5)
    fn = tf.function(
        lambda p, i: kseg_ops.dense_crf(p, i, iterations=3),
        input_signature=[
            tf.TensorSpec([None, None, None, 4], tf.float32),
            tf.TensorSpec([None, None, None, 3], tf.uint8),
        ],
    )
    np.testing.assert_array_equal(
        fn(probs[None], image[None]).numpy(),
        kseg_ops.dense_crf(probs[None], image[None], iterations=3),
    )


def test_four_threads_at_once_get_identical_results():
    image, probs = small_scene(6, h=60, w=80, c=21)
    expected = kseg_ops.dense_crf(probs[None], image[None]).numpy()
    results, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = kseg_ops.dense_crf(probs[None], image[None]).numpy()
                assert np.array_equal(results[i], expected)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_any_number_of_classes():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 255, (1, 9, 7, 3)).astype(np.uint8)
    for c in (1, 2, 8, 9, 40):
        p = rng.uniform(0.01, 1, (1, 9, 7, c)).astype(np.float32)
        p /= p.sum(-1, keepdims=True)
        q = kseg_ops.dense_crf(p, image, iterations=3).numpy()
        assert q.shape == p.shape
        np.testing.assert_allclose(q.sum(-1), 1, rtol=1e-5)


@pytest.mark.parametrize("from_logits", [False, True])
def test_float32_fast_path_matches_float64_for_every_row_width(from_logits):
    """The float32 kernels pad rows of C classes to 8, 16, 24 or 32 lanes and read the scores
    and write Q straight from/to the unpadded tensors (the last lanes of a row masked or
    spilling into the next row): every C, on an image of two pixel ranges and a batch of two,
    must agree with the float64 path. (Float colours: with integer ones some pixels fall exactly
    on a lattice cell boundary, where float32 and float64 features round to different cells.)"""
    rng = np.random.default_rng(11)
    blocks = rng.uniform(0, 255, (2, 25, 23, 3))
    image = np.repeat(np.repeat(blocks, 4, 1), 4, 2)[:, :100, :90]
    image = (image + rng.uniform(0, 1, image.shape)).astype(np.float32)
    for c in (1, 2, 3, 5, 9, 17, 21, 25, 32, 33):
        x = (2 * rng.standard_normal((2, 100, 90, c))).astype(np.float32)
        scores = x if from_logits else tf.nn.softmax(x).numpy()
        q32 = kseg_ops.dense_crf(scores, image, iterations=5, from_logits=from_logits).numpy()
        q64 = kseg_ops.dense_crf(
            scores.astype(np.float64), image, iterations=5, from_logits=from_logits
        ).numpy()
        assert np.isfinite(q32).all(), c
        np.testing.assert_allclose(q32, q64, atol=1e-4, err_msg=f"{c} classes")
        if c > 1:
            assert (q64.argmax(-1) != scores.argmax(-1)).mean() > 0.01, c


def test_raw_op_scores_kinds_agree():
    """The op takes unary energies, probabilities or logits (scores_kind) for the same CRF."""
    from kseg_ops._loader import load_ops_library

    op = load_ops_library().kseg_dense_crf
    image, probs = small_scene(8, h=40, w=50, c=5)
    probs[0, :3] = [0.0, 1.0, 0.0, 0.0, 0.0]  # exercises the 1e-5 clip
    unary = -np.log(np.clip(probs.astype(np.float64), 1e-5, 1)).astype(np.float32)
    image_f = image[None].astype(np.float32)
    from_unary = op(unary[None], image_f, iterations=4, scores_kind="unary").numpy()
    from_probs = op(probs[None], image_f, iterations=4, scores_kind="probabilities").numpy()
    from_logits = op(-unary[None], image_f, iterations=4, scores_kind="logits").numpy()
    np.testing.assert_allclose(from_probs, from_unary, atol=2e-6)
    np.testing.assert_array_equal(from_logits, from_unary)
    default = op(unary[None], image_f, iterations=4).numpy()
    np.testing.assert_array_equal(default, from_unary)


def test_float32_fast_path_matches_float64_on_a_multi_range_image():
    """float32 runs the fused mean field (several pixel ranges at this size), float64 the
    gather-splat path: the two must agree to float32 rounding."""
    image, probs = small_scene(9, h=96, w=130, c=21)
    q32 = kseg_ops.dense_crf(probs[None], image[None], iterations=8, **PARAMS).numpy()[0]
    q64 = kseg_ops.dense_crf(
        probs[None].astype(np.float64), image[None], iterations=8, **PARAMS
    ).numpy()[0]
    assert (q64.argmax(-1) != probs.argmax(-1)).mean() > 0.01
    np.testing.assert_allclose(q32, q64, atol=2e-5)


def test_gradient_through_the_crf_is_none_not_an_error():
    """The op is registered non-differentiable: eager and graph gradients are None."""
    image, probs = small_scene(0, h=8, w=10, c=3)
    probs = tf.constant(probs[None])
    images = tf.constant(image[None].astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([probs, images])
        q = kseg_ops.dense_crf(probs, images, iterations=2)
        loss = tf.reduce_sum(q * tf.range(3, dtype=q.dtype))
        loss_with_a_path_around = loss + 2.0 * tf.reduce_sum(probs)
    assert tape.gradient(loss, probs) is None
    assert tape.gradient(loss, images) is None
    # A path around the CRF still gets its gradient (the CRF branch contributes nothing).
    grad = tape.gradient(loss_with_a_path_around, probs)
    np.testing.assert_array_equal(grad.numpy(), np.full(probs.shape, 2.0, np.float32))

    @tf.function
    def graph_gradient(p, i):
        return tf.gradients(tf.reduce_sum(kseg_ops.dense_crf(p, i, iterations=1)), [p, i])

    assert graph_gradient(probs, images) == [None, None]

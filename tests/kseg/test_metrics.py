import math

import numpy as np
import pytest
import tensorflow as tf

from kseg import metrics


def reference_scores(y_true, y_pred, num_classes, ignore_index=255):
    """Scores from the definitions, class by class with boolean masks (no confusion matrix)."""
    valid = y_true != ignore_index
    t, p = y_true[valid], y_pred[valid]
    iou, prec, rec, f1, freq = [], [], [], [], []
    for c in range(num_classes):
        tp = np.sum((t == c) & (p == c))
        in_truth = np.sum(t == c)
        in_pred = np.sum(p == c)
        union = np.sum((t == c) | (p == c))
        iou.append(tp / union if union else math.nan)
        rec.append(tp / in_truth if in_truth else math.nan)
        prec.append(tp / in_pred if in_pred else math.nan)
        f1.append(2 * tp / (in_truth + in_pred) if in_truth + in_pred else math.nan)
        freq.append(in_truth / t.size if t.size else math.nan)
    present_union = [v for v in iou if not math.isnan(v)]
    present_truth = [v for v in rec if not math.isnan(v)]
    fw = sum(f * i for f, i in zip(freq, iou) if f and f > 0) if t.size else math.nan
    return {
        "pixel_accuracy": np.mean(t == p) if t.size else math.nan,
        "mean_iou": np.mean(present_union) if present_union else math.nan,
        "mean_accuracy": np.mean(present_truth) if present_truth else math.nan,
        "fw_iou": fw,
        "iou": np.array(iou),
        "precision": np.array(prec),
        "recall": np.array(rec),
        "f1": np.array(f1),
    }


def random_case(rng):
    num_classes = int(rng.integers(1, 9))
    batch, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
    # Draw labels from a random subset so that some classes are absent from truth or prediction.
    present = rng.choice(num_classes, size=int(rng.integers(1, num_classes + 1)), replace=False)
    y_true = rng.choice(present, size=(batch, h, w))
    y_pred = np.where(
        rng.random((batch, h, w)) < 0.6, y_true, rng.integers(0, num_classes, (batch, h, w))
    )
    y_true = np.where(rng.random((batch, h, w)) < 0.2, 255, y_true)
    if rng.random() < 0.15:
        y_true[0] = 255  # an all-ignore image
    if rng.random() < 0.05:
        y_true[:] = 255  # nothing counted at all
    return y_true.astype(np.int32), y_pred.astype(np.int32), num_classes


def assert_close(actual, expected):
    np.testing.assert_allclose(
        np.asarray(actual, float), np.asarray(expected, float), rtol=0, atol=1e-9, equal_nan=True
    )


def test_scores_match_definitions_on_random_cases():
    rng = np.random.default_rng(1234)
    for _ in range(150):
        y_true, y_pred, c = random_case(rng)
        cm = metrics.confusion_matrix(y_true, y_pred, num_classes=c)
        assert cm.dtype == np.int64 and cm.shape == (c, c)
        # rows = truth, columns = prediction, checked pixel by pixel
        expected_cm = np.zeros((c, c), np.int64)
        for t, p in zip(y_true.ravel(), y_pred.ravel()):
            if t != 255:
                expected_cm[t, p] += 1
        np.testing.assert_array_equal(cm, expected_cm)
        got = metrics.scores(cm)
        want = reference_scores(y_true, y_pred, c)
        for key in want:
            assert_close(got[key], want[key])


def test_streaming_metric_over_batches_equals_one_shot():
    rng = np.random.default_rng(7)
    for _ in range(20):
        c = int(rng.integers(2, 7))
        y_true = rng.integers(0, c, (6, 9, 7)).astype(np.int32)
        y_true[rng.random(y_true.shape) < 0.25] = 255
        logits = rng.normal(size=(6, 9, 7, c)).astype(np.float32)
        full = metrics.scores(metrics.confusion_matrix(y_true, logits, c))
        streaming = {
            "mean_iou": metrics.MeanIoU(c),
            "pixel_accuracy": metrics.PixelAccuracy(c),
            "mean_accuracy": metrics.MeanAccuracy(c),
            "fw_iou": metrics.FrequencyWeightedIoU(c),
        }
        for key, metric in streaming.items():
            for start in range(0, 6, 2):
                metric.update_state(y_true[start : start + 2, ..., None], logits[start : start + 2])
            assert abs(float(metric.result()) - full[key]) < 1e-6, key
            np.testing.assert_array_equal(
                metric.confusion_matrix(), metrics.confusion_matrix(y_true, logits, c)
            )
            metric.reset_state()
            assert metric.confusion_matrix().sum() == 0


def test_metric_inside_compiled_model_fit():
    import keras

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            metrics.MeanIoU(3, ignore_index=None),
            metrics.PixelAccuracy(3, ignore_index=None),
        ],
    )
    x = np.random.default_rng(0).normal(size=(4, 4, 4, 3)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, (4, 4, 4)).astype(np.int32)
    result = model.evaluate(x, y, batch_size=2, return_dict=True, verbose=0)
    want = metrics.scores(metrics.confusion_matrix(y, model.predict(x, verbose=0), 3))
    assert abs(result["mean_iou"] - want["mean_iou"]) < 1e-6
    assert abs(result["pixel_accuracy"] - want["pixel_accuracy"]) < 1e-6


def test_metric_config_round_trip():
    m = metrics.MeanIoU(num_classes=5, ignore_index=0, name="miou")
    clone = metrics.MeanIoU.from_config(m.get_config())
    assert (clone.num_classes, clone.ignore_index, clone.name) == (5, 0, "miou")


def test_bad_labels_name_the_value():
    with pytest.raises(ValueError, match="label 7"):
        metrics.confusion_matrix([0, 7], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_matrix([0, 1], [0, 1, 1], num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        metrics.confusion_matrix([0], [0], num_classes=0)
    with pytest.raises(ValueError, match="last axis"):
        metrics.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2, 4)), num_classes=3)
    with pytest.raises(ValueError, match="square"):
        metrics.scores(np.zeros((2, 3)))
    m = metrics.MeanIoU(3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        m.update_state(np.array([[0, 9]]), np.array([[0, 1]]))


def test_all_ignore_gives_nan_not_garbage():
    s = metrics.scores(metrics.confusion_matrix(np.full((2, 2), 255), np.zeros((2, 2), int), 3))
    assert math.isnan(s["mean_iou"]) and math.isnan(s["pixel_accuracy"]) and math.isnan(s["fw_iou"])


def test_per_class_iou_and_f1_stream_like_the_definitions():
    rng = np.random.default_rng(11)
    for _ in range(25):
        y_true, y_pred, c = random_case(rng)
        want = reference_scores(y_true, y_pred, c)
        streaming = {"mean_f1": metrics.MeanF1(c)}
        for class_id in range(c):
            streaming[("iou", class_id)] = metrics.ClassIoU(c, class_id)
            streaming[("f1", class_id)] = metrics.ClassF1(c, class_id)
        for metric in streaming.values():
            for image in range(len(y_true)):  # one image per update: streaming
                metric.update_state(y_true[image : image + 1], y_pred[image : image + 1])

        def assert_float32_close(actual, expected):
            # Keras metrics return float32: compare to its rounding.
            np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6, equal_nan=True)

        present = want["f1"][~np.isnan(want["f1"])]
        assert_float32_close(
            float(streaming["mean_f1"].result()), present.mean() if present.size else np.nan
        )
        for class_id in range(c):
            assert_float32_close(
                float(streaming[("iou", class_id)].result()), want["iou"][class_id]
            )
            assert_float32_close(float(streaming[("f1", class_id)].result()), want["f1"][class_id])


def test_class_metrics_hand_made_values_names_config_and_errors():
    # truth 0 0 1 1 2, prediction 0 1 1 1 1: class 1 TP 2, truth 2, predicted 4.
    y_true, y_pred = np.array([[0, 0, 1, 1, 2]]), np.array([[0, 1, 1, 1, 1]])
    iou, f1 = metrics.ClassIoU(3, 1), metrics.ClassF1(3, 1)
    iou.update_state(y_true, y_pred)
    f1.update_state(y_true, y_pred)
    assert float(iou.result()) == pytest.approx(2 / 4)
    assert float(f1.result()) == pytest.approx(4 / 6)
    assert (iou.name, f1.name) == ("iou_1", "f1_1")
    mean_f1 = metrics.MeanF1(3)
    mean_f1.update_state(y_true, y_pred)
    assert float(mean_f1.result()) == pytest.approx((2 / 3 + 4 / 6 + 0) / 3)
    clone = metrics.ClassF1.from_config(f1.get_config())
    assert (clone.num_classes, clone.class_id, clone.name) == (3, 1, "f1_1")
    with pytest.raises(ValueError, match=r"class_id must be in \[0, num_classes=3\)"):
        metrics.ClassIoU(3, 3)
    with pytest.raises(ValueError, match="Received: class_id='1'"):
        metrics.ClassF1(3, "1")


def test_class_metrics_in_fit_logs():
    import keras

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[metrics.ClassIoU(3, 2), metrics.MeanF1(3)],
    )
    x = np.random.default_rng(0).normal(size=(4, 4, 4, 3)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, (4, 4, 4)).astype(np.int32)
    result = model.evaluate(x, y, batch_size=2, return_dict=True, verbose=0)
    want = metrics.scores(metrics.confusion_matrix(y, model.predict(x, verbose=0), 3))
    assert result["iou_2"] == pytest.approx(want["iou"][2], abs=1e-6)
    assert result["mean_f1"] == pytest.approx(np.nanmean(want["f1"]), abs=1e-6)


def test_normalized_confusion_matrix_values():
    # Rows are truth: each row divided by its sum; the row of a class absent from the truth is NaN.
    cm = np.array([[6, 2, 0, 0], [1, 3, 0, 4], [0, 0, 0, 0], [0, 5, 0, 5]])
    want = np.array(
        [
            [0.75, 0.25, 0.0, 0.0],
            [0.125, 0.375, 0.0, 0.5],
            [np.nan] * 4,
            [0.0, 0.5, 0.0, 0.5],
        ]
    )
    assert_close(metrics.scores(cm)["normalized_confusion_matrix"], want)
    rng = np.random.default_rng(3)
    y_true, y_pred, c = random_case(rng)
    cm = metrics.confusion_matrix(y_true, y_pred, c)
    normalized = metrics.scores(cm)["normalized_confusion_matrix"]
    for t in range(c):
        counted = (y_true == t).sum()
        for p in range(c):
            expected = ((y_true == t) & (y_pred == p)).sum() / counted if counted else np.nan
            assert_close(normalized[t, p], expected)


def test_change_scores_and_kappa_by_hand():
    from kseg.metrics import CohenKappa, change_scores, cohen_kappa

    truth = np.array([[0, 0, 0, 0, 1, 1, 1, 255]])
    pred = np.array([[0, 0, 1, 0, 1, 1, 0, 1]])
    cm = metrics.confusion_matrix(truth, pred, 2)
    np.testing.assert_array_equal(cm, [[3, 1], [1, 2]])
    s = change_scores(cm)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["iou"] == pytest.approx(0.5)
    assert s["overall_accuracy"] == pytest.approx(5 / 7)
    expected_chance = (4 * 4 + 3 * 3) / 49
    kappa = (5 / 7 - expected_chance) / (1 - expected_chance)
    assert s["kappa"] == pytest.approx(kappa) == cohen_kappa(cm)
    metric = CohenKappa(num_classes=2)
    metric.update_state(truth, pred)
    assert float(metric.result()) == pytest.approx(kappa, abs=1e-6)
    assert np.isnan(cohen_kappa([[5, 0], [0, 0]]))  # one class everywhere: chance is certain
    assert np.isnan(change_scores([[5, 0], [0, 0]])["precision"])
    with pytest.raises(ValueError, match="change_class=2"):
        change_scores(cm, change_class=2)

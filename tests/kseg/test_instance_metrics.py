"""coco_evaluate through pycocotools and panoptic_quality against the paper's definition."""

import numpy as np
import pytest

import kseg
from kseg.constants import PANOPTIC_VOID

THINGS = (1, 2)


def _reference_pq(preds, truths, things):
    """PQ from Kirillov et al. 2019, with the COCO panoptic API's void and crowd rules.

    Written from the definition, one segment pair at a time with boolean masks (no
    histograms): match = same class and IoU > 0.5 with the prediction's void pixels left out
    of the union; a crowd region (instance 0 of a thing class) matches nothing; an unmatched
    prediction lying more than half on void or on its class's crowd region is not a FP.
    """
    tp, fp, fn, iou_sum = {}, {}, {}, {}
    for pred, truth in zip(preds, truths):
        void = truth // 1000 == 255
        true_segments = [v for v in np.unique(truth) if v // 1000 != 255]
        pred_segments = [v for v in np.unique(pred) if v // 1000 != 255]
        matched_true, matched_pred = set(), set()
        for t in true_segments:
            cls = t // 1000
            if cls in things and t % 1000 == 0:
                continue
            for p in pred_segments:
                if p // 1000 != cls:
                    continue
                t_mask, p_mask = truth == t, pred == p
                intersection = np.sum(t_mask & p_mask)
                union = np.sum(t_mask | (p_mask & ~void))
                if intersection / union > 0.5:
                    tp[cls] = tp.get(cls, 0) + 1
                    iou_sum[cls] = iou_sum.get(cls, 0.0) + intersection / union
                    matched_true.add(t)
                    matched_pred.add(p)
        for t in true_segments:
            cls = t // 1000
            if t not in matched_true and not (cls in things and t % 1000 == 0):
                fn[cls] = fn.get(cls, 0) + 1
        for p in pred_segments:
            if p in matched_pred:
                continue
            cls = p // 1000
            p_mask = pred == p
            ignored = p_mask & void
            if cls in things:
                ignored |= p_mask & (truth == cls * 1000)
            if ignored.sum() / p_mask.sum() > 0.5:
                continue
            fp[cls] = fp.get(cls, 0) + 1
    classes = sorted(set(tp) | set(fp) | set(fn))
    rows = {}
    for cls in classes:
        t, f_p, f_n, s = tp.get(cls, 0), fp.get(cls, 0), fn.get(cls, 0), iou_sum.get(cls, 0.0)
        rows[cls] = (s / (t + f_p / 2 + f_n / 2), s / t if t else 0.0, t / (t + f_p / 2 + f_n / 2))

    def mean(keys):
        keys = list(keys)
        if not keys:
            return (float("nan"),) * 3
        return tuple(np.mean([rows[k][i] for k in keys]) for i in range(3))

    return (
        rows,
        mean(classes),
        mean(k for k in classes if k in things),
        mean(k for k in classes if k not in things),
    )


def _random_truth(rng, height, width):
    truth = np.zeros((height, width), np.int64)  # class 0: stuff
    truth[:, width // 2 :] = 3000  # class 3: stuff
    for instance in range(1, rng.integers(1, 6)):
        cls = int(rng.choice(THINGS))
        y, x = rng.integers(0, height - 3), rng.integers(0, width - 3)
        h, w = rng.integers(2, 9), rng.integers(2, 9)
        truth[y : y + h, x : x + w] = cls * 1000 + instance
    if rng.uniform() < 0.5:  # a crowd region
        y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
        truth[y : y + 4, x : x + 4] = int(rng.choice(THINGS)) * 1000
    if rng.uniform() < 0.6:  # void
        y = rng.integers(0, height - 3)
        truth[y : y + rng.integers(1, 4), :] = PANOPTIC_VOID
    return truth


def _random_prediction(rng, truth):
    pred = truth.copy()
    pred[pred == PANOPTIC_VOID] = 0
    # Shift some segments, relabel or split others, add spurious ones.
    for value in np.unique(truth):
        mask = truth == value
        action = rng.integers(0, 5)
        if action == 1:
            pred[np.roll(mask, rng.integers(1, 4), axis=int(rng.integers(0, 2)))] = value
        elif action == 2:
            pred[mask] = int(rng.choice((0, 1, 2, 3))) * 1000 + int(rng.integers(1, 9))
        elif action == 3:
            rows = np.nonzero(mask.any(axis=1))[0]
            pred[mask & (np.arange(truth.shape[0])[:, None] > rows.mean())] = 1000 + 77
    for _ in range(rng.integers(0, 3)):
        y, x = rng.integers(0, truth.shape[0] - 3), rng.integers(0, truth.shape[1] - 3)
        pred[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = (
            int(rng.choice(THINGS)) * 1000 + 50
        )
    if rng.uniform() < 0.3:
        pred[: rng.integers(1, 4)] = PANOPTIC_VOID  # unlabelled prediction pixels
    return pred


def test_there_is_one_panoptic_quality():
    from kseg.panoptic import quality

    assert kseg.panoptic.panoptic_quality is kseg.metrics.panoptic_quality
    assert quality.panoptic_quality is kseg.metrics.panoptic_quality


def test_panoptic_quality_equals_the_definition_on_random_cases():
    # kseg.panoptic.panoptic_quality is this same function (test above).
    panoptic_quality = kseg.metrics.panoptic_quality
    rng = np.random.default_rng(0)
    checked = {"crowd": 0, "void": 0, "fp": 0, "fn": 0}
    for case in range(60):
        count = int(rng.integers(1, 4))
        truths = [_random_truth(rng, 20, 24) for _ in range(count)]
        preds = [_random_prediction(rng, t) for t in truths]
        result = panoptic_quality(preds, truths, thing_classes=THINGS)
        rows, overall, things, stuff = _reference_pq(preds, truths, set(THINGS))
        assert sorted(result["per_class"]) == sorted(rows), case
        for cls, (pq, sq, rq) in rows.items():
            got = result["per_class"][cls]
            np.testing.assert_allclose([got["pq"], got["sq"], got["rq"]], [pq, sq, rq], atol=1e-12)
            checked["fp"] += got["fp"] > 0
            checked["fn"] += got["fn"] > 0
        for key, expected in (("all", overall), ("things", things), ("stuff", stuff)):
            got = [result[key][k] for k in ("pq", "sq", "rq")]
            np.testing.assert_allclose(got, expected, atol=1e-12, equal_nan=True)
            assert result[key]["classes"] == result[key]["n"]
        checked["crowd"] += any(np.any(t == c * 1000) for t in truths for c in THINGS)
        checked["void"] += any(np.any(t == PANOPTIC_VOID) for t in truths)
    # The cases exercise every rule.
    assert min(checked.values()) >= 10, checked


def test_panoptic_quality_hand_computed_case():
    truth = np.zeros((4, 8), np.int64)
    truth[:, :4] = 1001
    truth[:, 4:6] = 1002
    truth[0, :] = PANOPTIC_VOID
    pred = np.zeros((4, 8), np.int64)
    pred[:, :3] = 1001  # IoU with 1001 (void row out of the union): 9 / 12
    pred[:, 6:] = 1005  # unmatched thing: FP; truth 1002 unmatched: FN
    result = kseg.metrics.panoptic_quality(pred, truth, thing_classes=[1])
    thing = result["per_class"][1]
    assert (thing["tp"], thing["fp"], thing["fn"]) == (1, 1, 1)
    assert thing["pq"] == pytest.approx(0.75 / 2) and thing["sq"] == pytest.approx(0.75)
    # Stuff class 0: truth is the 3 rows x 2 columns right of column 6, prediction the
    # columns 3..5 on all rows: no overlap -> one FP and one FN.
    assert result["per_class"][0]["pq"] == 0.0
    assert result["pq"] == pytest.approx((0.375 + 0.0) / 2)


def test_panoptic_quality_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        kseg.metrics.panoptic_quality(np.zeros((2, 3)), np.zeros((3, 2)), thing_classes=[1])
    with pytest.raises(ValueError, match="num_classes=2.*ids=\\[7001\\]"):
        kseg.metrics.panoptic_quality(
            np.full((2, 2), 7001), np.zeros((2, 2)), thing_classes=[1], num_classes=2
        )


def _ground_truth_file(tmp_path):
    scenes = [
        {k: v.numpy() for k, v in s.items()}
        for s in kseg.data.synthetic_instances(6, (64, 64), seed=4, touching=0.7)
    ]
    path = tmp_path / "instances.json"
    kseg.data.write_coco_instances(
        scenes, path, tmp_path / "images", class_names=kseg.data.SYNTHETIC_CLASSES
    )
    return scenes, path


def test_coco_evaluate_on_ground_truth_gives_ap_one(tmp_path):
    scenes, path = _ground_truth_file(tmp_path)
    results = []
    for n, scene in enumerate(scenes):
        results += kseg.data.coco_results(
            n + 1, scene["boxes"], np.ones(len(scene["classes"])), scene["classes"], scene["masks"]
        )
    scores = kseg.metrics.coco_evaluate(results, path)
    for iou_type in ("bbox", "segm"):
        assert scores[iou_type]["AP"] == 1.0
        assert scores[iou_type]["AP50"] == 1.0 and scores[iou_type]["AP75"] == 1.0
        assert scores[iou_type]["AR100"] == 1.0


def test_coco_evaluate_recall_is_the_share_of_objects_predicted(tmp_path):
    scenes, path = _ground_truth_file(tmp_path)
    results, found, total = [], {}, {}
    for n, scene in enumerate(scenes):
        for cls in scene["classes"]:
            total[cls] = total.get(cls, 0) + 1
        for cls in scene["classes"][1:]:  # miss the first object of every image
            found[cls] = found.get(cls, 0) + 1
        results += kseg.data.coco_results(
            n + 1,
            scene["boxes"][1:],
            np.ones(len(scene["classes"]) - 1),
            scene["classes"][1:],
            scene["masks"][1:],
        )
    scores = kseg.metrics.coco_evaluate(results, path, iou_types=("segm",))
    # Predictions are exact, so at every IoU threshold the recall of a class is the share
    # of its objects predicted; COCO averages it over the classes.
    expected = np.mean([found.get(c, 0) / total[c] for c in total])
    assert scores["segm"]["AR100"] == pytest.approx(expected, abs=1e-9)
    assert 0.0 < scores["segm"]["AP"] < 1.0
    with pytest.raises(ValueError, match="image_id=99"):
        kseg.metrics.coco_evaluate([dict(results[0], image_id=99)], path)

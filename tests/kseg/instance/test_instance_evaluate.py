"""kseg.instance.evaluate: detections of a model scored by COCOeval against in-memory truth."""

import numpy as np

import kseg
from kseg.instance import evaluate


class _Oracle:
    """Returns the ground truth of the scenes it was given as detections (optionally
    dropping the first object of each image), padded like MaskRCNN.detect."""

    def __init__(self, scenes, drop_first=False):
        self.by_image = {s["image"].tobytes(): s for s in scenes}
        self.drop_first = drop_first

    def detect(self, images):
        out = {"boxes": [], "scores": [], "classes": [], "masks": [], "num_detections": []}
        for image in images:
            scene = self.by_image[np.asarray(image).tobytes()]
            keep = slice(1 if self.drop_first else 0, None)
            n = len(scene["classes"][keep])
            pad = 10 - n
            out["boxes"].append(np.pad(scene["boxes"][keep], [[0, pad], [0, 0]]))
            out["scores"].append(np.pad(np.linspace(1.0, 0.5, n), [[0, pad]]))
            out["classes"].append(np.pad(scene["classes"][keep], [[0, pad]]))
            masks = scene["masks"][keep].astype(np.float32)
            out["masks"].append(np.pad(masks, [[0, pad], [0, 0], [0, 0]]))
            out["num_detections"].append(n)
        return {k: np.stack(v) for k, v in out.items()}


def _scenes():
    return [
        {k: v.numpy() for k, v in s.items()}
        for s in kseg.data.synthetic_instances(5, (48, 48), seed=2, touching=0.7)
    ]


def test_perfect_detections_score_ap_one():
    scenes = _scenes()
    scores = evaluate(_Oracle(scenes), scenes, batch_size=2)
    assert scores["bbox"]["AP"] == 1.0 and scores["segm"]["AP"] == 1.0
    assert scores["segm"]["AP50"] == 1.0


def test_missed_objects_lower_the_recall():
    scenes = _scenes()
    scores = evaluate(_Oracle(scenes, drop_first=True), scenes, batch_size=3)
    total, found = {}, {}
    for scene in scenes:
        for cls in scene["classes"]:
            total[cls] = total.get(cls, 0) + 1
        for cls in scene["classes"][1:]:
            found[cls] = found.get(cls, 0) + 1
    expected = np.mean([found.get(c, 0) / total[c] for c in total])
    assert abs(scores["segm"]["AR100"] - expected) < 1e-9

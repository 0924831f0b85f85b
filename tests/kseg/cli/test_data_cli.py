"""`kseg data stats / convert / show` on tiny CamVid and SIFT Flow datasets."""

import json

import numpy as np
import tensorflow as tf
from PIL import Image

import kseg
from kseg.cli.main import main
from kseg.testing.datasets_camvid_sift import write_camvid, write_sift_flow


def test_stats_frequencies_equal_a_numpy_count_of_the_files(tmp_path, capsys):
    write_camvid(tmp_path / "camvid")
    # One more id outside SegNet's mapping: reported, and the other files still counted.
    Image.fromarray(np.full((6, 8, 3), 9, np.uint8), "RGB").save(tmp_path / "camvid/val/x.png")
    bad = np.zeros((6, 8), np.uint8)
    bad[0, 0] = 40
    Image.fromarray(bad, "L").save(tmp_path / "camvid/valannot/x.png")
    for split in ("train", "val"):
        out = tmp_path / f"{split}.json"
        code = main(
            [
                "data",
                "stats",
                "--dataset",
                "camvid",
                "--data-root",
                str(tmp_path / "camvid"),
                "--split",
                split,
                "--power",
                "1",
                "--output",
                str(out),
            ]
        )
        stats = json.loads(out.read_text())
        # numpy on the same annotation files, SegNet's mapping applied by hand.
        files = sorted((tmp_path / "camvid" / f"{split}annot").glob("*.png"))
        ids = [np.asarray(Image.open(f)).astype(np.int64) for f in files if f.name != "x.png"]
        counts = sum(np.bincount(i[i != 11], minlength=11) for i in ids)
        assert stats["class_pixels"] == counts.tolist()
        np.testing.assert_allclose(stats["class_frequency"], counts / counts.sum())
        assert stats["ignored_pixels"] == sum(int((i == 11).sum()) for i in ids)
        assert stats["images"] == len(ids)
        weights = kseg.losses.class_weights_from_frequency(
            (np.where(i == 11, 255, i) for i in ids), 11, power=1.0
        )
        np.testing.assert_allclose(stats["class_weights"], weights)
        assert stats["class_names"][4] == "Pavement"
        if split == "train":
            assert code == 0 and stats["sizes"] == {"24x32": 2, "20x28": 1}
            assert not stats["errors"]
        else:
            assert code == 1  # a file could not be read
            assert len(stats["outside_mapping"]) == 1
            assert "valannot/x.png' holds id 40" in stats["outside_mapping"][0]
    printed = capsys.readouterr().out
    assert "Pavement" in printed and "examples that could not be read: 1" in printed


def test_convert_then_load_tfrecord_is_byte_identical(tmp_path, capsys):
    write_camvid(tmp_path / "camvid")
    write_sift_flow(tmp_path / "sift")
    for name, root in (("camvid", "camvid"), ("sift_flow", "sift")):
        prefix = tmp_path / "records" / f"{name}-train"
        args = ["data", "convert", "--dataset", name, "--data-root", str(tmp_path / root)]
        assert main([*args, "--output", str(prefix), "--num-shards", "2"]) == 0
        original = list(kseg.data.load(name, tmp_path / root, "train"))
        converted = list(kseg.data.load("tfrecord", str(prefix)))
        assert len(converted) == len(original) > 0
        for (image, label), (got_image, got_label) in zip(original, converted):
            assert got_image.numpy().tobytes() == image.numpy().tobytes()
            assert got_label.numpy().tobytes() == label.numpy().tobytes()
        # The original file bytes are stored (PNG stays PNG, JPEG stays JPEG).
        record = next(iter(tf.data.TFRecordDataset(f"{prefix}-00000-of-00002.tfrecord")))
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        pairs = kseg.data.camvid_pairs if name == "camvid" else kseg.data.sift_flow_pairs
        first_image = pairs(tmp_path / root, "train")[0][0]
        assert feature["image/encoded"].bytes_list.value[0] == open(first_image, "rb").read()
    assert "wrote 2 shard(s)" in capsys.readouterr().out


def test_show_writes_a_grid_of_images_and_coloured_labels(tmp_path):
    write_camvid(tmp_path / "camvid")
    out = tmp_path / "grid.png"
    args = ["data", "show", "--dataset", "camvid", "--data-root", str(tmp_path / "camvid")]
    assert (
        main(
            [
                *args,
                "--output",
                str(out),
                "--num-images",
                "3",
                "--columns",
                "2",
                "--tile-height",
                "48",
            ]
        )
        == 0
    )
    grid = np.asarray(Image.open(out).convert("RGB"))
    # Two rows of 48 px with 4 px gaps; the widest tile is a 20x28 frame's image + label
    # (20x56 scaled by 2.4: 134 px); a 24x32 frame's pair is 128 px wide.
    assert grid.shape == (2 * 52 + 4, 2 * (134 + 4) + 4, 3)
    # The first label's top-left pixel is id 0 (Sky) in CamVid's colour (128, 128, 128).
    assert tuple(grid[4, 4 + 64]) == (128, 128, 128)
    palette = {tuple(c) for c in kseg.data.info("camvid").palette} | {(255, 255, 255)}
    label_half = grid[4:52, 68:132].reshape(-1, 3)
    assert {tuple(c) for c in label_half} <= palette
    assert (
        main(["data", "stats", "--dataset", "tfrecord", "--data-root", str(tmp_path / "none")]) == 2
    )

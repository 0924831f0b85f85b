import numpy as np
import pytest
from PIL import Image

import kseg
from kseg.data.info import DatasetInfo, info, register_info
from kseg.data.io import label_lookup, read_label


def test_voc_info_matches_the_voc_classes_and_colours():
    voc = kseg.data.info("voc")
    assert voc.num_classes == 21 and voc.class_names[15] == "person"
    # VOC's colour map: person is (192, 128, 128).
    assert tuple(voc.palette[15]) == (192, 128, 128)
    colours = voc.palette_array()
    assert colours[255].tolist() == [255, 255, 255] and colours[21].tolist() == [0, 0, 0]


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"'nope'.*voc"):
        info("nope")


def test_palette_and_names_must_agree():
    with pytest.raises(ValueError, match="2 class names but 1 palette"):
        DatasetInfo("bad", ("a", "b"), ((0, 0, 0),))
    with pytest.raises(ValueError, match="DatasetInfo"):
        register_info({"name": "bad"})


def test_label_map_maps_ids_and_names_an_unlisted_id(tmp_path):
    path = tmp_path / "label.png"
    Image.fromarray(np.array([[0, 7], [8, 26]], np.uint8)).save(path)
    table = label_lookup({0: 255, 7: 0, 8: 1, 26: 13})
    assert read_label(path, label_map=table).tolist() == [[255, 0], [1, 13]]
    with pytest.raises(ValueError, match=r"holds id 7 \(and \[8, 26\]\)"):
        read_label(path, label_map={0: 1})


def test_label_map_reads_16_bit_ids(tmp_path):
    path = tmp_path / "label16.png"
    Image.fromarray(np.array([[1000, 3]], np.uint16)).save(path)
    assert read_label(path, label_map={1000: 2, 3: 255}).tolist() == [[2, 255]]


def test_label_lookup_rejects_bad_entries():
    with pytest.raises(ValueError, match="id=-1"):
        label_lookup({-1: 0})
    with pytest.raises(ValueError, match="class=300"):
        label_lookup({1: 300})

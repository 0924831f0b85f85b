"""ENet: the paper's parameter count, any input size, the model contract."""

import pytest

import kseg
from kseg.models.deeplab import trainable_parameter_count
from kseg.models.enet import ENet
from kseg.testing import check_model


def test_paper_parameter_count():
    model = ENet(num_classes=19)
    # trainable = PyTorch's parameters(); published 0.37 M [?], a reimplementation 0.352 M
    assert trainable_parameter_count(model) == 363_967
    assert abs(trainable_parameter_count(model) - 0.37e6) / 0.37e6 < 0.10
    assert model.count_params() == 372_319


def test_contract_at_several_sizes(tmp_path):
    results = check_model(
        lambda shape: ENet(num_classes=4, input_shape=shape, alpha=0.5),
        input_shapes=[(48, 80, 3), (37, 23, 3), (17, 9, 3)],
        num_classes=4,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_create_and_bad_arguments():
    assert isinstance(kseg.models.create("enet", num_classes=3, alpha=0.25), ENet)
    with pytest.raises(ValueError, match="num_classes"):
        ENet(num_classes=0)
    with pytest.raises(ValueError, match="alpha"):
        ENet(alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        ENet(dropout=1.5)
    with pytest.raises(ValueError, match="alpha=0.1"):
        ENet(input_shape=(None, None, 8), alpha=0.1)

"""ERFNet: the published parameter count, any input size, the model contract."""

import pytest

import kseg
from kseg.models.deeplab import trainable_parameter_count
from kseg.models.erfnet import ERFNet
from kseg.testing import check_model


def test_paper_parameter_count():
    model = ERFNet(num_classes=19)
    # published ≈2.06 M [?]; trainable = PyTorch's parameters() of the authors' code
    assert trainable_parameter_count(model) == 2_064_191
    assert abs(trainable_parameter_count(model) - 2.06e6) / 2.06e6 < 0.03
    assert model.count_params() == 2_070_783


def test_contract_at_several_sizes(tmp_path):
    results = check_model(
        lambda shape: ERFNet(num_classes=4, input_shape=shape, alpha=0.25),
        input_shapes=[(48, 80, 3), (37, 23, 3)],
        num_classes=4,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_create_and_bad_arguments():
    assert isinstance(kseg.models.create("erfnet", num_classes=3, alpha=0.25), ERFNet)
    with pytest.raises(ValueError, match="num_classes"):
        ERFNet(num_classes=-1)
    with pytest.raises(ValueError, match="alpha"):
        ERFNet(alpha="wide")
    with pytest.raises(ValueError, match="widths"):
        ERFNet(alpha=0.05)

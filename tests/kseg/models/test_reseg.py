"""ReSeg: the model checks at a small width, and the authors' CamVid configuration's count."""

import pytest

import kseg
from kseg.testing import check_model

SMALL = {"front_filters": (8, 8, 16), "renet_units": (8, 8), "upsample_filters": (8, 8)}


def test_reseg_passes_the_model_checks(tmp_path):
    results = check_model(
        lambda shape: kseg.models.create(
            "reseg", num_classes=3, input_shape=shape, patch_sizes=(2, 1), **SMALL
        ),
        input_shapes=[(24, 32, 3), (13, 18, 3)],
        num_classes=3,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_parameter_count_of_the_authors_camvid_configuration():
    # fvisin/reseg evaluate_camvid_with_cb.py: VGG16 to conv3_3, ReNet 100/100 with 1x1
    # patches, two 2x2 stride-2 transposed convolutions of 50, 1x1 classifier, 11 classes
    vgg = sum(
        9 * i * o + o for i, o in [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)]
    ) + 2 * (9 * 256 * 256 + 256)
    gru = lambda i, h: 3 * (i * h + h * h + h)  # noqa: E731 (Lasagne GRULayer)
    renet = 2 * gru(256, 100) + 2 * gru(200, 100) + 4 * gru(200, 100)
    upsample = (4 * 200 * 50 + 50) + (4 * 50 * 50 + 50)
    classifier = 50 * 11 + 11
    model = kseg.models.ReSeg(num_classes=11)
    assert vgg == 1_735_488
    assert model.count_params() == vgg + renet + upsample + classifier == 2_542_149
    assert model.preprocessing["mode"] == "caffe"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"renet_units": (8, 8), "patch_sizes": (1,)}, "patch_sizes=\\(1,\\)"),
        ({"cell": "rnn"}, "cell='rnn'"),
        ({"weights": "imagenet", "front_filters": (8, 8, 8)}, "front_filters=\\(8, 8, 8\\)"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        kseg.models.ReSeg(num_classes=3, **kwargs)

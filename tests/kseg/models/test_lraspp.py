"""LR-ASPP on MobileNetV3: the paper's sizes, the shared harness, the head's options."""

import keras
import pytest

import kseg
from kseg.models import LRASPP
from kseg.models.deeplab import trainable_parameter_count
from kseg.testing import check_model


def within(value, published, tolerance):
    return abs(value / published - 1) <= tolerance


@pytest.mark.parametrize(
    "backbone, params, published",
    [("mobilenetv3_large", 1_505_550, 1.51e6), ("mobilenetv3_small", 467_486, 0.47e6)],
)
def test_parameter_counts_at_the_paper_configuration(backbone, params, published):
    # Paper Table 7 (RF2, LR-ASPP, F = 128, 19 classes); [?] in REFERENCE_NUMBERS: 10 %.
    count = trainable_parameter_count(LRASPP(num_classes=19, backbone=backbone))
    assert count == params and within(count, published, 0.10)


@pytest.mark.parametrize(
    "backbone, params",
    [("mobilenetv3_large_minimalistic", 827_014), ("mobilenetv3_small_minimalistic", 260_566)],
)
def test_minimalistic_backbones_parameter_counts(backbone, params):
    # same widths as the full networks, without squeeze-excite (and 3x3 instead of 5x5)
    assert trainable_parameter_count(LRASPP(num_classes=19, backbone=backbone)) == params


def batch_norm_statistics_from(model, images):
    """Moving statistics of every BatchNormalization := those of ``images`` (as a trained
    network's are of its data; untrained ones leave activations orders of magnitude apart)."""
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)


def test_int8_tflite_runs_entirely_in_xnnpack_with_the_minimalistic_backbone(tmp_path):
    # TFLite 2.21's XNNPACK has no int8 HARD_SWISH: with "mobilenetv3_small" its 18 run on
    # TFLite's reference kernel (19 partitions); the minimalistic backbone has none. The head's
    # ADD is delegated once the two branches have comparable scales (XNNPACK: each input's
    # scale within 1/1024..256 of the output's), as in a trained network.
    from kseg.data import synthetic_numpy

    keras.utils.set_random_seed(0)
    model = LRASPP(
        num_classes=4, backbone="mobilenetv3_small_minimalistic", input_shape=(64, 64, 3)
    )
    images, _ = synthetic_numpy(8, image_size=(64, 64), seed=0, num_classes=4)
    batch_norm_statistics_from(model, images)
    path = kseg.export.tflite(
        model, tmp_path / "int8.tflite", quantize="int8", representative_data=images
    )
    assert kseg.bench.tflite_undelegated_ops(path) == ({}, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone, published", [("mobilenetv3_large", 9.74e9), ("mobilenetv3_small", 2.90e9)]
)
def test_multiply_adds_at_1024x2048(backbone, published):
    model = LRASPP(num_classes=19, backbone=backbone, input_shape=(1024, 2048, 3))
    madds = kseg.bench.profile(model)["madds"]
    assert within(madds, published, 0.10), madds  # 9.32 B / 2.69 B


@pytest.mark.slow
def test_mobile_deeplab_v3_width_half_multiply_adds():
    # MobileNetV2 paper, Table 7: 0.88 B MAdds at 513x513 (width 0.5, OS 16, no ASPP).
    model = kseg.models.DeepLabV3(
        num_classes=21,
        backbone="mobilenetv2",
        aspp=False,
        backbone_options={"alpha": 0.5},
        input_shape=(513, 513, 3),
    )
    madds = kseg.bench.profile(model)["madds"]
    assert within(madds, 0.88e9, 0.05), madds  # 0.910 B


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backbone": "mobilenetv3_small", "alpha": 0.75},
        {"backbone": "mobilenetv3_large", "alpha": 0.5, "filters": 16, "output_stride": 32},
    ],
)
def test_lraspp_passes_the_model_checks(kwargs, tmp_path):
    results = check_model(
        lambda shape: LRASPP(num_classes=3, input_shape=shape, **kwargs),
        input_shapes=[(64, 96, 3), (33, 47, 3)],
        num_classes=3,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_paper_pooling_window_and_its_size_constraint():
    model = LRASPP(
        num_classes=4,
        backbone="mobilenetv3_small",
        input_shape=(128, 160, 3),
        pool_size=(4, 6),
        pool_strides=(2, 2),
    )
    assert tuple(model.output_shape) == (None, 128, 160, 4)
    assert model.get_config()["pool_size"] == (4, 6)
    with pytest.raises(ValueError, match="smaller than pool_size"):
        LRASPP(num_classes=4, backbone="mobilenetv3_small", input_shape=(32, 32, 3), pool_size=49)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone='resnet50'"):
        LRASPP(backbone="resnet50")
    with pytest.raises(ValueError, match="filters=0"):
        LRASPP(filters=0)
    assert isinstance(kseg.models.create("lr_aspp", num_classes=2), LRASPP)

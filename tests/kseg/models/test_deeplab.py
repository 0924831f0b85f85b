"""DeepLab v1/v2/v3/v3+: published sizes, structure, every backbone, training and saving."""

import keras
import numpy as np
import pytest

import kseg
from kseg.layers import ASPP, Resize
from kseg.models import DeepLabV1, DeepLabV2, DeepLabV3, DeepLabV3Plus
from kseg.models.deeplab import trainable_parameter_count
from kseg.testing import (
    assert_inference_paths_agree,
    assert_keras_round_trip,
    assert_training_reduces_loss,
    synthetic_batch,
)


def within(value, published, tolerance):
    return abs(value / published - 1) <= tolerance


# --- paper configurations (full size, slow) -------------------------------------------------


@pytest.mark.slow
def test_deeplab_v1_parameter_counts():
    vgg = 14_714_688
    largefov = vgg + (3 * 3 * 512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 21 + 21)
    assert (
        trainable_parameter_count(DeepLabV1(num_classes=21, variant="largefov"))
        == largefov
        == 20_505_429
    )
    keras.backend.clear_session()
    seven = vgg + (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 21 + 21)
    count = trainable_parameter_count(DeepLabV1(num_classes=21, variant="7x7"))
    assert count == seven and within(count, 134.3e6, 0.01)


PAPER_RESNET = {"stem": "deep"}  # DeepLab's released ResNet-101 ("beta" stem)


@pytest.mark.slow
def test_deeplab_v3_resnet101_size_and_madds():
    model = DeepLabV3(
        num_classes=21, backbone="resnet101", output_stride=16, backbone_options=PAPER_RESNET
    )
    assert within(trainable_parameter_count(model), 58.16e6, 0.01)
    profile = kseg.bench.profile(model, (513, 513, 3))
    assert within(profile["madds"], 81.02e9, 0.05), profile["madds"]
    keras.backend.clear_session()
    # The keras.applications stem (ImageNet weights) is within 1 % in size, not in MAdds.
    model = DeepLabV3(num_classes=21, backbone="resnet101", output_stride=16)
    assert within(trainable_parameter_count(model), 58.16e6, 0.01)


@pytest.mark.slow
def test_deeplab_v3plus_madds():
    model = DeepLabV3Plus(
        num_classes=21, backbone="resnet101", output_stride=16, backbone_options=PAPER_RESNET
    )
    assert within(kseg.bench.profile(model, (513, 513, 3))["madds"], 101.28e9, 0.05)
    keras.backend.clear_session()
    model = DeepLabV3Plus(num_classes=21, backbone="xception65", output_stride=16)
    assert within(kseg.bench.profile(model, (513, 513, 3))["madds"], 54.17e9, 0.05)


def test_mobile_deeplab_v3_size_and_madds():
    model = DeepLabV3(num_classes=21, backbone="mobilenetv2", output_stride=16, aspp=False)
    assert within(trainable_parameter_count(model), 2.11e6, 0.01)
    assert within(kseg.bench.profile(model, (513, 513, 3))["madds"], 2.75e9, 0.05)
    keras.backend.clear_session()
    model = DeepLabV3(num_classes=21, backbone="mobilenetv2", output_stride=16, aspp=True)
    assert within(trainable_parameter_count(model), 4.52e6, 0.01)


# --- structure --------------------------------------------------------------------------------


def test_v3_structure_follows_the_paper():
    model = DeepLabV3(num_classes=3, backbone="resnet50", output_stride=16, input_shape=(64, 64, 3))
    aspp = model.get_layer("aspp")
    assert aspp.rates == (6, 12, 18) and aspp.image_pooling and aspp.filters == 256
    assert [model.get_layer(f"conv5_block{i}_2_conv").dilation_rate for i in (1, 2, 3)] == [
        (2, 2),
        (4, 4),
        (8, 8),
    ]
    assert tuple(aspp.output.shape[1:3]) == (4, 4)
    model = DeepLabV3(num_classes=3, backbone="resnet50", output_stride=8, input_shape=(64, 64, 3))
    assert model.get_layer("aspp").rates == (12, 24, 36)
    assert tuple(model.get_layer("aspp").output.shape[1:3]) == (8, 8)


def test_v3plus_decoder_uses_stride_4_features():
    model = DeepLabV3Plus(num_classes=3, backbone="xception65", input_shape=(64, 96, 3))
    assert model.get_layer("aspp").separable
    assert tuple(model.get_layer("decoder_concat").output.shape[1:]) == (16, 24, 256 + 48)
    assert model.get_layer("decoder_conv1_depthwise") is not None
    model = DeepLabV3Plus(num_classes=3, backbone="resnet50", input_shape=(64, 96, 3))
    assert not model.get_layer("aspp").separable
    assert tuple(model.get_layer("decoder_concat").output.shape[1:]) == (16, 24, 256 + 48)


def test_v2_aspp_l_sums_four_classifiers():
    model = DeepLabV2(num_classes=3, backbone="resnet50", input_shape=(64, 64, 3))
    rates = [model.get_layer(f"aspp_classifier_{i}").dilation_rate for i in range(4)]
    assert rates == [(6, 6), (12, 12), (18, 18), (24, 24)]
    x = np.random.default_rng(0).uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    features = keras.Model(model.input, model.get_layer("conv5_block3_out").output).predict(
        x, verbose=0
    )
    branches = sum(model.get_layer(f"aspp_classifier_{i}")(features) for i in range(4))
    expected = Resize()([branches, x]).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_aspp_matches_a_hand_written_branch_computation():
    aspp = ASPP(filters=4, rates=(2,), image_pooling=True)
    x = np.random.default_rng(1).normal(size=(2, 7, 9, 3)).astype("float32")
    out = aspp(x, training=False).numpy()
    # Fresh BatchNorm in inference is the identity up to epsilon: y = x / sqrt(1 + 1e-3).
    scale = 1 / np.sqrt(1 + 1e-3)
    relu = lambda v: np.maximum(v, 0) * scale  # noqa: E731
    k0 = aspp.branches[0][0].get_weights()[0]
    b0 = relu(np.einsum("bhwc,cf->bhwf", x, k0[0, 0]))
    k1 = aspp.branches[1][0].get_weights()[0]
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    b1 = np.zeros((2, 7, 9, 4))
    for i in range(3):
        for j in range(3):
            b1 += np.einsum(
                "bhwc,cf->bhwf", padded[:, 2 * i : 2 * i + 7, 2 * j : 2 * j + 9], k1[i, j]
            )
    b1 = relu(b1)
    kp = aspp.pooling_branch[0].get_weights()[0]
    pooled = relu(np.einsum("bc,cf->bf", x.mean(axis=(1, 2)), kp[0, 0]))
    b2 = np.broadcast_to(pooled[:, None, None, :], (2, 7, 9, 4))
    concat = np.concatenate([b0, b1, b2], axis=-1)
    kproj = aspp.projection[0].get_weights()[0]
    expected = relu(np.einsum("bhwc,cf->bhwf", concat, kproj[0, 0]))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_aspp_config_and_errors():
    layer = ASPP(filters=8, rates=(1, 3), separable=True, dropout=0.1)
    clone = ASPP.from_config(layer.get_config())
    assert (clone.filters, clone.rates, clone.separable, clone.dropout) == (8, (1, 3), True, 0.1)
    with pytest.raises(ValueError, match="rates.*0"):
        ASPP(rates=(6, 0))
    with pytest.raises(ValueError, match="filters.*-1"):
        ASPP(filters=-1)
    with pytest.raises(ValueError, match="dropout"):
        ASPP(dropout=1.0)


# --- every configuration trains, predicts consistently and round-trips ------------------------

# (name, builder, heavy): heavy ones (ResNet-50, VGG16, Xception-65 encoders of 15-40 M
# parameters) run their several-size, round-trip and training checks in the slow suite.
SMALL_CONFIGS = [
    ("v1_largefov", lambda n, s: DeepLabV1(num_classes=n, input_shape=s, variant="largefov"), True),
    (
        "v2_resnet50",
        lambda n, s: DeepLabV2(num_classes=n, input_shape=s, backbone="resnet50"),
        True,
    ),
    (
        "v3_mobilenet_no_aspp",
        lambda n, s: DeepLabV3(
            num_classes=n,
            input_shape=s,
            backbone="mobilenetv2",
            aspp=False,
            backbone_options={"alpha": 0.35},
        ),
        False,
    ),
    (
        "v3_resnet50_os8",
        lambda n, s: DeepLabV3(num_classes=n, input_shape=s, backbone="resnet50", output_stride=8),
        True,
    ),
    (
        "v3plus_mobilenet",
        lambda n, s: DeepLabV3Plus(
            num_classes=n,
            input_shape=s,
            backbone="mobilenetv2",
            backbone_options={"alpha": 0.35},
            filters=32,
        ),
        False,
    ),
    (
        "v3plus_resnet50",
        lambda n, s: DeepLabV3Plus(num_classes=n, input_shape=s, backbone="resnet50"),
        True,
    ),
    (
        "v3plus_xception65_os32",
        lambda n, s: DeepLabV3Plus(
            num_classes=n, input_shape=s, backbone="xception65", output_stride=32, filters=32
        ),
        True,
    ),
]


def configs(slow_if_heavy=True):
    return [
        pytest.param(
            name, build, id=name, marks=[pytest.mark.slow] if (heavy and slow_if_heavy) else []
        )
        for name, build, heavy in SMALL_CONFIGS
    ]


@pytest.mark.parametrize("name,build", configs(slow_if_heavy=False))
def test_builds_at_an_odd_non_square_size(name, build):
    model = build(3, (50, 83, 3))
    assert tuple(model.output_shape) == (None, 50, 83, 3)


@pytest.mark.parametrize("name,build", configs())
def test_builds_at_several_sizes(name, build):
    for hw in [(65, 65), (97, 40)]:
        model = build(3, (*hw, 3))
        assert tuple(model.output_shape) == (None, *hw, 3)
        keras.backend.clear_session()


@pytest.mark.parametrize("name,build", configs())
def test_inference_paths_and_round_trip(name, build, tmp_path):
    model = build(4, (None, None, 3))
    images, _ = synthetic_batch(2, 72, 57, num_classes=6, kind="scenes")
    logits = assert_inference_paths_agree(model, images)
    assert logits.shape == (2, 72, 57, 4) and np.isfinite(logits).all()
    assert_keras_round_trip(model, images, str(tmp_path / f"{name}.keras"))


@pytest.mark.slow
@pytest.mark.parametrize("name,build", configs())
def test_training_reduces_loss(name, build):
    model = build(6, (None, None, 3))
    images, labels = synthetic_batch(2, 64, 48, num_classes=6, kind="scenes")
    assert_training_reduces_loss(
        model, images, labels, steps=8, learning_rate=1e-3 if "v1" not in name else 1e-4
    )


def test_mobile_v3_trains_quickly():
    model = DeepLabV3(
        num_classes=6,
        backbone="mobilenetv2",
        aspp=False,
        backbone_options={"alpha": 0.35},
        output_stride=8,
    )
    images, labels = synthetic_batch(2, 64, 48, num_classes=6, kind="scenes")
    assert_training_reduces_loss(model, images, labels, steps=8, learning_rate=3e-3)


def test_create_and_bad_arguments():
    assert isinstance(
        kseg.models.create(
            "deeplabv3plus", num_classes=2, backbone="mobilenetv2", input_shape=(40, 40, 3)
        ),
        DeepLabV3Plus,
    )
    assert {"deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus"} <= set(kseg.models.names())
    with pytest.raises(ValueError, match="backbone.*'resnet18'"):
        DeepLabV3Plus(backbone="resnet18")
    with pytest.raises(ValueError, match="output_stride.*4"):
        DeepLabV3(output_stride=4)
    with pytest.raises(ValueError, match="variant.*'large'"):
        DeepLabV1(variant="large")
    with pytest.raises(ValueError, match="multi_grid"):
        DeepLabV3Plus(backbone="mobilenetv2", multi_grid=(1, 2, 4))
    with pytest.raises(ValueError, match="3 channels"):
        DeepLabV3(input_shape=(64, 64, 1))
    with pytest.raises(ValueError, match="rates"):
        DeepLabV2(rates=(6, -1))
    with pytest.raises(ValueError, match="no weights for DeepLab's aligned Xception-65"):
        DeepLabV3Plus(backbone="xception65", weights="imagenet")


def test_dense_crf_option_refines_the_logits(tmp_path):
    model = DeepLabV1(num_classes=3, input_shape=(None, None, 3), crf={"iterations": 3})
    images, _ = synthetic_batch(1, 40, 52, num_classes=6, kind="scenes")
    refined = model.predict(images, verbose=0)
    raw = keras.Model(model.input, model.get_layer("upsample").output).predict(images, verbose=0)
    expected = kseg.layers.DenseCRF(iterations=3)([images, raw]).numpy()
    # The model returns log-probabilities, so its softmax is the CRF's output.
    np.testing.assert_allclose(np.exp(refined), expected, rtol=1e-4, atol=1e-6)
    loaded = assert_keras_round_trip(model, images, str(tmp_path / "v1_crf.keras"))
    assert loaded.get_config()["crf"] == {"iterations": 3}
    with pytest.raises(ValueError, match="crf must be None or a dict"):
        DeepLabV2(backbone="resnet50", crf=5)

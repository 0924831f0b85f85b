"""BiSeNet V1 and V2: published sizes, multiply-adds, booster heads, the shared harness."""

import keras
import numpy as np
import pytest

import kseg
from kseg.bench import profile
from kseg.models import BiSeNetV1, BiSeNetV2
from kseg.models.deeplab import trainable_parameter_count
from kseg.testing import assert_inference_paths_agree, check_model, synthetic_batch


@pytest.mark.parametrize(
    "backbone, expected, total",
    [("resnet18", 12_894_163, 13_494_777), ("xception39", 1_548_779, 1_849_105)],
)
def test_v1_parameter_counts_follow_the_released_code(backbone, expected, total):
    # The paper's 49.0 M / 5.8 M ([?]) fit no version of the network (see the docstring).
    model = BiSeNetV1(num_classes=19, backbone=backbone)
    assert trainable_parameter_count(model.inference_model()) == expected
    assert trainable_parameter_count(model) == total
    backbone_only = {"resnet18": 11_176_512, "xception39": 306_264}[backbone]
    assert expected - backbone_only < 1.8e6  # BiSeNet's own layers are small either way


def test_v2_parameter_count_matches_the_paper():
    model = BiSeNetV2(num_classes=19)
    count = trainable_parameter_count(model.inference_model())
    assert count == 3_358_627
    assert abs(count / 3.4e6 - 1) < 0.10  # paper ≈3.4 M [?]
    assert len(model.outputs) == 5


@pytest.mark.slow
def test_v2_multiply_adds_at_512x1024():
    # The paper's 21.15 "GFLOPs" are multiply-adds; ours are 16 % above, 9.8 B of them in the
    # 1024-wide head whose width the paper does not give (see the class docstring).
    model = BiSeNetV2(num_classes=19, auxiliary_heads=False)
    madds = profile(model, (512, 1024, 3))["madds"]
    assert abs(madds / 24.603e9 - 1) < 0.001
    assert 1.0 < madds / 21.15e9 < 1.2
    head = 64 * 128 * (9 * 128 * 1024 + 1024 * 19)
    assert abs((madds - head) / 21.15e9 - 1) < 0.35  # the rest, far below FLOPs = 2·MAdds


def test_v2_no_head_width_meets_both_published_figures():
    # MAdds scale with the pixels: 64×128 times 64 is 512×1024 (the context embedding's
    # pooled 1×1 convolution, 16 K, aside). The paper's 21.15 G needs a 663-wide head, which
    # drops the parameters 14 % below ≈3.4 M; the same body at BiSeNetV2-Large's width and
    # depth stays far below its 118.51 G with the 1024 head (see the class docstring).
    def measure(**kwargs):
        model = BiSeNetV2(num_classes=19, input_shape=(64, 128, 3), auxiliary_heads=False, **kwargs)
        return profile(model, (64, 128, 3))["madds"] * 64, trainable_parameter_count(model)

    madds, params = measure(head_channels=663)
    assert abs(madds / 21.15e9 - 1) < 0.01
    assert abs(params / 2.935e6 - 1) < 0.005
    assert params / 3.4e6 < 0.9  # outside the 10 % of the parameter figure
    large, _ = measure(alpha=2.0, depth_multiplier=3.0)
    assert abs(large / 83.07e9 - 1) < 0.01
    assert large / 118.51e9 < 0.75
    keras.backend.clear_session()


@pytest.mark.slow
def test_v1_multiply_adds_at_the_papers_speed_setting():
    for backbone, expected in (("resnet18", 11.581e9), ("xception39", 3.065e9)):
        model = BiSeNetV1(num_classes=19, backbone=backbone, auxiliary_heads=False)
        assert abs(profile(model, (360, 640, 3))["madds"] / expected - 1) < 0.001
        keras.backend.clear_session()


def test_v1_passes_the_model_checks(tmp_path):
    results = check_model(
        lambda shape: kseg.models.create(
            "bisenet", num_classes=3, input_shape=shape, backbone="resnet18"
        ),
        input_shapes=[(40, 56, 3), (37, 29, 3)],
        num_classes=3,
        tmp_dir=tmp_path,
        learning_rate=1e-4,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_v2_passes_the_model_checks(tmp_path):
    results = check_model(
        lambda shape: BiSeNetV2(
            num_classes=3, input_shape=shape, alpha=0.25, head_channels=16, depth_multiplier=0.5
        ),
        input_shapes=[(48, 40, 3), (33, 71, 3)],
        num_classes=3,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_booster_heads_are_training_outputs_and_inference_model_is_the_main_one():
    model = BiSeNetV2(num_classes=4, alpha=0.25, head_channels=16, aux_loss_weight=0.5)
    assert model.loss_weights_for_outputs == [1.0, 0.5, 0.5, 0.5, 0.5]
    images, labels = synthetic_batch(1, 50, 66, num_classes=4, kind="scenes")
    outputs = model.predict(images, verbose=0)
    assert [o.shape for o in outputs] == [(1, 50, 66, 4)] * 5
    single = model.inference_model()
    np.testing.assert_allclose(single.predict(images, verbose=0), outputs[0], rtol=1e-5, atol=1e-5)
    assert_inference_paths_agree(single, images)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=[ce] * 5, loss_weights=model.loss_weights_for_outputs)
    main = model(images, training=False)
    expected = float(ce(labels, main[0])) + 0.5 * sum(float(ce(labels, o)) for o in main[1:])
    np.testing.assert_allclose(
        model.evaluate(images, (labels,) * 5, verbose=0, return_dict=True)["loss"],
        expected,
        rtol=1e-4,
    )
    assert BiSeNetV1(num_classes=2, auxiliary_heads=False).loss_weights_for_outputs == [1.0]


def test_v2_width_ratio_and_depth_options():
    model = BiSeNetV2(
        num_classes=2,
        alpha=0.5,
        semantic_ratio=0.125,
        depth_multiplier=2.0,
        head_channels=8,
        auxiliary_heads=False,
    )
    assert model.get_layer("detail3_conv3").filters == 64
    assert model.get_layer("semantic_stem").conv[0].filters == 4  # 64 · 0.5 · 1/8
    assert model.get_layer("semantic5_ge7").project[0].filters == 32  # 3·2 stride-1 layers
    assert model.get_layer("semantic_ce").last[0].filters == 64  # back to the detail width


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: backbone='resnet50'"):
        BiSeNetV1(backbone="resnet50")
    with pytest.raises(ValueError, match="Received: aux_loss_weight=-1"):
        BiSeNetV1(aux_loss_weight=-1)
    with pytest.raises(ValueError, match="Received: alpha=0"):
        BiSeNetV2(alpha=0)
    with pytest.raises(ValueError, match="Received: semantic_ratio=-0.5"):
        BiSeNetV2(semantic_ratio=-0.5)
    with pytest.raises(ValueError, match="Received: head_channels=0"):
        BiSeNetV2(head_channels=0)
    with pytest.raises(ValueError, match="channels"):
        BiSeNetV2(input_shape=(64, 64, 1))

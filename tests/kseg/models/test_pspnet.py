"""PSPNet: pyramid pooling wiring, published size, auxiliary head trained through fit()."""

import keras
import numpy as np
import pytest

import kseg
from kseg.layers import AdaptiveAveragePooling2D
from kseg.models import PSPNet
from kseg.models.deeplab import trainable_parameter_count
from kseg.testing import (
    assert_inference_paths_agree,
    assert_keras_round_trip,
    synthetic_batch,
)

# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("pspnet")


@pytest.mark.slow
def test_paper_parameter_count():
    model = PSPNet(num_classes=21, backbone="resnet101", output_stride=8)
    assert abs(trainable_parameter_count(model) / 68.1e6 - 1) < 0.10
    assert trainable_parameter_count(model) == 68_002_602
    keras.backend.clear_session()
    deep = PSPNet(num_classes=21, backbone="resnet101", backbone_options={"stem": "deep"})
    assert trainable_parameter_count(deep) == 68_126_314


@pytest.fixture(scope="module")
def small_model():
    return PSPNet(num_classes=5, backbone="resnet50", input_shape=(None, None, 3))


def test_pyramid_module_structure(small_model):
    pools = [small_model.get_layer(f"ppm_pool{b}") for b in (1, 2, 3, 6)]
    assert [p.bins for p in pools] == [1, 2, 3, 6]
    assert [small_model.get_layer(f"ppm_conv{b}").filters for b in (1, 2, 3, 6)] == [512] * 4
    assert small_model.get_layer("ppm_concat").output.shape[-1] == 2048 + 4 * 512
    assert small_model.get_layer("conv5_block1_2_conv").dilation_rate == (4, 4)
    assert small_model.get_layer("conv4_block1_2_conv").dilation_rate == (2, 2)


def test_pyramid_branch_values(small_model):
    # Each branch is pool -> 1x1 conv -> BN -> ReLU -> bilinear resize; check the 1x1 branch:
    # the global mean, projected, broadcast over the feature map.
    x = np.random.default_rng(0).uniform(0, 255, size=(1, 64, 72, 3)).astype("float32")
    probe = keras.Model(
        small_model.input,
        [
            small_model.get_layer("conv5_block3_out").output,
            small_model.get_layer("ppm_upsample1").output,
        ],
    )
    features, branch = probe.predict(x, verbose=0)
    kernel = small_model.get_layer("ppm_conv1").get_weights()[0][0, 0]
    bn = small_model.get_layer("ppm_conv1_bn")
    gamma, beta, mean, var = bn.get_weights()
    expected = np.maximum(
        (features.mean(axis=(1, 2)) @ kernel - mean) / np.sqrt(var + bn.epsilon) * gamma + beta, 0
    )
    np.testing.assert_allclose(
        branch, np.broadcast_to(expected[:, None, None], branch.shape), rtol=1e-4, atol=1e-4
    )
    pooled6 = keras.Model(small_model.input, small_model.get_layer("ppm_pool6").output).predict(
        x, verbose=0
    )
    np.testing.assert_allclose(
        pooled6, AdaptiveAveragePooling2D(6)(features).numpy(), rtol=1e-5, atol=1e-5
    )


def test_two_outputs_and_single_output_inference_model(small_model, tmp_path):
    images, _ = synthetic_batch(2, 65, 50, num_classes=6, kind="scenes")
    main, aux = small_model.predict(images, verbose=0)
    assert main.shape == aux.shape == (2, 65, 50, 5)
    single = small_model.inference_model()
    np.testing.assert_allclose(single.predict(images, verbose=0), main, rtol=1e-5, atol=1e-5)
    assert_inference_paths_agree(single, images)
    assert small_model.loss_weights_for_outputs == [1.0, 0.4]


@pytest.mark.slow
def test_keras_round_trip_with_two_outputs(small_model, tmp_path):
    images, _ = synthetic_batch(1, 48, 40, num_classes=6, kind="scenes")
    path = str(tmp_path / "pspnet.keras")
    small_model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == small_model.get_config()
    for ours, theirs in zip(
        loaded.predict(images, verbose=0), small_model.predict(images, verbose=0)
    ):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_auxiliary_loss_is_weighted_in_fit():
    model = PSPNet(
        num_classes=4, backbone="resnet50", input_shape=(48, 40, 3), bins=(1, 2), dropout=0.0
    )
    images, labels = synthetic_batch(2, 48, 40, num_classes=4, kind="scenes")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=[ce, ce],
        loss_weights=model.loss_weights_for_outputs,
    )
    # The reported total equals main + 0.4 * aux, each computed independently.
    main, aux = model(images, training=False)
    expected = float(ce(labels, main)) + 0.4 * float(ce(labels, aux))
    evaluated = model.evaluate(images, (labels, labels), verbose=0, return_dict=True)
    np.testing.assert_allclose(evaluated["loss"], expected, rtol=1e-4)
    history = model.fit(images, (labels, labels), epochs=6, batch_size=2, verbose=0)
    assert history.history["loss"][-1] < 0.9 * history.history["loss"][0]


def test_auxiliary_loss_weight_in_evaluate():
    model = PSPNet(
        num_classes=3, backbone="resnet50", input_shape=(40, 40, 3), bins=(1,), output_stride=16
    )
    images, labels = synthetic_batch(1, 40, 40, num_classes=3, kind="scenes")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=[ce, ce], loss_weights=model.loss_weights_for_outputs)
    main, aux = model(images, training=False)
    expected = float(ce(labels, main)) + 0.4 * float(ce(labels, aux))
    np.testing.assert_allclose(
        model.evaluate(images, (labels, labels), verbose=0, return_dict=True)["loss"],
        expected,
        rtol=1e-4,
    )


def test_single_output_variant_round_trips(tmp_path):
    model = kseg.models.create(
        "pspnet",
        num_classes=3,
        backbone="resnet50",
        auxiliary_head=False,
        output_stride=16,
        bins=(1, 3),
    )
    images, _ = synthetic_batch(1, 50, 66, num_classes=6, kind="scenes")
    assert model.predict(images, verbose=0).shape == (1, 50, 66, 3)
    assert_inference_paths_agree(model, images)
    assert_keras_round_trip(model, images, str(tmp_path / "pspnet_single.keras"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone.*'vgg16'"):
        PSPNet(backbone="vgg16")
    with pytest.raises(ValueError, match="output_stride.*32"):
        PSPNet(output_stride=32)
    with pytest.raises(ValueError, match="bins"):
        PSPNet(bins=(1, 0))
    with pytest.raises(ValueError, match="aux_loss_weight"):
        PSPNet(aux_loss_weight=-1)

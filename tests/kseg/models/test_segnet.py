"""SegNet: the paper's parameter count, index-unpooling wiring, the model contract."""

import keras
import numpy as np
import pytest

import kseg
from kseg.models.segnet import SegNet
from kseg.testing import check_model

LIGHT = (8, 8, 16, 16, 16)


def test_paper_parameter_count():
    model = SegNet(num_classes=11)
    # conv weights+biases 29,433,483 plus 7,936 BN channels x 4
    assert model.count_params() == 29_465_227
    assert abs(model.count_params() - 29.5e6) / 29.5e6 < 0.01
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert non_trainable == 7_936 * 2
    assert kseg.models.create("segnet", num_classes=11).count_params() == 29_465_227


def test_contract_at_several_sizes(tmp_path):
    results = check_model(
        lambda shape: SegNet(num_classes=5, input_shape=shape, stage_filters=LIGHT),
        input_shapes=[(64, 96, 3), (45, 61, 3), (33, 33, 3)],
        num_classes=5,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


def test_decoder_unpools_to_encoder_argmax_positions():
    model = SegNet(num_classes=3, input_shape=(None, None, 3), stage_filters=LIGHT)
    probe = keras.Model(
        model.inputs,
        [
            model.get_layer("block1_relu2").output,
            model.get_layer("decoder1_unpool").output,
            model.get_layer("block1_pool").output[0],
        ],
    )
    images = np.random.default_rng(0).uniform(0, 255, (2, 13, 19, 3)).astype("float32")
    pre_pool, unpooled, pooled = (np.asarray(t) for t in probe.predict(images, verbose=0))
    assert unpooled.shape == pre_pool.shape == (2, 13, 19, 8)
    # brute force: in every 2x2 (ceil-mode) window at most one non-zero, at the first maximum
    # of the encoder's pre-pool map; there the decoder writes its own input value
    for b in range(2):
        for i in range(0, 13, 2):
            for j in range(0, 19, 2):
                for c in range(8):
                    window = pre_pool[b, i : i + 2, j : j + 2, c]
                    out = unpooled[b, i : i + 2, j : j + 2, c]
                    first = np.unravel_index(np.argmax(window), window.shape)
                    others = np.ones(window.shape, bool)
                    others[first] = False
                    assert np.all(out[others] == 0)
    assert pooled.shape == (2, 7, 10, 8)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        SegNet(num_classes=0)
    with pytest.raises(ValueError, match="stage_filters"):
        SegNet(stage_filters=(8, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        SegNet(input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="stage_filters"):
        SegNet(weights="imagenet", stage_filters=LIGHT)
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        SegNet(weights="/nowhere.h5")


def test_imagenet_weight_path_loads_vgg16_convolutions(tmp_path):
    # offline stand-in for the ImageNet file: keras.applications VGG16 with random weights
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    model = SegNet(num_classes=4, weights=str(path))
    for layer in source.layers:
        if layer.weights:
            for got, want in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_trains_with_fit(tmp_path):
    check_model(
        lambda shape: SegNet(num_classes=4, input_shape=shape, stage_filters=LIGHT),
        [(48, 64, 3)],
        num_classes=4,
        use_fit=True,
        tmp_dir=tmp_path,
    )

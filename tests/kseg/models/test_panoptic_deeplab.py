"""Panoptic-DeepLab: model contract, training on its three losses, grouping, size, export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.models.deeplab import trainable_parameter_count
from kseg.panoptic import group, training_targets
from kseg.testing import check_model

TINY = dict(
    num_classes=4,
    thing_classes=(2, 3),
    backbone="mobilenetv2",
    aspp_filters=16,
    semantic_filters=16,
    instance_filters=8,
    semantic_projections=(8, 8),
    instance_projections=(8, 4),
    semantic_head_filters=16,
    instance_head_filters=8,
    backbone_options={"alpha": 0.35},
)


def tiny(input_shape=(64, 64, 3)):
    return kseg.models.PanopticDeepLab(input_shape=input_shape, **TINY)


def panoptic_batch(size=64):
    maps = np.zeros((2, size, size), "int32")
    maps[:, size // 2 :] = 1000  # stuff class 1 below
    maps[0, 8:24, 8:24] = 2001  # two touching squares of class 2
    maps[0, 8:24, 24:40] = 2002
    maps[1, 30:50, 10:30] = 3001
    maps[1, :4] = 255000  # void
    rng = np.random.default_rng(0)
    palette = np.array([[60, 90, 200], [200, 160, 60], [220, 40, 40], [40, 200, 60]], "float32")
    classes = np.where(maps // 1000 == 255, 0, maps // 1000)
    images = palette[classes] + rng.normal(0, 8, classes.shape + (3,))
    return np.clip(images, 0, 255).astype("float32"), maps


def test_panoptic_deeplab_passes_the_model_checks(tmp_path):
    results = check_model(
        tiny, input_shapes=[(64, 64, 3)], num_classes=4, train_steps=0, tmp_dir=tmp_path
    )
    model = results[0]["model"]
    assert [tuple(s) for s in model.output_shape] == [
        (None, 64, 64, 4),
        (None, 64, 64, 1),
        (None, 64, 64, 2),
    ]
    assert model.loss_weights_for_outputs == [1.0, 200.0, 0.01]
    assert model.get_config()["thing_classes"] == (2, 3)
    assert tuple(model.inference_model().output_shape) == (None, 64, 64, 4)


def test_training_on_the_three_losses_lowers_each_and_reaches_every_weight():
    model = tiny()
    images, maps = panoptic_batch()
    targets = [tf.constant(t) for t in training_targets(maps, (2, 3), small_instance_area=0)]
    losses = model.default_losses(top_k_percent=1.0)
    weights = model.loss_weights_for_outputs
    optimizer = keras.optimizers.Adam(3e-3)
    history = []
    for step in range(4):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            parts = [loss(y, out) for loss, y, out in zip(losses, targets, outputs)]
            total = tf.add_n([w * p for w, p in zip(weights, parts)])
        history.append([float(p) for p in parts])
        if step < 3:
            grads = tape.gradient(total, model.trainable_weights)
            missing = [w.path for w, g in zip(model.trainable_weights, grads) if g is None]
            assert not missing
            optimizer.apply_gradients(zip(grads, model.trainable_weights))
    first, last = history[0], history[-1]
    assert last[0] < first[0] and last[1] < first[1] and last[2] < first[2], history


def test_panoptic_model_appends_the_grouping():
    model = tiny()
    images, _ = panoptic_batch()
    panoptic = model.panoptic_model(top_k=8, stuff_area=4, center_threshold=-1.0)
    out = panoptic.predict(images, verbose=0)
    assert out.dtype == np.int32 and out.shape == (2, 64, 64)
    semantic, center, offset = model.predict(images, verbose=0)
    direct = group(
        semantic, center, offset, (2, 3), top_k=8, stuff_area=4, center_threshold=-1.0
    ).numpy()
    np.testing.assert_array_equal(out, direct)
    # every centre is kept (threshold -1): up to 8 instances on the thing pixels
    assert 0 < len(np.unique(out[out % 1000 > 0])) <= 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"thing_classes": (4,)}, r"thing_classes=\(4,\)"),
        ({"semantic_projections": (8,)}, r"semantic_projections=\(8,\)"),
        ({"backbone": "vgg16"}, "backbone='vgg16'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match="Received: " + message):
        kseg.models.PanopticDeepLab(**{**TINY, **kwargs})


def test_reexported_and_registered_as_a_panoptic_model():
    assert kseg.panoptic.PanopticDeepLab is kseg.models.PanopticDeepLab
    assert kseg.models.names(task="panoptic") == ["panoptic_deeplab", "panopticdeeplab"]
    assert not any("panoptic" in name for name in kseg.models.names(task="semantic"))
    model = kseg.models.create("panoptic_deeplab", **TINY)
    assert type(model) is kseg.models.PanopticDeepLab and len(model.outputs) == 3


@pytest.mark.slow
def test_panoptic_deeplab_r50_parameter_count():
    """Against deeplab2's official config (configs/coco/panoptic_deeplab/resnet50_os16)."""

    def conv_bn(cin, cout, k=1):
        return k * k * cin * cout + 2 * cout

    def separable(cin, cout, k=5):
        return k * k * cin + 2 * cin + conv_bn(cin, cout)

    def aspp(cin, width):
        return 2 * conv_bn(cin, width) + 3 * conv_bn(cin, width, 3) + conv_bn(5 * width, width)

    def decoder(width, projections, aspp_width=256):
        p3, p2 = projections
        return (
            aspp(2048, aspp_width)
            + conv_bn(512, p3)
            + separable(aspp_width + p3, width)
            + conv_bn(256, p2)
            + separable(width + p2, width)
        )

    def head(cin, width, outputs):
        return separable(cin, width) + width * outputs + outputs

    resnet50 = 23_508_032  # without the classifier, no convolution biases
    official = (
        resnet50
        + decoder(256, (64, 32))
        + head(256, 256, 134)
        + decoder(128, (32, 16))
        + head(128, 32, 1)
        + head(128, 32, 2)
    )
    assert official == 55_003_257
    model = kseg.models.PanopticDeepLab(
        num_classes=134, thing_classes=tuple(range(80)), backbone="resnet50", output_stride=16
    )
    count = trainable_parameter_count(model)
    # the keras-style ResNet-50 keeps its 26,560 convolution biases
    assert count == official + 26_560
    assert abs(count / official - 1) < 0.02


@pytest.mark.slow
def test_saved_model_signature_equals_predict(tmp_path):
    model = tiny()
    images, _ = panoptic_batch()
    path = kseg.panoptic.export.saved_model(
        model, tmp_path / "pdl", top_k=8, stuff_area=4, center_threshold=-1.0
    )
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    expected = model.panoptic_model(top_k=8, stuff_area=4, center_threshold=-1.0).predict(
        images, verbose=0
    )
    np.testing.assert_array_equal(served["panoptic"].numpy(), expected)
    semantic, center, offset = model.predict(images, verbose=0)
    np.testing.assert_array_equal(served["semantic"].numpy(), np.argmax(semantic, -1))
    np.testing.assert_allclose(served["center"].numpy(), center, atol=1e-5)
    np.testing.assert_allclose(served["offset"].numpy(), offset, atol=1e-5)


@pytest.mark.slow
def test_tflite_with_builtin_ops_gives_the_keras_panoptic_map(tmp_path):
    model = tiny()
    images, _ = panoptic_batch()
    path = kseg.panoptic.export.tflite(
        model, tmp_path / "pdl.tflite", top_k=8, stuff_area=4, center_threshold=-1.0
    )
    interpreter = tf.lite.Interpreter(model_path=str(path))
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops
    # the grouping's ops are among them
    assert {"MAX_POOL_2D", "TOPK_V2", "ARG_MIN", "ONE_HOT", "BATCH_MATMUL"} <= ops, ops
    out = kseg.panoptic.export.run_tflite(path, images)
    expected = model.panoptic_model(top_k=8, stuff_area=4, center_threshold=-1.0).predict(
        images, verbose=0
    )
    # float differences can move a pixel across a boundary; nearly every pixel agrees
    assert np.mean(out["panoptic"] == expected) > 0.99
    semantic, center, _ = model.predict(images, verbose=0)
    np.testing.assert_allclose(out["center"], center, atol=1e-3)

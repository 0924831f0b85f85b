"""GCN (Large Kernel Matters): structure, parameter count, training, saving and export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.layers import FFTConv2D
from kseg.models.gcn import GCN
from kseg.testing import check_model

RESNET50_NO_TOP_PARAMS = 23_587_712  # keras.applications.ResNet50(include_top=False)


def _expected_head_params(num_classes, k):
    # GCN module on P2..P5 (256/512/1024/2048 channels): per branch a k x 1 (or 1 x k) conv from
    # C to n channels then one from n to n, with biases; two branches.
    gcn = sum(
        2 * ((k * c * num_classes + num_classes) + (k * num_classes * num_classes + num_classes))
        for c in (256, 512, 1024, 2048)
    )
    br = 2 * (9 * num_classes * num_classes + num_classes)  # two 3x3 convs with bias
    num_br = 4 + 3 + 2  # one per stage, one after each of the three fusions, two at the end
    up = 16 * num_classes * num_classes  # 4x4 transposed convs without bias
    num_up = 5
    return gcn + num_br * br + num_up * up


def _images(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(n, h, w, 3)).astype("float32")


def test_structure_and_parameter_count():
    model = GCN(num_classes=21, input_shape=(64, 64, 3))
    assert model.output_shape == (None, 64, 64, 21)
    assert model.count_params() == RESNET50_NO_TOP_PARAMS + _expected_head_params(21, 15)
    fft_layers = [layer for layer in model.layers if isinstance(layer, FFTConv2D)]
    assert len(fft_layers) == 16  # 4 stages x 2 branches x 2 convolutions
    assert sorted({layer.kernel_size for layer in fft_layers}) == [(1, 15), (15, 1)]
    assert "gcn" in kseg.models.names()
    assert isinstance(kseg.models.create("gcn", num_classes=3, input_shape=(32, 32, 3)), GCN)


def test_odd_input_sizes_give_logits_at_input_resolution():
    model = GCN(num_classes=3, input_shape=(None, None, 3), kernel_size=7)
    for h, w in ((45, 70), (33, 33)):
        assert model(_images(1, h, w)).shape == (1, h, w, 3)


def _require_op_library():
    import kseg_ops

    try:
        kseg_ops.load_ops_library()
    except ImportError as error:
        pytest.skip(f"GCN with fft_algorithm='fft' runs the compiled FftConv2D op: {error}")


@pytest.mark.slow
def test_contract_at_several_sizes(tmp_path):
    _require_op_library()
    results = check_model(
        lambda shape: GCN(num_classes=3, input_shape=shape, kernel_size=7, fft_algorithm="fft"),
        input_shapes=[(32, 48, 3), (45, 37, 3)],
        num_classes=3,
        learning_rate=1e-4,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]


@pytest.mark.slow
def test_fft_and_direct_algorithms_agree():
    a = GCN(num_classes=4, input_shape=(64, 64, 3), fft_algorithm="fft")
    b = GCN(num_classes=4, input_shape=(64, 64, 3), fft_algorithm="direct")
    b.set_weights(a.get_weights())
    x = _images(1, 64, 64)
    ya, yb = a.predict(x, verbose=0), b.predict(x, verbose=0)
    np.testing.assert_allclose(ya, yb, rtol=1e-3, atol=1e-3 * np.abs(yb).max())


@pytest.mark.slow
def test_trains_saves_and_exports(tmp_path):
    keras.utils.set_random_seed(0)
    model = GCN(num_classes=3, input_shape=(32, 32, 3), fft_algorithm="fft")
    images = _images(4, 32, 32, seed=2)
    # Labels that depend on the image: class by brightness tercile of a smoothed image.
    brightness = tf.nn.avg_pool2d(images.mean(-1, keepdims=True), 9, 1, "SAME").numpy()[..., 0]
    labels = np.digitize(brightness, np.quantile(brightness, [1 / 3, 2 / 3])).astype("int32")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = model.fit(images, labels, batch_size=4, epochs=6, verbose=0, shuffle=False).history[
        "loss"
    ]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses

    path = str(tmp_path / "gcn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )

    export_dir = str(tmp_path / "saved_model")
    model.export(export_dir, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(export_dir)
    np.testing.assert_allclose(
        served.serve(tf.constant(images)).numpy(),
        model.predict(images, verbose=0),
        rtol=1e-4,
        atol=1e-4,
    )
    # The exported graph runs the FFT op itself.
    ops = {op.type for f in served.serve.concrete_functions for op in f.graph.get_operations()}
    graph_ops = set(ops)
    for f in served.serve.concrete_functions:
        for func in f.graph.as_graph_def().library.function:
            graph_ops |= {node.op for node in func.node_def}
    assert "Kseg>FftConv2D" in graph_ops


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_classes=0), "num_classes must be a positive int. Received: num_classes=0"),
        (dict(backbone="vgg16"), "backbone must be one of .*Received: backbone='vgg16'"),
        (dict(kernel_size=0), "kernel_size must be a positive int. Received: kernel_size=0"),
        (
            dict(fft_algorithm="fast"),
            "fft_algorithm must be one of .*Received: fft_algorithm='fast'",
        ),
        (dict(input_shape=(64, 64, 1)), "must have 3 channels"),
        (dict(weights=7), "Received: weights=7"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GCN(**kwargs)

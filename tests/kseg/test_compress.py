"""Magnitude pruning (schedule, masks, strip, scope) and channel pruning on tiny models."""

import keras
import numpy as np
import pytest

import kseg
from kseg import compress
from kseg.cli.main import main


def _conv_model(filters=8, constraint=None):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, padding="same", name="a", kernel_constraint=constraint)(
        inputs
    )
    x = keras.layers.Conv2D(filters, 3, padding="same", name="b")(x)
    return keras.Model(inputs, x)


def _data(n=8, channels=8, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 8, 8, 3)).astype("float32"),
        rng.normal(size=(n, 8, 8, channels)).astype("float32"),
    )


def _zeros(variable):
    return np.asarray(variable.numpy()) == 0


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.1),  # s_i
        (10, 0.1),
        (35, 0.8 + (0.1 - 0.8) * (1 - 25 / 100) ** 3),
        (60, 0.8 + (0.1 - 0.8) * 0.5**3),
        (110, 0.8),
        (500, 0.8),
    ],
)
def test_polynomial_schedule_is_zhu_and_gupta(step, expected):
    value = compress.polynomial_sparsity(step, 0.8, 10, 110, initial_sparsity=0.1)
    assert value == pytest.approx(expected, abs=1e-12)


def test_callback_prunes_at_the_scheduled_steps_to_the_formula():
    keras.utils.set_random_seed(0)
    model = _conv_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model, callback = compress.prune(model, 0.6, begin_step=2, end_step=12, frequency=4)
    assert [callback.update_point(t) for t in (0, 1, 2, 5, 6, 9, 10, 11, 12, 40)] == [
        None,
        None,
        2,
        2,
        6,
        6,
        10,
        10,
        12,
        12,
    ]
    x, y = _data()
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(model.optimizer.iterations.numpy())
            seen.append((step, compress.sparsity_report(model)["layers"]["a"]["sparsity"]))

    # Record runs after the pruning callback, so it sees the masks of each step.
    model.fit(x, y, batch_size=2, epochs=4, callbacks=[callback, Record()], verbose=0)
    n = 3 * 3 * 3 * 8
    for step, sparsity in seen:
        point = callback.update_point(step)
        want = 0.0 if point is None else compress.polynomial_sparsity(point, 0.6, 2, 12)
        assert sparsity == round(want * n) / n, (step, sparsity, want)
    assert callback.done and callback.sparsity == 0.6
    # the formula's intermediate values were really passed through
    assert {round(s, 4) for _, s in seen} >= {0.0, round(round(0.6 * (1 - 0.6**3) * n) / n, 4)}


def test_masked_weights_stay_zero_through_optimizer_updates():
    keras.utils.set_random_seed(1)
    model = _conv_model()
    # Adam with momentum moves every weight each step; steps_per_execution runs 4 steps
    # between two callbacks, so only the constraint can keep the pruned weights at zero.
    model.compile(keras.optimizers.Adam(0.05), "mse", steps_per_execution=4)
    model, callback = compress.prune(model, 0.5, schedule="constant", frequency=1000)
    x, y = _data(16)
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[callback], verbose=0)  # masks at step 0
    kernel = model.get_layer("a").kernel
    mask = np.asarray(callback.entries[0]["mask"].numpy()) == 0
    assert mask.mean() == 0.5
    before = kernel.numpy().copy()
    model.fit(x, y, batch_size=2, epochs=3, callbacks=[callback], verbose=0)
    after = kernel.numpy()
    assert np.all(after[mask] == 0.0)  # exactly zero, not small
    assert np.all(after[~mask] != before[~mask])  # the others trained
    assert callback.last_update_step == 0  # no mask update after step 0 (frequency 1000)


def test_strip_leaves_a_plain_model_with_the_exact_sparsity(tmp_path):
    keras.utils.set_random_seed(2)
    model = _conv_model(constraint=keras.constraints.MaxNorm(100.0))
    original = model.get_layer("a").kernel.constraint
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model, callback = compress.prune(model, 0.75, end_step=8, frequency=2)
    x, y = _data()
    model.fit(x, y, batch_size=2, epochs=2, callbacks=[callback], verbose=0)
    model = compress.strip(model)
    assert type(model).__name__ == "Functional"
    assert model.get_layer("a").kernel.constraint is original
    assert model.get_layer("b").kernel.constraint is None
    assert not any(isinstance(v.constraint, compress._MaskConstraint) for v in model.weights)
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Conv2D", "Conv2D"]
    report = compress.sparsity_report(model)
    assert report["layers"]["a"]["zeros"] == 162 and report["layers"]["b"]["zeros"] == 432
    assert report["total"]["sparsity"] == 0.75
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = kseg.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert compress.sparsity_report(loaded)["total"]["sparsity"] == 0.75
    # training the stripped model is no longer masked
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert compress.sparsity_report(model)["total"]["sparsity"] < 0.1


def test_global_scope_prunes_the_small_layer_first_and_layer_scope_does_not():
    keras.utils.set_random_seed(3)
    results = {}
    for scope in ("layer", "global"):
        model = _conv_model()
        rng = np.random.default_rng(3)
        for name, low, high in (("a", 0.5, 1.0), ("b", 0.001, 0.01)):  # every |b| < every |a|
            kernel = model.get_layer(name).kernel
            magnitude = rng.uniform(low, high, kernel.shape)
            kernel.assign(magnitude * rng.choice([-1.0, 1.0], kernel.shape))
        model.compile(keras.optimizers.SGD(0.0), "mse")
        model, callback = compress.prune(model, 0.5, schedule="constant", scope=scope)
        callback.set_model(model)
        callback.on_train_begin()
        report = compress.sparsity_report(model)
        results[scope] = {k: v["sparsity"] for k, v in report["layers"].items()}
        assert report["total"]["sparsity"] == pytest.approx(0.5, abs=1 / 792)
    assert results["layer"] == {"a": 0.5, "b": 0.5}
    # global: 396 zeros, all 576 of b's weights are smaller than any of a's
    assert results["global"] == {"a": 0.0, "b": 396 / 576}


def test_skip_leaves_named_layers_dense():
    model = _conv_model()
    model, callback = compress.prune(model, 0.5, schedule="constant", skip=("b",))
    assert [e["layer"].name for e in callback.entries] == ["a"]
    with pytest.raises(ValueError, match="already being pruned"):
        compress.prune(model, 0.5, end_step=3)
    compress.strip(model)
    with pytest.raises(ValueError, match="no convolution or dense kernel"):
        compress.prune(model, 0.5, end_step=3, skip=keras.layers.Conv2D)


def test_stripped_zeros_are_positive_zeros():
    # w * 0 is -0.0 for a negative w; its bytes (00 00 00 80) would break the runs of zero
    # bytes that gzip codes cheaply in the TFLite file.
    model = _conv_model()
    kernel = model.get_layer("a").kernel
    kernel.assign(-np.abs(np.asarray(kernel.numpy())) - 0.01)  # every weight negative
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model, callback = compress.prune(model, 0.5, schedule="constant")
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[callback], verbose=0)
    compress.strip(model)
    values = np.asarray(kernel.numpy())
    assert (values == 0).sum() == values.size // 2
    assert not np.signbit(values[values == 0]).any()
    assert (values[values != 0] < 0).all()


def _blocks_along(values, axis, block):
    moved = np.moveaxis(values, axis, -1)
    return moved.reshape(-1, moved.shape[-1] // block, block)


def test_block_size_prunes_runs_of_input_channels_by_mean_magnitude():
    rng = np.random.default_rng(7)
    inputs = keras.Input((4, 4, 8))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Conv2DTranspose(4, 2, strides=2, name="up")(x)  # kernel [2, 2, 4, 6]
    x = keras.layers.Conv2D(3, 1, name="first_in_3")(keras.layers.Conv2D(3, 1, name="rgb")(x))
    model = keras.Model(inputs, x)
    for layer in model.layers[1:]:
        layer.kernel.assign(rng.normal(size=layer.kernel.shape))
    originals = {layer.name: np.asarray(layer.kernel.numpy()) for layer in model.layers[1:]}
    model, callback = compress.prune(model, 0.5, schedule="constant", block_size=2)
    callback.set_model(model)
    callback.update_masks(0.5)
    compress.strip(model)
    for name, axis in (("conv", -2), ("up", -1)):  # the input-channel axis of each kernel
        values = np.asarray(model.get_layer(name).kernel.numpy())
        blocks = _blocks_along(values, axis, 2).reshape(-1, 2)
        zero = (blocks == 0).all(1)
        assert ((blocks == 0).any(1) == zero).all()  # a block is pruned whole or not at all
        assert zero.sum() == blocks.shape[0] // 2
        means = np.abs(_blocks_along(originals[name], axis, 2).reshape(-1, 2)).mean(1)
        assert means[zero].max() < means[~zero].min()  # the smallest mean magnitudes went
    # 3 input channels in blocks of 2: blocks [c0, c1] and [c2]; round(0.5 * 9 * 2) = 9 blocks
    values = np.asarray(model.get_layer("first_in_3").kernel.numpy())[0, 0]  # [in 3, out 3]
    means = np.concatenate(
        [
            np.abs(originals["first_in_3"][0, 0, :2]).mean(0),
            np.abs(originals["first_in_3"][0, 0, 2]),
        ]
    )
    expected = np.zeros(6, bool)
    expected[np.argsort(means, kind="stable")[:3]] = True
    assert ((values[:2] == 0).all(0) == expected[:3]).all()
    assert ((values[2] == 0) == expected[3:]).all()


def test_global_scope_with_blocks_prunes_the_small_layer_first():
    rng = np.random.default_rng(8)
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")
    model = keras.Model(inputs, b(a(inputs)))
    a.kernel.assign(rng.uniform(0.5, 1.0, a.kernel.shape))  # 288 weights, all larger than b's
    b.kernel.assign(rng.uniform(0.001, 0.01, b.kernel.shape))  # 576 weights
    model, callback = compress.prune(model, 0.6, schedule="constant", scope="global", block_size=4)
    callback.set_model(model)
    callback.update_masks(0.6)
    report = compress.sparsity_report(compress.strip(model))
    # round(0.6 * 864) = 518 weights -> 130 whole blocks of 4, all from b
    assert report["total"]["zeros"] == 520
    assert report["layers"]["a"]["zeros"] == 0 and report["layers"]["b"]["zeros"] == 520
    blocks = _blocks_along(np.asarray(b.kernel.numpy()), -2, 4).reshape(-1, 4)
    assert ((blocks == 0).any(1) == (blocks == 0).all(1)).all()


def test_blocks_are_runs_in_the_tflite_file_and_compress_better(tmp_path):
    import gzip

    from kseg import export

    rng = np.random.default_rng(9)
    inputs = keras.Input((8, 8, 64))
    model = keras.Model(inputs, keras.layers.Conv2D(64, 3, padding="same", name="c")(inputs))
    weights = rng.laplace(scale=0.05, size=(3, 3, 64, 64)).astype("float32")
    sizes = {}
    for block in (1, 4):
        model.get_layer("c").kernel.assign(weights)
        model, callback = compress.prune(model, 0.5, schedule="constant", block_size=block)
        callback.set_model(model)
        callback.update_masks(0.5)
        compress.strip(model)
        kernel = np.asarray(model.get_layer("c").kernel.numpy())
        path = export.tflite(model, tmp_path / f"b{block}.tflite", input_shape=(8, 8, 64))
        with open(path, "rb") as file:
            sizes[block] = len(gzip.compress(file.read(), 9))
        # TFLite holds the kernel as [out, kh, kw, in]: consecutive input channels are
        # consecutive floats, so each pruned block is one run of zeros in the file
        interpreter = export.tflite_interpreter(path)
        interpreter.allocate_tensors()
        (stored,) = [
            interpreter.get_tensor(d["index"])
            for d in interpreter.get_tensor_details()
            if tuple(d["shape"]) == (64, 3, 3, 64)
        ]
        np.testing.assert_array_equal(stored, kernel.transpose(3, 0, 1, 2))
    assert sizes[4] < 0.95 * sizes[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_sparsity": 1.0, "end_step": 5}, "Received: target_sparsity=1.0"),
        ({"target_sparsity": -0.2, "end_step": 5}, "Received: target_sparsity=-0.2"),
        ({"target_sparsity": 0.5}, "Received: end_step=None"),
        ({"target_sparsity": 0.5, "end_step": 5, "begin_step": 6}, "Received: end_step=5"),
        ({"target_sparsity": 0.5, "end_step": 5, "frequency": 0}, "Received: frequency=0"),
        ({"target_sparsity": 0.5, "end_step": 5, "scope": "net"}, "Received: scope='net'"),
        ({"target_sparsity": 0.5, "end_step": 5, "schedule": "cubic"}, "schedule='cubic'"),
        ({"target_sparsity": 0.5, "end_step": 5, "block_size": 0}, "Received: block_size=0"),
    ],
)
def test_bad_pruning_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress.prune(_conv_model(), **kwargs)


# --------------------------------------------------------------------------- channel pruning


def _zero_filters(model, fraction=0.5, seed=0):
    """Zeroes the first half of every conv's filters (kernel, bias) and makes their batch norm
    output zero; gives the other channels random BN statistics so that the test is not trivial."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            if layer.name == "logits":
                continue
            weights = layer.get_weights()
            axis = -2 if isinstance(layer, keras.layers.Conv2DTranspose) else -1
            n = weights[0].shape[axis]
            dead = np.arange(int(n * fraction))
            index = [slice(None)] * weights[0].ndim
            index[axis] = dead
            weights[0][tuple(index)] = 0.0
            for w in weights[1:]:
                w[:] = rng.normal(size=w.shape)
                w[dead] = 0.0
            layer.set_weights(weights)
        elif isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            n = gamma.shape[0]
            gamma, beta = rng.uniform(0.5, 1.5, n), rng.normal(size=n)
            mean, var = rng.normal(size=n), rng.uniform(0.5, 2.0, n)
            dead = np.arange(int(n * fraction))
            beta[dead], mean[dead] = 0.0, 0.0  # BN(0) = 0 on the dead channels
            layer.set_weights([gamma, beta, mean, var])


@pytest.mark.parametrize(
    ("build", "narrowed"),
    [
        (
            lambda: kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4),
            {"down2_conv1": (3, 3, 2, 4), "up1_conv1": (3, 3, 4, 2), "up1_upconv": (2, 2, 2, 4)},
        ),
        (
            lambda: kseg.models.SegNet(
                num_classes=3, input_shape=(32, 32, 3), stage_filters=(4, 8, 8, 8, 16)
            ),
            {"block1_conv1": (3, 3, 3, 2), "block5_conv1": (3, 3, 4, 8), "logits": (3, 3, 2, 3)},
        ),
    ],
)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_channels_removing_zero_filters_keeps_the_outputs(build, narrowed, scope):
    keras.utils.set_random_seed(4)
    model = build()
    _zero_filters(model)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    # global: the zero filters have normalised L1 0, so they are exactly the half ranked last
    narrow, report = compress.prune_channels(model, 0.5, scope=scope, min_keep=0.25)
    for name, shape in narrowed.items():
        assert tuple(narrow.get_layer(name).kernel.shape) == shape, name
    assert report["left"] == {"logits": "reaches the model output"}
    assert all(v["kept"] * 2 == v["filters"] for v in report["layers"].values())
    assert report["removed"] * 2 == report["filters"]
    np.testing.assert_allclose(narrow.predict(images, verbose=0), expected, atol=1e-5, rtol=1e-5)
    assert narrow.count_params() < 0.4 * model.count_params()
    # the original is untouched
    np.testing.assert_array_equal(model.predict(images, verbose=0), expected)


def test_segnet_pooling_indices_and_unpooled_values_keep_the_same_channels():
    # block1_conv2's pooling indices place decoder2_conv1's channels in decoder1_unpool: a
    # channel is removed from both or from neither, ranked by the two L1 norms summed.
    keras.utils.set_random_seed(0)
    model = kseg.models.SegNet(
        num_classes=3, input_shape=(32, 32, 3), stage_filters=(4, 8, 8, 8, 16)
    )
    encoder, decoder = model.get_layer("block1_conv2"), model.get_layer("decoder2_conv1")
    ke, kd = encoder.get_weights(), decoder.get_weights()
    # alone, the encoder would keep 2 and 3, the decoder 0 and 1; summed (2.1 3.2 1.25 2.3): 1, 3
    ke[0] *= np.array([0.1, 0.2, 1.0, 2.0]) / np.abs(ke[0]).sum(axis=(0, 1, 2))
    kd[0] *= np.array([2.0, 3.0, 0.25, 0.3]) / np.abs(kd[0]).sum(axis=(0, 1, 2))
    ke[1], kd[1] = np.arange(4.0), np.arange(4.0) + 10
    encoder.set_weights(ke)
    decoder.set_weights(kd)
    narrow, report = compress.prune_channels(model, 0.5)
    np.testing.assert_array_equal(narrow.get_layer("block1_conv2").bias.numpy(), [1.0, 3.0])
    np.testing.assert_array_equal(narrow.get_layer("decoder2_conv1").bias.numpy(), [11.0, 13.0])
    # the next convolution reads input channels 1 and 3 (its own filters are halved too)
    after = narrow.get_layer("block2_conv1").kernel.numpy()
    before = model.get_layer("block2_conv1").kernel.numpy()[:, :, [1, 3]]
    assert all(
        any(np.array_equal(after[..., k], before[..., j]) for j in range(8)) for k in range(4)
    )
    assert report["layers"]["block1_conv2"]["kept"] == 2
    assert report["layers"]["decoder2_conv1"]["kept"] == 2


def test_layer_ratios_cut_each_layer_by_its_pattern_and_coupled_layers_by_the_smallest():
    keras.utils.set_random_seed(0)
    model = kseg.models.SegNet(
        num_classes=3, input_shape=(32, 32, 3), stage_filters=(4, 8, 8, 16, 16)
    )
    # first match wins: block4_conv1 takes 0.25, not the 0.75 of block4_*
    ratios = {"block4_conv1": 0.25, "block4_*": 0.75, "decoder5_*": 0.5}
    narrow, report = compress.prune_channels(model, ratios)
    kept = {n: narrow.get_layer(n).filters for n in report["layers"]}
    assert kept == {
        "block4_conv1": 12,  # 16 - floor(0.25 * 16)
        "block4_conv2": 4,  # 16 - 12
        # block4_conv3 and decoder5_conv1 share channels (unpooled to block4's indices)
        "block4_conv3": 8,
        "decoder5_conv1": 8,
        "decoder5_conv2": 8,
        "decoder5_conv3": 8,
    }
    assert narrow.get_layer("block1_conv1").filters == 4  # matched by no pattern: whole
    assert report["ratio"] == ratios
    assert report["removed"] == 4 + 12 + 8 + 8 + 8 + 8
    # within a layer, the filters of largest L1 norm stay, in their order
    kernel = model.get_layer("decoder5_conv3").kernel.numpy()
    largest = np.sort(np.argsort(np.abs(kernel).sum(axis=(0, 1, 2)))[-8:])
    # (its inputs, block5_conv3's channels, are all kept)
    np.testing.assert_array_equal(
        narrow.get_layer("decoder5_conv3").kernel.numpy(), kernel[..., largest]
    )
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert narrow.predict(images, verbose=0).shape == (2, 32, 32, 3)


def test_layer_ratios_reject_global_scope_and_bad_values():
    with pytest.raises(ValueError, match="needs scope='layer'"):
        compress.prune_channels(_conv_model(), {"a": 0.5}, scope="global")
    with pytest.raises(ValueError, match=r"ratio\['a'\]=1.0"):
        compress.prune_channels(_conv_model(), {"a": 1.0})
    with pytest.raises(ValueError, match="Received: 3"):
        compress.prune_channels(_conv_model(), {3: 0.5})


def test_recalibrated_batch_norm_holds_the_mean_of_the_batches():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 1, name="conv")(inputs)
    outputs = keras.layers.BatchNormalization(momentum=0.999, name="bn")(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(1).normal(2.0, 3.0, (6, 4, 4, 2)).astype("float32")
    assert compress.recalibrate_batch_norm(model, images, batch_size=2, batches=3, seed=4) == 1
    draws = np.random.default_rng(4)
    features = np.asarray(model.get_layer("conv")(images))
    means, variances = [], []
    for _ in range(3):
        batch = features[draws.choice(6, 2, replace=False)]
        means.append(batch.mean(axis=(0, 1, 2)))
        variances.append(batch.var(axis=(0, 1, 2)))
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(means, 0), rtol=1e-5, atol=1e-5)
    # Keras's moving variance is the batch variance (biased), averaged the same way
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), np.mean(variances, 0), rtol=1e-4, atol=1e-5
    )
    assert bn.momentum == 0.999
    with pytest.raises(ValueError, match="batch_size must be at most the number of images"):
        compress.recalibrate_batch_norm(model, images, batch_size=7)
    with pytest.raises(ValueError, match=r"images.shape=\(6, 4\)"):
        compress.recalibrate_batch_norm(model, images[:, :, 0, 0])


def test_channel_sensitivity_scores_each_group_cut_alone():
    keras.utils.set_random_seed(0)
    model = kseg.models.SegNet(
        num_classes=3, input_shape=(32, 32, 3), stage_filters=(4, 4, 8, 8, 8)
    )
    seen = []

    def evaluate(narrow):  # the score is the model's filter count: it says what was cut
        count = sum(getattr(layer, "filters", 0) or 0 for layer in narrow.layers)
        seen.append(narrow)
        return float(count)

    groups = {"early": ["block1_*"], "late": ["block5_conv[12]"]}
    rows = compress.channel_sensitivity(model, evaluate, groups, ratios=(0.5, 0.75))
    full = sum(getattr(layer, "filters", 0) or 0 for layer in model.layers)
    assert [(r["group"], r["ratio"]) for r in rows] == [
        (None, 0.0),
        ("early", 0.5),
        ("early", 0.75),
        ("late", 0.5),
        ("late", 0.75),
    ]
    # block1_conv1 alone (block1_conv2 shares channels with decoder2_conv1, unmatched)
    assert [r["score"] for r in rows] == [full, full - 2, full - 3, full - 8, full - 12]
    assert [r["removed"] for r in rows] == [0, 2, 3, 8, 12]
    assert all(r["filters"] == rows[0]["filters"] for r in rows)
    assert rows[3]["madds_removed"] > 0 and rows[0]["madds_removed"] == 0.0
    assert seen[0] is model
    with pytest.raises(ValueError, match="groups must map labels"):
        compress.channel_sensitivity(model, evaluate, {"x": "block1_*"})


def test_prune_channels_removes_the_smallest_l1_filters_and_slices_consumers():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    outputs = keras.layers.Conv2D(2, 1, name="out")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((1, 1, 2, 4), "float32")
    kernel[0, 0, :, :] = [[1.0, -5.0, 0.5, 3.0], [1.0, 0.0, -0.25, -3.0]]  # L1: 2, 5, .75, 6
    model.get_layer("c1").set_weights([kernel])
    narrow, report = compress.prune_channels(model, 0.5)
    np.testing.assert_array_equal(narrow.get_layer("c1").kernel.numpy(), kernel[..., [1, 3]])
    bn_old, bn_new = model.get_layer("bn").get_weights(), narrow.get_layer("bn").get_weights()
    for old, new in zip(bn_old, bn_new):
        np.testing.assert_array_equal(new, old[[1, 3]])
    dw = model.get_layer("dw").get_weights()
    np.testing.assert_array_equal(narrow.get_layer("dw").get_weights()[0], dw[0][:, :, [1, 3]])
    out = model.get_layer("out").get_weights()[0]
    np.testing.assert_array_equal(narrow.get_layer("out").get_weights()[0], out[:, :, [1, 3]])
    assert report["layers"] == {"c1": {"filters": 4, "kept": 2}}


def test_residual_add_operands_share_one_channel_set():
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.Conv2D(2, 1, name="head")(x)
    model = keras.Model(inputs, x)
    ka, kb = (model.get_layer(n).get_weights() for n in ("a", "b"))
    # positions 1 and 2 are small in a but not in b; summed over both, 0 and 2 are the smallest
    ka[0][..., :] *= np.array([0.01, 0.02, 0.01, 1.0])
    kb[0][..., :] *= np.array([0.01, 1.0, 0.01, 1.0])
    ka[1][:], kb[1][:] = 0.0, 0.0
    model.get_layer("a").set_weights(ka)
    model.get_layer("b").set_weights(kb)
    narrow, report = compress.prune_channels(model, 0.5)
    assert report["layers"] == {"a": {"filters": 4, "kept": 2}, "b": {"filters": 4, "kept": 2}}
    np.testing.assert_array_equal(narrow.get_layer("a").kernel.numpy(), ka[0][..., [1, 3]])
    np.testing.assert_array_equal(
        narrow.get_layer("b").kernel.numpy(), kb[0][..., [1, 3], :][..., [1, 3]]
    )
    head = model.get_layer("head").kernel.numpy()
    np.testing.assert_array_equal(narrow.get_layer("head").kernel.numpy(), head[:, :, [1, 3]])


def _two_bn_convs():
    """c1 (4 filters) -> bn1 -> c2 (8 filters) -> bn2 -> head, with set gammas."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x))
    for name, gamma in (
        ("bn1", [0.1, -0.2, 1.0, 2.0]),
        ("bn2", [0.05, 0.3, -0.4, 1.5, 1.6, 1.7, 1.8, 1.9]),
    ):
        weights = model.get_layer(name).get_weights()
        weights[0] = np.asarray(gamma, "float32")
        model.get_layer(name).set_weights(weights)
    return model


@pytest.mark.parametrize(
    ("min_keep", "kept_c1", "kept_c2"),
    [
        # |gamma| ranked over both layers: .05 .1 .2 .3 .4 1.0 | 1.5 ...; 6 of 12 go
        (0.0, [3], [3, 4, 5, 6, 7]),
        # c1 keeps at least 2 of 4: its 1.0 stays and c2's 1.5 goes instead
        (0.5, [2, 3], [4, 5, 6, 7]),
    ],
)
def test_global_bn_gamma_ranks_filters_across_layers_down_to_the_floor(min_keep, kept_c1, kept_c2):
    model = _two_bn_convs()
    narrow, report = compress.prune_channels(
        model, 0.5, criterion="bn_gamma", scope="global", min_keep=min_keep
    )
    assert report["filters"] == 12 and report["removed"] == 6
    assert report["layers"] == {
        "c1": {"filters": 4, "kept": len(kept_c1)},
        "c2": {"filters": 8, "kept": len(kept_c2)},
    }
    c1, c2 = model.get_layer("c1").kernel.numpy(), model.get_layer("c2").kernel.numpy()
    np.testing.assert_array_equal(narrow.get_layer("c1").kernel.numpy(), c1[..., kept_c1])
    np.testing.assert_array_equal(
        narrow.get_layer("c2").kernel.numpy(), c2[:, :, kept_c1][..., kept_c2]
    )
    for old, new in zip(
        model.get_layer("bn2").get_weights(), narrow.get_layer("bn2").get_weights()
    ):
        np.testing.assert_array_equal(new, old[kept_c2])
    head = model.get_layer("head").kernel.numpy()
    np.testing.assert_array_equal(narrow.get_layer("head").kernel.numpy(), head[:, :, kept_c2])
    # layer scope with bn_gamma: half of each layer, smallest |gamma| first
    _, report = compress.prune_channels(model, 0.5, criterion="bn_gamma")
    assert report["layers"] == {"c1": {"filters": 4, "kept": 2}, "c2": {"filters": 8, "kept": 4}}


def test_bn_gamma_ranks_channels_without_batch_norm_by_normalised_l1():
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 1, use_bias=False, name="a")(inputs)  # no batch norm
    b = keras.layers.Conv2D(4, 1, name="b")(a)
    b = keras.layers.BatchNormalization(name="bn")(b)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(b))
    kernel = np.zeros((1, 1, 2, 4), "float32")
    kernel[0, 0, 0] = [1.0, 1.0, 1.0, 5.0]  # L1 / mean L1: .5 .5 .5 2.5
    model.get_layer("a").set_weights([kernel])
    weights = model.get_layer("bn").get_weights()
    weights[0] = np.array([0.9, 1.1, 1.2, 1.3], "float32")  # mean |gamma| 1.125
    model.get_layer("bn").set_weights(weights)
    # scores: a .5625 .5625 .5625 2.8125, b .9 1.1 1.2 1.3: a's first three and b's first go
    narrow, report = compress.prune_channels(
        model, 0.5, criterion="bn_gamma", scope="global", min_keep=0.0
    )
    assert report["layers"] == {"a": {"filters": 4, "kept": 1}, "b": {"filters": 4, "kept": 3}}
    np.testing.assert_array_equal(narrow.get_layer("a").kernel.numpy(), kernel[..., [3]])


def _two_resolutions():
    """a: 4 filters at 8x8 -> bn_a -> b: 4 filters at 4x4 (stride 2) -> bn_b -> head.

    Multiply-adds a filter's removal saves: a's 1*1*1*64 (computing it) + 1*1*4*16 (b reading
    it) = 128; b's 1*1*4*16 + 1*1*1*16 (head reading it) = 80. Over their mean, 104: a 16/13,
    b 10/13."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 1, name="a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.Conv2D(4, 1, strides=2, name="b")(x)
    x = keras.layers.BatchNormalization(name="bn_b")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, name="head")(x))
    for name, gamma in (("bn_a", [0.5, 0.55, 1.1, 1.2]), ("bn_b", [0.45, 0.6, 1.3, 1.4])):
        weights = model.get_layer(name).get_weights()
        weights[0] = np.asarray(gamma, "float32")
        model.get_layer(name).set_weights(weights)
    return model


@pytest.mark.parametrize(
    ("options", "kept_a", "kept_b", "madds_removed"),
    [
        # |gamma| alone: b's .45, then a's .5 (2 of the 8 go)
        ({}, [1, 2, 3], [1, 2, 3], 1 - (3 * 64 + 9 * 16 + 3 * 16) / 576),
        # per unit of cost: a .5 / (16/13) = .406, .55 / (16/13) = .447, b .45 / (10/13) = .585
        ({"cost": "madds"}, [2, 3], [0, 1, 2, 3], 1 - (2 * 64 + 8 * 16 + 4 * 16) / 576),
        # power 0: the cost has no say
        ({"cost": "madds", "cost_power": 0}, [1, 2, 3], [1, 2, 3], 1 / 3),
    ],
)
def test_cost_aware_ranking_divides_importance_by_the_madds_a_filter_costs(
    options, kept_a, kept_b, madds_removed
):
    model = _two_resolutions()
    narrow, report = compress.prune_channels(
        model, 0.25, criterion="bn_gamma", scope="global", min_keep=0.0, **options
    )
    a, b = model.get_layer("a").kernel.numpy(), model.get_layer("b").kernel.numpy()
    np.testing.assert_array_equal(narrow.get_layer("a").kernel.numpy(), a[..., kept_a])
    np.testing.assert_array_equal(
        narrow.get_layer("b").kernel.numpy(), b[:, :, kept_a][..., kept_b]
    )
    assert report["removed"] == 2 and report["cost"] == options.get("cost")
    assert report["madds_removed"] == pytest.approx(madds_removed)
    # the same share as kseg.bench.profile counts (the convolutions are all the MAdds here)
    before = kseg.bench.profile(model, (8, 8, 1))["madds"]
    after = kseg.bench.profile(narrow, (8, 8, 1))["madds"]
    assert 1 - after / before == pytest.approx(madds_removed)


def test_cost_aware_ranking_measures_a_model_without_fixed_size_at_cost_input_size():
    # a None-sized U-Net: its full-resolution filters cost more, so they go first
    keras.utils.set_random_seed(0)
    model = kseg.models.UNet(num_classes=3, input_shape=(None, None, 3), base_filters=4, depth=2)
    _, plain = compress.prune_channels(model, 0.3, scope="global", criterion="bn_gamma")
    _, costly = compress.prune_channels(
        model, 0.3, scope="global", criterion="bn_gamma", cost="madds", cost_input_size=32
    )
    # fresh batch norms: every |gamma| is 1, so the plain ranking is by layer order alone
    assert plain["removed"] == costly["removed"]
    assert costly["madds_removed"] > plain["madds_removed"] + 0.1


def test_min_keep_per_layer_counts_are_floors_in_filters():
    model = _two_bn_convs()  # |gamma|: c1 .1 .2 1 2, c2 .05 .3 .4 1.5 ...
    _, report = compress.prune_channels(
        model, 0.5, criterion="bn_gamma", scope="global", min_keep={"c1": 3}
    )
    # c1 may lose one filter (.1); the other five come from c2
    assert report["layers"] == {"c1": {"filters": 4, "kept": 3}, "c2": {"filters": 8, "kept": 3}}
    # layer scope: each layer cut to its count by a ratio near 1 (a gradual schedule's round)
    narrow, report = compress.prune_channels(
        model, 0.99, criterion="bn_gamma", min_keep={"c1": 2, "c2": 5, "head": 2}
    )
    assert report["layers"] == {"c1": {"filters": 4, "kept": 2}, "c2": {"filters": 8, "kept": 5}}
    c2 = model.get_layer("c2").kernel.numpy()
    np.testing.assert_array_equal(narrow.get_layer("c2").kernel.numpy(), c2[:, :, [2, 3]][..., 3:])


def _logits_model(seed, filters=4):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_distiller_loss_is_hinton_kd_and_trains_only_the_student():
    student, teacher = _logits_model(0), _logits_model(1, filters=6)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, (4, 8, 8))
    s, t = (np.asarray(m.predict(x, verbose=0), np.float64) for m in (student, teacher))
    hard = float(kseg.losses.CrossEntropy()(y, s))
    temperature = 3.0
    p_t, p_s = _softmax(t / temperature), _softmax(s / temperature)
    kl = temperature**2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), -1))
    for alpha in (0.0, 0.3, 1.0):
        distiller = compress.Distiller(student, teacher, temperature=temperature, alpha=alpha)
        distiller.compile("sgd", kseg.losses.CrossEntropy())
        loss = distiller.evaluate(x, y, verbose=0)
        np.testing.assert_allclose(loss, (1 - alpha) * hard + alpha * kl, rtol=1e-4)
    # class-weighted KL: each pixel weighs its label's class weight; ignored pixels weigh 0
    y_ignore = y.copy()
    y_ignore[:, :2] = 255
    class_weights = np.array([0.5, 1.0, 3.0])
    w = np.where(y_ignore == 255, 0.0, class_weights[np.minimum(y_ignore, 2)])
    weighted_kl = temperature**2 * np.sum(w * np.sum(p_t * (np.log(p_t) - np.log(p_s)), -1))
    distiller = compress.Distiller(
        student, teacher, temperature=temperature, alpha=1.0, class_weights=class_weights
    )
    distiller.compile("sgd", kseg.losses.CrossEntropy())
    np.testing.assert_allclose(
        distiller.evaluate(x, y_ignore, verbose=0), weighted_kl / w.sum(), rtol=1e-4
    )
    teacher_weights = [w.copy() for w in teacher.get_weights()]  # BN statistics included
    student_weights = [w.copy() for w in student.get_weights()]
    distiller.compile(keras.optimizers.Adam(1e-2), kseg.losses.CrossEntropy())
    history = distiller.fit(x, y, epochs=5, verbose=0).history["loss"]
    assert history[-1] < history[0]
    for old, new in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert any(not np.array_equal(a, b) for a, b in zip(student_weights, student.get_weights()))
    # the distiller predicts with the student
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-6
    )


def test_bn_sparsity_adds_and_removes_the_l1_penalty_on_gammas():
    model = _two_bn_convs()
    assert compress.bn_sparsity(model, 1e-2) == 2
    total = 0.05 + 0.3 + 0.4 + 1.5 + 1.6 + 1.7 + 1.8 + 1.9 + 0.1 + 0.2 + 1.0 + 2.0
    np.testing.assert_allclose(float(sum(model.losses)), 1e-2 * total, rtol=1e-5)
    assert compress.bn_sparsity(model, 0) == 2 and model.losses == []


@keras.saving.register_keras_serializable(package="kseg_tests")
class _Mystery(keras.layers.Layer):
    def call(self, x):
        return x[..., ::-1]


def test_layers_it_cannot_narrow_are_kept_and_listed():
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    c = _Mystery(name="mystery")(b)
    d = keras.layers.Conv2D(4, 1, name="d")(c)
    e = keras.layers.Conv2D(4, 1, name="e")(d)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(e))
    narrow, report = compress.prune_channels(model, 0.5, skip=["d"])
    assert report["left"] == {
        "b": "feeds 'mystery' (_Mystery), which prune_channels cannot narrow",
        "d": "skipped (skip=('d',))",
        "head": "reaches the model output",
    }
    assert sorted(report["layers"]) == ["a", "e"]
    assert narrow.get_layer("b").filters == 4 and narrow.get_layer("a").filters == 2
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 3)).astype("float32")
    assert narrow.predict(x, verbose=0).shape == (1, 6, 6, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 1.0}, "Received: ratio=1.0"),
        ({"ratio": 1.5}, "Received: ratio=1.5"),
        ({"ratio": -0.1}, "Received: ratio=-0.1"),
        ({"ratio": 0.5, "criterion": "l0"}, "Received: criterion='l0'"),
        ({"ratio": 0.5, "scope": "model"}, "Received: scope='model'"),
        ({"ratio": 0.5, "scope": "global", "min_keep": 1.5}, "Received: min_keep=1.5"),
        ({"ratio": 0.5, "min_keep": {"a": -1}}, "Received: min_keep=\\{'a': -1\\}"),
        ({"ratio": 0.5, "cost": "flops"}, "Received: cost='flops'"),
        ({"ratio": 0.5, "cost": "madds", "cost_power": -1}, "Received: cost_power=-1"),
        ({"ratio": 0.5, "cost": "madds", "cost_input_size": 0}, "Received: cost_input_size=0"),
    ],
)
def test_bad_channel_pruning_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress.prune_channels(_conv_model(), **kwargs)


def test_bad_distillation_arguments_name_the_value():
    student = _logits_model(0)
    with pytest.raises(ValueError, match="Received: temperature=0"):
        compress.Distiller(student, _logits_model(1), temperature=0)
    with pytest.raises(ValueError, match="Received: alpha=2"):
        compress.Distiller(student, _logits_model(1), alpha=2)
    with pytest.raises(ValueError, match="student has 3. Received: teacher with 8 classes"):
        compress.Distiller(student, _conv_model())
    with pytest.raises(
        ValueError, match="one weight per class \\(3\\). Received: class_weights of size 2"
    ):
        compress.Distiller(student, _logits_model(1), class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="Received: strength=-1"):
        compress.bn_sparsity(student, -1)


# --------------------------------------------------------------------------- CLI


def _tiny_unet_train_argv(num_images, epochs):
    """``kseg train`` arguments for a 2-level, 4-filter U-Net on 32x32 synthetic scenes."""
    return [
        "train",
        "--model",
        "unet",
        "--model-option",
        "base_filters=4",
        "--model-option",
        "depth=2",
        "--dataset",
        "synthetic",
        "--image-size",
        "32",
        "32",
        "--num-images",
        str(num_images),
        "--epochs",
        str(epochs),
        "--batch-size",
        "2",
    ]


def test_train_prune_reaches_the_sparsity_and_reports_it(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    argv = [
        *_tiny_unet_train_argv(num_images=8, epochs=2),
        "--prune",
        "0.5",
        "--output",
        str(run),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((run / "sparsity.json").read_text())
    assert record["total"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert "down1_conv1" in printed and "total" in printed
    model = kseg.load_model(run / "model.keras")
    assert compress.sparsity_report(model)["total"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:-4], "--prune", "1.0", "--output", str(run)])
    assert exit_info.value.code == 2
    assert "--prune: must be a number in [0, 1). Received: 1.0" in capsys.readouterr().err


def _train_channel_pruned(tmp_path, *options):
    """``kseg train`` of the tiny U-Net with ``options``: (argv, run folder, channels.json)."""
    import json

    run = tmp_path / "run"
    argv = [*_tiny_unet_train_argv(num_images=4, epochs=1), *options, "--output", str(run)]
    assert main(argv) == 0
    return argv, run, json.loads((run / "channels.json").read_text())


def test_train_prune_channels_trains_the_narrower_model(tmp_path, capsys):
    argv, run, report = _train_channel_pruned(
        tmp_path,
        "--prune-channels",
        "0.5",
        "--prune-channels-scope",
        "global",
        "--prune-channels-criterion",
        "bn_gamma",
    )
    # depth 2, base 4: 4+4+8+8+16+16 encoder/bottom, 8+8+8 and 4+4+4 decoder filters
    assert report["filters"] == 92 and report["removed"] == 46
    assert "removed 46 of 92 filters" in capsys.readouterr().out
    model = kseg.load_model(run / "model.keras")
    for name, kept in report["layers"].items():
        assert model.get_layer(name).filters == kept["kept"], name
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:-2], "--prune-channels", "1", "--output", str(run)])
    assert exit_info.value.code == 2
    assert "Received: 1" in capsys.readouterr().err


def test_train_prune_channels_layers_gives_each_layer_its_ratio(tmp_path, capsys):
    argv, run, report = _train_channel_pruned(
        tmp_path, "--prune-channels-layers", "bottom_conv1=0.5", "bottom_*=0.75"
    )
    assert report["ratio"] == {"bottom_conv1": 0.5, "bottom_*": 0.75}
    assert report["layers"] == {
        "bottom_conv1": {"filters": 16, "kept": 8},
        "bottom_conv2": {"filters": 16, "kept": 4},
    }
    model = kseg.load_model(run / "model.keras")
    assert model.get_layer("bottom_conv2").filters == 4
    assert model.get_layer("down1_conv1").filters == 4  # matched by no pattern
    capsys.readouterr()
    assert main([*argv[:-2], "--prune-channels", "0.5", "--output", str(run)]) == 2
    assert "use it without --prune-channels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv[:-4], "bottom_*", "--output", str(run)])
    assert "must be PATTERN=RATIO. Received: 'bottom_*'" in capsys.readouterr().err


def test_a_nested_model_is_kept_whole_with_its_weights():
    keras.utils.set_random_seed(5)
    inner = keras.Sequential(
        [keras.Input((6, 6, 4)), keras.layers.Conv2D(3, 1, name="inner_conv")], name="inner"
    )
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    model = keras.Model(inputs, inner(a))
    narrow, report = compress.prune_channels(model, 0.5)
    assert report["left"]["a"] == "feeds 'inner' (Sequential), which prune_channels cannot narrow"
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_array_equal(narrow.predict(x, verbose=0), model.predict(x, verbose=0))


def test_train_prune_block_prunes_whole_blocks(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--model", "unet", "--model-option", "base_filters=4", "--model-option"]
    argv += ["depth=2", "--dataset", "synthetic", "--image-size", "32", "32", "--num-images"]
    argv += ["4", "--epochs", "1", "--batch-size", "2", "--prune", "0.5", "--prune-block", "2"]
    assert main([*argv, "--output", str(run)]) == 0
    model = kseg.load_model(run / "model.keras")
    kernel = np.asarray(model.get_layer("down2_conv1").kernel.numpy())  # [3, 3, 4, 8]
    blocks = _blocks_along(kernel, -2, 2).reshape(-1, 2)
    assert (blocks == 0).all(1).sum() == blocks.shape[0] // 2
    assert ((blocks == 0).any(1) == (blocks == 0).all(1)).all()

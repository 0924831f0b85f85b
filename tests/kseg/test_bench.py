"""kseg.bench: MAdds and parameter counts against hand-computed values."""

import keras
import pytest

from kseg import bench


def _model(layers, input_shape=(None, None, 3)):
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize(
    "layer, hw, expected",
    [
        # Hout*Wout*kh*kw*Cin*Cout
        (keras.layers.Conv2D(8, 3, padding="same"), (17, 21), 17 * 21 * 9 * 3 * 8),
        # stride 2, valid: Hout = (17-3)//2+1 = 8, Wout = (21-3)//2+1 = 10
        (keras.layers.Conv2D(6, 3, strides=2), (17, 21), 8 * 10 * 9 * 3 * 6),
        # dilation traced through space-to-batch; odd sizes must not count its padding
        (keras.layers.Conv2D(4, 3, dilation_rate=3, padding="same"), (17, 21), 17 * 21 * 9 * 3 * 4),
        # depthwise: Hout*Wout*kh*kw*Cin*multiplier
        (
            keras.layers.DepthwiseConv2D(5, depth_multiplier=2, padding="same"),
            (9, 7),
            9 * 7 * 25 * 3 * 2,
        ),
        # separable = depthwise + pointwise
        (keras.layers.SeparableConv2D(10, 3, padding="same"), (9, 7), 9 * 7 * (9 * 3 + 3 * 10)),
        # transposed: Hin*Win*kh*kw*Cin*Cout
        (keras.layers.Conv2DTranspose(5, 4, strides=2, padding="same"), (9, 7), 9 * 7 * 16 * 3 * 5),
        # dense on a feature map: H*W*Cin*Cout
        (keras.layers.Dense(7), (9, 7), 9 * 7 * 3 * 7),
    ],
)
def test_single_layer_madds(layer, hw, expected):
    model = _model([layer])
    info = bench.profile(model, hw + (3,))
    assert info["madds"] == expected
    assert info["params"] == layer.count_params()


def test_grouped_conv_divides_by_groups():
    model = _model(
        [
            keras.layers.Conv2D(8, 3, padding="same"),
            keras.layers.Conv2D(12, 3, groups=4, padding="same"),
        ]
    )
    info = bench.profile(model, (10, 6, 3))
    assert info["madds"] == 10 * 6 * 9 * (3 * 8 + 8 // 4 * 12)
    # 3*3*(8/4)*12 weights + 12 biases
    assert model.layers[-1].count_params() == 9 * 2 * 12 + 12


def test_zero_madd_layers_are_reported_and_params_split():
    model = _model(
        [
            keras.layers.Conv2D(4, 1, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.UpSampling2D(interpolation="bilinear"),
        ]
    )
    info = bench.profile(model, (8, 8, 3))
    assert info["madds"] == 8 * 8 * 3 * 4
    assert info["zero_madds_layer_types"] == [
        "BatchNormalization",
        "MaxPooling2D",
        "ReLU",
        "UpSampling2D",
    ]
    assert info["params"] == 12 + 16
    assert info["trainable_params"] == 12 + 8
    assert info["non_trainable_params"] == 8
    assert info["weight_bytes"] == 4 * 28
    assert "MaxPool" in info["uncounted_op_types"]


def test_nested_model_is_counted():
    inner = _model([keras.layers.Conv2D(5, 3, padding="same")], (None, None, 3))
    outer = _model([inner, keras.layers.Conv2D(2, 1)])
    info = bench.profile(outer, (6, 4, 3))
    assert info["madds"] == 6 * 4 * (27 * 5 + 5 * 2)


def test_activation_estimate_of_a_chain():
    # input 1x8x8x3 -> conv (bias add separate) -> output; peak holds two 8x8 maps at most
    model = _model(
        [
            keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
            keras.layers.Conv2D(2, 1, use_bias=False),
        ]
    )
    info = bench.profile(model, (8, 8, 3))
    single = 8 * 8 * 4 * 4
    assert single <= info["activation_bytes"] <= 8 * 8 * 4 * (3 + 4 + 2)
    assert info["memory_bytes"] == info["weight_bytes"] + info["activation_bytes"]


def test_input_shape_errors():
    model = _model([keras.layers.Conv2D(2, 1)], (16, 16, 3))
    assert bench.profile(model)["madds"] == 16 * 16 * 3 * 2
    with pytest.raises(ValueError, match=r"\(8, 8, 3\).*\(16, 16, 3\)"):
        bench.profile(model, (8, 8, 3))
    free = _model([keras.layers.Conv2D(2, 1)])
    with pytest.raises(ValueError, match="input_shape"):
        bench.profile(free)
    with pytest.raises(TypeError, match="Keras model"):
        bench.profile(object(), (8, 8, 3))


def test_fps_and_table():
    model = _model([keras.layers.Conv2D(2, 1)], (None, None, 3))
    assert bench.fps(model, (16, 16, 3), batch=2, warmup=1, runs=2) > 0
    with pytest.raises(ValueError, match="runs"):
        bench.fps(model, (16, 16, 3), runs=0)
    text = bench.format_rows(
        [
            {
                "name": "m",
                "params": 1_500_000,
                "madds": 2e9,
                "memory_bytes": 3 * 2**20,
                "input_shape": (8, 8, 3),
            }
        ]
    )
    assert text.splitlines()[-1] == "| m | 8x8x3 | 1.50 | 2.00 | 3.0 |"


def test_zoo_rows_and_table_profile_registered_models():
    light = {"segnet": {"stage_filters": (4, 4, 4, 4, 4)}}
    rows = bench.zoo_rows(["segnet"], input_shape=(32, 32, 3), num_classes=2, model_kwargs=light)
    assert [row["name"] for row in rows] == ["segnet"]
    # 13 encoder + 12 decoder 3x3 convs at 4 channels, the first from 3 channels, the logits
    # conv to 2 classes; each on a map of the stage's size (32, 16, 8, 4, 2)
    sizes = [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2]
    encoder = 9 * 4 * sum(s * s * (3 if i == 0 else 4) for i, s in enumerate(sizes))
    decoder_sizes = [2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 32]
    decoder = 9 * 4 * 4 * sum(s * s for s in decoder_sizes) + 9 * 4 * 2 * 32 * 32
    assert rows[0]["madds"] == encoder + decoder
    table = bench.format_rows(rows)
    assert table.splitlines()[2].startswith("| segnet | 32x32x3 | 0.00 |")


def test_fps_is_batch_over_the_median_timed_call(monkeypatch):
    import types

    model = _model([keras.layers.Conv2D(2, 1)], (None, None, 3))
    # A fake clock: the three timed calls take 0.5 s, 0.1 s and 0.2 s (median 0.2 s).
    ticks = iter([10.0, 10.5, 20.0, 20.1, 30.0, 30.2])
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert bench.fps(model, (8, 8, 3), batch=4, warmup=1, runs=3) == pytest.approx(4 / 0.2)
    assert next(ticks, None) is None  # exactly two readings per timed call, none in warm-up


# --- latency ------------------------------------------------------------------------------


def _fake_clock(values):
    values = iter(values)
    return lambda: next(values)


def _small_model():
    inputs = keras.Input((16, 24, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))


def test_keras_latency_is_the_median_of_the_timed_runs(monkeypatch):
    # runs of 10, 30 and 20 ms (the warm-up calls are not timed): median 20 ms
    monkeypatch.setattr(bench, "_clock", _fake_clock([0.0, 0.010, 1.0, 1.030, 2.0, 2.020]))
    info = bench.profile(_small_model(), latency=True, tflite=(), runs=3, warmup=2)
    assert info["latency_ms"] == {"keras": pytest.approx(20.0)}
    assert info["int8_agreement"] is None and info["runs"] == 3
    assert info["peak_rss_bytes"] > 0
    assert info["madds"] == 16 * 24 * (9 * 3 * 4 + 4 * 3)  # the counts are still there


def test_tflite_latencies_and_int8_agreement(monkeypatch, tmp_path):
    import itertools

    import numpy as np

    from kseg import export

    ticks = itertools.count(0, 0.005)  # every timed call lasts 5 ms
    monkeypatch.setattr(bench, "_clock", lambda: next(ticks))
    model = _small_model()
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 255, (6, 16, 24, 3)).astype("float32")
    held_out = rng.uniform(0, 255, (3, 16, 24, 3)).astype("float32")
    info = bench.measure_latency(
        model,
        representative_data=calibration,
        agreement_data=held_out,
        runs=2,
        warmup=1,
        threads=2,
    )
    assert info["latency_ms"] == {
        "keras": pytest.approx(5.0),
        "tflite_float32": pytest.approx(5.0),
        "tflite_int8": pytest.approx(5.0),
    }
    assert info["tflite_errors"] == {} and info["tflite_bytes"]["int8"] > 0
    # the agreement is the int8 model's argmax against the float32 model's, on held_out
    fp32 = export.tflite(model, tmp_path / "f.tflite", input_shape=(16, 24, 3))
    int8 = export.tflite(
        model,
        tmp_path / "i.tflite",
        quantize="int8",
        representative_data=calibration,
        input_shape=(16, 24, 3),
    )
    expected = np.mean(
        export.run_tflite(int8, held_out).argmax(-1) == export.run_tflite(fp32, held_out).argmax(-1)
    )
    assert info["int8_agreement"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="tflite modes"):
        bench.measure_latency(model, tflite=("float16",))


def test_tflite_activation_traffic_counts_each_op_reads_and_writes(tmp_path):
    from kseg import export

    inputs = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([y, y]))
    path = export.tflite(model, tmp_path / "m.tflite", input_shape=(8, 8, 3))
    traffic = bench.tflite_activation_traffic(path)
    # the convolution reads the 8x8x3 input and writes 8x8x2; the add reads 8x8x2 twice and
    # writes it once (float32); its weights, 3*3*3*2 + 2 biases, are not activations
    assert traffic["by_op"] == {"ADD": 3 * 8 * 8 * 2 * 4, "CONV_2D": (8 * 8 * 3 + 8 * 8 * 2) * 4}
    assert traffic["total_bytes"] == 1536 + 1280
    assert traffic["weight_bytes"] == (3 * 3 * 3 * 2 + 2) * 4
    assert bench.tflite_activation_traffic(open(path, "rb").read()) == traffic


def test_int8_io_gives_integer_edges(monkeypatch):
    import itertools

    import numpy as np

    ticks = itertools.count(0, 0.005)
    monkeypatch.setattr(bench, "_clock", lambda: next(ticks))
    rng = np.random.default_rng(0)
    info = bench.measure_latency(
        _small_model(),
        representative_data=rng.uniform(0, 255, (4, 16, 24, 3)).astype("float32"),
        agreement_data=rng.uniform(0, 255, (2, 16, 24, 3)).astype("float32"),
        runs=1,
        warmup=0,
        int8_io="int8",
    )
    assert info["int8_io"] == "int8" and info["tflite_undelegated"]["int8"] == {}
    assert info["tflite_activation_bytes"]["float32"] > 0
    assert 0.9 <= info["int8_agreement"] <= 1.0
    with pytest.raises(ValueError, match="int8_io=.float16."):
        bench.measure_latency(_small_model(), int8_io="float16")


def test_bench_cli_passes_int8_io_to_the_latency_run(monkeypatch, capsys):
    from kseg.cli.main import main

    seen = []

    def fake(*args, **kwargs):
        seen.append(kwargs.get("int8_io"))
        return {"latency_ms": {"keras": 1.0}, "tflite_errors": {}, "int8_agreement": None}

    monkeypatch.setattr(bench, "measure_latency", fake)
    argv = ["bench", "--latency", "--models", "unet", "--input", "32x48"]
    assert main([*argv, "--int8-io", "int8"]) == 0
    assert main(argv) == 0
    assert seen == ["int8", None]
    with pytest.raises(SystemExit):
        main([*argv, "--int8-io", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_latency_table_columns_and_figures(monkeypatch, capsys):
    from kseg.cli.main import main

    fake = {
        "latency_ms": {"keras": 12.34, "tflite_float32": 5.0, "tflite_int8": 2.5},
        "tflite_errors": {},
        "tflite_bytes": {},
        "int8_agreement": 0.9876,
        "threads": 2,
        "runs": 1,
        "peak_rss_bytes": 1,
    }
    monkeypatch.setattr(bench, "measure_latency", lambda *a, **k: dict(fake))
    assert main(["bench", "--latency", "--models", "unet,segnet", "--input", "32x48"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| " + " | ".join(bench.LATENCY_COLUMNS) + " |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| unet", "| segnet"]
    expected = bench.profile(
        __import__("kseg").models.create("unet", num_classes=19, input_shape=(32, 48, 3)),
        (32, 48, 3),
    )
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == [
        "unet",
        "32x48x3",
        f"{expected['params'] / 1e6:.2f}",
        f"{expected['madds'] / 1e9:.2f}",
        "12.3",
        "5.0",
        "2.5",
        "98.8 %",
    ]
    assert main(["bench", "--latency", "--input", "32by48"]) == 2


def test_tflite_undelegated_ops_names_what_xnnpack_leaves_out(tmp_path):
    from kseg import export
    from kseg.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D

    # convolutions only: XNNPACK takes the whole graph
    plain = export.tflite(_small_model(), tmp_path / "plain.tflite")
    assert bench.tflite_undelegated_ops(plain) == ({}, 1)
    # the argmax pooling's EQUAL/SELECT_V2 are not XNNPACK ops: they stay outside and split
    # the graph into a partition before and one after them
    inputs = keras.Input((16, 24, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    pooled, indices = MaxPoolingWithArgmax2D(2)(x)
    y = keras.layers.Conv2D(4, 1)(pooled)
    y = MaxUnpooling2D(2)([y, indices, x])
    path = export.tflite(keras.Model(inputs, keras.layers.Conv2D(2, 1)(y)), tmp_path / "u.tflite")
    counts, partitions = bench.tflite_undelegated_ops(path)
    ops = {d["op_name"] for d in export.tflite_interpreter(path)._get_ops_details()}
    assert {"EQUAL", "SELECT_V2"} <= set(counts) <= ops - {"DELEGATE"}
    assert "CONV_2D" not in counts and partitions >= 2

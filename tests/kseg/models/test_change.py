"""FC-EF, FC-Siam-conc, FC-Siam-diff: the authors' parameter counts, weight sharing, contract."""

import keras
import numpy as np
import pytest

import kseg
from kseg.models import FCEarlyFusion, FCSiamConc, FCSiamDiff
from kseg.testing import check_model


# Trainable parameters of the authors' PyTorch code (rcdaudt/fully_convolutional_change_detection,
# unet.py / siamunet_conc.py / siamunet_diff.py with input_nbr 3 (6 for EF), label_nbr 2),
# written out layer by layer: conv weights + biases, batch-norm gamma + beta.
def _conv(i, o):
    return 9 * i * o + o


def expected_trainable(fusion):
    encoder = [(3, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 64)]
    encoder += [(64, 128), (128, 128), (128, 128)]
    if fusion == "early":
        encoder[0] = (6, 16)
    skip = 2 if fusion == "concat" else 1
    decoder = [(128 + skip * 128, 128), (128, 128), (128, 64), (64 + skip * 64, 64), (64, 64)]
    decoder += [(64, 32), (32 + skip * 32, 32), (32, 16), (16 + skip * 16, 16)]
    upconvs = sum(_conv(c, c) for c in (128, 64, 32, 16))
    with_bn = sum(_conv(i, o) + 2 * o for i, o in encoder + decoder)
    return with_bn + upconvs + _conv(16, 2)


@pytest.mark.parametrize(
    "cls, fusion, paper",
    [
        (FCEarlyFusion, "early", 1.35e6),
        (FCSiamConc, "concat", 1.55e6),
        (FCSiamDiff, "diff", 1.35e6),
    ],
)
def test_parameter_counts_equal_the_authors_code(cls, fusion, paper):
    model = cls()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected_trainable(fusion)
    assert trainable == {"early": 1_350_578, "concat": 1_545_986, "diff": 1_350_146}[fusion]
    assert abs(trainable / paper - 1) < 0.01
    # batch-norm moving mean and variance: 2 x (sum of BN widths) non-trainable
    assert model.count_params() - trainable == 2 * 1216


def test_siamese_encoder_is_shared_and_diff_is_symmetric():
    model = FCSiamDiff(input_shape=(32, 32, 6), base_filters=4, dropout=0.0)
    # one set of encoder weights serves both images
    assert len([w for w in model.weights if "enc11_conv" in w.path]) == 2  # kernel + bias
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 255, (2, 1, 32, 32, 3)).astype("float32")
    # the |A - B| skips do not depend on the order of the images
    diff = keras.Model(model.input, model.get_layer("skip1_diff").output)
    np.testing.assert_allclose(
        diff(np.concatenate([a, b], -1)), diff(np.concatenate([b, a], -1)), atol=1e-5
    )
    # identical images: every difference skip is exactly zero
    same = diff(np.concatenate([a, a], -1))
    assert float(np.abs(same).max()) == 0.0


@pytest.mark.parametrize("name", ["fc_ef", "fc_siam_conc", "fc_siam_diff"])
def test_change_models_pass_the_model_checks(name, tmp_path):
    results = check_model(
        lambda shape: kseg.models.create(name, input_shape=shape, base_filters=4, dropout=0.0),
        input_shapes=[(32, 32, 6), (19, 27, 6)],
        num_classes=2,
        tmp_dir=tmp_path,
    )
    assert results[0]["losses"][-1] < results[0]["losses"][0]
    assert results[1]["logits"].shape == (2, 19, 27, 2)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"two images.*input_shape=\(32, 32, 3\)"):
        FCSiamDiff(input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="base_filters.*0"):
        FCEarlyFusion(base_filters=0)
    with pytest.raises(ValueError, match="dropout.*1.0"):
        FCSiamConc(dropout=1.0)
    assert isinstance(kseg.models.create("fcsiamdiff", input_shape=(16, 16, 6)), FCSiamDiff)


def test_bench_profiles_change_models_on_image_pairs():
    light = {"fc_siam_diff": {"base_filters": 4}}
    (row,) = kseg.bench.zoo_rows(["fc_siam_diff"], (32, 32, 3), num_classes=2, model_kwargs=light)
    assert tuple(row["input_shape"]) == (32, 32, 6)
    assert row["params"] == FCSiamDiff(input_shape=(32, 32, 6), base_filters=4).count_params()

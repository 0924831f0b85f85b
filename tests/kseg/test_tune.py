"""kseg.tune: the search space, the HyperModel, the three tuners and ``kseg tune``.

The searches are tiny (32x32 synthetic scenes, U-Nets of 4-8 filters, 1-2 epochs, 2-3 trials):
they check that the machinery works end to end, not that the search finds good models.
"""

import csv
import json
import re

import keras
import keras_tuner as kt
import numpy as np
import pytest

import kseg
from kseg import tune
from kseg.cli.main import main

SIZE = (32, 32)
TINY_UNET = {"models": {"unet": {"base_filters": tune.choice(4, 8), "depth": 2}}}


def _data(num_train=16, num_val=8):
    train = kseg.data.load("synthetic", split="train", num_images=num_train, image_size=SIZE)
    val = kseg.data.load("synthetic", split="val", num_images=num_val, image_size=SIZE)
    return train, val


def _evaluates_to_the_best_score(result, val, batch_size=8):
    # The best model reloaded from best.keras, scored by kseg.engine.evaluate (numpy confusion
    # matrix) on the validation batches the search used, gives the tuner's val_mean_iou (the
    # streaming Keras metric at the trial's best epoch). Same weights and images, so only float
    # summation order differs: measured 5e-9 apart; 1e-6 allows that and nothing more (one
    # pixel changing class moves a 32x32x8 mIoU by > 1e-5).
    model = kseg.load_model(result.best_model_path)
    scores = kseg.engine.evaluate(model, val.batch(batch_size), num_classes=6, progress=False)
    assert scores["mean_iou"] == pytest.approx(result.best_score, abs=1e-6)
    return model


def _trial(space, **chosen):
    """Hyper-parameters as an oracle hands them to a trial: ``chosen`` values, else defaults."""
    hp = kt.HyperParameters()
    space.sample(hp)
    hp.values.update({k.replace("__", "/"): v for k, v in chosen.items()})
    for parameter in hp.space:  # the oracle fills every active parameter
        if hp.is_active(parameter) and parameter.name not in hp.values:
            hp.values[parameter.name] = parameter.default
    return hp


# --- the space ---------------------------------------------------------------------------


def test_space_round_trips_through_json_and_fills_defaults(tmp_path):
    space = tune.SearchSpace(
        {
            "models": {
                "lraspp": {"backbone": tune.choice("mobilenetv3_small", "mobilenetv3_large")},
                "deeplabv3plus": {
                    "backbone": "mobilenetv2",
                    "backbone_options": {"alpha": tune.choice(0.35, 1)},
                },
            },
            "learning_rate": tune.float_range(1e-4, 1e-2, log=True),
            "batch_size": tune.int_range(2, 8, step=2),
        }
    )
    path = tmp_path / "space.json"
    space.to_json(path)
    again = tune.SearchSpace.from_json(str(path))
    assert again == space
    spec = again.to_dict()
    assert spec["schedule"] == tune.DEFAULT_SPACE["schedule"]  # keys left out keep the default
    # a choice of mixed ints and floats becomes floats (keras-tuner wants one type)
    assert spec["models"]["deeplabv3plus"]["backbone_options"]["alpha"]["values"] == [0.35, 1.0]
    assert again.tunable_names() == [
        "model",
        "lraspp/backbone",
        "deeplabv3plus/backbone_options/alpha",
        "learning_rate",
        "schedule",
        "loss/dice",
        "loss/focal",
        "augment",
        "batch_size",
    ]


def test_sample_declares_the_space_on_the_hyperparameters():
    space = tune.SearchSpace(
        {
            "models": {
                "unet": {"base_filters": tune.choice(8, 16), "depth": 3},
                "lraspp": {"output_stride": tune.choice(8, 16), "alpha": 0.75},
            },
            "learning_rate": tune.float_range(1e-4, 1e-2, log=True),
        }
    )
    hp = kt.HyperParameters()
    values = space.sample(hp)
    assert values["model"] == "unet"  # the first choice is the default
    assert values["model_options"] == {"base_filters": 8, "depth": 3}
    assert values["learning_rate"] == pytest.approx(1e-4)
    log_range = hp._hps["learning_rate"][0]
    assert (log_range.min_value, log_range.max_value, log_range.sampling) == (1e-4, 1e-2, "log")
    # the other model's entries are declared but inactive
    assert hp.values.get("lraspp/output_stride") is None
    again = space.sample(_trial(space, model="lraspp", lraspp__output_stride=16))
    assert again["model"] == "lraspp"
    assert again["model_options"] == {"output_stride": 16, "alpha": 0.75}


@pytest.mark.parametrize(
    "spec, match",
    [
        (
            {"models": {"unet3000": {}}},
            r"unknown or non-semantic model 'unet3000'; valid models: .*deeplabv3plus",
        ),
        (  # mean IoU of logits cannot score an instance model
            {"models": {"mask_rcnn": {}}},
            r"non-semantic model 'mask_rcnn'; valid models: (?:(?!mask_rcnn)[^.])*unet[^.]*\. Rec",
        ),
        (
            {"models": {"lraspp": {"backbone": tune.choice("mobilenetv3_small", "resnet5")}}},
            r"unknown backbone 'resnet5'; valid backbones: .*mobilenetv2",
        ),
        (
            {"models": {"unet": {"filters": 8}}},
            r"model 'unet' has no argument 'filters'; valid arguments: .*base_filters",
        ),
        ({"learning_rat": 0.1}, r"unknown keys \['learning_rat'\]; valid keys: models, "),
        ({"loss": {"cross_entropy": 0.0, "dice": tune.choice(0.0, 1.0)}}, r"at least one loss"),
        ({"loss": {"lovasz": 1.0}}, r"unknown losses \['lovasz'\]; valid: cross_entropy"),
        ({"learning_rate": tune.float_range(0.0, 0.1, log=True)}, r"log-sampled range needs min"),
        ({"batch_size": tune.choice(4, "8")}, r"choice values must all be of one kind"),
        ({"augment": tune.float_range(0.0, 2.0)}, r"augment'\] must be a strength in \[0, 1\]"),
        ({"schedule": "step"}, r"schedule'\] must be one of poly, cosine, constant"),
        ({"batch_size": {"type": "range", "min": 1}}, r"type must be one of fixed, choice"),
    ],
)
def test_bad_spaces_name_the_entry_and_the_allowed_values(spec, match):
    with pytest.raises(ValueError, match=match):
        tune.SearchSpace(spec)


def test_an_impossible_combination_fails_validation_with_the_allowed_values():
    # LR-ASPP takes output strides 8, 16, 32; the model's own check names them.
    space = tune.SearchSpace(
        {
            "models": {
                "lraspp": {"backbone": "mobilenetv3_small", "output_stride": tune.choice(4, 8)}
            }
        }
    )
    with pytest.raises(ValueError) as info:
        space.validate(6, (*SIZE, 3))
    message = str(info.value)
    assert "space['models']['lraspp'] with {'output_stride': 4} cannot be built" in message
    assert "output_stride must be one of (8, 16, 32)" in message
    # PSPNet's dilated ResNet does output stride 8 or 16 only
    space = tune.SearchSpace({"models": {"pspnet": {"backbone": "resnet50", "output_stride": 32}}})
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16\)"):
        space.validate(6, (*SIZE, 3))


def test_a_bad_space_fails_before_the_first_trial(tmp_path, capsys):
    bad = tmp_path / "space.json"
    bad.write_text(json.dumps({"models": {"lraspp": {"output_stride": tune.choice(4, 8)}}}))
    code = main(
        ["tune", "--tuner", "random", "--max-trials", "2", "--space", str(bad),
         "--num-images", "8", "--image-size", "32", "32", "--output", str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "output_stride must be one of (8, 16, 32)" in err
    assert not (tmp_path / "run" / "trials").exists()  # no trial ran
    bad.write_text("{not json")
    assert main(["tune", "--space", str(bad), "--output", str(tmp_path / "run2")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


# --- the hypermodel ----------------------------------------------------------------------


def test_a_trial_builds_the_sampled_model_and_backbone():
    space = {
        "models": {
            "lraspp": {
                "backbone": tune.choice("mobilenetv3_small", "mobilenetv3_large"),
                "alpha": 0.75,
                "filters": 8,
            },
            "unet": {"base_filters": tune.choice(4, 8), "depth": 2},
        },
        "loss": {"cross_entropy": 1.0, "dice": 0.5},
    }
    hypermodel = tune.SegmentationHyperModel(6, (*SIZE, 3), space=space, validate=False)
    built = {}
    for model_name, key, value in [
        ("lraspp", "lraspp/backbone", "mobilenetv3_small"),
        ("lraspp", "lraspp/backbone", "mobilenetv3_large"),
        ("unet", "unet/base_filters", 8),
    ]:
        hp = _trial(hypermodel.space, model=model_name, **{key.replace("/", "__"): value})
        model = hypermodel.build(hp)
        assert isinstance(model, kseg.models.MODELS.get(model_name))
        built[value] = model
    small, large = built["mobilenetv3_small"], built["mobilenetv3_large"]
    assert (small.backbone, large.backbone) == ("mobilenetv3_small", "mobilenetv3_large")
    # the parameters are those of the named backbone, which differ between the two
    for model, backbone in ((small, "mobilenetv3_small"), (large, "mobilenetv3_large")):
        direct = kseg.models.create(
            "lraspp", num_classes=6, input_shape=(*SIZE, 3), backbone=backbone, alpha=0.75,
            filters=8,
        )  # fmt: skip
        assert model.count_params() == direct.count_params()
    assert small.count_params() != large.count_params()
    first_conv = next(x for x in built[8].layers if isinstance(x, keras.layers.Conv2D))
    assert built[8].base_filters == first_conv.filters == 8
    # the loss mix is compiled in: cross-entropy + 0.5 Dice
    assert isinstance(small.loss, kseg.losses.WeightedSum)
    assert [type(x).__name__ for x in small.loss.losses] == ["CrossEntropy", "Dice"]
    assert small.loss.weights == [1.0, 0.5]


def test_fit_batches_and_augments_from_the_trial():
    hypermodel = tune.SegmentationHyperModel(6, (*SIZE, 3), space=TINY_UNET, validate=False)
    train, _ = _data(num_train=10)
    batches = hypermodel.training_data(train, augment=0.0, batch_size=4)
    images = [b[0].numpy() for b in batches]
    assert [len(b) for b in images] == [4, 4]  # 10 examples: whole batches only
    # strength 0 is no augmentation: the examples are the scenes themselves, shuffled
    originals = np.stack([x.numpy() for x, _ in train])
    for image in np.concatenate(images):
        assert np.min(np.abs(originals - image).reshape(len(originals), -1).max(1)) == 0
    strong = np.concatenate([b[0].numpy() for b in hypermodel.training_data(train, 1.0, 4)])
    changed = [np.min(np.abs(originals - i).reshape(len(originals), -1).max(1)) for i in strong]
    assert min(changed) > 0


# --- searches ----------------------------------------------------------------------------


def test_kseg_tune_random_search_prints_the_table_and_saves_the_best_model(tmp_path, capsys):
    space = tmp_path / "space.json"
    tune.SearchSpace(TINY_UNET).to_json(space)
    out = tmp_path / "run"
    code = main(
        ["tune", "--tuner", "random", "--max-trials", "3", "--epochs", "1", "--space",
         str(space), "--num-images", "16", "--image-size", "32", "32", "--output", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    for number in (1, 2, 3):
        assert f"trial {number}/3 (" in printed
    assert "trial  status     val_mean_iou  best_epoch  unet/base_filters" in printed
    assert "best val_mean_iou: " in printed
    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"COMPLETED"}
    scores = [float(r["val_mean_iou"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert f"best val_mean_iou: {scores[0]:.4f}" in printed
    # the saved model is the best trial's: its configuration and its score
    val = kseg.data.load("synthetic", split="val", num_images=16, image_size=SIZE)
    result = tune.SearchResult(scores[0], str(out / "best.keras"), best, rows, [], "")
    model = _evaluates_to_the_best_score(result, val)
    assert isinstance(model, kseg.models.UNet)
    assert model.base_filters == best["unet/base_filters"] == int(rows[0]["unet/base_filters"])


def test_hyperband_runs_three_trials_and_continues_the_promoted_one(tmp_path):
    train, val = _data()
    lines = []
    result = tune.search(
        train,
        val,
        6,
        (*SIZE, 3),
        str(tmp_path),
        space=TINY_UNET,
        tuner="hyperband",
        max_trials=3,
        epochs=2,
        hyperband_factor=2,
        progress=lines.append,
    )
    trial_lines = [line for line in lines if re.match(r"trial \d/3 \(", line)]
    assert len(trial_lines) == 3
    # factor 2, 2 epochs: two trials of 1 epoch, then the better one continues to epoch 2
    assert [r["epochs"] for r in sorted(result.rows, key=lambda r: r["trial"])] == [1, 1, 2]
    assert "epochs" in result.columns and lines[-2].startswith("trial  status")
    _evaluates_to_the_best_score(result, val)


@pytest.mark.slow  # 2 more trials (~25 s here); the random and hyperband searches stay quick
def test_bayesian_optimization_runs_two_trials(tmp_path):
    train, val = _data()
    result = tune.search(
        train,
        val,
        6,
        (*SIZE, 3),
        str(tmp_path),
        space=TINY_UNET,
        tuner="bayesian",
        max_trials=2,
        progress=None,
    )
    assert len(result.rows) == 2
    assert all(r["status"] == "COMPLETED" for r in result.rows)
    assert result.best_score == max(r["val_mean_iou"] for r in result.rows)
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow  # a 64x64 Fast-SCNN trial (~25 s here)
def test_a_model_with_auxiliary_heads_is_searched_on_its_main_output(tmp_path):
    # Fast-SCNN trains three outputs on the same labels; the objective is the main output's.
    train = kseg.data.load("synthetic", split="train", num_images=8, image_size=(64, 64))
    val = kseg.data.load("synthetic", split="val", num_images=4, image_size=(64, 64))
    result = tune.search(
        train, val, 6, (64, 64, 3), str(tmp_path), tuner="random", max_trials=1,
        space={"models": {"fastscnn": {"alpha": 0.25}}, "batch_size": 4}, progress=None,
    )  # fmt: skip
    assert result.rows[0]["status"] == "COMPLETED"
    model = kseg.load_model(result.best_model_path)
    assert len(model.outputs) == 3
    scores = kseg.engine.evaluate(model, val.batch(8), num_classes=6, progress=False)
    assert scores["mean_iou"] == pytest.approx(result.best_score, abs=1e-6)

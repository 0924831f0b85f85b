"""Hyper-parameter search over kseg models with keras-tuner.

:class:`SearchSpace` says what a search may try: which registered models with which of their
own arguments (backbone, output stride, width multiplier, ...), the learning rate and its
schedule, the loss mix (``kseg.losses`` cross-entropy, Dice and focal weights), the
augmentation strength and the batch size. Each entry is a fixed value, a choice or an
int/float range (optionally log-sampled); the space is a plain dict, saved and read as JSON.
:class:`SegmentationHyperModel` turns a space into a ``keras_tuner.HyperModel`` that works with
``RandomSearch``, ``Hyperband`` and ``BayesianOptimization`` and optimises ``val_mean_iou``
(``kseg.metrics.MeanIoU``); :func:`search` runs a whole search (``kseg tune``).

Example:
    >>> import kseg
    >>> space = kseg.tune.SearchSpace({
    ...     "models": {"unet": {"base_filters": kseg.tune.choice(8, 16), "depth": 3},
    ...                "lraspp": {"backbone": "mobilenetv3_small",
    ...                           "output_stride": kseg.tune.choice(8, 16)}},
    ...     "learning_rate": kseg.tune.float_range(1e-4, 1e-2, log=True),
    ...     "batch_size": kseg.tune.choice(4, 8),
    ... })
    >>> space.to_dict()["models"]["unet"]["base_filters"]
    {'type': 'choice', 'values': [8, 16]}
    >>> train = kseg.data.load("synthetic", split="train", num_images=64, image_size=(64, 64))
    >>> val = kseg.data.load("synthetic", split="val", num_images=16, image_size=(64, 64))
    >>> result = kseg.tune.search(train, val, num_classes=6, input_shape=(64, 64, 3),
    ...                           output_dir="runs/tune", space=space, tuner="hyperband",
    ...                           max_trials=6, epochs=3)  # doctest: +SKIP
    >>> result.best_score, result.best_model_path  # doctest: +SKIP
    (0.61..., 'runs/tune/best.keras')
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import inspect
import itertools
import json
import math
import numbers
import os
import time
import warnings

import keras
import keras_tuner as kt
import tensorflow as tf

from kseg import engine, fileio, losses, models
from kseg import metrics as kseg_metrics
from kseg.constants import IGNORE_INDEX
from kseg.data.augment import Augment
from kseg.precision import check_precision, use_precision
from kseg.registry import BACKBONES, MODELS

OBJECTIVE = "val_mean_iou"
"""The metric every search maximises: kseg's ``MeanIoU`` on the validation data."""

TUNERS = ("random", "hyperband", "bayesian")
SCHEDULES = ("poly", "cosine", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")
LOSSES = {"cross_entropy": losses.CrossEntropy, "dice": losses.Dice, "focal": losses.Focal}

_PARAMETER_TYPES = ("fixed", "choice", "int", "float")
# Model arguments whose values interact (a backbone decides which strides it can do): the
# validation builds every combination of these, and each value of the other arguments once.
_COUPLED_OPTIONS = ("backbone", "output_stride", "variant")
_MAX_PROBES_PER_MODEL = 64


def objective():
    """The search objective: ``kt.Objective("val_mean_iou", "max")``.

    Example:
        >>> objective().name, objective().direction
        ('val_mean_iou', 'max')
    """
    return kt.Objective(OBJECTIVE, "max")


# --- parameter specs ---------------------------------------------------------------------


def fixed(value):
    """A search-space entry that always takes ``value`` (a plain value in a space means the same).

    Example:
        >>> fixed(0.5)
        {'type': 'fixed', 'value': 0.5}
    """
    return {"type": "fixed", "value": value}


def choice(*values):
    """A search-space entry drawn from ``values`` (numbers, strings or booleans).

    Example:
        >>> choice("mobilenetv3_small", "mobilenetv3_large")
        {'type': 'choice', 'values': ['mobilenetv3_small', 'mobilenetv3_large']}
    """
    return {"type": "choice", "values": list(values)}


def int_range(min_value, max_value, step=None, log=False):
    """An integer search-space entry in ``[min_value, max_value]`` (log-sampled with ``log``).

    Example:
        >>> int_range(8, 64, log=True)
        {'type': 'int', 'min': 8, 'max': 64, 'log': True}
    """
    spec = {"type": "int", "min": min_value, "max": max_value}
    if step is not None:
        spec["step"] = step
    if log:
        spec["log"] = True
    return spec


def float_range(min_value, max_value, step=None, log=False):
    """A real search-space entry in ``[min_value, max_value]`` (log-sampled with ``log``).

    Example:
        >>> float_range(1e-4, 1e-2, log=True)
        {'type': 'float', 'min': 0.0001, 'max': 0.01, 'log': True}
    """
    spec = {"type": "float", "min": min_value, "max": max_value}
    if step is not None:
        spec["step"] = step
    if log:
        spec["log"] = True
    return spec


def _is_spec(value):
    return isinstance(value, dict) and "type" in value


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _where(path):
    return "space" + "".join(f"[{p!r}]" for p in path)


def _check_spec(path, spec):
    """Checks one parameter spec and returns it normalised (choices of one type)."""
    where = _where(path)
    kind = spec.get("type")
    if kind not in _PARAMETER_TYPES:
        raise ValueError(
            f"{where}: type must be one of {', '.join(_PARAMETER_TYPES)}. "
            f"Received: {where}={spec!r}"
        )
    expected = {
        "fixed": ({"value"}, set()),
        "choice": ({"values"}, set()),
        "int": ({"min", "max"}, {"step", "log"}),
        "float": ({"min", "max"}, {"step", "log"}),
    }[kind]
    keys = set(spec) - {"type"}
    if not expected[0] <= keys or keys - expected[0] - expected[1]:
        allowed = sorted(expected[0] | expected[1])
        raise ValueError(
            f"{where}: a {kind!r} entry takes the keys {', '.join(allowed)} "
            f"({', '.join(sorted(expected[0]))} required). Received: {where}={spec!r}"
        )
    spec = dict(spec)
    if kind == "choice":
        values = spec["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(
                f"{where}: a choice needs a non-empty list of values. Received: {where}={spec!r}"
            )
        if not all(isinstance(v, (str, bool)) or _is_number(v) for v in values):
            raise ValueError(
                f"{where}: choice values must be numbers, strings or booleans. "
                f"Received: {where}={spec!r}"
            )
        kinds = {
            bool if isinstance(v, bool) else str if isinstance(v, str) else float for v in values
        }
        if len(kinds) > 1:
            raise ValueError(
                f"{where}: choice values must all be of one kind (numbers, strings or "
                f"booleans). Received: {where}={spec!r}"
            )
        if any(isinstance(v, float) for v in values):
            values = [float(v) for v in values]  # keras-tuner wants one Python type
        if len(set(values)) != len(values):
            raise ValueError(f"{where}: choice values repeat. Received: {where}={spec!r}")
        spec["values"] = list(values)
    elif kind in ("int", "float"):
        low, high = spec["min"], spec["max"]
        integral = kind == "int"
        valid = (
            (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool))
            if integral
            else (lambda v: _is_number(v) and math.isfinite(v))
        )
        if not (valid(low) and valid(high) and low < high):
            raise ValueError(
                f"{where}: an {kind} range needs {kind} min < max. Received: {where}={spec!r}"
            )
        if "step" in spec and not (valid(spec["step"]) and spec["step"] > 0):
            raise ValueError(f"{where}: step must be > 0. Received: {where}={spec!r}")
        if not isinstance(spec.get("log", False), bool):
            raise ValueError(f"{where}: log must be true or false. Received: {where}={spec!r}")
        if spec.get("log") and low <= 0:
            raise ValueError(
                f"{where}: a log-sampled range needs min > 0. Received: {where}={spec!r}"
            )
        if spec.get("log") and "step" in spec:
            raise ValueError(
                f"{where}: a log-sampled range takes no step. Received: {where}={spec!r}"
            )
        if not integral:
            spec["min"], spec["max"] = float(low), float(high)
    return spec


def _values_to_probe(spec):
    """The values a validation build tries: each choice, both ends of a range, the fixed one."""
    if not _is_spec(spec):
        return [spec]
    kind = spec["type"]
    if kind == "fixed":
        return [spec["value"]]
    if kind == "choice":
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def _bounds(spec):
    values = _values_to_probe(spec)
    return min(values), max(values)


# --- the space -----------------------------------------------------------------------------

DEFAULT_SPACE = {
    "models": {
        "deeplabv3plus": {
            "backbone": "mobilenetv2",
            "output_stride": choice(8, 16),
            "backbone_options": {"alpha": choice(0.35, 0.5, 1.0)},
            "filters": choice(64, 128, 256),
        },
        "lraspp": {
            "backbone": choice("mobilenetv3_small", "mobilenetv3_large"),
            "output_stride": choice(8, 16),
            "alpha": choice(0.75, 1.0),
        },
        "unet": {"base_filters": choice(16, 32, 64), "depth": choice(3, 4)},
    },
    "learning_rate": float_range(1e-4, 1e-2, log=True),
    "schedule": choice(*SCHEDULES),
    "optimizer": "adamw",
    "weight_decay": 1e-4,
    "loss": {"cross_entropy": 1.0, "dice": choice(0.0, 0.5, 1.0), "focal": choice(0.0, 0.5)},
    "augment": float_range(0.0, 1.0),
    "focal_gamma": 2.0,
    "batch_size": choice(4, 8, 16),
}
"""The space searched when none is given: three light model families (DeepLabV3+ on
MobileNetV2 at output stride 8/16 and width 0.35-1, LR-ASPP on MobileNetV3 small/large, U-Net
16-64 filters), log-uniform learning rate 1e-4..1e-2 with a poly, cosine or constant schedule,
cross-entropy plus optional Dice and focal terms, augmentation strength 0..1, batch 4-16."""


class SearchSpace:
    """What a hyper-parameter search may try: models and their arguments, and training settings.

    A space is a dict (JSON-serialisable). Keys (each optional; a missing key takes the value
    of :data:`DEFAULT_SPACE`):

    - ``models``: ``{model name: {argument: entry}}``; the model is chosen among the names
      (any of ``kseg.models.names()``), then its own entries are drawn. An argument holding a
      dict of entries (``backbone_options``) is drawn entry by entry.
    - ``learning_rate``; ``schedule`` (``"poly"``, ``"cosine"``, ``"constant"``);
      ``optimizer`` (``"adamw"``, ``"adam"``, ``"sgd"``); ``weight_decay`` (AdamW's).
    - ``loss``: ``{"cross_entropy": w, "dice": w, "focal": w}``, the weights of a
      ``kseg.losses.WeightedSum`` (terms with weight 0 are left out); ``focal_gamma``.
    - ``augment``: strength in [0, 1] of ``kseg.data.Augment`` (0: none; 1: scale 0.5-2,
      flips, brightness 0.1, contrast and saturation 0.2, hue 0.02).
    - ``batch_size``.

    An entry is a plain value (fixed), or one of :func:`fixed`, :func:`choice`,
    :func:`int_range`, :func:`float_range` (dicts with a ``"type"`` key).
    :meth:`validate` checks the space before a search: unknown keys, models, arguments and
    backbones, and (``build=True``) builds each model's combinations of backbone, output stride
    and variant, and each value of its other arguments, so an impossible combination fails
    before the first trial with the model's own message naming the allowed values.

    Example:
        >>> space = SearchSpace({"models": {"lraspp": {"backbone": "mobilenetv3_small"}},
        ...                      "batch_size": 8})
        >>> space.tunable_names()[:3]
        ['learning_rate', 'schedule', 'loss/dice']
        >>> SearchSpace.from_json(space.to_json()) == space
        True
    """

    KEYS = (
        "models",
        "learning_rate",
        "schedule",
        "optimizer",
        "weight_decay",
        "loss",
        "focal_gamma",
        "augment",
        "batch_size",
    )

    def __init__(self, spec=None):
        if isinstance(spec, SearchSpace):
            spec = spec.to_dict()
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise ValueError(f"a search space must be a dict. Received: space={spec!r}")
        unknown = sorted(set(spec) - set(self.KEYS))
        if unknown:
            raise ValueError(
                f"search space has unknown keys {unknown}; valid keys: {', '.join(self.KEYS)}. "
                f"Received: space={spec!r}"
            )
        merged = copy.deepcopy(DEFAULT_SPACE)
        merged.update(copy.deepcopy(spec))
        self._spec = self._normalise(merged)

    # construction and (de)serialisation

    @classmethod
    def default(cls):
        """The :data:`DEFAULT_SPACE`.

        Example:
            >>> sorted(SearchSpace.default().to_dict()["models"])
            ['deeplabv3plus', 'lraspp', 'unet']
        """
        return cls()

    @classmethod
    def from_json(cls, source):
        """A space from a JSON text or the path of a JSON file.

        Example:
            >>> SearchSpace.from_json('{"batch_size": 4}').to_dict()["batch_size"]
            4
        """
        text = source
        if not source.lstrip().startswith("{"):
            if not os.path.isfile(source):
                raise FileNotFoundError(f"search space file {source!r} does not exist")
            with open(source) as file:
                text = file.read()
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"search space {source!r} is not valid JSON: {error}") from None
        return cls(spec)

    def to_dict(self):
        """The full space as a plain dict (defaults filled in).

        Example:
            >>> SearchSpace().to_dict()["optimizer"]
            'adamw'
        """
        return copy.deepcopy(self._spec)

    def to_json(self, path=None):
        """The space as JSON text; with ``path`` also written there (atomically).

        Example:
            >>> '"batch_size"' in SearchSpace().to_json()
            True
        """
        text = json.dumps(self._spec, indent=2)
        if path is not None:
            with fileio.atomic_open(path, "w") as file:
                file.write(text + "\n")
        return text

    def __eq__(self, other):
        return isinstance(other, SearchSpace) and self._spec == other._spec

    def __repr__(self):
        return f"SearchSpace({json.dumps(self._spec)})"

    # checks

    def _normalise(self, spec):
        def entry(path, value):
            if _is_spec(value):
                return _check_spec(path, value)
            return value

        models_spec = spec["models"]
        if not isinstance(models_spec, dict) or not models_spec:
            raise ValueError(
                "space['models'] must map one or more model names to their arguments. "
                f"Received: space['models']={models_spec!r}"
            )
        normalised = {}
        for name, options in models_spec.items():
            # The tuner scores mean IoU of semantic logits: instance/panoptic models do not fit.
            if name not in MODELS or getattr(MODELS.get(name), "task", "semantic") != "semantic":
                valid = [n for n in MODELS.names() if MODELS.get(n).task == "semantic"]
                raise ValueError(
                    f"space['models'] names an unknown or non-semantic model {name!r}; valid "
                    f"models: {', '.join(valid)}. Received: space['models'][{name!r}]"
                )
            if options is None:
                options = {}
            if not isinstance(options, dict):
                raise ValueError(
                    f"space['models'][{name!r}] must be a dict of the model's arguments. "
                    f"Received: space['models'][{name!r}]={options!r}"
                )
            valid = _model_arguments(name)
            for option, value in options.items():
                path = ("models", name, option)
                if option not in valid:
                    raise ValueError(
                        f"{_where(path)}: model {name!r} has no argument {option!r}; valid "
                        f"arguments: {', '.join(valid)}. Received: {_where(path)}={value!r}"
                    )
            normalised[name] = {
                option: (
                    {k: entry((*("models", name, option), k), v) for k, v in value.items()}
                    if isinstance(value, dict) and not _is_spec(value)
                    else entry(("models", name, option), value)
                )
                for option, value in options.items()
            }
            backbone = normalised[name].get("backbone")
            if backbone is not None:
                for value in _values_to_probe(backbone):
                    if value not in BACKBONES:
                        where = _where(("models", name, "backbone"))
                        raise ValueError(
                            f"{where} names an unknown backbone {value!r}; valid backbones: "
                            f"{', '.join(BACKBONES.names())}. Received: {where}={backbone!r}"
                        )
        spec["models"] = normalised
        for key in self.KEYS:
            if key in ("models", "loss"):
                continue
            spec[key] = entry((key,), spec[key])
        loss_spec = spec["loss"]
        if not isinstance(loss_spec, dict) or not loss_spec:
            raise ValueError(
                f"space['loss'] must map loss names ({', '.join(LOSSES)}) to weights. "
                f"Received: space['loss']={loss_spec!r}"
            )
        unknown = sorted(set(loss_spec) - set(LOSSES))
        if unknown:
            raise ValueError(
                f"space['loss'] names unknown losses {unknown}; valid: {', '.join(LOSSES)}. "
                f"Received: space['loss']={loss_spec!r}"
            )
        spec["loss"] = {k: entry(("loss", k), v) for k, v in loss_spec.items()}
        self._check_values(spec)
        return spec

    @staticmethod
    def _check_values(spec):
        def check(key, accept, requirement, values=None):
            entry = spec[key] if values is None else values
            for value in _values_to_probe(entry):
                if not accept(value):
                    raise ValueError(
                        f"{_where((key,))} must be {requirement}. Received: "
                        f"{_where((key,))}={entry!r}"
                    )

        check("learning_rate", lambda v: _is_number(v) and v > 0, "a number > 0")
        check("weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0")
        check("focal_gamma", lambda v: _is_number(v) and v >= 0, "a number >= 0")
        check("augment", lambda v: _is_number(v) and 0 <= v <= 1, "a strength in [0, 1]")
        check(
            "batch_size",
            lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1,
            "a positive integer",
        )
        check("schedule", lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
        check("optimizer", lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}")
        for name, weight in spec["loss"].items():
            for value in _values_to_probe(weight):
                if not (_is_number(value) and value >= 0):
                    where = _where(("loss", name))
                    raise ValueError(f"{where} must be a weight >= 0. Received: {where}={weight!r}")
        if not any(_bounds(weight)[0] > 0 for weight in spec["loss"].values()):
            raise ValueError(
                "space['loss']: at least one loss weight must be > 0 in every trial (a fixed "
                "weight > 0, or a choice/range whose smallest value is > 0). Received: "
                f"space['loss']={spec['loss']!r}"
            )

    def validate(self, num_classes, input_shape, build=True):
        """Checks the space for a search on ``input_shape`` images with ``num_classes``.

        The dict itself is checked when the space is made (unknown keys, models, arguments,
        backbones, malformed entries, values out of range). With ``build`` each model is also
        built (not trained) on every combination of its backbone, output stride and variant
        entries, and with each value of its other entries, so an impossible combination (an
        output stride a backbone cannot do, a width a backbone refuses) fails here with the
        model's message and the entry, before any trial runs.

        Example:
            >>> SearchSpace({"models": {"pspnet": {"backbone": "resnet50",
            ...              "output_stride": choice(16, 32)}}}).validate(
            ...     6, (64, 64, 3))  # doctest: +IGNORE_EXCEPTION_DETAIL
            Traceback (most recent call last):
            ValueError: space['models']['pspnet'] with {'output_stride': 32} cannot be built:
            PSPNet: output_stride must be one of (8, 16). ...
        """
        if not build:
            return self
        for name, options in self._spec["models"].items():
            for arguments in _probe_arguments(options):
                try:
                    models.create(
                        name, num_classes=num_classes, input_shape=input_shape, **arguments
                    )
                except Exception as error:  # noqa: BLE001 -- any build error rejects the entry
                    varied = {
                        k: v for k, v in arguments.items() if _is_varied(options.get(k))
                    } or arguments
                    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    raise ValueError(
                        f"space['models'][{name!r}] with {varied} cannot be built: "
                        f"{type(error).__name__}: {message}. Received: "
                        f"space['models'][{name!r}]={options!r}"
                    ) from error
        return self

    # what the tuner sees

    def tunable_names(self):
        """Names of the hyper-parameters that vary (as in the results table), in space order.

        Example:
            >>> "batch_size" in SearchSpace().tunable_names()
            True
        """
        names = []
        if len(self._spec["models"]) > 1:
            names.append("model")
        for model_name, options in self._spec["models"].items():
            for option, value in options.items():
                for name, entry in _flatten((model_name, option), value):
                    if _is_varied(entry):
                        names.append(name)
        for key in self.KEYS:
            if key == "models":
                continue
            for name, entry in _flatten((key,), self._spec[key]):
                if _is_varied(entry):
                    names.append(name)
        return names

    def sample(self, hp):
        """Declares the space's hyper-parameters on ``hp`` and returns the current trial's values.

        Returns a dict: ``model`` (name), ``model_options`` (the model's arguments),
        ``learning_rate``, ``schedule``, ``optimizer``, ``weight_decay``, ``loss`` (weights by
        name), ``focal_gamma``, ``augment``, ``batch_size``. Calling it again with the same
        ``hp`` returns the same values.

        Example:
            >>> import keras_tuner as kt
            >>> values = SearchSpace({"models": {"unet": {"base_filters": 8}}}).sample(
            ...     kt.HyperParameters())
            >>> values["model"], values["model_options"], values["batch_size"]
            ('unet', {'base_filters': 8}, 4)
        """
        spec = self._spec
        names = list(spec["models"])
        model = hp.Choice("model", names) if len(names) > 1 else hp.Fixed("model", names[0])
        chosen = {}
        for name in names:
            with hp.conditional_scope("model", [name]):
                options = {
                    option: _declare(hp, (name, option), value)
                    for option, value in spec["models"][name].items()
                }
            if name == model:
                chosen = options
        values = {"model": model, "model_options": chosen}
        for key in self.KEYS:
            if key != "models":
                values[key] = _declare(hp, (key,), spec[key])
        return values


def _model_arguments(name):
    parameters = inspect.signature(MODELS.get(name)).parameters
    return sorted(
        p
        for p, parameter in parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and p not in ("self", "num_classes", "input_shape", "name", "weights")
    )


def _is_varied(entry):
    return _is_spec(entry) and entry["type"] != "fixed" and len(_values_to_probe(entry)) > 1


def _flatten(path, value):
    """``(hyper-parameter name, entry)`` pairs of one space entry (dicts of entries recurse)."""
    if isinstance(value, dict) and not _is_spec(value):
        pairs = []
        for key, inner in value.items():
            pairs.extend(_flatten((*path, key), inner))
        return pairs
    return [("/".join(map(str, path)), value)]


def _declare(hp, path, value):
    """Registers one entry on ``hp`` and returns its value (None when inactive)."""
    if isinstance(value, dict) and not _is_spec(value):
        inner = {k: _declare(hp, (*path, k), v) for k, v in value.items()}
        # inactive (another model's entries): every value is None
        return None if inner and all(v is None for v in inner.values()) else inner
    name = "/".join(map(str, path))
    if not _is_spec(value):
        if isinstance(value, (bool, str)) or _is_number(value):
            result = hp.Fixed(name, value)
            return value if result is not None else None
        return value  # lists, None: constants, not hyper-parameters
    kind = value["type"]
    if kind == "fixed":
        inner = value["value"]
        if isinstance(inner, (bool, str)) or _is_number(inner):
            result = hp.Fixed(name, inner)
            return inner if result is not None else None
        return inner
    if kind == "choice":
        return hp.Choice(name, value["values"])
    sampling = "log" if value.get("log") else "linear"
    if kind == "int":
        return hp.Int(name, value["min"], value["max"], step=value.get("step"), sampling=sampling)
    return hp.Float(name, value["min"], value["max"], step=value.get("step"), sampling=sampling)


def _probe_arguments(options):
    """The argument sets a validation builds for one model's entries."""
    flat = {option: _values_to_probe(value) for option, value in options.items()}
    nested = {
        option: value
        for option, value in options.items()
        if isinstance(value, dict) and not _is_spec(value)
    }

    def first_of(option):
        if option in nested:
            return {k: _values_to_probe(v)[0] for k, v in nested[option].items()}
        return flat[option][0]

    base = {option: first_of(option) for option in options}
    coupled = [o for o in _COUPLED_OPTIONS if o in options and o not in nested]
    probes = []
    for combination in itertools.product(*(flat[o] for o in coupled)):
        probes.append({**base, **dict(zip(coupled, combination))})
    for option in options:
        if option in coupled:
            continue
        if option in nested:
            for key, entry in nested[option].items():
                for value in _values_to_probe(entry)[1:]:
                    probes.append({**base, option: {**base[option], key: value}})
        else:
            for value in flat[option][1:]:
                probes.append({**base, option: value})
    return probes[:_MAX_PROBES_PER_MODEL]


# --- the hypermodel ------------------------------------------------------------------------


class _MainOutputMetrics(keras.callbacks.Callback):
    """Copies a multi-output model's main-output metrics to the plain names (``val_mean_iou``).

    Keras prefixes per-output metrics with the output's name; the tuner's objective and the
    checkpoints look for ``val_mean_iou``. Runs before the tuner's callbacks (same logs dict).
    """

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for key in list(logs):
            for split in ("val_", ""):
                head = f"{split}{self.prefix}_"
                if key.startswith(head) and not key.endswith("loss"):
                    logs.setdefault(f"{split}{key[len(head) :]}", logs[key])


class SegmentationHyperModel(kt.HyperModel):
    """A ``keras_tuner.HyperModel`` that builds, compiles and trains kseg models from a space.

    ``build(hp)`` draws a model and its arguments from the :class:`SearchSpace` and compiles it
    (optimizer and schedule, ``kseg.losses`` mix, ``kseg.metrics.MeanIoU`` logged as
    ``mean_iou`` and ``PixelAccuracy``). ``fit(hp, model, x, validation_data, ...)`` takes the
    training data as a dataset of ``(image, label)`` examples (unbatched; a batched one is
    unbatched first) and batches and augments it with the trial's batch size and augmentation
    strength, so these two are searched too; the learning-rate schedule is set for the trial's
    real number of steps. Works with ``kt.RandomSearch``, ``kt.Hyperband`` and
    ``kt.BayesianOptimization`` with ``objective=kseg.tune.objective()``.

    Args:
        num_classes: classes predicted.
        input_shape: ``(H, W, C)`` of the model (H/W may be None for any size; then give
            ``crop_size``).
        space: a :class:`SearchSpace`, a dict or None (:data:`DEFAULT_SPACE`).
        crop_size: ``(H, W)`` training crop (default: the input shape's).
        ignore_index: label ignored by losses and metrics.
        precision: ``"float32"`` (default), ``"mixed_float16"`` or ``"mixed_bfloat16"``:
            the dtype policy each trial's model is built under.
        seed: seed of the shuffling and augmentation (the same for every trial).
        validate: build-check the space now (see :meth:`SearchSpace.validate`).

    Example:
        >>> import keras_tuner as kt, kseg
        >>> hypermodel = kseg.tune.SegmentationHyperModel(
        ...     6, (64, 64, 3), space={"models": {"unet": {"base_filters": choice(8, 16)}}})
        >>> tuner = kt.RandomSearch(hypermodel, objective=kseg.tune.objective(), max_trials=3,
        ...                         directory="runs", project_name="unet")  # doctest: +SKIP
        >>> tuner.search(train, validation_data=val, epochs=2)  # doctest: +SKIP
    """

    def __init__(
        self,
        num_classes,
        input_shape,
        space=None,
        crop_size=None,
        ignore_index=IGNORE_INDEX,
        precision="float32",
        seed=0,
        validate=True,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise ValueError(
                f"num_classes must be a positive integer. Received: num_classes={num_classes!r}"
            )
        if num_classes < 1:
            raise ValueError(
                f"num_classes must be a positive integer. Received: num_classes={num_classes!r}"
            )
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(
                f"input_shape must be (height, width, channels). Received: "
                f"input_shape={input_shape!r}"
            )
        if crop_size is None:
            if None in input_shape[:2]:
                raise ValueError(
                    "crop_size is required when the input shape has no fixed size. Received: "
                    f"input_shape={input_shape!r}, crop_size=None"
                )
            crop_size = input_shape[:2]
        self.num_classes = int(num_classes)
        self.input_shape = input_shape
        self.space = SearchSpace(space)
        self.crop_size = tuple(int(c) for c in crop_size)
        self.ignore_index = ignore_index
        self.precision = check_precision(precision)
        self.seed = int(seed)
        if validate:
            with use_precision(self.precision):
                self.space.validate(self.num_classes, self.input_shape)

    def build(self, hp):
        """Builds and compiles the trial's model (see the class docstring).

        Example:
            >>> model = hypermodel.build(kt.HyperParameters())  # doctest: +SKIP
        """
        values = self.space.sample(hp)
        with use_precision(self.precision):
            model = models.create(
                values["model"],
                num_classes=self.num_classes,
                input_shape=self.input_shape,
                **values["model_options"],
            )
        self._compile(model, values, total_steps=1000)
        return model

    def _loss(self, values):
        terms = []
        for name, weight in values["loss"].items():
            if weight > 0:
                options = {"ignore_index": self.ignore_index}
                if name == "focal":
                    options["gamma"] = float(values["focal_gamma"])
                terms.append(float(weight) * LOSSES[name](**options))
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def _compile(self, model, values, total_steps):
        rate = float(values["learning_rate"])
        schedule = values["schedule"]
        if schedule == "poly":
            rate = engine.poly_schedule(rate, total_steps)
        elif schedule == "cosine":
            rate = keras.optimizers.schedules.CosineDecay(rate, total_steps)
        optimizer = {
            "adamw": lambda: keras.optimizers.AdamW(
                rate, weight_decay=float(values["weight_decay"])
            ),
            "adam": lambda: keras.optimizers.Adam(rate),
            "sgd": lambda: keras.optimizers.SGD(rate, momentum=0.9),
        }[values["optimizer"]]()
        loss = self._loss(values)
        metrics = [
            kseg_metrics.MeanIoU(self.num_classes, ignore_index=self.ignore_index),
            kseg_metrics.PixelAccuracy(self.num_classes, ignore_index=self.ignore_index),
        ]
        count = len(model.outputs)
        if count == 1:
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
            return
        # Auxiliary heads train on the same labels; the metrics follow the main output only.
        weights = getattr(model, "loss_weights_for_outputs", [1.0] * count)
        model.compile(
            optimizer=optimizer,
            loss=[loss] * count,
            loss_weights=list(weights),
            metrics=[metrics] + [[] for _ in range(count - 1)],
        )

    def _augment(self, strength):
        s = float(strength)
        return Augment(
            scale_range=(1.0 - 0.5 * s, 1.0 + s),
            crop_size=self.crop_size,
            flip=s > 0,
            brightness=0.1 * s,
            contrast=0.2 * s,
            saturation=0.2 * s,
            hue=0.02 * s,
            seed=self.seed,
            ignore_index=self.ignore_index,
        )

    def training_data(self, dataset, augment, batch_size, outputs=1):
        """The training batches of a trial: augmented, shuffled, batched (whole batches only).

        With ``outputs`` > 1 (auxiliary heads) each output gets the same labels.

        Example:
            >>> batches = hypermodel.training_data(train, augment=0.5, batch_size=8)  # doctest: +SKIP
        """
        dataset = _unbatched(dataset, "x")
        dataset = self._augment(augment).map(dataset, deterministic=True)
        dataset = dataset.shuffle(256, seed=self.seed)
        dataset = dataset.batch(int(batch_size), drop_remainder=True)
        return _labels_per_output(dataset, outputs).prefetch(tf.data.AUTOTUNE)

    def validation_data(self, dataset, outputs=1):
        """Validation batches: kept as they are if batched, else 8 per batch (1 if sizes vary).

        With ``outputs`` > 1 each output gets the same labels.

        Example:
            >>> batches = hypermodel.validation_data(val)  # doctest: +SKIP
        """
        if dataset is None or not isinstance(dataset, tf.data.Dataset):
            return dataset
        image_spec = dataset.element_spec[0]
        if image_spec.shape.rank != 4:
            dataset = dataset.batch(8 if image_spec.shape[:2].is_fully_defined() else 1)
        return _labels_per_output(dataset, outputs).prefetch(tf.data.AUTOTUNE)

    def fit(self, hp, model, x, validation_data=None, epochs=1, callbacks=None, **kwargs):
        """Trains one trial: batches and augments ``x`` from ``hp``, recompiles for its steps.

        Example:
            >>> history = hypermodel.fit(hp, model, train, validation_data=val)  # doctest: +SKIP
        """
        values = self.space.sample(hp)
        outputs = len(model.outputs)
        train = self.training_data(x, values["augment"], values["batch_size"], outputs)
        steps = int(train.cardinality())
        if steps == 0:
            raise ValueError(
                f"the training data holds fewer examples than one batch of "
                f"{values['batch_size']}. Received: batch_size={values['batch_size']}"
            )
        steps = steps if steps > 0 else 1000
        self._compile(model, values, total_steps=max(1, steps * int(epochs)))
        callbacks = list(callbacks or [])
        if len(model.outputs) > 1:
            callbacks.insert(0, _MainOutputMetrics(model.output_names[0]))
        return model.fit(
            train,
            validation_data=self.validation_data(validation_data, outputs),
            epochs=epochs,
            callbacks=callbacks,
            shuffle=False,  # training_data shuffles, with the search's seed
            **kwargs,
        )


def _labels_per_output(dataset, outputs):
    if outputs == 1:
        return dataset
    return dataset.map(lambda images, labels: (images, (labels,) * outputs))


def _unbatched(dataset, argument):
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"{argument} must be a tf.data.Dataset of (image, label) examples. "
            f"Received: {argument}={dataset!r}"
        )
    rank = dataset.element_spec[0].shape.rank
    return dataset.unbatch() if rank == 4 else dataset


# --- the search ----------------------------------------------------------------------------


@dataclasses.dataclass
class SearchResult:
    """What :func:`search` returns.

    Attributes:
        best_score: the best trial's ``val_mean_iou``.
        best_model_path: ``DIR/best.keras``, the best trial's model at its best epoch.
        best_hyperparameters: that trial's values (``{name: value}``).
        rows: the results table, best first (one dict per trial).
        columns: the table's column names.
        csv_path: ``DIR/results.csv``.
        tuner: the keras-tuner tuner (``tuner.oracle.trials`` holds every trial).

    Example:
        >>> result = search(train, val, 6, (64, 64, 3), "runs/tune")  # doctest: +SKIP
        >>> print(format_table(result.rows, result.columns))  # doctest: +SKIP
    """

    best_score: float
    best_model_path: str
    best_hyperparameters: dict
    rows: list
    columns: list
    csv_path: str
    tuner: object = dataclasses.field(repr=False, default=None)


def _progress_tuner(tuner_class):
    """``tuner_class`` printing one line per finished trial through ``self.progress``."""

    class ProgressTuner(tuner_class):
        progress = print
        total = None

        def on_trial_begin(self, trial):
            self._trial_started = time.time()
            super().on_trial_begin(trial)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            done = len(self.oracle.trials)
            elapsed = time.time() - getattr(self, "_trial_started", time.time())
            self.progress(_trial_line(trial, done, self.total, elapsed, self._tunable))

    ProgressTuner.__name__ = f"Progress{tuner_class.__name__}"
    return ProgressTuner


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _trial_line(trial, done, total, elapsed, names):
    values = trial.hyperparameters.values
    shown = " ".join(f"{n}={_format_value(values[n])}" for n in names if n in values)
    epochs = values.get("tuner/epochs")
    epochs = f" epochs={epochs}" if epochs is not None else ""
    count = f"{done}/{total}" if total else str(done)
    status = str(trial.status).split(".")[-1]
    if trial.score is not None and status == "COMPLETED":
        outcome = f"{OBJECTIVE}={trial.score:.4f}"
    else:
        message = (trial.message or "").strip().splitlines()
        outcome = f"{status}: {message[-1] if message else 'no score'}"
    return f"trial {count} ({trial.trial_id}, {elapsed:.0f} s){epochs}: {outcome} | {shown}"


def _make_tuner(kind, hypermodel, output_dir, max_trials, epochs, factor, seed, overwrite):
    if kind not in TUNERS:
        raise ValueError(f"tuner must be one of {', '.join(TUNERS)}. Received: tuner={kind!r}")
    common = {
        "objective": objective(),
        "seed": seed,
        "directory": output_dir,
        "project_name": "trials",
        "overwrite": overwrite,
    }
    if kind == "random":
        tuner = _progress_tuner(kt.RandomSearch)(hypermodel, max_trials=max_trials, **common)
    elif kind == "bayesian":
        tuner = _progress_tuner(kt.BayesianOptimization)(
            hypermodel,
            max_trials=max_trials,
            num_initial_points=min(max_trials, 2),
            **common,
        )
    else:
        tuner = _progress_tuner(kt.Hyperband)(
            hypermodel, max_epochs=epochs, factor=factor, **common
        )
        # Hyperband sizes its brackets from max_epochs; the trial cap is the oracle's.
        tuner.oracle.max_trials = max_trials
    return tuner


def _table(tuner, names):
    rows = []
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        status = str(trial.status).split(".")[-1]
        row = {
            "trial": trial.trial_id,
            "status": status,
            OBJECTIVE: None if trial.score is None else float(trial.score),
            "best_epoch": trial.best_step if trial.score is not None else None,
        }
        if "tuner/epochs" in values:
            row["epochs"] = values["tuner/epochs"]
        for name in names:
            row[name] = values.get(name)
        rows.append(row)
    rows.sort(key=lambda r: (r[OBJECTIVE] is None, -(r[OBJECTIVE] or 0.0), r["trial"]))
    columns = ["trial", "status", OBJECTIVE, "best_epoch"]
    if any("epochs" in r for r in rows):
        columns.append("epochs")
    return rows, columns + list(names)


def format_table(rows, columns):
    """The results table as aligned text (blank where a value does not apply).

    Example:
        >>> print(format_table([{"trial": "0", "val_mean_iou": 0.5}], ["trial", "val_mean_iou"]))
        trial  val_mean_iou
        0      0.5
    """
    cells = [[("" if r.get(c) is None else _format_value(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _write_csv(path, rows, columns):
    with fileio.atomic_open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})


def _failure(tuner):
    """The last line of the last failed trial's traceback (keras-tuner keeps it as a message)."""
    for trial in reversed(list(tuner.oracle.trials.values())):
        lines = (trial.message or "").strip().splitlines()
        if lines:
            return lines[-1]
    return "no trial reported a score"


def _uncompiled_copy(hypermodel, trial, trained):
    """The trained model rebuilt without its compile state (the checkpoint's optimizer slots
    do not match a freshly built optimizer, and a best model is for inference or new training)."""
    values = hypermodel.space.sample(trial.hyperparameters)
    with use_precision(hypermodel.precision):
        model = models.create(
            values["model"],
            num_classes=hypermodel.num_classes,
            input_shape=hypermodel.input_shape,
            **values["model_options"],
        )
    model.set_weights(trained.get_weights())
    return model


def search(
    train,
    validation,
    num_classes,
    input_shape,
    output_dir,
    *,
    space=None,
    tuner="hyperband",
    max_trials=10,
    epochs=1,
    hyperband_factor=3,
    crop_size=None,
    precision="float32",
    seed=0,
    overwrite=True,
    progress=print,
):
    """Runs a keras-tuner search and saves the best model as ``output_dir/best.keras``.

    The space is checked (and its models build-checked) before the first trial. Each finished
    trial prints one line through ``progress``; at the end the results table (best first) is
    printed and written to ``output_dir/results.csv``, the best trial's model (its weights at
    its best epoch) to ``output_dir/best.keras`` (atomically), its values to
    ``best_hyperparameters.json`` and the space to ``space.json``. keras-tuner's own files
    (trial checkpoints) are under ``output_dir/trials``.

    Args:
        train: dataset of ``(image, label)`` training examples (unbatched; see
            :meth:`SegmentationHyperModel.fit`).
        validation: dataset of validation examples or batches.
        num_classes, input_shape, crop_size, precision, seed: as
            :class:`SegmentationHyperModel`.
        output_dir: the folder for the results.
        space: a :class:`SearchSpace`, a dict, a JSON file path or None (the default space).
        tuner: ``"random"``, ``"hyperband"`` or ``"bayesian"``.
        max_trials: the number of trials (for Hyperband, a cap on its brackets' trials).
        epochs: epochs per trial (Hyperband: the most epochs a trial gets, ``max_epochs``).
        hyperband_factor: Hyperband's reduction factor.
        overwrite: start afresh (False resumes a search in the same folder).
        progress: where the lines go (``print``; ``None`` for silence).

    Returns:
        A :class:`SearchResult`.

    Example:
        >>> result = search(train, val, 6, (64, 64, 3), "runs/tune", tuner="random",
        ...                 max_trials=3)  # doctest: +SKIP
        >>> result.best_score  # doctest: +SKIP
        0.48...
    """
    if isinstance(space, (str, os.PathLike)):
        space = SearchSpace.from_json(os.fspath(space))
    for argument, value in (("max_trials", max_trials), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(
                f"{argument} must be a positive integer. Received: {argument}={value!r}"
            )
    if isinstance(hyperband_factor, bool) or not isinstance(hyperband_factor, numbers.Integral):
        raise ValueError(
            f"hyperband_factor must be an integer >= 2. Received: "
            f"hyperband_factor={hyperband_factor!r}"
        )
    if hyperband_factor < 2:
        raise ValueError(
            f"hyperband_factor must be an integer >= 2. Received: "
            f"hyperband_factor={hyperband_factor!r}"
        )
    if tuner not in TUNERS:
        raise ValueError(f"tuner must be one of {', '.join(TUNERS)}. Received: tuner={tuner!r}")
    try:
        import tensorboard  # noqa: F401 -- keras-tuner imports it in every trial
    except ImportError as error:
        raise ImportError(
            "keras-tuner needs the tensorboard package (without it every trial fails): "
            "pip install tensorboard"
        ) from error
    say = progress or (lambda *_: None)
    hypermodel = SegmentationHyperModel(
        num_classes,
        input_shape,
        space=space,
        crop_size=crop_size,
        precision=precision,
        seed=seed,
    )
    os.makedirs(output_dir, exist_ok=True)
    hypermodel.space.to_json(os.path.join(output_dir, "space.json"))
    names = hypermodel.space.tunable_names()
    runner = _make_tuner(
        tuner, hypermodel, output_dir, max_trials, epochs, hyperband_factor, seed, overwrite
    )
    runner.progress = say
    runner.total = max_trials
    runner._tunable = names
    say(
        f"searching {max_trials} trials ({tuner}, {epochs} epoch{'s' if epochs > 1 else ''}"
        f"{' at most' if tuner == 'hyperband' else ''} each) over: {', '.join(names) or 'nothing'}"
    )
    # keras-tuner clears the Keras session before each trial, which resets the global dtype
    # policy too: put the caller's back afterwards.
    policy = keras.config.dtype_policy()
    try:
        runner.search(train, validation_data=validation, epochs=epochs, verbose=0)
    except RuntimeError as error:
        # keras-tuner stops after consecutive failed trials; name the trials' own error.
        raise ValueError(
            f"the search stopped: {error} The last trial: {_failure(runner)}"
        ) from error
    finally:
        keras.config.set_dtype_policy(policy)

    rows, columns = _table(runner, names)
    csv_path = os.path.join(output_dir, "results.csv")
    _write_csv(csv_path, rows, columns)
    say(format_table(rows, columns))
    if not any(r[OBJECTIVE] is not None for r in rows):
        raise ValueError(f"no trial completed. The last trial: {_failure(runner)}")
    best_trial = runner.oracle.get_best_trials(1)[0]
    with warnings.catch_warnings():
        # the checkpoint holds the trial's optimizer slots, the rebuilt model a fresh optimizer
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        trained = runner.load_model(best_trial)
    best_model = _uncompiled_copy(hypermodel, best_trial, trained)
    keras.config.set_dtype_policy(policy)  # load_model clears the session as a trial does
    best_path = os.path.join(output_dir, "best.keras")
    fileio.save_model(best_model, best_path)
    best_values = dict(best_trial.hyperparameters.values)
    with fileio.atomic_open(os.path.join(output_dir, "best_hyperparameters.json"), "w") as file:
        json.dump(best_values, file, indent=2)
    say(
        f"best {OBJECTIVE}: {best_trial.score:.4f} (trial {best_trial.trial_id}); "
        f"saved {best_path}; table in {csv_path}"
    )
    return SearchResult(
        best_score=float(best_trial.score),
        best_model_path=best_path,
        best_hyperparameters=best_values,
        rows=rows,
        columns=columns,
        csv_path=csv_path,
        tuner=runner,
    )


__all__ = [
    "DEFAULT_SPACE",
    "OBJECTIVE",
    "SearchResult",
    "SearchSpace",
    "SegmentationHyperModel",
    "choice",
    "fixed",
    "float_range",
    "format_table",
    "int_range",
    "objective",
    "search",
]

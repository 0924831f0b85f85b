"""kseg: semantic segmentation for Keras 3 on TensorFlow.

Example:
    >>> import kseg
    >>> model = kseg.models.create("unet", num_classes=6, input_shape=(128, 128, 3))
    >>> ds = kseg.data.synthetic(num_images=8, image_size=(128, 128), seed=0)

Importing kseg changes no global state (backend, dtype policy, seeds) and prints nothing.
Submodules import on first use, so a saved model is loaded with :func:`load_model` (it
registers kseg's layers, models, losses and metrics with Keras first). The compiled ops
(`kseg_ops`) load lazily, only when a layer that needs them runs.
"""

__version__ = "0.1.0"

import importlib

_SUBMODULES = (
    "backbones",
    "bench",
    "classic",
    "compress",
    "constants",
    "data",
    "demo",
    "engine",
    "export",
    "export_report",
    "fileio",
    "instance",
    "layers",
    "loss_weights",
    "losses",
    "metrics",
    "models",
    "precision",
    "panoptic",
    "report",
    "serving",
    "testing",
    "training",
    "tune",
    "viz",
)


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a ``.keras`` file that holds kseg models, layers, losses or metrics.

    ``keras.saving.load_model`` alone cannot find kseg's classes until the modules that define
    them have been imported; this function imports them, then calls it with the same arguments.

    Example:
        >>> import kseg
        >>> model = kseg.models.UNet(num_classes=3, input_shape=(32, 32, 3), base_filters=4)
        >>> model.save("/tmp/unet.keras")
        >>> kseg.load_model("/tmp/unet.keras").count_params() == model.count_params()
        True
    """
    import keras

    for module in ("engine", "layers", "losses", "metrics", "models", "panoptic"):
        importlib.import_module(f"kseg.{module}")  # registers the serializable classes
    return keras.saving.load_model(
        filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
    )


def __getattr__(name):
    # Submodules import on first use so that `import kseg` stays cheap.
    if name in _SUBMODULES:
        module = importlib.import_module(f"kseg.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'kseg' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))

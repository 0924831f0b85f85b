"""kseg: semantic segmentation for Keras 3 on TensorFlow.

Example:
    >>> import kseg
    >>> model = kseg.models.create("unet", num_classes=6, input_shape=(128, 128, 3))
    >>> ds = kseg.data.synthetic(num_images=8, image_size=(128, 128), seed=0)

Importing kseg changes no global state (backend, dtype policy, seeds) and prints nothing.
The compiled ops (`kseg_ops`) load lazily, only when a layer that needs them runs.
"""

__version__ = "0.1.0"

import importlib

_SUBMODULES = (
    "backbones",
    "bench",
    "data",
    "demo",
    "engine",
    "export",
    "layers",
    "losses",
    "metrics",
    "models",
    "testing",
    "viz",
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

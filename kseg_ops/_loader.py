"""Finds and loads the compiled op library ``_kseg_ops.so`` once per process."""

import os
import threading

LIBRARY_NAME = "_kseg_ops.so"
VERSION_SUFFIX = ".tf_version"
# Overrides where the library is looked for (for example a Bazel output).
LIBRARY_ENV = "KSEG_OPS_LIBRARY"

BUILD_HINT = (
    "Build it against the installed TensorFlow with `pip install --no-build-isolation -e .` "
    "from the kseg source tree, or with `bazel build //kseg_ops:_kseg_ops.so` and "
    f"{LIBRARY_ENV}=<path to bazel-bin/kseg_ops/_kseg_ops.so>."
)

_lock = threading.Lock()
_library = None


def library_path():
    """Where the op library is expected: ``$KSEG_OPS_LIBRARY`` or next to this package.

    Example:
        >>> import kseg_ops
        >>> kseg_ops.library_path().endswith("_kseg_ops.so")
        True
    """
    return os.environ.get(LIBRARY_ENV) or os.path.join(os.path.dirname(__file__), LIBRARY_NAME)


def _version_file(path):
    return os.path.splitext(path)[0] + VERSION_SUFFIX


def _same_minor(a, b):
    return a.split(".")[:2] == b.split(".")[:2]


def _load():
    import tensorflow as tf

    path = library_path()
    if not os.path.isfile(path):
        raise ImportError(f"the kseg_ops op library was not found at {path!r}. {BUILD_HINT}")
    version_path = _version_file(path)
    try:
        with open(version_path, encoding="utf-8") as f:
            built_for = f.read().strip()
    except OSError:
        raise ImportError(
            f"{path!r} has no {os.path.basename(version_path)!r} beside it saying which "
            f"TensorFlow it was built for, so it cannot be checked against TensorFlow "
            f"{tf.__version__}. Rebuild it. {BUILD_HINT}"
        ) from None
    if not _same_minor(built_for, tf.__version__):
        raise ImportError(
            f"{path!r} was built for TensorFlow {built_for}, but TensorFlow {tf.__version__} "
            f"is installed (the C++ ABI changes between minor versions). Rebuild it. {BUILD_HINT}"
        )
    try:
        return tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:
        raise ImportError(f"loading {path!r} failed: {e}. Rebuild it. {BUILD_HINT}") from e


def load_ops_library():
    """Loads the op library once (thread-safe) and returns its module of op wrappers.

    Raises:
        ImportError: the library is missing, was built for another TensorFlow, or does not
            load; the message says how to build it.

    Example:
        >>> import kseg_ops
        >>> ops = kseg_ops.load_ops_library()
        >>> hasattr(ops, "kseg_dense_crf")
        True
    """
    global _library
    if _library is None:
        with _lock:
            if _library is None:
                _library = _load()
    return _library

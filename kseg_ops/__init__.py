"""kseg_ops: compiled TensorFlow ops for kseg (permutohedral lattice filter, dense CRF).

The op library ``_kseg_ops.so`` loads on the first call of an op, so ``import kseg_ops`` works
without it; when it is missing the error says how to build it.

Example:
    >>> import numpy as np, kseg_ops
    >>> probs = np.full((1, 8, 8, 2), 0.5, np.float32)
    >>> images = np.zeros((1, 8, 8, 3), np.uint8)
    >>> kseg_ops.dense_crf(probs, images, iterations=2).shape
    TensorShape([1, 8, 8, 2])
"""

from kseg_ops._loader import library_path, load_ops_library
from kseg_ops.cached_memory import cached_memory_bytes, release_cached_memory
from kseg_ops.dense_crf import dense_crf
from kseg_ops.fft_conv import fft_conv2d
from kseg_ops.lattice_filter import lattice_filter

__all__ = [
    "cached_memory_bytes",
    "dense_crf",
    "fft_conv2d",
    "lattice_filter",
    "library_path",
    "load_ops_library",
    "release_cached_memory",
]

"""The host memory the kseg_ops kernels keep between calls, and how to free it."""

from kseg_ops._loader import load_ops_library


def cached_memory_bytes():
    """Bytes of host memory the kernels keep between calls (the dense CRF's scratch).

    At most ``$KSEG_OPS_CACHE_BYTES`` (read after every call; ``0`` turns caching off) or
    256 MiB: a call whose scratch does not fit frees it when it ends.

    Example:
        >>> import kseg_ops
        >>> kseg_ops.cached_memory_bytes() <= 256 << 20
        True
    """
    return int(load_ops_library().kseg_cached_memory_bytes())


def release_cached_memory():
    """Frees the host memory the kernels keep between calls; returns the bytes freed.

    The next dense CRF call allocates its scratch again (a little slower).

    Example:
        >>> import kseg_ops
        >>> _ = kseg_ops.release_cached_memory()
        >>> kseg_ops.cached_memory_bytes()
        0
    """
    return int(load_ops_library().kseg_release_cached_memory())

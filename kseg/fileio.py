"""Atomic writes: a kill in the middle of a save leaves the old file or the new one, never a torn one.

Every file kseg writes for a user to keep (``.keras`` models, checkpoints, exports, histories,
datasets) is written under a temporary name in the same folder and then moved over the final
name with ``os.replace``, which is atomic on POSIX and Windows within one file system. A folder
(a SavedModel) is written beside its final path and swapped in with two renames; if the process
dies between them, the next write (or :func:`recover_directory`) restores the old folder.

Example:
    >>> import os, tempfile
    >>> from kseg import fileio
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with fileio.atomic_open(path, "w") as file:
    ...     _ = file.write("complete")
    >>> open(path).read()
    'complete'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time

# Seconds to sleep inside each write, after the temporary file exists and before it replaces the
# final one: lets tests kill a process in the middle of a save deterministically.
SLOW_WRITE_ENV = "KSEG_TEST_SLOW_WRITE"


def _pause_for_tests():
    delay = os.environ.get(SLOW_WRITE_ENV)
    if delay:
        time.sleep(float(delay))


def _temporary_path(path, suffix=""):
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(handle)
    return temporary


def _fsync_folder(folder):
    # Makes the rename itself durable; not every platform lets a folder be opened.
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside ``path``; on success it replaces ``path`` atomically.

    For writers that take a file name (``model.save``, ``h5py``). ``suffix`` keeps an extension a
    writer insists on (Keras wants ``.keras``). On an exception the temporary file is removed and
    ``path`` is left as it was.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> with atomic_path(target, suffix=".keras") as temporary:
        ...     open(temporary, "w").close()
        >>> os.path.exists(target)
        True
    """
    temporary = _temporary_path(path, suffix)
    try:
        yield temporary
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        _pause_for_tests()
        os.replace(temporary, path)
        _fsync_folder(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def atomic_open(path, mode="wb", **kwargs):
    """Opens a temporary file beside ``path`` for writing; on success it replaces ``path``.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "history.json")
        >>> with atomic_open(target, "w") as file:
        ...     _ = file.write("{}")
        >>> open(target).read()
        '{}'
    """
    # Appending would need the old content copied first: only whole new files are supported.
    if "w" not in mode or any(flag in mode for flag in "ax+"):
        raise ValueError(f"atomic_open writes whole new files ('w', 'wb'). Received: mode={mode!r}")
    with atomic_path(path) as temporary:
        with open(temporary, mode, **kwargs) as file:
            yield file
            file.flush()


def write_bytes(path, data):
    """Writes ``data`` to ``path`` atomically.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "model.tflite")
        >>> write_bytes(target, b"TFL3")
        >>> open(target, "rb").read()
        b'TFL3'
    """
    with atomic_open(path, "wb") as file:
        file.write(data)


def save_model(model, path, **kwargs):
    """``model.save(path)`` written atomically (Keras writes ``.keras`` files in place).

    Example:
        >>> import keras, os, tempfile
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> save_model(model, os.path.join(tempfile.mkdtemp(), "m.keras"))
    """
    suffix = os.path.splitext(path)[1]
    with atomic_path(path, suffix=suffix) as temporary:
        model.save(temporary, **kwargs)


def keep_copy(path, copy_path):
    """Makes ``copy_path`` a copy of ``path`` atomically (a hard link where the file system allows).

    ``path`` itself is not touched, so a reader always finds it complete.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> write_bytes(os.path.join(folder, "best.keras"), b"model")
        >>> keep_copy(os.path.join(folder, "best.keras"), os.path.join(folder, "best.previous.keras"))
        >>> open(os.path.join(folder, "best.previous.keras"), "rb").read()
        b'model'
    """
    with atomic_path(copy_path) as temporary:
        os.remove(temporary)
        try:
            os.link(path, temporary)
        except OSError:
            shutil.copyfile(path, temporary)


def _backup_path(path):
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.previous")


def recover_directory(path):
    """Restores the old folder if a process died between the two renames of an atomic swap.

    Example:
        >>> import tempfile
        >>> recover_directory(tempfile.mkdtemp() + "/never_written")   # nothing to do
    """
    backup = _backup_path(path)
    if os.path.isdir(backup):
        if os.path.exists(path):
            shutil.rmtree(backup)
        else:
            os.replace(backup, path)


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a fresh folder beside ``path``; on success it takes the place of ``path``.

    An earlier folder at ``path`` stays complete until the new one is complete; a writer that
    raises leaves ``path`` untouched and removes its partial folder.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "export")
        >>> with atomic_directory(target) as folder:
        ...     open(os.path.join(folder, "saved_model.pb"), "w").close()
        >>> os.listdir(target)
        ['saved_model.pb']
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    recover_directory(path)
    temporary = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    try:
        yield temporary
        _pause_for_tests()
        backup = _backup_path(path)
        if os.path.exists(path):
            os.replace(path, backup)
        os.replace(temporary, path)
        _fsync_folder(parent)
        if os.path.exists(backup):
            shutil.rmtree(backup)
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary)

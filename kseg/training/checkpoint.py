"""Training checkpoints that survive a kill: every file written atomically, the state file last.

A checkpoint is two files in one folder:

- ``ckpt-<step>-<token>.npz``: the model's variables (weights, batch-norm statistics, the
  layers' random-seed states), the optimizer's variables (its step counter, which drives the
  learning-rate schedule, and its moments) and the global random generators' states. Zip
  CRC-32s make a damaged file fail to load instead of loading wrong values.
- ``ckpt-<step>.json``: the loop's state (step, epoch, the epoch's running loss and confusion
  matrix, the history, the best score), the name of its ``.npz`` and a description of the model
  it belongs to. It is written after the ``.npz``, so a checkpoint is *complete* exactly when
  its state file exists; a kill at any moment leaves the previous complete checkpoint.

Both are written through :mod:`kseg.fileio` (temporary file, ``os.replace``), so no file at a
final name is ever half-written. The ``.npz`` name carries a random token, so rewriting a step
(the end-of-epoch checkpoint after a step checkpoint) never replaces a file that a complete state
file names.

Example:
    >>> import tempfile, numpy as np
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> _ = store.save(5, {"m0": np.ones(2)}, {"step": 5})
    >>> store.latest()["step"], store.load_arrays(store.latest())["m0"].tolist()
    (5, [1.0, 1.0])
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
import zipfile

import numpy as np

from kseg import fileio

FORMAT = "kseg-training-checkpoint/1"
_STATE = re.compile(r"^ckpt-(\d{9})\.json$")
_ARRAYS = re.compile(r"^ckpt-(\d{9})-[0-9a-f]{8}\.npz$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (corrupt, or written for another model).

    Example:
        >>> raise CheckpointError("checkpoint 'runs/ckpt-000000010.json' is corrupt")  # doctest: +SKIP
    """


class CheckpointStore:
    """The checkpoints of one training run in ``directory``; keeps the newest ``keep``.

    Example:
        >>> import tempfile, numpy as np
        >>> store = CheckpointStore(tempfile.mkdtemp(), keep=1)
        >>> _ = store.save(1, {"a": np.zeros(1)}, {})
        >>> _ = store.save(2, {"a": np.ones(1)}, {})
        >>> [state["step"] for state in store.states()]
        [2]
    """

    def __init__(self, directory, keep=2):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be a positive integer. Received: keep={keep!r}")
        self.directory = os.fspath(directory)
        self.keep = keep

    def _state_files(self):
        if not os.path.isdir(self.directory):
            return []
        names = [n for n in os.listdir(self.directory) if _STATE.match(n)]
        return sorted(names, key=lambda n: int(_STATE.match(n).group(1)))

    def path(self, name):
        """The full path of a file of this store.

        Example:
            >>> CheckpointStore("runs/ckpt").path("ckpt-000000001.json")
            'runs/ckpt/ckpt-000000001.json'
        """
        return os.path.join(self.directory, name)

    def read_state(self, name):
        """Reads one state file; raises :class:`CheckpointError` naming it when it is corrupt.

        Example:
            >>> store.read_state("ckpt-000000010.json")["step"]  # doctest: +SKIP
            10
        """
        path = self.path(name)
        try:
            with open(path, encoding="utf-8") as file:
                state = json.load(file)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(
                f"checkpoint state {path!r} is unreadable ({type(error).__name__}: {error}); "
                "it was not written by kseg's atomic writer or was damaged afterwards"
            ) from error
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(
                f"{path!r} is not a kseg training checkpoint (format {FORMAT!r}). Received: "
                f"format={state.get('format') if isinstance(state, dict) else None!r}"
            )
        state["_path"] = path
        return state

    def states(self):
        """Every complete checkpoint's state, oldest first (a corrupt one raises).

        Example:
            >>> [s["step"] for s in store.states()]  # doctest: +SKIP
            [40, 50]
        """
        return [self.read_state(name) for name in self._state_files()]

    def latest(self):
        """The newest complete checkpoint's state, or None; a corrupt newest one raises.

        Example:
            >>> store.latest() is None  # an empty folder  # doctest: +SKIP
            True
        """
        names = self._state_files()
        return self.read_state(names[-1]) if names else None

    def load_arrays(self, state):
        """The arrays of a checkpoint; raises :class:`CheckpointError` naming a corrupt file.

        Example:
            >>> arrays = store.load_arrays(store.latest())  # doctest: +SKIP
        """
        path = self.path(state["arrays"])
        try:
            with np.load(path, allow_pickle=False) as archive:
                # Reading every member checks its CRC-32: damaged bytes raise here.
                return {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise CheckpointError(
                f"checkpoint weights {path!r} (named by {state['_path']!r}) are unreadable "
                f"({type(error).__name__}: {error})"
            ) from error

    def save(self, step, arrays, state):
        """Writes the arrays, then the state file; returns the state file's path.

        Example:
            >>> store.save(10, {"m0": weights}, {"epoch": 0})  # doctest: +SKIP
            'runs/ckpt/ckpt-000000010.json'
        """
        os.makedirs(self.directory, exist_ok=True)
        arrays_name = f"ckpt-{step:09d}-{uuid.uuid4().hex[:8]}.npz"
        with fileio.atomic_open(self.path(arrays_name), "wb") as file:
            np.savez(file, **arrays)
        state = {k: v for k, v in state.items() if not k.startswith("_")}
        state.update(format=FORMAT, step=int(step), arrays=arrays_name)
        state_path = self.path(f"ckpt-{step:09d}.json")
        with fileio.atomic_open(state_path, "w", encoding="utf-8") as file:
            json.dump(state, file, indent=1)
        self._prune()
        return state_path

    def _prune(self):
        names = self._state_files()
        for name in names[: -self.keep]:
            # The state file goes first: a kill in between leaves an unreferenced .npz, never a
            # state file naming a missing one.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path(name))
        self.remove_leftovers()

    def remove_leftovers(self):
        """Removes temporary files of killed writes and weights no state file names.

        Example:
            >>> store.remove_leftovers()  # doctest: +SKIP
        """
        if not os.path.isdir(self.directory):
            return
        referenced = set()
        for name in self._state_files():
            with contextlib.suppress(CheckpointError):
                referenced.add(self.read_state(name)["arrays"])
        for name in os.listdir(self.directory):
            leftover_temporary = name.startswith(".ckpt-") and ".tmp" in name
            orphan = _ARRAYS.match(name) and name not in referenced
            if leftover_temporary or orphan:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path(name))

    def clear(self):
        """Removes every checkpoint of the store (a fresh start).

        Example:
            >>> store.clear()  # doctest: +SKIP
        """
        for name in self._state_files():
            os.remove(self.path(name))
        self.remove_leftovers()

"""Result files: atomic writing (a temporary file next to the target, then a rename) and checked
opening for reading (one clear ``DataError`` for a missing or unreadable file)."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_path", "open_hdf5"]


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yield a temporary path in the target's directory; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so a reader
    never sees a half-written file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def open_hdf5(path):
    """``(path, h5py.File)`` opened for reading; ``DataError`` naming the file when it is missing
    or not HDF5 (the caller checks the contents)."""
    import h5py

    from adptycho.errors import DataError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path}")
    try:
        return path, h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot read {path} as HDF5: {exc}") from None

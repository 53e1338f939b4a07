"""Patterns read on demand from an HDF5/CXI file, for scans larger than memory.

``HDF5Patterns`` behaves like the (N, H, W) float32 ``patterns`` array of a ``ScanData`` but keeps
the data on disk: batches are read when the fit asks for them (``read``), statistics that need
every pattern (mean pattern, counts per pattern) are computed in one chunked pass and cached.
``load_cxi(path, stream=True)`` returns a ``ScanData`` holding one.

Every block read is validated (finite, non-negative unless allowed), so bad data are reported
with the index of the pattern as soon as they are met; the statistics pass meets them all before
a fit starts.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator, Optional, Tuple

import h5py
import numpy as np

from adptycho.errors import DataError

__all__ = ["HDF5Patterns", "DEFAULT_CHUNK_PATTERNS"]

DEFAULT_CHUNK_PATTERNS = 256


class HDF5Patterns:
    """(N, H, W) float32 diffraction patterns stored in an HDF5 dataset, read on demand.

    Args:
        path: the HDF5 (CXI) file.
        dataset: path of the (N_file, H, W) dataset inside the file.
        indices: optional (N,) int rows of the dataset that make up this scan (a subset view);
            default all rows.
        allow_negative: accept negative counts (dark-subtracted data).
        chunk_patterns: patterns per block in chunked passes (memory ~ chunk * H * W * 4 bytes).

    ``np.asarray(patterns)`` loads everything (for engines that need the whole array); the fit
    itself only calls ``read``.
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, path, dataset: str, indices=None, allow_negative: bool = False,
                 chunk_patterns: int = DEFAULT_CHUNK_PATTERNS):
        self.path = os.path.abspath(os.fspath(path))
        self.dataset = dataset
        self.allow_negative = bool(allow_negative)
        self.chunk_patterns = int(chunk_patterns)
        try:
            with h5py.File(self.path, "r") as f:
                if dataset not in f:
                    raise DataError(f"{self.path!r} has no dataset {dataset}")
                ds = f[dataset]
                shape = tuple(int(s) for s in ds.shape)
                kind = ds.dtype
        except OSError as exc:
            raise DataError(f"cannot read {self.path} as HDF5/CXI: {exc}") from None
        if len(shape) != 3:
            raise DataError(f"{dataset} must be (N, H, W), got shape {shape}")
        if not (np.issubdtype(kind, np.number) and not np.issubdtype(kind, np.complexfloating)):
            raise DataError(f"{dataset} must hold real numbers, got dtype {kind}")
        self._file_rows = shape[0]
        if indices is None:
            self._rows = np.arange(shape[0], dtype=np.int64)
        else:
            rows = np.asarray(indices, np.int64).reshape(-1)
            if rows.size and (rows.min() < 0 or rows.max() >= shape[0]):
                raise DataError(f"pattern indices out of range 0..{shape[0] - 1}")
            self._rows = rows
        self.shape = (int(self._rows.size),) + shape[1:]
        self._lock = threading.Lock()
        self._file = None
        self._statistics = {}

    # -- array-like -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"HDF5Patterns({self.path!r}, {self.dataset!r}, shape={self.shape})"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __getitem__(self, key):
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
            return self[first][(slice(None),) + rest] if np.ndim(first) or isinstance(first, slice) \
                else self[first][rest]
        if isinstance(key, (int, np.integer)):
            return self.read([int(key)])[0]
        if isinstance(key, slice):
            return self.read(np.arange(self.shape[0])[key])
        return self.read(np.asarray(key))

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.float32)
        for start, block in self.iter_chunks():
            out[start:start + len(block)] = block
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self):  # picklable (e.g. for tf.data worker processes): no open handle
        state = dict(self.__dict__)
        state["_file"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def subset(self, indices) -> "HDF5Patterns":
        """A view with only the patterns ``indices`` (of this view)."""
        view = HDF5Patterns.__new__(HDF5Patterns)
        view.__dict__.update(self.__dict__)
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        view._rows = self._rows[indices.astype(np.int64)]
        view.shape = (int(view._rows.size),) + self.shape[1:]
        view._lock = threading.Lock()
        view._file = None
        view._statistics = {}
        return view

    # -- reading ----------------------------------------------------------------------------
    def _dataset(self):
        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"cannot read {self.path}: {exc}") from None
        return self._file[self.dataset]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, indices) -> np.ndarray:
        """(B,) int indices (any order, repeats allowed) -> (B, H, W) float32 patterns.

        Raises:
            DataError: non-finite or (unless allowed) negative counts, naming the pattern.
        """
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size and (indices.min() < -self.shape[0] or indices.max() >= self.shape[0]):
            raise DataError(f"pattern index out of range 0..{self.shape[0] - 1}")
        rows = self._rows[indices]
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        out = np.empty((indices.size,) + self.shape[1:], np.float32)
        with self._lock:
            ds = self._dataset()
            start = 0
            while start < sorted_rows.size:
                # contiguous runs are read as one hyperslab
                stop = start + 1
                while stop < sorted_rows.size and sorted_rows[stop] == sorted_rows[stop - 1] + 1:
                    stop += 1
                block = ds[int(sorted_rows[start]):int(sorted_rows[stop - 1]) + 1]
                out[order[start:stop]] = block
                start = stop
        self._validate(out, indices)
        return out

    def _validate(self, block: np.ndarray, indices: np.ndarray) -> None:
        finite = np.isfinite(block)
        if not finite.all():
            k = int(np.argwhere(~finite)[0][0])
            raise DataError(f"pattern {int(indices[k])} of {self.path} contains non-finite "
                            "values (NaN or inf)")
        if not self.allow_negative and block.size and block.min() < 0:
            k = int(np.argmin(block.reshape(len(block), -1).min(axis=1)))
            raise DataError(f"pattern {int(indices[k])} of {self.path} contains negative counts "
                            f"(minimum {block[k].min():.4g}); pass allow_negative=True for "
                            "dark-subtracted data")

    def iter_chunks(self, chunk_patterns: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield ``(first_index, (b, H, W) float32 block)`` over all patterns in order."""
        chunk = int(chunk_patterns or self.chunk_patterns)
        for start in range(0, self.shape[0], chunk):
            yield start, self.read(np.arange(start, min(start + chunk, self.shape[0])))

    def statistics(self, mask: Optional[np.ndarray] = None) -> dict:
        """One chunked pass (cached): ``mean_pattern`` (H, W) float64 of max(I, 0) and
        ``counts`` (N,) float64 total counts per pattern over the valid pixels of ``mask``.

        Raises:
            DataError: a bad block (see ``read``), or every pattern zero (no signal)."""
        key = None if mask is None else np.asarray(mask, bool).tobytes()
        if key not in self._statistics:
            weight = None if mask is None else np.asarray(mask, np.float32)
            total = np.zeros(self.shape[1:], np.float64)
            counts = np.empty(self.shape[0], np.float64)
            for start, block in self.iter_chunks():
                block = np.maximum(block, 0) if self.allow_negative else block
                if weight is not None:
                    block = block * weight
                total += block.sum(axis=0, dtype=np.float64)
                counts[start:start + len(block)] = block.sum(axis=(1, 2), dtype=np.float64)
            if not (counts > 0).any():
                raise DataError(f"all {self.shape[0]} patterns of {self.path} are zero (no photon "
                                "counted on a valid pixel): nothing to reconstruct")
            self._statistics[key] = {"mean_pattern": total / max(self.shape[0], 1),
                                     "counts": counts}
        return self._statistics[key]

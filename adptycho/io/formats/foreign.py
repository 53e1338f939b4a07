"""Reconstructions of other programs, read only: PtychoShelves / fold_slice ``.mat`` and ptypy
``.ptyr``.

PtychoShelves (and fold_slice; PtyRAD starts from these files) saves ``object``, ``probe``, the
parameter struct ``p`` and the struct ``outputs``:

* ``object``: MATLAB (Y, X) (or (Y, X, layers)) complex;
* ``probe``: MATLAB (H, W, modes) or (H, W, modes, variable modes) complex (the first variable
  mode is read);
* ``p.dx_spec``: object pixel size in metres, read as (dy, dx) (files are square in practice;
  Ptychodus reads element 0 as the width);
* ``outputs.probe_positions``: (N, 2) pixels, columns (x, y), the probe centre measured from the
  object centre (as Ptychodus and PtyRAD read them). The top-left corner is
  (y + Y / 2 - H / 2, x + X / 2 - W / 2); MATLAB's 1-based centre (floor(N / 2) + 1) is N / 2
  0-based for even N, and an odd size may shift this by half a pixel.

MAT files before v7.3 are read with ``scipy.io.loadmat``; v7.3 files are HDF5, read with h5py:
every array is stored transposed (MATLAB is column-major), complex arrays as compound
(``real``, ``imag``) data, structs as groups.

ptypy ``.ptyr`` (HDF5): ``content/obj/<storage>/data`` (layers, Y, X) and
``content/probe/<storage>/data`` (modes, H, W) complex, ``_psize`` (dy, dx) metres and
``_origin`` (y, x) metres (the physical position of pixel (0, 0)). Positions, where the file
has them (``content/positions/<scan>``, (N, 2) (y, x) metres of the probe centres; not every ptypy
version saves them), become corners (pos - origin) / psize - (H / 2, W / 2), as ptypy's views
place them. Without positions the result has none and ``reconstruct --init`` keeps the scan's.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from adptycho.errors import DataError
from adptycho.io.formats.common import make_result
from adptycho.io.results import ReconstructionResult

__all__ = ["read_ptychoshelves", "read_ptypy", "is_ptypy"]


def _complex(value) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.names and {"real", "imag"} <= set(value.dtype.names):
        return value["real"] + 1j * value["imag"]
    return value


def _mat73(path) -> dict:
    """The PtychoShelves fields of a v7.3 (HDF5) MAT file, in MATLAB's axis order."""
    with h5py.File(path, "r") as f:
        for key in ("object", "probe", "p", "outputs"):
            if key not in f:
                raise DataError(f"{path} is not a PtychoShelves reconstruction: no {key!r}")
        obj = _complex(f["object"][()])
        probe = _complex(f["probe"][()])
        if "dx_spec" not in f["p"] or "probe_positions" not in f["outputs"]:
            raise DataError(f"{path}: no p.dx_spec or outputs.probe_positions")
        dx_spec = np.asarray(f["p"]["dx_spec"][()], np.float64).ravel()
        positions = np.asarray(f["outputs"]["probe_positions"][()], np.float64)
    # reverse every axis order (h5py sees MATLAB's arrays transposed)
    return {"object": obj.transpose(tuple(range(obj.ndim))[::-1]),
            "probe": probe.transpose(tuple(range(probe.ndim))[::-1]),
            "dx_spec": dx_spec, "probe_positions": positions.T}


def _mat5(path) -> dict:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, simplify_cells=True)
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise DataError(f"cannot read {path} as a MAT file: {exc}") from None
    for key in ("object", "probe", "p", "outputs"):
        if key not in mat:
            raise DataError(f"{path} is not a PtychoShelves reconstruction: no {key!r}")
    try:
        return {"object": np.asarray(mat["object"]), "probe": np.asarray(mat["probe"]),
                "dx_spec": np.asarray(mat["p"]["dx_spec"], np.float64).ravel(),
                "probe_positions": np.asarray(mat["outputs"]["probe_positions"], np.float64)}
    except (KeyError, TypeError, IndexError) as exc:
        raise DataError(f"{path}: no p.dx_spec or outputs.probe_positions ({exc})") from None


def read_ptychoshelves(path) -> ReconstructionResult:
    """Read a PtychoShelves/fold_slice reconstruction ``.mat`` (v7.3 or older)."""
    path = os.fspath(path)
    fields = _mat73(path) if h5py.is_hdf5(path) else _mat5(path)
    obj, probe = fields["object"], fields["probe"]
    if obj.ndim == 3:  # (Y, X, layers)
        obj = np.moveaxis(obj, -1, 0)
    if probe.ndim == 4:  # (H, W, modes, variable modes): the first variable mode
        probe = probe[..., 0]
    if probe.ndim == 3:  # (H, W, modes) -> (modes, H, W)
        probe = np.moveaxis(probe, -1, 0)
    positions = fields["probe_positions"].reshape(-1, 2)
    dx_spec = fields["dx_spec"]
    pixel = (dx_spec[0], dx_spec[-1]) if dx_spec.size else None
    rows, cols = obj.shape[-2:]
    height, width = probe.shape[-2:]
    corners = np.stack([positions[:, 1] + rows / 2.0 - height / 2.0,
                        positions[:, 0] + cols / 2.0 - width / 2.0], axis=1)
    return make_result(path, obj, probe, corners, pixel, source="ptychoshelves")


def is_ptypy(f) -> bool:
    return "content/obj" in f and "content/probe" in f


def _storage(group, path, what):
    names = sorted(group.keys())
    if not names or "data" not in group[names[0]]:
        raise DataError(f"{path}: no {what} storage under {group.name}")
    return group[names[0]]


def read_ptypy(path) -> ReconstructionResult:
    """Read a ptypy ``.ptyr`` reconstruction (the first object and probe storage)."""
    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        if not is_ptypy(f):
            raise DataError(f"{path} is not a ptypy .ptyr file (no content/obj and content/probe)")
        obj_storage = _storage(f["content/obj"], path, "object")
        probe_storage = _storage(f["content/probe"], path, "probe")
        obj = obj_storage["data"][()]
        probe = probe_storage["data"][()]
        psize = (np.asarray(obj_storage["_psize"][()], np.float64).ravel()
                 if "_psize" in obj_storage else None)
        origin = (np.asarray(obj_storage["_origin"][()], np.float64).ravel()
                  if "_origin" in obj_storage else np.zeros(2))
        corners = None
        if "content/positions" in f and psize is not None:
            group = f["content/positions"]
            names = sorted(group.keys())
            if names:
                item = group[names[0]]
                centres_m = np.asarray(item[()] if isinstance(item, h5py.Dataset)
                                       else item["positions"][()], np.float64).reshape(-1, 2)
                scale = psize if psize.size == 2 else np.repeat(psize, 2)
                corners = (centres_m - origin[:2]) / scale - np.array(probe.shape[-2:]) / 2.0
    pixel = None if psize is None else (psize if psize.size == 2 else np.repeat(psize, 2))
    return make_result(path, obj, probe, corners, pixel, source="ptypy")

"""Reconstruction results and their HDF5 file (a public contract read by other tools).

File layout (all at the root of the HDF5 file):

* ``object``: (Y, X) complex64
* ``probe``: (M, H, W) complex64, photon units
* ``positions_px``: (N, 2) float64 refined top-left corners (y, x) in object pixels
* ``nominal_positions_px``: (N, 2) float64 starting positions on the same grid
* ``loss_history``: (epochs,) float64 training loss per epoch
* ``residual_history``: (epochs,) float64 relative amplitude residual per epoch,
  ``sum (sqrt I - sqrt X)^2 / sum X`` averaged over the epoch's batches
* attributes: ``distance_m`` (near field), ``pixel_size_m``, ``geometry``, ``adptycho_version``,
  ``focus_distance_m`` (refined z1, cone beam), ``settings`` (JSON of every option used), ``object_origin_px`` (offset from scan positions
  to object-grid corners).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import h5py
import numpy as np

from adptycho.errors import DataError
from adptycho.io.atomic import atomic_path, open_hdf5

__all__ = ["ReconstructionResult", "save_reconstruction", "load_reconstruction"]


@dataclasses.dataclass
class ReconstructionResult:
    """What a reconstruction returns.

    Attributes:
        object: (Y, X) complex64.
        probe: (M, H, W) complex64.
        positions_px: (N, 2) float64 refined corners (y, x) on the object grid.
        nominal_positions_px: (N, 2) float64 starting corners on the object grid.
        loss_history: per-epoch training loss.
        residual_history: per-epoch relative amplitude residual.
        distance_m: refined propagation distance (near field) or None.
        focus_distance_m: refined cone-beam focus-to-sample distance z1, or None.
        pixel_size_m: (dy, dx) object pixel size, if known.
        geometry: ``farfield`` or ``nearfield``.
        object_origin_px: (2,) offset from ``ScanData.positions_px`` to object-grid corners.
        settings: every option used (JSON-serialisable).
        extra_histories: other per-epoch logs (e.g. validation loss).
    """

    object: np.ndarray
    probe: np.ndarray
    positions_px: np.ndarray
    nominal_positions_px: np.ndarray
    loss_history: np.ndarray
    residual_history: np.ndarray
    distance_m: Optional[float] = None
    pixel_size_m: Optional[tuple] = None
    geometry: str = "farfield"
    focus_distance_m: Optional[float] = None
    object_origin_px: tuple = (0.0, 0.0)
    settings: dict = dataclasses.field(default_factory=dict)
    extra_histories: dict = dataclasses.field(default_factory=dict)


def save_reconstruction(path, result: ReconstructionResult) -> None:
    """Write ``result`` to HDF5 atomically (temporary file, then rename)."""
    from adptycho import __version__

    with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("object", data=np.asarray(result.object, np.complex64))
        probe = np.asarray(result.probe, np.complex64)
        f.create_dataset("probe", data=probe[None] if probe.ndim == 2 else probe)
        f.create_dataset("positions_px", data=np.asarray(result.positions_px, np.float64))
        f.create_dataset("nominal_positions_px",
                         data=np.asarray(result.nominal_positions_px, np.float64))
        f.create_dataset("loss_history", data=np.asarray(result.loss_history, np.float64))
        f.create_dataset("residual_history", data=np.asarray(result.residual_history, np.float64))
        for name, values in result.extra_histories.items():
            f.create_dataset(name, data=np.asarray(values, np.float64))
        if result.distance_m is not None:
            f.attrs["distance_m"] = float(result.distance_m)
        if result.focus_distance_m is not None:
            f.attrs["focus_distance_m"] = float(result.focus_distance_m)
        if result.pixel_size_m is not None:
            f.attrs["pixel_size_m"] = np.asarray(result.pixel_size_m, np.float64)
        f.attrs["geometry"] = result.geometry
        f.attrs["object_origin_px"] = np.asarray(result.object_origin_px, np.float64)
        f.attrs["settings"] = json.dumps(result.settings, sort_keys=True, default=str)
        f.attrs["adptycho_version"] = __version__


def load_reconstruction(path) -> ReconstructionResult:
    """Read a file written by ``save_reconstruction``."""
    path, f = open_hdf5(path)
    with f:
        if "entry_1" in f:
            raise DataError(f"{path} is a CXI scan, not a reconstruction: give a file written by "
                            "'adptycho reconstruct'")
        if "object" not in f and "affine" in f:
            raise DataError(f"{path} is an adptycho calibration file, not a reconstruction")
        for name in ("object", "probe", "positions_px", "loss_history"):
            if name not in f:
                raise DataError(f"{path} is not an adptycho reconstruction: no '{name}' dataset")
        known = {"object", "probe", "positions_px", "nominal_positions_px", "loss_history",
                 "residual_history"}
        extra = {k: f[k][()] for k in f.keys() if k not in known}
        positions = f["positions_px"][()]
        return ReconstructionResult(
            object=f["object"][()], probe=f["probe"][()], positions_px=positions,
            nominal_positions_px=f["nominal_positions_px"][()] if "nominal_positions_px" in f else positions,
            loss_history=f["loss_history"][()],
            residual_history=f["residual_history"][()] if "residual_history" in f else np.array([]),
            distance_m=float(f.attrs["distance_m"]) if "distance_m" in f.attrs else None,
            pixel_size_m=tuple(f.attrs["pixel_size_m"]) if "pixel_size_m" in f.attrs else None,
            geometry=str(f.attrs.get("geometry", "farfield")),
            focus_distance_m=(float(f.attrs["focus_distance_m"])
                              if "focus_distance_m" in f.attrs else None),
            object_origin_px=tuple(f.attrs.get("object_origin_px", (0.0, 0.0))),
            settings=json.loads(f.attrs.get("settings", "{}")),
            extra_histories=extra)

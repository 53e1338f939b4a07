"""Ptychodus product files (``.h5`` HDF5 and ``.npz``): probe, object, positions, loss.

Field names as Ptychodus' own ``H5ProductFileIO`` / ``NPZProductFileIO`` write them:

* file attributes (HDF5) or keys (NPZ): ``name``, ``comments``, ``probe_energy_eV``,
  ``detector_object_distance_m``;
* ``probe`` (M, H, W) complex with ``pixel_width_m`` / ``pixel_height_m`` (HDF5: attributes of
  ``probe``; NPZ: ``probe_pixel_width_m`` / ``probe_pixel_height_m``);
* ``object`` (layers, Y, X) or (Y, X) complex with ``center_x_m``, ``center_y_m``,
  ``pixel_width_m``, ``pixel_height_m`` (HDF5: attributes of ``object``; NPZ: ``object_``-prefixed
  keys) and ``object_layer_distance_m``;
* ``probe_position_indexes``, ``probe_position_x_m``, ``probe_position_y_m``: the probe centre
  of each pattern in metres, in the frame where the object's centre is (``center_x_m``,
  ``center_y_m``); ``loss`` (per-iteration costs, newer versions; optional).

Conversion (rows are y): probe centre (row, column) in object pixels = (y_m - center_y_m) / dy +
Y / 2, (x_m - center_x_m) / dx + X / 2; the top-left corner is that minus (H / 2, W / 2).
Ptychodus' exact half-pixel convention for the object centre is not documented; a file written
here and read back places positions exactly, a file from Ptychodus may be off by up to half a pixel.
"""

from __future__ import annotations

import os
import zipfile

import h5py
import numpy as np

from adptycho.errors import DataError
from adptycho.io.atomic import atomic_path
from adptycho.io.formats.common import make_result
from adptycho.io.results import ReconstructionResult

__all__ = ["write_ptychodus", "read_ptychodus", "is_ptychodus_h5"]

_EV = 1.602176634e-19
_HC = 6.62607015e-34 * 299792458.0


def is_ptychodus_h5(f) -> bool:
    return "object" in f and "probe" in f and "probe_position_x_m" in f


def _product(result: ReconstructionResult) -> dict:
    obj = np.asarray(result.object, np.complex64)
    probe = np.asarray(result.probe, np.complex64)
    probe = probe[None] if probe.ndim == 2 else probe
    dy, dx = result.pixel_size_m if result.pixel_size_m is not None else (1.0, 1.0)
    corners = np.asarray(result.positions_px, np.float64).reshape(-1, 2)
    centre = corners + np.array(probe.shape[1:]) / 2.0
    rows, cols = obj.shape
    center_y_m, center_x_m = rows / 2.0 * dy, cols / 2.0 * dx
    wavelength = (result.settings or {}).get("wavelength_m")
    return {
        "name": "adptycho", "comments": "written by adptycho",
        "probe_energy_eV": float(_HC / wavelength / _EV) if wavelength else 0.0,
        "detector_object_distance_m": float(result.distance_m or 0.0),
        "probe": probe, "probe_pixel": (dx, dy),
        "object": obj[None], "object_center": (center_x_m, center_y_m), "object_pixel": (dx, dy),
        "object_layer_distance_m": np.zeros(0),
        "probe_position_indexes": np.arange(len(corners)),
        "probe_position_x_m": centre[:, 1] * dx, "probe_position_y_m": centre[:, 0] * dy,
        "loss": np.asarray(result.loss_history, np.float64)}


def write_ptychodus(path, result: ReconstructionResult) -> None:
    """Write a Ptychodus product file: NPZ for a ``.npz`` path, else HDF5 (atomically)."""
    p = _product(result)
    path = os.fspath(path)
    if path.endswith(".npz"):
        contents = {k: p[k] for k in ("name", "comments", "probe_energy_eV",
                                      "detector_object_distance_m", "probe", "object",
                                      "object_layer_distance_m", "probe_position_indexes",
                                      "probe_position_x_m", "probe_position_y_m", "loss")}
        contents.update(probe_pixel_width_m=p["probe_pixel"][0],
                        probe_pixel_height_m=p["probe_pixel"][1],
                        object_center_x_m=p["object_center"][0],
                        object_center_y_m=p["object_center"][1],
                        object_pixel_width_m=p["object_pixel"][0],
                        object_pixel_height_m=p["object_pixel"][1])
        with atomic_path(path, suffix=".npz.tmp") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **contents)
        return
    with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        for key in ("name", "comments", "probe_energy_eV", "detector_object_distance_m"):
            f.attrs[key] = p[key]
        for key in ("probe_position_indexes", "probe_position_x_m", "probe_position_y_m",
                    "object_layer_distance_m", "loss"):
            f.create_dataset(key, data=p[key])
        probe = f.create_dataset("probe", data=p["probe"])
        probe.attrs["pixel_width_m"], probe.attrs["pixel_height_m"] = p["probe_pixel"]
        obj = f.create_dataset("object", data=p["object"])
        obj.attrs["center_x_m"], obj.attrs["center_y_m"] = p["object_center"]
        obj.attrs["pixel_width_m"], obj.attrs["pixel_height_m"] = p["object_pixel"]


def _fields(path) -> dict:
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                need = ("probe", "object", "probe_position_x_m", "probe_position_y_m",
                        "object_center_x_m", "object_center_y_m", "object_pixel_width_m",
                        "object_pixel_height_m")
                missing = [k for k in need if k not in z.files]
                if missing:
                    raise DataError(f"{path} is not a Ptychodus product file: no {missing[0]}")
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read {path} as NPZ: {exc}") from None
    with h5py.File(path, "r") as f:
        if not is_ptychodus_h5(f):
            raise DataError(f"{path} is not a Ptychodus product file (no object, probe and "
                            "probe_position_x_m)")
        obj = f["object"]
        values = {k: f[k][()] for k in ("probe", "object", "probe_position_x_m",
                                        "probe_position_y_m")}
        values["loss"] = f["loss"][()] if "loss" in f else None
        for key in ("center_x_m", "center_y_m", "pixel_width_m", "pixel_height_m"):
            if key not in obj.attrs:
                raise DataError(f"{path}: the object has no {key} attribute")
            values[f"object_{key}"] = obj.attrs[key]
        return values


def read_ptychodus(path) -> ReconstructionResult:
    """Read a Ptychodus product file (HDF5 or NPZ) into the internal convention."""
    path = os.fspath(path)
    v = _fields(path)
    obj = np.asarray(v["object"])
    probe = np.asarray(v["probe"])
    probe = probe[None] if probe.ndim == 2 else probe
    dx, dy = float(v["object_pixel_width_m"]), float(v["object_pixel_height_m"])
    rows, cols = obj.shape[-2:]
    x = np.asarray(v["probe_position_x_m"], np.float64)
    y = np.asarray(v["probe_position_y_m"], np.float64)
    if x.shape != y.shape:
        raise DataError(f"{path}: probe_position_x_m and probe_position_y_m differ in length")
    centre_rows = (y - float(v["object_center_y_m"])) / dy + rows / 2.0
    centre_cols = (x - float(v["object_center_x_m"])) / dx + cols / 2.0
    corners = np.stack([centre_rows - probe.shape[-2] / 2.0,
                        centre_cols - probe.shape[-1] / 2.0], axis=1)
    return make_result(path, obj, probe, corners, (dy, dx), v.get("loss"), source="ptychodus")

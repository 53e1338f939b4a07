"""Reconstructions in CXI, and scans and reconstructions in NeXus ``NXcxi_ptycho``.

CXI reconstruction (written by ``write_cxi_reconstruction``; the layout of ``adptycho.io.cxi``
for the scan part):

* ``entry_1/image_1/data`` (Y, X) complex object, ``entry_1/image_1/data_type = "object"``,
  ``entry_1/image_1/{x,y}_pixel_size`` (metres);
* ``entry_1/instrument_1/source_1/illumination`` (M, H, W) complex probe (where ptychodus' CXI
  probe reader looks);
* ``entry_1/sample_1/geometry_1/translation`` (N, 3) refined positions in metres, (x, y, 0) =
  (column, row) of the probe window's top-left corner times the pixel size (the mapping
  ``adptycho.io.cxi`` uses for scans: row <- +y / dy, column <- +x / dx).

NeXus ``NXcxi_ptycho`` (a contributed application definition, under review, "compatible with CXI
from version 1.6"): the same ``entry_1/...`` tree with ``NX_class`` attributes (NXentry,
NXinstrument, NXsource, NXbeam, NXdetector, NXsample, NXdata), ``entry_1/definition =
"NXcxi_ptycho"``, ``units`` attributes, the translations also as
``entry_1/instrument_1/detector_1/translation``, and the beam energy in
``entry_1/instrument_1/beam_1/incident_beam_energy`` (eV). A NeXus scan is read by the CXI scan
reader (same paths). The definition names no place for reconstruction results; adptycho writes
them as the NXdata ``entry_1/image_1`` (the CXI place), which is an assumption.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from adptycho.errors import DataError
from adptycho.io.atomic import atomic_path
from adptycho.io.formats.common import make_result
from adptycho.io.results import ReconstructionResult

__all__ = ["write_cxi_reconstruction", "read_cxi_reconstruction", "write_nexus_scan",
           "write_nexus_reconstruction", "is_cxi_reconstruction"]

_IMAGE = "entry_1/image_1"
_PROBE = "entry_1/instrument_1/source_1/illumination"
_TRANSLATION = "entry_1/sample_1/geometry_1/translation"
_EV = 1.602176634e-19


def is_cxi_reconstruction(f) -> bool:
    return f"{_IMAGE}/data" in f and _PROBE in f


def _pixel(result: ReconstructionResult):
    return tuple(result.pixel_size_m) if result.pixel_size_m is not None else None


def _write_result_tree(f, result: ReconstructionResult, nexus: bool) -> None:
    obj = np.asarray(result.object, np.complex64)
    probe = np.asarray(result.probe, np.complex64)
    probe = probe[None] if probe.ndim == 2 else probe
    pixel = _pixel(result)
    image = f.require_group(_IMAGE)
    image.create_dataset("data", data=obj)
    image.create_dataset("data_type", data="object")
    if pixel is not None:
        image.create_dataset("y_pixel_size", data=pixel[0])
        image.create_dataset("x_pixel_size", data=pixel[1])
    f.require_group("entry_1/instrument_1/source_1").create_dataset("illumination", data=probe)
    positions = np.asarray(result.positions_px, np.float64).reshape(-1, 2)
    scale = pixel if pixel is not None else (1.0, 1.0)
    translation = np.zeros((len(positions), 3))
    translation[:, 0] = positions[:, 1] * scale[1]
    translation[:, 1] = positions[:, 0] * scale[0]
    f.require_group("entry_1/sample_1/geometry_1").create_dataset("translation", data=translation)
    if pixel is None:
        f[_TRANSLATION].attrs["units"] = "pixel"
    else:
        f[_TRANSLATION].attrs["units"] = "m"
    if len(result.loss_history):
        image.create_dataset("loss_history", data=np.asarray(result.loss_history, np.float64))
    if nexus:
        image.attrs["NX_class"] = "NXdata"
        image.attrs["signal"] = "data"


def write_cxi_reconstruction(path, result: ReconstructionResult) -> None:
    """Write a reconstruction as CXI (atomically)."""
    with atomic_path(path, suffix=".cxi.tmp") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["creator"] = "adptycho"
        f.create_dataset("cxi_version", data=150)
        _write_result_tree(f, result, nexus=False)


def _nexus_skeleton(f):
    f.attrs["default"] = "entry_1"
    entry = f.require_group("entry_1")
    entry.attrs["NX_class"] = "NXentry"
    entry.create_dataset("definition", data="NXcxi_ptycho")
    for name, cls in (("instrument_1", "NXinstrument"), ("instrument_1/source_1", "NXsource"),
                      ("instrument_1/beam_1", "NXbeam"), ("instrument_1/detector_1", "NXdetector"),
                      ("sample_1", "NXsample"), ("sample_1/geometry_1", "NXgeometry")):
        entry.require_group(name).attrs["NX_class"] = cls
    source = entry["instrument_1/source_1"]
    source.create_dataset("name", data="unknown")
    source.create_dataset("probe", data="x-ray")
    return entry


def write_nexus_reconstruction(path, result: ReconstructionResult) -> None:
    """Write a reconstruction in the ``NXcxi_ptycho`` tree (atomically)."""
    with atomic_path(path, suffix=".nxs.tmp") as tmp, h5py.File(tmp, "w") as f:
        _nexus_skeleton(f)
        _write_result_tree(f, result, nexus=True)


def write_nexus_scan(path, scan) -> None:
    """Write a ``ScanData`` in the ``NXcxi_ptycho`` tree (readable by ``load_cxi``)."""
    from adptycho.io.cxi import PLANCK_JOULE_METRE, save_cxi

    with atomic_path(path, suffix=".nxs.tmp") as tmp:
        save_cxi(tmp, scan)  # the CXI fields, then the NeXus classes, units and links
        with h5py.File(tmp, "a") as f:
            entry = _nexus_skeleton(f)
            detector = entry["instrument_1/detector_1"]
            detector.attrs["signal"] = "data"
            detector.attrs["axes"] = "translation"
            for name in ("distance", "x_pixel_size", "y_pixel_size"):
                detector[name].attrs["units"] = "m"
            detector["translation"] = h5py.SoftLink(f"/{_TRANSLATION}")
            f[_TRANSLATION].attrs["units"] = "m"
            f[_TRANSLATION].attrs["axes"] = "x,y,z"
            f[_TRANSLATION].attrs["interpretation"] = "sample translation per pattern"
            source = entry["instrument_1/source_1"]
            source["energy"].attrs["units"] = "J"
            source["wavelength"].attrs["units"] = "m"
            energy_ev = PLANCK_JOULE_METRE / scan.wavelength_m / _EV
            beam = entry["instrument_1/beam_1"]
            beam.create_dataset("incident_beam_energy", data=energy_ev).attrs["units"] = "eV"
            beam.create_dataset("energy", data=energy_ev).attrs["units"] = "eV"
            data = entry["data_1"]
            data.attrs["NX_class"] = "NXdata"
            data.attrs["signal"] = "data"


def read_cxi_reconstruction(path) -> ReconstructionResult:
    """Read a CXI or NeXus reconstruction written as above (or by another program that keeps the
    CXI places: ``image_1/data`` object, ``source_1/illumination`` or ``probe`` probe)."""
    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        if f"{_IMAGE}/data" not in f:
            raise DataError(f"{path} has no {_IMAGE}/data (a CXI reconstruction's object)")
        probe_path = _PROBE if _PROBE in f else "entry_1/instrument_1/source_1/probe"
        if probe_path not in f:
            raise DataError(f"{path} has no {_PROBE} (the probe)")
        image = f[_IMAGE]
        pixel = None
        if "x_pixel_size" in image and "y_pixel_size" in image:
            pixel = (float(image["y_pixel_size"][()]), float(image["x_pixel_size"][()]))
        positions = None
        if _TRANSLATION in f:
            translation = np.asarray(f[_TRANSLATION][()], np.float64)
            if translation.ndim != 2 or translation.shape[1] < 2:
                raise DataError(f"{path}: {_TRANSLATION} must be (N, 3), got "
                                f"{translation.shape}")
            scale = pixel if (pixel is not None and
                              f[_TRANSLATION].attrs.get("units", "m") != "pixel") else (1.0, 1.0)
            positions = np.stack([translation[:, 1] / scale[0], translation[:, 0] / scale[1]], 1)
        loss = image["loss_history"][()] if "loss_history" in image else None
        nexus = "definition" in f.get("entry_1", {})
        return make_result(path, image["data"][()], f[probe_path][()], positions, pixel, loss,
                           source="nexus" if nexus else "cxi")

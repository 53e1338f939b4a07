"""Readers and writers of the formats the field exchanges (``docs/formats.md``).

Reconstructions: ``adptycho`` (the native HDF5 of ``adptycho reconstruct``), ``cxi``, ``nexus``
(``NXcxi_ptycho``), ``ptychodus`` (HDF5 ``.h5`` or ``.npz`` product files) read and written;
``ptychoshelves`` (``.mat``, v7.3 or older) and ``ptypy`` (``.ptyr``) read. Scans: ``cxi`` and
``nexus`` read and written. Every reader returns the internal convention (``formats.common``):
``ReconstructionResult`` (object (Y, X), probe (M, H, W), corners (N, 2) (y, x) in object pixels,
pixel size (dy, dx) metres) or ``ScanData``.

    from adptycho.io.formats import read_file, write_reconstruction
    kind, value = read_file("Niter500.mat")          # ("reconstruction", ReconstructionResult)
    write_reconstruction("rec.nxs", value, "nexus")
"""

from __future__ import annotations

import os
import zipfile

from adptycho.errors import DataError

__all__ = ["detect_format", "read_file", "read_reconstruction", "write_reconstruction",
           "write_scan", "RECONSTRUCTION_WRITERS", "SCAN_WRITERS", "READABLE"]

RECONSTRUCTION_WRITERS = ("adptycho", "cxi", "nexus", "ptychodus")
SCAN_WRITERS = ("cxi", "nexus")
READABLE = ("adptycho", "cxi", "nexus", "ptychodus", "ptychoshelves", "ptypy")


def detect_format(path) -> tuple:
    """``(kind, format)`` of a file from its contents: kind ``scan`` or ``reconstruction``.

    Raises:
        DataError: missing, unreadable, or none of the known formats.
    """
    import h5py
    import numpy as np

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                if {"object", "probe", "probe_position_x_m"} <= set(z.files):
                    return "reconstruction", "ptychodus"
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read {path} as NPZ: {exc}") from None
        raise DataError(f"{path}: an NPZ file that is not a Ptychodus product file")
    if not h5py.is_hdf5(path):
        if path.endswith(".mat"):
            return "reconstruction", "ptychoshelves"
        raise DataError(f"{path}: unknown format (not HDF5, NPZ or MAT)")
    if path.endswith(".mat"):
        return "reconstruction", "ptychoshelves"
    from adptycho.io.formats.cxi_nexus import is_cxi_reconstruction
    from adptycho.io.formats.foreign import is_ptypy
    from adptycho.io.formats.ptychodus import is_ptychodus_h5

    try:
        with h5py.File(path, "r") as f:
            if is_ptypy(f):
                return "reconstruction", "ptypy"
            if is_ptychodus_h5(f):
                return "reconstruction", "ptychodus"
            nexus = "entry_1/definition" in f
            if is_cxi_reconstruction(f):
                return "reconstruction", "nexus" if nexus else "cxi"
            if "entry_1/instrument_1/detector_1/data" in f or "entry_1/data_1/data" in f:
                return "scan", "nexus" if nexus else "cxi"
            if "object" in f and "probe" in f and "positions_px" in f:
                return "reconstruction", "adptycho"
    except OSError as exc:
        raise DataError(f"cannot read {path} as HDF5: {exc}") from None
    raise DataError(f"{path}: an HDF5 file in none of the known formats ({', '.join(READABLE)})")


def read_reconstruction(path, fmt: str = None):
    """A ``ReconstructionResult`` from any readable reconstruction format (detected if not given)."""
    kind, detected = detect_format(path)
    fmt = fmt or detected
    if kind != "reconstruction":
        raise DataError(f"{path} is a {fmt} scan, not a reconstruction")
    if fmt == "adptycho":
        from adptycho.io.results import load_reconstruction
        return load_reconstruction(path)
    if fmt in ("cxi", "nexus"):
        from adptycho.io.formats.cxi_nexus import read_cxi_reconstruction
        return read_cxi_reconstruction(path)
    if fmt == "ptychodus":
        from adptycho.io.formats.ptychodus import read_ptychodus
        return read_ptychodus(path)
    if fmt == "ptychoshelves":
        from adptycho.io.formats.foreign import read_ptychoshelves
        return read_ptychoshelves(path)
    if fmt == "ptypy":
        from adptycho.io.formats.foreign import read_ptypy
        return read_ptypy(path)
    raise DataError(f"unknown reconstruction format {fmt!r} (readable: {', '.join(READABLE)})")


def read_file(path) -> tuple:
    """``("scan", ScanData)`` or ``("reconstruction", ReconstructionResult)`` from any known file."""
    kind, fmt = detect_format(path)
    if kind == "scan":
        from adptycho.io.cxi import load_cxi
        return kind, load_cxi(path)
    return kind, read_reconstruction(path, fmt)


def write_reconstruction(path, result, fmt: str) -> None:
    """Write a ``ReconstructionResult`` in ``fmt`` (one of ``RECONSTRUCTION_WRITERS``)."""
    if fmt == "adptycho":
        from adptycho.io.results import save_reconstruction
        return save_reconstruction(path, result)
    if fmt == "cxi":
        from adptycho.io.formats.cxi_nexus import write_cxi_reconstruction
        return write_cxi_reconstruction(path, result)
    if fmt == "nexus":
        from adptycho.io.formats.cxi_nexus import write_nexus_reconstruction
        return write_nexus_reconstruction(path, result)
    if fmt == "ptychodus":
        from adptycho.io.formats.ptychodus import write_ptychodus
        return write_ptychodus(path, result)
    raise DataError(f"cannot write a reconstruction as {fmt!r} (choose from "
                    f"{', '.join(RECONSTRUCTION_WRITERS)})")


def write_scan(path, scan, fmt: str) -> None:
    """Write a ``ScanData`` as ``cxi`` or ``nexus``."""
    if fmt == "cxi":
        from adptycho.io.cxi import save_cxi
        return save_cxi(path, scan)
    if fmt == "nexus":
        from adptycho.io.formats.cxi_nexus import write_nexus_scan
        return write_nexus_scan(path, scan)
    raise DataError(f"cannot write a scan as {fmt!r} (choose from {', '.join(SCAN_WRITERS)})")

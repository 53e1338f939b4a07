"""Reading and writing scans in the CXI layout (HDF5; Maia et al., J. Appl. Cryst. 45, 2012).

Fields used (``entry_1/`` omitted below):

* ``instrument_1/detector_1/data`` (N, H, W) counts (also found as ``data_1/data``)
* ``instrument_1/detector_1/distance`` sample-detector distance, metres
* ``instrument_1/detector_1/{x,y}_pixel_size`` detector pitch, metres
* ``instrument_1/detector_1/mask`` (H, W), CXI convention 0 = good pixel (optional)
* ``instrument_1/source_1/energy`` (joules) or ``.../wavelength`` (metres)
* ``instrument_1/source_1/illumination`` (H, W) or (M, H, W) complex probe guess (optional)
* ``sample_1/geometry_1/translation`` (N, 3) sample translations (x, y, z), metres

Translations become pixels with the object pixel size: ``lambda z / (N dx_det)`` in far field;
``dx_det / M`` with ``M = (z1 + z2) / z1`` for cone-beam near field (Fresnel scaling, with the
effective propagation distance ``z2 / M``); ``dx_det`` for parallel-beam near field. The mapping
is row <- +translation_y / dy, column <- +translation_x / dx.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from adptycho.errors import DataError
from adptycho.geometry.grids import cone_beam_geometry, farfield_pixel_size_m
from adptycho.io.atomic import atomic_path
from adptycho.io.scan_data import FARFIELD, NEARFIELD, ScanData

__all__ = ["load_cxi", "save_cxi", "PLANCK_JOULE_METRE"]

PLANCK_JOULE_METRE = 6.62607015e-34 * 299792458.0  # h c

_DETECTOR = "entry_1/instrument_1/detector_1"
_SOURCE = "entry_1/instrument_1/source_1"
_TRANSLATION = "entry_1/sample_1/geometry_1/translation"


def _read(f, path, required=True, what=""):
    if path in f:
        return f[path][()]
    if required:
        raise DataError(f"CXI file {f.filename!r} has no {path}{' (' + what + ')' if what else ''}")
    return None


def _numbers(value, name: str) -> np.ndarray:
    """``value`` as a float64 array, or a ``DataError`` naming the CXI field."""
    try:
        return np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise DataError(f"CXI field {name} must hold numbers, got {np.asarray(value).dtype}") \
            from None


def _scalar(value, name: str = "value"):
    if value is None:
        return None
    values = _numbers(value, name).reshape(-1)
    if values.size == 0:
        raise DataError(f"CXI field {name} is empty")
    return float(values[0])


def load_cxi(path, geometry: str = None, focus_distance_m: float = None,
             propagation_distance_m: float = None, allow_negative: bool = False,
             stream: bool = False) -> ScanData:
    """Load a CXI file into a ``ScanData``.

    Args:
        path: the .cxi (HDF5) file.
        geometry: ``"farfield"`` or ``"nearfield"``; default far field, or near field when
            ``focus_distance_m`` or ``propagation_distance_m`` is given.
        focus_distance_m: cone-beam near field: focus-to-sample distance z1 (not stored in CXI).
        propagation_distance_m: parallel-beam near field: override the propagation distance
            (default: the detector distance).
        allow_negative: accept negative counts (dark-subtracted data).
        stream: leave the patterns on disk: the scan's ``patterns`` is an ``HDF5Patterns`` read
            in batches by the fit (for scans larger than memory; ``adptycho.io.streaming``).

    Raises:
        DataError: missing file or fields, inconsistent shapes, bad values.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path}")
    if geometry is None:
        geometry = NEARFIELD if (focus_distance_m or propagation_distance_m) else FARFIELD
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot read {path} as HDF5/CXI: {exc}") from None
    try:
        with f:
            fields = _read_fields(f, path, stream)
    except OSError as exc:  # a damaged file: HDF5 opens it but cannot read a field
        raise DataError(f"cannot read {path}: the file is damaged ({exc})") from None
    return _scan_from_fields(path, fields, geometry, focus_distance_m, propagation_distance_m,
                             allow_negative, stream)


def _not_a_scan(f, path) -> str:
    """Why an HDF5 file without CXI patterns is not a scan (another adptycho file?)."""
    if "object" in f and "probe" in f:
        return (f"{path} is an adptycho reconstruction file, not a scan: give the measured scan "
                "(.cxi)")
    if "probe" in f and "affine" in f:
        return (f"{path} is an adptycho calibration file, not a scan: give the measured scan "
                "(.cxi) and pass the calibration with --calibration")
    return f"CXI file {path!r} has no {_DETECTOR}/data (the diffraction patterns)"


def _read_fields(f, path, stream: bool) -> dict:
    """The CXI fields of open file ``f`` as numbers (patterns: an array, or with ``stream``
    only their dataset path and shape)."""
    if f"{_DETECTOR}/data" in f:
        data_path = f"{_DETECTOR}/data"
    elif "entry_1/data_1/data" in f:
        data_path = "entry_1/data_1/data"
    else:
        raise DataError(_not_a_scan(f, path))
    kind = f[data_path].dtype
    if not (np.issubdtype(kind, np.number) and not np.issubdtype(kind, np.complexfloating)):
        raise DataError(f"{data_path} must hold real photon counts, got dtype {kind} in {path}")
    patterns_shape = tuple(f[data_path].shape)
    patterns = None if stream else f[data_path][()]
    translation = _numbers(_read(f, _TRANSLATION, what="scan positions in metres"), _TRANSLATION)
    distance = _scalar(_read(f, f"{_DETECTOR}/distance", what="sample-detector distance"),
                       "distance")
    pixel_x = _scalar(_read(f, f"{_DETECTOR}/x_pixel_size", what="detector pixel size"),
                      "x_pixel_size")
    pixel_y = _scalar(_read(f, f"{_DETECTOR}/y_pixel_size", required=False), "y_pixel_size")
    pixel_y = pixel_x if pixel_y is None else pixel_y
    wavelength = _scalar(_read(f, f"{_SOURCE}/wavelength", required=False), "wavelength")
    if wavelength is None:
        energy = _scalar(_read(f, f"{_SOURCE}/energy", required=False), "energy")
        if energy is None:
            raise DataError(
                f"CXI file {path!r} has neither {_SOURCE}/wavelength nor {_SOURCE}/energy")
        if not (np.isfinite(energy) and energy > 0):
            raise DataError(f"{_SOURCE}/energy must be positive, got {energy}")
        wavelength = PLANCK_JOULE_METRE / energy
    mask = _read(f, f"{_DETECTOR}/mask", required=False)
    probe = _read(f, f"{_SOURCE}/illumination", required=False)
    if probe is None:
        probe = _read(f, f"{_SOURCE}/probe", required=False)
    return dict(data_path=data_path, patterns=patterns, patterns_shape=patterns_shape,
                translation=translation, distance=distance, pixel_x=pixel_x, pixel_y=pixel_y,
                wavelength=wavelength, mask=mask, probe=probe)


def _scan_from_fields(path, fields, geometry, focus_distance_m, propagation_distance_m,
                      allow_negative, stream) -> ScanData:
    data_path, patterns, patterns_shape = (fields["data_path"], fields["patterns"],
                                           fields["patterns_shape"])
    translation, distance, wavelength = (fields["translation"], fields["distance"],
                                         fields["wavelength"])
    pixel_x, pixel_y, mask, probe = (fields["pixel_x"], fields["pixel_y"], fields["mask"],
                                     fields["probe"])
    if len(patterns_shape) != 3:
        raise DataError(f"{_DETECTOR}/data must be (N, H, W), got shape {patterns_shape}")
    if stream:
        from adptycho.io.streaming import HDF5Patterns

        patterns = HDF5Patterns(path, data_path, allow_negative=allow_negative)
    else:
        patterns = np.asarray(patterns)
    if translation.ndim != 2 or translation.shape[1] not in (2, 3):
        raise DataError(f"{_TRANSLATION} must be (N, 3) metres, got shape {translation.shape}")
    if translation.shape[0] != patterns_shape[0]:
        raise DataError(f"{_TRANSLATION} has {translation.shape[0]} rows but there are "
                        f"{patterns_shape[0]} patterns")
    finite = np.isfinite(translation[:, :2]).all(axis=1)
    if not finite.all():
        raise DataError(f"{_TRANSLATION} has {int((~finite).sum())} rows with non-finite values "
                        f"(NaN or inf), first row {int(np.argmin(finite))}")
    for name, value in (("distance", distance), ("x_pixel_size", pixel_x),
                        ("y_pixel_size", pixel_y), ("wavelength", wavelength)):
        if not (np.isfinite(value) and value > 0):
            raise DataError(f"CXI field {name} must be positive, got {value}")
    if mask is not None and np.shape(mask) != tuple(patterns_shape[1:]):
        raise DataError(f"{_DETECTOR}/mask has shape {np.shape(mask)}, expected the detector "
                        f"shape {tuple(patterns_shape[1:])}")
    detector_pixel = (pixel_y, pixel_x)
    n, h, w = patterns_shape
    metadata = {"source_file": os.path.abspath(path)}
    propagation = None
    if geometry == FARFIELD:
        pixel_size = farfield_pixel_size_m(wavelength, distance, (h, w), detector_pixel)
    elif focus_distance_m is not None:
        magnification, pixel_size, propagation = cone_beam_geometry(
            focus_distance_m, distance, detector_pixel)
        metadata["magnification"] = magnification
    else:
        pixel_size = detector_pixel
        propagation = propagation_distance_m or distance
    positions = np.stack([translation[:, 1] / pixel_size[0], translation[:, 0] / pixel_size[1]], axis=1)
    valid = None if mask is None else (np.asarray(mask) == 0)
    return ScanData(patterns=patterns, positions_px=positions, mask=valid, geometry=geometry,
                    wavelength_m=wavelength, detector_distance_m=distance,
                    detector_pixel_size_m=detector_pixel, pixel_size_m=pixel_size,
                    propagation_distance_m=propagation, focus_distance_m=focus_distance_m,
                    probe=probe, metadata=metadata, allow_negative=allow_negative)


def save_cxi(path, scan: ScanData) -> None:
    """Write ``scan`` as a CXI file (atomically: a temporary file renamed into place).

    Needs ``wavelength_m``, ``detector_distance_m``, ``detector_pixel_size_m`` and
    ``pixel_size_m`` so that positions can be written as translations in metres.
    """
    missing = [name for name in ("wavelength_m", "detector_distance_m", "detector_pixel_size_m",
                                 "pixel_size_m") if getattr(scan, name) is None]
    if missing:
        raise DataError(f"cannot write CXI: the scan has no {', '.join(missing)} "
                        "(needed to express positions in metres)")
    with atomic_path(path, suffix=".cxi.tmp") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["creator"] = "adptycho"
        f.create_dataset("cxi_version", data=150)
        det = f.create_group(_DETECTOR)
        det.create_dataset("data", data=scan.patterns, chunks=(1,) + scan.detector_shape,
                           compression="gzip", compression_opts=1)
        det.create_dataset("distance", data=scan.detector_distance_m)
        det.create_dataset("y_pixel_size", data=scan.detector_pixel_size_m[0])
        det.create_dataset("x_pixel_size", data=scan.detector_pixel_size_m[1])
        if scan.mask is not None:
            det.create_dataset("mask", data=(~scan.mask).astype(np.uint32))
        src = f.create_group(_SOURCE)
        src.create_dataset("wavelength", data=scan.wavelength_m)
        src.create_dataset("energy", data=PLANCK_JOULE_METRE / scan.wavelength_m)
        if scan.probe is not None:
            src.create_dataset("illumination", data=scan.probe)
        translation = np.zeros((scan.num_patterns, 3))
        translation[:, 1] = scan.positions_px[:, 0] * scan.pixel_size_m[0]
        translation[:, 0] = scan.positions_px[:, 1] * scan.pixel_size_m[1]
        f.create_dataset(_TRANSLATION, data=translation)
        f["entry_1/data_1/data"] = h5py.SoftLink(f"/{_DETECTOR}/data")

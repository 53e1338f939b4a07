"""Loaders for the two real datasets of ``../shared/data`` (never needed at run time).

The data directory is ``$ADPTYCHO_DATA_DIR`` or ``../shared/data`` next to the repository.
"""

from __future__ import annotations

import bz2
import io
import os
from pathlib import Path

import numpy as np

from adptycho.errors import DataError
from adptycho.io.cxi import load_cxi
from adptycho.io.scan_data import FARFIELD, ScanData

__all__ = ["data_dir", "load_tike_siemens_star", "load_petra_p25", "TIKE_FILE", "PETRA_FILE"]

TIKE_FILE = "tike_siemens_star/siemens-star-small.npz.bz2"
PETRA_FILE = "petra_p25_nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi"


def data_dir():
    """The shared data directory, or None where it is absent."""
    candidates = []
    if os.environ.get("ADPTYCHO_DATA_DIR"):
        candidates.append(Path(os.environ["ADPTYCHO_DATA_DIR"]))
    here = Path(__file__).resolve().parents[2]
    candidates += [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def _resolve(path, relative):
    if path is not None:
        return Path(path)
    root = data_dir()
    if root is None:
        raise DataError("shared data directory not found: set ADPTYCHO_DATA_DIR or pass a path")
    return root / relative


def load_tike_siemens_star(path=None, num_patterns=None) -> ScanData:
    """The tike Siemens-star far-field scan (APS Velociprobe), 516 patterns of 128x128.

    The file's patterns have the zero frequency at pixel [0, 0]; they are fftshifted here to the
    centred convention. Positions are in object pixels, ``scan[..., 0]`` is the row. There is no
    wavelength or distance (pixel units only). The file's zone-plate probe guess is kept.
    """
    path = _resolve(path, TIKE_FILE)
    if not path.exists():
        raise DataError(f"no such file: {path}")
    with bz2.open(path, "rb") as stream:
        archive = np.load(io.BytesIO(stream.read()))
        data = np.asarray(archive["data"])[0]
        scan = np.asarray(archive["scan"], np.float64)[0]
        probe = np.asarray(archive["probe"]).reshape(-1, data.shape[-2], data.shape[-1])
    patterns = np.fft.fftshift(data, axes=(-2, -1)).astype(np.float32)
    if num_patterns is not None:
        patterns, scan = patterns[:num_patterns], scan[:num_patterns]
    return ScanData(patterns=patterns, positions_px=scan, geometry=FARFIELD,
                    probe=probe.astype(np.complex64),
                    metadata={"source_file": str(path), "dataset": "tike siemens star"})


def load_petra_p25(path=None, focus_distance_m: float = 3.65e-3) -> ScanData:
    """The PETRA III P25 near-field (cone-beam) Siemens-star scan, 200 patterns of 100x100.

    ``focus_distance_m`` (z1) is not in the file; 3.65 mm reconstructs it (see
    ``../shared/data/README.md``).
    """
    path = _resolve(path, PETRA_FILE)
    scan = load_cxi(path, focus_distance_m=focus_distance_m)
    return scan.replace(metadata={**scan.metadata, "dataset": "PETRA III P25 near field"})

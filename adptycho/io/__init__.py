"""Data in and out: ``ScanData``, CXI files, real-data loaders, reconstruction files."""

from adptycho.io.cxi import load_cxi, save_cxi
from adptycho.io.datasets import data_dir, load_petra_p25, load_tike_siemens_star
from adptycho.io.results import ReconstructionResult, load_reconstruction, save_reconstruction
from adptycho.io.scan_data import FARFIELD, NEARFIELD, ScanData

__all__ = ["load_cxi", "save_cxi", "data_dir", "load_petra_p25", "load_tike_siemens_star",
           "ReconstructionResult", "load_reconstruction", "save_reconstruction", "FARFIELD",
           "NEARFIELD", "ScanData"]

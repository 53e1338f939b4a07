"""Data in and out: ``ScanData``, CXI files, real-data loaders, reconstruction files.

The names are imported on first use (PEP 562), so that ``adptycho.io.validation`` and
``adptycho.io.scan_data`` load without TensorFlow: the command line checks its arguments and
reports bad input before it pays for importing TensorFlow.
"""

import importlib

_EXPORTS = {"load_cxi": "cxi", "save_cxi": "cxi", "data_dir": "datasets",
            "load_petra_p25": "datasets", "load_tike_siemens_star": "datasets",
            "ReconstructionResult": "results", "load_reconstruction": "results",
            "save_reconstruction": "results", "FARFIELD": "scan_data", "NEARFIELD": "scan_data",
            "ScanData": "scan_data"}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adptycho.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"adptycho.io.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

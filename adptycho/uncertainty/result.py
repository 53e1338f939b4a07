"""``UncertaintyResult``: per-pixel standard deviations of a reconstruction, and its HDF5 file.

File layout (root of the HDF5 file):

* ``object_amplitude_std``: (Y, X) float32, std of |O| on the reconstruction's grid (NaN:
  undetermined);
* ``object_phase_std``: (Y, X) float32, std of arg O in radians (NaN: undetermined);
* ``determined``: (Y, X) bool, ``reference``: (Y, X) bool (pixels on which the gauges are fixed);
* optional ``object`` (Y, X) complex64: the reconstructed object the maps belong to (so that
  ``adptycho show`` can draw the file alone; latent objects: the decoded posterior mode);
* optional ``phase_error_over_std`` (Y, X) float32: |phase error| / std against a known truth
  (``adptycho uncertainty --truth``);
* optional ``probe_std`` (M, H, W) float32 (std of the probe amplitude, photon^0.5 units) and
  ``probe_phase_std`` (M, H, W) float32 (radians, NaN where the probe is dark), when the probe was
  refined; ``positions_std_px`` (N, 2) float32 (y, x), when the positions were refined
  (``parameters.py``);
* optional ``object_amplitude_samples`` / ``object_phase_samples`` (K, Y, X) float32 (latent
  objects: decoded posterior samples), ``latent_std`` (n,) float32 and ``latent_mode`` (n,)
  float32 (the posterior mode the samples are centred on: the fit after ``posterior_mode``'s
  Newton steps);
* attributes: ``method``, ``settings`` (JSON), ``info`` (JSON: solver figures), ``noise_model``,
  ``adptycho_version``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import h5py
import numpy as np

from adptycho.errors import DataError
from adptycho.io.atomic import atomic_path, open_hdf5

__all__ = ["UncertaintyResult", "load_uncertainty"]

_ARRAYS = ("object_amplitude_std", "object_phase_std", "determined", "reference")
_OPTIONAL = ("object", "phase_error_over_std", "object_amplitude_samples",
             "object_phase_samples", "latent_std", "latent_mode", "probe_std", "probe_phase_std",
             "positions_std_px")


@dataclasses.dataclass
class UncertaintyResult:
    """Standard deviations of a reconstructed object (see the module docstring for the arrays).

    Attributes:
        object_amplitude_std, object_phase_std: (Y, X) float32 (NaN where undetermined).
        determined, reference: (Y, X) bool.
        method: ``fisher``, ``laplace`` or ``hmc``.
        noise_model: the noise model whose likelihood was used.
        settings: the method's settings; info: solver figures (iterations, acceptance, ...).
        extras: optional arrays (``_OPTIONAL`` names).
    """

    object_amplitude_std: np.ndarray
    object_phase_std: np.ndarray
    determined: np.ndarray
    reference: np.ndarray
    method: str
    noise_model: str
    settings: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)
    extras: dict = dataclasses.field(default_factory=dict)

    def save(self, path) -> str:
        """Write the HDF5 file atomically (temporary name, then rename); returns ``path``."""
        from adptycho import __version__

        with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("object_amplitude_std",
                             data=np.asarray(self.object_amplitude_std, np.float32))
            f.create_dataset("object_phase_std", data=np.asarray(self.object_phase_std, np.float32))
            f.create_dataset("determined", data=np.asarray(self.determined, bool))
            f.create_dataset("reference", data=np.asarray(self.reference, bool))
            for name, value in self.extras.items():
                value = np.asarray(value)
                f.create_dataset(name, data=value.astype(
                    np.complex64 if np.iscomplexobj(value) else np.float32))
            f.attrs["method"] = self.method
            f.attrs["noise_model"] = self.noise_model
            f.attrs["settings"] = json.dumps(self.settings, sort_keys=True, default=str)
            f.attrs["info"] = json.dumps(self.info, sort_keys=True, default=str)
            f.attrs["adptycho_version"] = __version__
        return os.fspath(path)


def load_uncertainty(path) -> UncertaintyResult:
    """Read a file written by ``UncertaintyResult.save``."""
    path, f = open_hdf5(path)
    with f:
        missing = [name for name in _ARRAYS if name not in f]
        if missing:
            raise DataError(f"{path} is not an adptycho uncertainty file: no '{missing[0]}'")
        return UncertaintyResult(
            *(f[name][()] for name in _ARRAYS), method=str(f.attrs["method"]),
            noise_model=str(f.attrs.get("noise_model", "")),
            settings=json.loads(f.attrs.get("settings", "{}")),
            info=json.loads(f.attrs.get("info", "{}")),
            extras={name: f[name][()] for name in _OPTIONAL if name in f})

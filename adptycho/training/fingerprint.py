"""Fit fingerprints: everything that defines a fit, so a checkpoint resumes only the same fit.

``fit_fingerprint(scan, model, options)`` is a JSON-able dictionary of

* ``patterns``: shape and sha256 of the pattern values (float32, C order), read in blocks of
  ``DIGEST_BLOCK_PATTERNS`` patterns, so a streamed scan is never loaded whole;
* ``positions_px``, ``mask``: sha256 of the arrays;
* ``geometry``: far/near field, wavelength, distances, pixel sizes;
* ``initial_state``: sha256 of every model variable before the fit (the initial object, probe,
  position corrections, distance, latent and decoder weights: so the probe guess, a calibration,
  ``--probe-modes`` and ``initial_object`` all count);
* ``options``: every option of the fit (arrays such as a per-pixel readout noise or a probe
  support by their sha256).

``FitCheckpoint`` stores the fingerprint (as JSON) in every checkpoint and refuses to restore a
checkpoint whose fingerprint differs; ``describe_mismatch`` names what differs in one line. The
number of epochs is deliberately not part of it: a finished fit may be continued for more epochs
(unless the schedule derived from the epochs changes, e.g. positions starting after a fifth of
them: the start epochs are options, and then differ).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Optional

import numpy as np

__all__ = ["fit_fingerprint", "patterns_digest", "array_digest", "canonical",
           "describe_mismatch", "DIGEST_BLOCK_PATTERNS"]

DIGEST_BLOCK_PATTERNS = 256  # patterns hashed per block (memory ~ 256 H W 4 bytes)


def _update(digest, array: np.ndarray) -> None:
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))


def array_digest(array) -> Optional[str]:
    """sha256 (hex) of an array's dtype, shape and values; None for None."""
    if array is None:
        return None
    array = np.asarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    _update(digest, array)
    return digest.hexdigest()


def patterns_digest(scan, block_patterns: int = DIGEST_BLOCK_PATTERNS) -> str:
    """sha256 (hex) of a scan's (N, H, W) float32 pattern values, hashed ``block_patterns``
    patterns at a time (streamed scans are read block by block, never loaded whole)."""
    n = scan.num_patterns
    digest = hashlib.sha256(f"float32{(n,) + tuple(scan.detector_shape)}".encode())
    if scan.streamed:
        for _, block in scan.patterns.iter_chunks(block_patterns):
            _update(digest, np.asarray(block, np.float32))
    else:
        for start in range(0, n, block_patterns):
            _update(digest, np.asarray(scan.patterns[start:start + block_patterns], np.float32))
    return digest.hexdigest()


def canonical(value):
    """``value`` as plain JSON types: arrays (more than one element) by shape and sha256,
    tuples as lists, numpy scalars as Python numbers, dictionaries with string keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return canonical(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, np.ndarray) or hasattr(value, "numpy"):
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if array.ndim == 0:
            return canonical(array.item())
        return {"shape": list(array.shape), "sha256": array_digest(array)}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def fit_fingerprint(scan, model, options: dict) -> dict:
    """The fingerprint of fitting ``model`` (built and compiled, not yet fitted) to ``scan`` with
    ``options`` (every option that changes the result; see the module docstring)."""
    from adptycho.training.checkpoint import _tf_variable

    state = hashlib.sha256()
    for variable in model.weights:
        _update(state, np.asarray(_tf_variable(variable).numpy()))
    return {
        "patterns": {"shape": [scan.num_patterns, *scan.detector_shape],
                     "sha256": patterns_digest(scan)},
        "positions_px": array_digest(np.asarray(scan.positions_px, np.float64)),
        "mask": array_digest(scan.mask),
        "geometry": canonical({
            "geometry": scan.geometry, "wavelength_m": scan.wavelength_m,
            "detector_distance_m": scan.detector_distance_m,
            "detector_pixel_size_m": scan.detector_pixel_size_m,
            "pixel_size_m": scan.pixel_size_m,
            "propagation_distance_m": scan.propagation_distance_m,
            "focus_distance_m": scan.focus_distance_m}),
        "initial_state": state.hexdigest(),
        "options": canonical(options),
    }


_NAMES = {"patterns.sha256": "the patterns (data content) differ",
          "patterns.shape": "the pattern count or detector shape differs",
          "positions_px": "the scan positions differ", "mask": "the detector mask differs",
          "initial_state": "the initial object/probe (probe guess, calibration, initial object) "
                           "differ"}


def _flatten(value, prefix="") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    if isinstance(value, str) and len(value) == 64:  # a sha256
        return value[:12] + "..."
    return text if len(text) <= 40 else text[:37] + "..."


def describe_mismatch(stored: str, current: str, limit: int = 3) -> str:
    """One line naming what differs between two JSON fingerprints (at most ``limit`` items),
    e.g. ``the patterns (data content) differ (checkpoint 1a2b3c4d5e6f..., now 9f8e7d6c5b4a...)``
    or ``option seed differs (checkpoint 2, now 3)``."""
    try:
        old = _flatten(json.loads(stored)) if stored else {}
    except ValueError:
        old = {}
    new = _flatten(json.loads(current))
    keys = [k for k in sorted(set(old) | set(new), key=lambda k: (k not in _NAMES, k))
            if old.get(k, "<absent>") != new.get(k, "<absent>")]
    # a changed array option shows as .shape and .sha256: name it once
    parts, seen = [], set()
    for key in keys:
        if key in _NAMES:
            name = _NAMES[key]
        else:
            name = key[:-len(".sha256")] if key.endswith(".sha256") else key
            name = name[:-len(".shape")] if name.endswith(".shape") else name
            name = name.replace("options.", "option ").replace("geometry.", "") + " differs"
        if name in seen:
            continue
        seen.add(name)
        parts.append(f"{name} (checkpoint {_short(old.get(key, '<absent>'))}, "
                     f"now {_short(new.get(key, '<absent>'))})")
    if not parts:
        return "the fingerprint differs"
    more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more

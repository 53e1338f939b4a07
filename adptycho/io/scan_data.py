"""``ScanData``: one ptychographic scan, validated on construction and immutable afterwards.

A ``ScanData`` is a frozen dataclass: its fields cannot be reassigned and its arrays are
read-only views, so the checks made at construction hold for the object's whole life. A modified
copy is made with ``scan.replace(field=value, ...)``, which runs every check again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from adptycho.errors import DataError

__all__ = ["ScanData", "FARFIELD", "NEARFIELD"]

FARFIELD = "farfield"
NEARFIELD = "nearfield"


def _positive_or_none(name: str, value) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _read_only(array: np.ndarray, copy: bool = True) -> np.ndarray:
    """A read-only array with the values of ``array``: a copy, or (``copy=False``) a view, so
    that the caller's array keeps its own flags."""
    out = np.array(array, copy=True) if copy else array.view()
    out.flags.writeable = False
    return out


def _is_lazy(patterns) -> bool:
    from adptycho.io.streaming import HDF5Patterns

    return isinstance(patterns, HDF5Patterns)


@dataclasses.dataclass(frozen=True)
class ScanData:
    """A ptychographic scan: diffraction patterns and the scan positions.

    Attributes:
        patterns: (N, H, W) float32 photon counts, in memory, or an ``HDF5Patterns`` that reads
            them from disk in batches (``load_cxi(..., stream=True)``). Far-field patterns are CENTRED (zero spatial
            frequency at pixel (H // 2, W // 2)). Must be finite and non-negative unless
            ``allow_negative`` (dark-subtracted data, for the Poisson-Gaussian loss).
        positions_px: (N, 2) float64 scan positions in object pixels, (y, x) order: the
            coordinate of the top-left corner of the H x W probe window in the object frame
            (any origin; the model places the object grid around them).
        mask: (H, W) bool, True where a detector pixel is valid (note: the CXI file convention
            is the opposite, 0 = good; ``load_cxi`` converts). None means all valid.
        geometry: ``"farfield"`` (Fraunhofer) or ``"nearfield"`` (angular spectrum).
        wavelength_m: wavelength in metres, optional.
        detector_distance_m: sample-detector distance in metres, optional.
        detector_pixel_size_m: (dy, dx) detector pixel pitch in metres, optional.
        pixel_size_m: (dy, dx) object-plane pixel size in metres, optional. For far field
            it is lambda * z / (N * dx_det); for cone-beam near field the effective pixel
            size dx_det / M.
        propagation_distance_m: near field only: the (effective) propagation distance used by
            the angular-spectrum propagator (z2 / M for cone-beam data).
        focus_distance_m: cone-beam near field: the focus-to-sample distance z1, if known.
        probe: optional (M, H, W) complex64 probe guess stored with the data.
        metadata: free-form dictionary (source file, beamline, ...); not validated.
        allow_negative: accept negative counts (dark-subtracted data).

    Immutability: fields cannot be set (``dataclasses.FrozenInstanceError``); ``patterns``,
    ``positions_px``, ``mask`` and ``probe`` are read-only arrays. ``positions_px``, ``mask`` and
    ``probe`` are copies; ``patterns`` is a read-only VIEW of the array given (no copy of a
    possibly large array), so the caller must not modify that array afterwards. Use
    ``replace(...)`` to derive a modified scan (re-validated).

    Raises:
        DataError: on construction (and in ``replace``) for any invalid field.
    """

    patterns: np.ndarray
    positions_px: np.ndarray
    mask: Optional[np.ndarray] = None
    geometry: str = FARFIELD
    wavelength_m: Optional[float] = None
    detector_distance_m: Optional[float] = None
    detector_pixel_size_m: Optional[tuple] = None
    pixel_size_m: Optional[tuple] = None
    propagation_distance_m: Optional[float] = None
    focus_distance_m: Optional[float] = None
    probe: Optional[np.ndarray] = None
    metadata: dict = dataclasses.field(default_factory=dict)
    allow_negative: bool = False

    def _set(self, name: str, value) -> None:
        """Store a validated value (the dataclass is frozen; only the checks may set fields)."""
        object.__setattr__(self, name, value)

    def replace(self, **changes) -> "ScanData":
        """A copy with ``changes`` applied (``dataclasses.replace``): every check runs again.

        Example: ``scan.replace(detector_distance_m=0.07, probe=None)``.
        """
        return dataclasses.replace(self, **changes)

    def __post_init__(self):
        if _is_lazy(self.patterns):
            self._check_lazy_patterns()
        else:
            self._check_patterns()
        n, h, w = self.patterns.shape
        self._check_metadata(n, h, w)

    def _check_lazy_patterns(self):
        """Patterns on disk (``HDF5Patterns``): shape checks now, values when read."""
        patterns = self.patterns
        if patterns.ndim != 3:
            raise DataError(f"patterns must have shape (N, H, W), got {patterns.shape}")
        n, h, w = patterns.shape
        if n == 0 or h < 2 or w < 2:
            raise DataError(f"patterns must hold at least one pattern of 2x2 pixels, got {patterns.shape}")
        if self.allow_negative and not patterns.allow_negative:
            patterns.allow_negative = True

    def _check_patterns(self):
        patterns = np.asarray(self.patterns)
        if patterns.ndim != 3:
            raise DataError(
                f"patterns must have shape (N, H, W), got an array of shape {patterns.shape}")
        if not (np.issubdtype(patterns.dtype, np.number) and not np.iscomplexobj(patterns)):
            raise DataError(f"patterns must be real numbers, got dtype {patterns.dtype}")
        patterns = patterns.astype(np.float32, copy=False)
        n, h, w = patterns.shape
        if n == 0 or h < 2 or w < 2:
            raise DataError(f"patterns must hold at least one pattern of 2x2 pixels, got {patterns.shape}")
        total = patterns.sum(dtype=np.float64)
        if not np.isfinite(total):
            finite = np.isfinite(patterns)  # only built (N x H x W bools) when something is wrong
        else:
            finite = None
        if finite is not None and not finite.all():
            bad = np.argwhere(~finite)[0]
            raise DataError(
                f"patterns contain {int((~finite).sum())} non-finite values (NaN or inf), "
                f"first at pattern {bad[0]}, pixel ({bad[1]}, {bad[2]})")
        if not self.allow_negative and patterns.min() < 0:
            k = int(np.argmin(patterns.reshape(n, -1).min(axis=1)))
            raise DataError(
                f"patterns contain negative counts (minimum {patterns.min():.4g} in pattern {k}); "
                "pass allow_negative=True for dark-subtracted data")
        signal = (patterns > 0).any() if self.allow_negative else total > 0
        if not signal:
            raise DataError(f"all {n} patterns are zero (no photon counted): nothing to "
                            "reconstruct")
        self._set("patterns", _read_only(patterns, copy=False))

    def _check_metadata(self, n, h, w):
        try:
            positions = np.asarray(self.positions_px, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"positions_px must be numbers, got "
                            f"{np.asarray(self.positions_px).dtype}") from None
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise DataError(
                f"positions_px must have shape (N, 2) in (y, x) order, got {positions.shape}")
        if positions.shape[0] != n:
            raise DataError(
                f"positions_px has {positions.shape[0]} rows but there are {n} patterns")
        if not np.isfinite(positions).all():
            raise DataError("positions_px contain non-finite values (NaN or inf)")
        self._set("positions_px", _read_only(positions))

        if self.mask is not None:
            mask = np.asarray(self.mask)
            if not (np.issubdtype(mask.dtype, np.number) or mask.dtype == bool):
                raise DataError(f"mask must be boolean or numeric, got dtype {mask.dtype}")
            if mask.shape != (h, w):
                raise DataError(f"mask has shape {mask.shape}, expected the detector shape {(h, w)}")
            mask = mask.astype(bool)
            if not mask.any():
                raise DataError("mask marks every detector pixel as invalid")
            self._set("mask", _read_only(mask))

        if self.geometry not in (FARFIELD, NEARFIELD):
            raise DataError(f"geometry must be '{FARFIELD}' or '{NEARFIELD}', got {self.geometry!r}")
        for name in ("wavelength_m", "detector_distance_m", "propagation_distance_m",
                     "focus_distance_m"):
            self._set(name, _positive_or_none(name, getattr(self, name)))
        for name in ("detector_pixel_size_m", "pixel_size_m"):
            self._set(name, self._pair(name, getattr(self, name)))
        self._set("metadata", dict(self.metadata or {}))
        self._set("allow_negative", bool(self.allow_negative))
        if self.geometry == NEARFIELD:
            if self.wavelength_m is None or self.pixel_size_m is None or self.propagation_distance_m is None:
                raise DataError(
                    "near-field scans need wavelength_m, pixel_size_m and propagation_distance_m")
        if self.probe is not None:
            probe = np.asarray(self.probe)
            if not np.issubdtype(probe.dtype, np.number):
                raise DataError(f"probe must be (complex) numbers, got dtype {probe.dtype}")
            if probe.ndim == 2:
                probe = probe[None]
            if probe.ndim != 3 or probe.shape[1:] != (h, w):
                raise DataError(
                    f"probe has shape {np.shape(self.probe)}, expected (modes, {h}, {w}) "
                    "to match the detector")
            if not np.isfinite(probe).all():
                raise DataError("probe contains non-finite values")
            self._set("probe", _read_only(probe.astype(np.complex64)))

    @staticmethod
    def _pair(name, value):
        if value is None:
            return None
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (2,))
        for v in arr:
            _positive_or_none(name, v)
        return (float(arr[0]), float(arr[1]))

    # -- convenience -----------------------------------------------------------------------
    @property
    def num_patterns(self) -> int:
        return int(self.patterns.shape[0])

    @property
    def detector_shape(self) -> tuple:
        return tuple(int(s) for s in self.patterns.shape[1:])

    @property
    def streamed(self) -> bool:
        """True when the patterns stay on disk (``HDF5Patterns``) and are read in batches."""
        return _is_lazy(self.patterns)

    def read_patterns(self, indices) -> np.ndarray:
        """(B,) int indices -> (B, H, W) float32 patterns (read from disk for streamed scans)."""
        if self.streamed:
            return self.patterns.read(indices)
        return self.patterns[np.asarray(indices, np.int64)]

    def mean_pattern(self) -> np.ndarray:
        """(H, W) float64 mean of max(pattern, 0) over valid pixels (one chunked pass when
        streamed)."""
        if self.streamed:
            return self.patterns.statistics(self.mask)["mean_pattern"]
        total = np.zeros(self.detector_shape, np.float64)
        for block in self._blocks():  # in blocks: no full-size temporaries
            total += np.maximum(block, 0).sum(axis=0, dtype=np.float64)
        return total * self.valid_mask / self.num_patterns

    def pattern_counts(self) -> np.ndarray:
        """(N,) float64 total counts per pattern over the valid pixels."""
        if self.streamed:
            return self.patterns.statistics(self.mask)["counts"]
        if self.mask is None:
            return np.sum(self.patterns, axis=(1, 2), dtype=np.float64)
        return np.concatenate([np.sum(block * self.mask, axis=(1, 2), dtype=np.float64)
                               for block in self._blocks()])

    def _blocks(self, size: int = 1024):
        for start in range(0, self.num_patterns, size):
            yield self.patterns[start:start + size]

    @property
    def valid_mask(self) -> np.ndarray:
        """(H, W) bool mask, all True where no mask was given."""
        if self.mask is None:
            return np.ones(self.detector_shape, dtype=bool)
        return self.mask

    def subset(self, indices) -> "ScanData":
        """A new ``ScanData`` with only the patterns ``indices`` (any integer index array)."""
        indices = np.asarray(indices)
        patterns = self.patterns.subset(indices) if self.streamed else self.patterns[indices]
        return self.replace(patterns=patterns, positions_px=self.positions_px[indices],
                            metadata=dict(self.metadata))

    def mean_counts(self) -> float:
        """Mean total photon count per pattern (valid pixels only)."""
        return float(np.mean(self.pattern_counts()))

    def describe(self) -> str:
        n, h, w = self.patterns.shape
        parts = [f"{n} patterns of {h}x{w}" + (" (streamed from disk)" if self.streamed else ""),
                 self.geometry,
                 f"{self.mean_counts():.4g} counts/pattern"]
        if self.wavelength_m:
            parts.append(f"wavelength {self.wavelength_m * 1e9:.4g} nm")
        if self.pixel_size_m:
            parts.append(f"object pixel {self.pixel_size_m[0] * 1e9:.4g} nm")
        if self.propagation_distance_m:
            parts.append(f"propagation {self.propagation_distance_m * 1e3:.4g} mm")
        return ", ".join(parts)

"""Coarse-to-fine position refinement: large scan-position errors found at half resolution.

In far field the central ``H/f x W/f`` pixels of every pattern are the diffraction patterns of
the same scan seen with object pixels ``f`` times larger (the object pixel is
``wavelength z / (N dx)``; halving ``N`` doubles it), and

    F_(N/f){ x_c } = crop(F_N{ x }),   x_c = F_(N/f)^-1{ crop(F_N{ x }) }    (ortho FFTs)

holds exactly for the band-limited exit wave ``x_c``. A position error of 2-3 pixels is then one
of 1-1.5 coarse pixels, inside the capture range of the gradient / Gauss-Newton position update,
which fails beyond about one pixel when the probe or object has fine structure (a diffuser's
speckle): at full resolution the positions of a Fermat spiral's outer ring, which overlap only
inward neighbours, stay where the object has adapted to them (robustness case
``ff_poserr3_diffuser_1e6``: outer ring 2.6 -> 1.8 px RMS, object NRMSE 0.024 against 0.015 at the
true positions). ``coarse_positions`` fits object, probe and positions on the cropped patterns
(sequential ePIE with position correction, the probe searched from the data when none is given)
and returns the corrections scaled back to full-resolution pixels, which the full fit starts from.
The same idea as the multi-resolution schemes of image registration (coarse-to-fine pyramids).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from adptycho.io.scan_data import NEARFIELD, ScanData

__all__ = ["CoarsePositionResult", "coarse_scan", "coarse_probe", "coarse_positions", "applies",
           "coarse_stage",
           "COARSE_FACTOR", "COARSE_EPOCHS", "MIN_COARSE_PIXELS"]

COARSE_FACTOR = 2  # 4 (16 x 16 patterns of a 64 x 64 detector) lost the positions in tests
COARSE_EPOCHS = 100  # sequential ePIE epochs at the coarse resolution (50 left 1.2 px, 100 0.96)
MIN_COARSE_PIXELS = 32  # smallest cropped pattern side that still carries the probe's structure


@dataclasses.dataclass
class CoarsePositionResult:
    """The positions found at coarse resolution.

    Attributes:
        positions_px: (N, 2) float64 refined positions (y, x) in the scan's (full-resolution)
            object pixels, in the frame of ``ScanData.positions_px``; their mean change from the
            nominal positions is removed (a common shift is a gauge of object and probe).
        factor: the resolution factor ``f``.
        epochs: ePIE epochs of the coarse fit.
        coarse_shape: (2,) the cropped pattern shape.
    """

    positions_px: np.ndarray
    nominal_positions_px: np.ndarray
    factor: int
    epochs: int
    coarse_shape: tuple

    @property
    def corrections_px(self) -> np.ndarray:
        """(N, 2) float64 ``positions_px - nominal_positions_px``."""
        return self.positions_px - self.nominal_positions_px

    @property
    def rms_shift_px(self) -> float:
        """RMS length of the corrections, in full-resolution pixels."""
        return float(np.sqrt(np.mean(np.sum(self.corrections_px ** 2, axis=1))))

    def summary(self) -> str:
        return (f"coarse positions: {self.epochs} ePIE epochs on the central "
                f"{self.coarse_shape[0]}x{self.coarse_shape[1]} pixels ({self.factor}x coarser "
                f"object pixels) moved the positions by {self.rms_shift_px:.2f} px RMS "
                f"(largest {np.max(np.linalg.norm(self.corrections_px, axis=1)):.2f} px)")

    def attributes(self) -> dict:
        """Flat settings for the result file."""
        return {"coarse_positions_factor": int(self.factor),
                "coarse_positions_epochs": int(self.epochs),
                "coarse_positions_rms_shift_px": self.rms_shift_px}


def _crop_slices(shape, factor: int):
    h, w = int(shape[0]) // factor, int(shape[1]) // factor
    top, left = (int(shape[0]) - h) // 2, (int(shape[1]) - w) // 2
    return slice(top, top + h), slice(left, left + w)


def coarse_scan(scan: ScanData, factor: int = COARSE_FACTOR) -> ScanData:
    """The scan seen at ``factor`` times coarser object pixels (far field only).

    Args:
        scan: a far-field scan with (N, H, W) centred patterns.
        factor: integer >= 2.

    Returns:
        a ``ScanData`` with the central (N, H // factor, W // factor) patterns (and mask),
        ``positions_px / factor`` and, when the scan states it, ``factor`` times the object pixel
        size; no stored probe (``coarse_probe`` converts one).
    """
    if scan.geometry == NEARFIELD:
        raise ValueError("coarse_scan applies to far-field scans (a near-field pattern's crop "
                         "is a crop of the object, not a coarser view of it)")
    rows, cols = _crop_slices(scan.patterns.shape[1:], factor)
    pixel = None if scan.pixel_size_m is None else tuple(
        float(p) * factor for p in np.broadcast_to(np.asarray(scan.pixel_size_m, float), (2,)))
    return dataclasses.replace(
        scan, patterns=np.asarray(scan.patterns)[:, rows, cols],
        positions_px=np.asarray(scan.positions_px, np.float64) / factor,
        mask=None if scan.mask is None else np.asarray(scan.mask)[rows, cols],
        pixel_size_m=pixel, probe=None)


def coarse_probe(probe: np.ndarray, factor: int = COARSE_FACTOR) -> np.ndarray:
    """(..., H, W) complex probe -> (..., H // factor, W // factor) probe on the coarse pixels:
    ``F^-1{crop(F{P})}`` with ortho FFTs (the crop keeps the detector's central pixels, so the
    coarse model's patterns are the crop of the full ones)."""
    probe = np.asarray(probe, np.complex128)
    spectrum = np.fft.fftshift(np.fft.fft2(probe, norm="ortho"), axes=(-2, -1))
    rows, cols = _crop_slices(probe.shape[-2:], factor)
    cropped = np.fft.ifftshift(spectrum[..., rows, cols], axes=(-2, -1))
    return np.fft.ifft2(cropped, norm="ortho").astype(np.complex64)


def applies(scan: ScanData, factor: int = COARSE_FACTOR) -> bool:
    """Whether the coarse stage can run on ``scan``: far field, patterns at least
    ``factor * MIN_COARSE_PIXELS`` on each side."""
    return (scan.geometry != NEARFIELD
            and min(scan.patterns.shape[1:]) >= factor * MIN_COARSE_PIXELS)


def coarse_positions(scan: ScanData, fit: Callable[[ScanData, Optional[np.ndarray], int], object],
                     *, probe: Optional[np.ndarray] = None, factor: int = COARSE_FACTOR,
                     epochs: int = COARSE_EPOCHS) -> CoarsePositionResult:
    """Refine the scan positions at ``factor`` times coarser object pixels.

    Args:
        scan: the far-field scan (``applies(scan)``).
        fit: ``fit(coarse_scan, coarse_probe_or_None, epochs) -> ReconstructionResult`` that
            refines object, probe and positions (``reconstruct`` with a PIE engine; it searches the
            probe when given None).
        probe: (H, W) or (M, H, W) known probe of the full-resolution scan, or None.
        factor, epochs: resolution factor and ePIE epochs.

    Returns:
        ``CoarsePositionResult`` (full-resolution positions in the scan's frame).
    """
    small = coarse_scan(scan, factor)
    result = fit(small, None if probe is None else coarse_probe(probe, factor), int(epochs))
    corrections = (np.asarray(result.positions_px, np.float64)
                   - np.asarray(result.nominal_positions_px, np.float64)) * factor
    corrections -= corrections.mean(axis=0, keepdims=True)
    nominal = np.asarray(scan.positions_px, np.float64)
    return CoarsePositionResult(positions_px=nominal + corrections, nominal_positions_px=nominal,
                                factor=int(factor), epochs=int(epochs),
                                coarse_shape=tuple(small.patterns.shape[1:]))


def coarse_stage(scan: ScanData, probe, config, schedule, fit: Callable):
    """The default schedule's coarse-to-fine position stage, or None where it does not apply.

    It runs when the adaptive schedule (``engine="auto"``) starts with a PIE stage, the positions
    are refined as per-pattern offsets and ``applies(scan)``: ``coarse_positions`` with
    ``fit`` (the workflow's, passed in to keep this module below it) on ``coarse_scan(scan)``,
    from ``probe`` (or the scan's) when known.

    Args:
        scan: the ``ScanData``; probe: the caller's probe or None.
        config: the ``ReconstructConfig``; schedule: the planned ``Schedule``.
        fit: as in ``coarse_positions``.
    """
    from adptycho.engines import PIE_ENGINES

    if not (schedule.adaptive and schedule.stages[0].engine in PIE_ENGINES
            and "positions" in config.refine and config.position_model == "offsets"
            and applies(scan)):
        return None
    result = coarse_positions(scan, fit, probe=probe if probe is not None else scan.probe)
    if config.verbose:
        print(f"adptycho: {result.summary()}", flush=True)
    return result

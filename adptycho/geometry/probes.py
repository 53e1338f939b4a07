"""Probe makers: circular aperture (focused pinhole image), defocused aperture, Gaussian.

All return (H, W) complex64 arrays centred at ((H - 1) / 2, (W - 1) / 2) with unit maximum
amplitude; scale them (or let ``simulate`` scale them) to a photon budget.
"""

from __future__ import annotations

import numpy as np

from adptycho.errors import GeometryError
from adptycho.physics.propagators import angular_spectrum_transfer, near_field

__all__ = ["circular_aperture", "defocused_aperture", "gaussian_probe", "normalize_probe_power"]


def _grid(shape):
    h, w = int(shape[0]), int(shape[1])
    if h < 2 or w < 2:
        raise GeometryError(f"probe shape must be at least 2x2, got {shape}")
    y = np.arange(h) - (h - 1) / 2.0
    x = np.arange(w) - (w - 1) / 2.0
    return np.meshgrid(y, x, indexing="ij")


def circular_aperture(shape, diameter_px: float, edge_px: float = 1.0):
    """Disc of ``diameter_px`` with a smooth (erf-like, width ``edge_px``) edge, flat phase."""
    if diameter_px <= 0:
        raise GeometryError(f"diameter_px must be positive, got {diameter_px}")
    yy, xx = _grid(shape)
    r = np.hypot(yy, xx)
    amplitude = 0.5 * (1.0 - np.tanh((r - diameter_px / 2.0) / max(edge_px, 1e-6)))
    return amplitude.astype(np.complex64)


def defocused_aperture(shape, diameter_px: float, defocus_m: float, wavelength_m: float,
                       pixel_size_m: float, edge_px: float = 1.0):
    """A circular aperture propagated by ``defocus_m`` with the band-limited angular spectrum.

    Gives the ringing, phase-curved illumination of a pinhole slightly out of its image plane.
    """
    aperture = circular_aperture(shape, diameter_px, edge_px)
    transfer = angular_spectrum_transfer(aperture.shape, pixel_size_m, wavelength_m, defocus_m)
    probe = near_field(aperture, transfer).numpy()
    return (probe / np.abs(probe).max()).astype(np.complex64)


def gaussian_probe(shape, fwhm_px: float, curvature_px: float = 0.0):
    """Gaussian amplitude of full width at half maximum ``fwhm_px``.

    ``curvature_px`` adds a quadratic phase ``pi r^2 / curvature_px`` (0: flat phase).
    """
    if fwhm_px <= 0:
        raise GeometryError(f"fwhm_px must be positive, got {fwhm_px}")
    yy, xx = _grid(shape)
    r2 = yy ** 2 + xx ** 2
    sigma = fwhm_px / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    amplitude = np.exp(-r2 / (2.0 * sigma ** 2))
    phase = np.pi * r2 / curvature_px if curvature_px else 0.0
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def normalize_probe_power(probe, photons: float):
    """Scale ``probe`` ((H, W) or (M, H, W)) so that sum |P|^2 over all modes equals ``photons``."""
    probe = np.asarray(probe, dtype=np.complex64)
    power = float(np.sum(np.abs(probe) ** 2))
    if power <= 0:
        raise GeometryError("probe is zero everywhere")
    return (probe * np.sqrt(photons / power)).astype(np.complex64)

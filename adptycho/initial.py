"""Starting guesses for the probe and object."""

from __future__ import annotations

import numpy as np

from adptycho.io.scan_data import NEARFIELD, ScanData
from adptycho.physics.propagators import angular_spectrum_transfer, near_field

__all__ = ["probe_guess", "scale_probe_to_counts", "add_probe_modes"]


def scale_probe_to_counts(probe, scan: ScanData):
    """Rescale (M, H, W) ``probe`` so sum |P|^2 equals the mean counts per pattern.

    For a weakly absorbing object and the orthonormal propagators, the photons in the probe equal
    the counts of a pattern.
    """
    probe = np.asarray(probe, np.complex64)
    power = float(np.sum(np.abs(probe) ** 2))
    counts = max(scan.mean_counts(), 1e-12)
    return (probe * np.sqrt(counts / max(power, 1e-30))).astype(np.complex64)


def probe_guess(scan: ScanData, modes: int = 1):
    """Probe from the measured data: the back-propagated sqrt of the mean pattern.

    Far field: inverse centred FFT of sqrt(mean pattern) (zero phase), which is the probe's
    autocorrelation-like blob centred in the window. Near field: the sqrt of the mean pattern
    propagated back to the sample plane with the angular spectrum. Scaled to the mean counts.

    Returns:
        (modes, H, W) complex64.
    """
    mean_pattern = scan.mean_pattern()
    amplitude = np.sqrt(mean_pattern).astype(np.complex64)
    if scan.geometry == NEARFIELD:
        transfer = angular_spectrum_transfer(scan.detector_shape, scan.pixel_size_m,
                                             scan.wavelength_m, -scan.propagation_distance_m)
        probe = near_field(amplitude, transfer).numpy()
    else:
        probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(amplitude)))
    probe = add_probe_modes(probe[None], modes)
    return scale_probe_to_counts(probe, scan)


def add_probe_modes(probe, modes: int, relative_power: float = 0.05, seed: int = 0):
    """Extend an (M, H, W) probe to ``modes`` modes with weak, randomly perturbed copies."""
    probe = np.asarray(probe, np.complex64)
    if probe.ndim == 2:
        probe = probe[None]
    if modes <= probe.shape[0]:
        return probe[:modes]
    rng = np.random.default_rng(seed)
    extra = []
    base = probe[0]
    for _ in range(modes - probe.shape[0]):
        phase = np.exp(1j * rng.uniform(-np.pi, np.pi, base.shape))
        mode = np.abs(base) * phase * np.sqrt(relative_power)
        extra.append(mode.astype(np.complex64))
    return np.concatenate([probe, np.stack(extra)]).astype(np.complex64)

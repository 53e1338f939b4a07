"""Starting guesses for the probe and object."""

from __future__ import annotations

import numpy as np

from adptycho.io.scan_data import NEARFIELD, ScanData
from adptycho.physics.propagators import angular_spectrum_transfer, near_field

__all__ = ["probe_guess", "scale_probe_to_counts", "add_probe_modes", "probe_diameter_px",
           "pupil_radius_px", "defocused_pupil_probe"]


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


def _centred_mean_amplitude(scan: ScanData) -> np.ndarray:
    """(H, W) sqrt of the mean far-field pattern (centred), masked pixels filled by the mean of
    their point-mirrored partners where valid (the mean intensity of a weak object is nearly
    centro-symmetric), else 0."""
    mean_pattern = scan.mean_pattern()
    valid = scan.valid_mask.astype(bool)
    if not valid.all():
        mirrored = np.roll(mean_pattern[::-1, ::-1], (1 - mean_pattern.shape[0] % 2,
                                                      1 - mean_pattern.shape[1] % 2), (0, 1))
        mirrored_valid = np.roll(valid[::-1, ::-1], (1 - valid.shape[0] % 2,
                                                     1 - valid.shape[1] % 2), (0, 1))
        mean_pattern = np.where(valid, mean_pattern, np.where(mirrored_valid, mirrored, 0.0))
    return np.sqrt(np.maximum(mean_pattern, 0.0))


def _radial_profile(image: np.ndarray, centre) -> np.ndarray:
    """Mean of ``image`` over rings of 1 px around ``centre`` (index = ring radius)."""
    y, x = np.indices(image.shape)
    radius = np.hypot(y - centre[0], x - centre[1]).astype(np.int64)
    total = np.bincount(radius.ravel(), image.ravel())
    count = np.maximum(np.bincount(radius.ravel()), 1)
    return total / count


def probe_diameter_px(scan: ScanData, level: float = 0.05) -> float:
    """Far field: the probe diameter in object pixels from the exit waves' autocorrelation.

    The inverse FFT of a pattern is the autocorrelation of its exit wave ``P O_j``, whose support
    is twice the probe's; the mean over the scan (the inverse FFT of the mean pattern) keeps the
    probe's part. The diameter is the radius at which its radial profile falls below ``level``
    of the peak (after the flat floor of counting noise is removed).

    Returns:
        float, between 2 and the window width.
    """
    mean_pattern = np.square(_centred_mean_amplitude(scan))
    h, w = mean_pattern.shape
    correlation = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(mean_pattern))))
    profile = _radial_profile(correlation, (h // 2, w // 2))
    outer = profile[min(h, w) // 2 - 2: min(h, w) // 2 + 1]
    floor = float(np.median(outer)) if outer.size else 0.0
    profile = np.maximum(profile - floor, 0.0)
    peak = profile[0] if profile[0] > 0 else 1.0
    below = np.flatnonzero(profile < level * peak)
    radius = float(below[0]) if below.size else float(min(h, w) // 2)
    return float(np.clip(radius, 2.0, min(h, w)))


def pupil_radius_px(scan: ScanData, level: float = 0.05) -> float:
    """Far field: the radius in detector pixels that holds ``1 - level`` of the mean pattern's
    power (the illuminated pupil, e.g. a zone plate's disc, plus the object's scattering)."""
    amplitude = _centred_mean_amplitude(scan)
    h, w = amplitude.shape
    power = np.square(amplitude)
    y, x = np.indices(power.shape)
    radius = np.hypot(y - h // 2, x - w // 2).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(power.ravel()[order])
    index = np.searchsorted(cumulative, (1.0 - level) * cumulative[-1])
    return float(max(radius[order][min(index, radius.size - 1)], 1.0))


def defocused_pupil_probe(scan: ScanData, diameter_px: float, modes: int = 1,
                          astigmatism_px=(0.0, 0.0)):
    """Far field: a probe whose detector-plane amplitude is sqrt(mean pattern) and whose phase
    there is a defocus (quadratic) term, ``P = IFFT{sqrt(mean I) exp(i a k^2)}``.

    A focused optic (zone plate, KB mirrors, a lens) defocused by dz gives exactly this form
    (the pupil's Fresnel propagation); for other probes it is the leading term. ``a`` is chosen so
    that the geometric-optics probe diameter is ``|diameter_px|`` object pixels, with the sign of
    ``diameter_px`` the side of the focus: a ray at pupil radius K (detector pixels) lands at
    ``x = N a K / pi`` pixels, so ``a = pi d / (2 N K)``. ``diameter_px = 0`` is the in-focus
    (zero-phase) probe of ``probe_guess``.

    Returns:
        (modes, H, W) complex64, scaled to the mean counts.
    """
    amplitude = _centred_mean_amplitude(scan)
    h, w = amplitude.shape
    radius = pupil_radius_px(scan)
    ky, kx = np.indices(amplitude.shape)
    k2 = (ky - h // 2) ** 2 + (kx - w // 2) ** 2
    unit = np.pi / (2.0 * np.sqrt(h * w) * radius)
    dy, dx = ky - h // 2, kx - w // 2
    phase = unit * (float(diameter_px) * k2 + float(astigmatism_px[0]) * (dy ** 2 - dx ** 2)
                    + float(astigmatism_px[1]) * 2.0 * dy * dx)
    pupil = amplitude * np.exp(1j * phase)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil)))
    probe = add_probe_modes(probe[None].astype(np.complex64), modes)
    return scale_probe_to_counts(probe, scan)

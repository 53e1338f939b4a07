"""Image-quality metrics for complex reconstructions.

Ptychography recovers the object only up to a global phase (and, with probe refinement, a global
complex scale and a translation), so every metric first removes these ambiguities.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["global_factor", "align", "remove_phase_ramp", "nrmse", "psnr", "phase_error", "register",
           "frc", "frc_resolution", "illuminated_region", "spoke_contrast"]


def _region(shape, mask):
    return np.ones(shape, bool) if mask is None else np.asarray(mask, bool)


def global_factor(estimate, truth, mask=None, scale: bool = True) -> complex:
    """Complex factor g minimising ||truth - g estimate|| over ``mask``.

    With ``scale=False`` only the global phase is fitted (|g| = 1).
    """
    sel = _region(np.shape(truth), mask)
    e, t = np.asarray(estimate)[sel], np.asarray(truth)[sel]
    inner = np.vdot(e, t)  # sum conj(e) t
    if not scale:
        return complex(np.exp(1j * np.angle(inner)))
    return complex(inner / max(np.vdot(e, e).real, 1e-30))


def align(estimate, truth, mask=None, scale: bool = True):
    """``estimate`` multiplied by ``global_factor`` (phase, and amplitude if ``scale``)."""
    return np.asarray(estimate) * global_factor(estimate, truth, mask, scale)


def register(estimate, truth, upsample_factor: int = 20, on: str = "complex", mask=None):
    """Sub-pixel registration of ``estimate`` onto ``truth`` (skimage phase correlation).

    The whole images are correlated (cropping them to a region with a hard edge biases the
    shift). ``on="amplitude"`` correlates |estimate| with |truth|, which a linear phase ramp
    (probe-object ambiguity) does not disturb; ``"complex"`` uses the complex images. With a
    ``mask``, only its bounding box is correlated (the unscanned surroundings of a
    reconstruction carry no information about the shift).

    Returns:
        ``(shifted_estimate, shift_yx)``, the shift applied with a Fourier shift.
    """
    from skimage.registration import phase_cross_correlation

    t = np.asarray(truth)
    e = np.asarray(estimate)
    if mask is not None and np.any(mask):
        rows = np.flatnonzero(np.any(mask, axis=1))
        cols = np.flatnonzero(np.any(mask, axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        t, e = t[box], e[box]
    if on == "amplitude":
        t, e = np.abs(t), np.abs(e)
    shift, _, _ = phase_cross_correlation(t, e, upsample_factor=upsample_factor, normalization=None)
    shifted = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(estimate), shift))
    return shifted.astype(np.complex64), np.asarray(shift)


def remove_phase_ramp(estimate, truth, mask=None):
    """Remove the linear phase ramp between ``estimate`` and ``truth`` (probe-object ambiguity).

    With probe refinement, ``O(r) exp(i k.r)`` and ``P(r) exp(-i k.r)`` predict the same
    intensities, so a linear phase ramp is unrecoverable. The ramp is located from the peak of the
    (zero-padded) Fourier transform of ``estimate * conj(truth)`` and refined by a weighted plane
    fit of the wrapped phase difference.
    """
    estimate = np.asarray(estimate)
    truth = np.asarray(truth)
    sel = _region(truth.shape, mask)
    product = np.where(sel, estimate * np.conj(truth), 0)
    ny, nx = product.shape
    pad = 4
    spectrum = np.abs(np.fft.fft2(product, s=(pad * ny, pad * nx)))
    ky, kx = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    ky = (ky + pad * ny // 2) % (pad * ny) - pad * ny // 2
    kx = (kx + pad * nx // 2) % (pad * nx) - pad * nx // 2
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    ramp = 2 * np.pi * (ky * yy / (pad * ny) + kx * xx / (pad * nx))
    residual = np.angle(product * np.exp(-1j * ramp))
    weight = np.abs(product)[sel]
    design = np.stack([yy[sel], xx[sel], np.ones(sel.sum())], axis=1) * weight[:, None]
    coeffs, *_ = np.linalg.lstsq(design, residual[sel] * weight, rcond=None)
    ramp = ramp + coeffs[0] * yy + coeffs[1] * xx
    return (estimate * np.exp(-1j * ramp)).astype(np.complex64)


def nrmse(truth, estimate, mask=None, scale: bool = True, registration: bool = False,
          ramp: bool = False) -> float:
    """Normalised RMS error ``min_g ||truth - g estimate|| / ||truth||`` (Fienup 1997).

    Args:
        truth, estimate: (Y, X) complex arrays.
        mask: (Y, X) bool region to compare (e.g. ``illuminated_region``); default everything.
        scale: fit a complex factor (global phase and amplitude); ``False``: phase only.
        registration: first register the estimate to sub-pixel precision (on the amplitudes
            when ``ramp`` is set and the truth's amplitude has structure, since a phase ramp
            shifts the complex correlation peak).
        ramp: remove a linear phase ramp (``remove_phase_ramp``), for probe-refined results.
    """
    truth = np.asarray(truth)
    estimate = np.asarray(estimate)
    if truth.shape != estimate.shape:
        raise ValueError(f"truth {truth.shape} and estimate {estimate.shape} differ in shape")
    if registration:
        amplitude = np.abs(truth)
        structured = amplitude.std() > 1e-3 * max(amplitude.mean(), 1e-30)
        estimate, _ = register(estimate, truth, on="amplitude" if ramp and structured else "complex",
                               mask=mask)
    if ramp:
        estimate = remove_phase_ramp(estimate, truth, mask)
    sel = _region(truth.shape, mask)
    aligned = align(estimate, truth, sel, scale)
    return float(np.linalg.norm((truth - aligned)[sel]) / max(np.linalg.norm(truth[sel]), 1e-30))


def psnr(truth, estimate, data_range=None, mask=None) -> float:
    """Peak signal-to-noise ratio in dB of real images (Seifert et al. 2024, Eq. 3).

    ``PSNR = 10 log10(range^2 / mean((estimate - truth)^2))``; ``data_range`` defaults to the range
    of ``truth`` (use 1 for amplitude objects in [0, 1], as the paper does).
    """
    truth = np.asarray(truth, np.float64)
    estimate = np.asarray(estimate, np.float64)
    sel = _region(truth.shape, mask)
    if data_range is None:
        data_range = float(truth[sel].max() - truth[sel].min()) or 1.0
    mse = float(np.mean((estimate[sel] - truth[sel]) ** 2))
    return float(10 * np.log10(data_range ** 2 / max(mse, 1e-30)))


def phase_error(truth, estimate, mask=None) -> float:
    """RMS (radians) of the wrapped phase difference after removing its circular mean."""
    sel = _region(np.shape(truth), mask)
    diff = np.angle(np.asarray(estimate)[sel] * np.conj(np.asarray(truth)[sel]))
    mean = np.angle(np.mean(np.exp(1j * diff)))
    return float(np.sqrt(np.mean(np.angle(np.exp(1j * (diff - mean))) ** 2)))


def frc(image1, image2):
    """Fourier ring correlation with the 1/2-bit threshold (van Heel & Schatz 2005).

    Args:
        image1, image2: (Y, X) real or complex images on the same grid (register them first).

    Returns:
        ``(frequency, correlation, threshold)``: ring frequencies in units of Nyquist
        (0 .. 1), |sum F1 conj(F2)| / sqrt(sum |F1|^2 sum |F2|^2) per ring, and the 1/2-bit
        threshold ``(0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))`` for n pixels per ring.
    """
    a = np.asarray(image1)
    b = np.asarray(image2)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError("frc needs two 2-D images of the same shape")
    ny, nx = a.shape
    window = np.outer(np.hanning(ny), np.hanning(nx))
    fa = np.fft.fftshift(np.fft.fft2(a * window))
    fb = np.fft.fftshift(np.fft.fft2(b * window))
    ky = (np.arange(ny) - ny // 2) / ny
    kx = (np.arange(nx) - nx // 2) / nx
    radius = np.hypot(*np.meshgrid(ky, kx, indexing="ij"))
    step = 1.0 / max(ny, nx)
    rings = np.floor(radius / step).astype(int)
    num_rings = int(0.5 / step)
    cross = np.bincount(rings.ravel(), (fa * np.conj(fb)).ravel().real, minlength=num_rings + 1) + \
        1j * np.bincount(rings.ravel(), (fa * np.conj(fb)).ravel().imag, minlength=num_rings + 1)
    pa = np.bincount(rings.ravel(), (np.abs(fa) ** 2).ravel(), minlength=num_rings + 1)
    pb = np.bincount(rings.ravel(), (np.abs(fb) ** 2).ravel(), minlength=num_rings + 1)
    count = np.bincount(rings.ravel(), minlength=num_rings + 1)
    sl = slice(0, num_rings)
    correlation = np.abs(cross[sl]) / np.sqrt(np.maximum(pa[sl] * pb[sl], 1e-300))
    n = np.maximum(count[sl], 1)
    threshold = (0.2071 + 1.9102 / np.sqrt(n)) / (1.2071 + 0.9102 / np.sqrt(n))
    frequency = (np.arange(num_rings) + 0.5) * step / 0.5
    return frequency, correlation, threshold


def frc_resolution(image1, image2) -> float:
    """First frequency (units of Nyquist) where the FRC drops below the 1/2-bit threshold (1.0 if never)."""
    frequency, correlation, threshold = frc(image1, image2)
    below = np.flatnonzero(correlation[1:] < threshold[1:])
    return float(frequency[below[0] + 1]) if below.size else 1.0


def illuminated_region(corners_px, probe, object_shape, threshold: float = 0.1):
    """(Y, X) bool mask where the summed probe intensity exceeds ``threshold`` of its maximum."""
    from adptycho.geometry.grids import illumination_map

    illumination = illumination_map(corners_px, probe, object_shape)
    return illumination > threshold * illumination.max()


def spoke_contrast(obj, positions_px, probe_shape, radius_px):
    """(peak / median, peak frequency) of the angular power spectrum of the phase on a circle.

    The circle is centred on the middle of the scanned region. A Siemens star gives one strong
    angular frequency (its number of spoke pairs when the circle is centred on the star); noise
    gives a flat spectrum (about 20 for this statistic), a blank object 0.
    """
    centre = np.asarray(positions_px).mean(axis=0) + np.asarray(probe_shape) / 2.0
    theta = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    ys = np.round(centre[0] + radius_px * np.sin(theta)).astype(int)
    xs = np.round(centre[1] + radius_px * np.cos(theta)).astype(int)
    ring = np.asarray(obj)[ys, xs]
    ring = np.angle(ring * np.conj(np.mean(ring)))
    power = np.abs(np.fft.rfft(ring - ring.mean())) ** 2
    band = power[4:200]
    median = np.median(band)
    if not median > 0:
        return 0.0, 0
    return float(band.max() / median), int(4 + np.argmax(band))

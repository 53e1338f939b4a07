"""Coarse-to-fine position refinement (``adptycho.coarse_positions``).

The scan is made by a numpy simulator written here (not ``adptycho.simulate``): a speckled
"diffuser" probe (a soft aperture times a random phase screen, seen a short distance away), a
complex object from scikit-image pictures, a raster scan whose true positions are off the nominal
ones by about 5 pixels (RMS 6-7 px).
"""

import dataclasses

import numpy as np
import pytest

from adptycho.coarse_positions import coarse_positions, coarse_probe, coarse_scan
from adptycho.io import ScanData

N = 64


def _object(size):
    from skimage import data, transform

    amplitude = transform.resize(data.camera().astype(float), (size, size), anti_aliasing=True)
    phase = transform.resize(data.moon().astype(float), (size, size), anti_aliasing=True)
    amplitude = (amplitude - amplitude.min()) / np.ptp(amplitude)
    phase = (phase - phase.min()) / np.ptp(phase)
    return (0.5 + 0.5 * amplitude) * np.exp(1.5j * phase)


def _diffuser_probe(rng):
    y, x = np.mgrid[:N, :N] - N / 2
    aperture = 1.0 / (1.0 + np.exp((np.hypot(y, x) - 12.0) / 1.5))
    screen = np.fft.ifft2(np.fft.fft2(rng.normal(size=(N, N)))
                          * np.exp(-(np.fft.fftfreq(N)[:, None] ** 2
                                     + np.fft.fftfreq(N)[None] ** 2) * (2 * np.pi * 1.5) ** 2 / 2)).real
    field = aperture * np.exp(2j * screen / screen.std())
    k2 = np.fft.fftfreq(N)[:, None] ** 2 + np.fft.fftfreq(N)[None] ** 2
    return np.fft.ifft2(np.fft.fft2(field) * np.exp(-1j * np.pi * 20.0 * k2 * N / 4))


def _scan(photons=1e6, grid=8, step=7, error_px=5.0, seed=3):
    rng = np.random.default_rng(seed)
    margin = int(np.ceil(2 * error_px))
    size = N + step * (grid - 1) + 2 * margin
    obj = _object(size)
    probe = _diffuser_probe(rng)
    probe *= np.sqrt(photons / np.sum(np.abs(probe) ** 2))
    g = margin + np.arange(grid) * step
    nominal = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2).astype(float)
    errors = np.clip(np.round(rng.normal(0.0, error_px, nominal.shape)), -margin, margin)
    true = nominal + errors
    patterns = []
    for r, c in true.astype(int):
        wave = np.fft.fftshift(np.fft.fft2(probe * obj[r:r + N, c:c + N], norm="ortho"))
        patterns.append(rng.poisson(np.abs(wave) ** 2))
    scan = ScanData(patterns=np.asarray(patterns, np.float32), positions_px=nominal)
    return scan, probe, errors


def _rms(corrections, errors):
    d = corrections - errors
    d -= d.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(d ** 2, axis=1))))


def test_coarse_probe_spectrum_is_the_central_crop():
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(2, 64, 48)) + 1j * rng.normal(size=(2, 64, 48))
    small = coarse_probe(probe, 2)
    assert small.shape == (2, 32, 24)
    full = np.fft.fftshift(np.fft.fft2(probe, norm="ortho"), axes=(-2, -1))
    part = np.fft.fftshift(np.fft.fft2(small, norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(part, full[:, 16:48, 12:36], atol=1e-5)


def test_coarse_scan_crops_the_centre_and_scales_positions_and_pixels():
    scan, _, _ = _scan(grid=3)
    scan = dataclasses.replace(scan, pixel_size_m=(1e-7, 2e-7), mask=np.ones((N, N), bool))
    small = coarse_scan(scan, 2)
    assert small.patterns.shape == (9, 32, 32) and small.mask.shape == (32, 32)
    np.testing.assert_array_equal(small.patterns, scan.patterns[:, 16:48, 16:48])
    np.testing.assert_allclose(small.positions_px, scan.positions_px / 2)
    np.testing.assert_allclose(small.pixel_size_m, (2e-7, 4e-7))
    with pytest.raises(ValueError, match="far-field"):
        coarse_scan(dataclasses.replace(scan, geometry="nearfield", wavelength_m=1e-10,
                                        propagation_distance_m=0.5), 2)


def test_coarse_stage_finds_positions_that_full_resolution_epie_misses():
    """5 px std errors with a speckled probe: at full resolution the ePIE position correction
    leaves 1.3-1.4 px RMS (some positions are trapped beyond its ~1 px capture range); on the 2x
    coarser pixels the same number of epochs brings them to 0.4-0.7 px."""
    from adptycho.reconstruction import reconstruct

    scan, probe, errors = _scan()
    start = _rms(np.zeros_like(errors), errors)

    def fit(small, small_probe, epochs):
        return reconstruct(small, probe=small_probe, engine=f"epie:{epochs}",
                           refine=("object", "probe", "positions"), verbose=0)

    coarse = coarse_positions(scan, fit, probe=probe, epochs=40)
    full = fit(scan, probe, 40)
    full_rms = _rms(full.positions_px - full.nominal_positions_px, errors)
    coarse_rms = _rms(coarse.corrections_px, errors)
    assert start > 5.0
    assert coarse_rms < 0.6 * full_rms, (start, coarse_rms, full_rms)
    assert coarse_rms < 1.0, (start, coarse_rms, full_rms)
    assert coarse.attributes()["coarse_positions_factor"] == 2

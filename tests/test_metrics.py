"""Metrics: invariances removed exactly, and values that a broken metric would not give."""

import numpy as np
import pytest
from scipy import ndimage

from adptycho.analysis import (frc, frc_resolution, illuminated_region, nrmse, phase_error, psnr,
                               register)
from adptycho.analysis.metrics import remove_phase_ramp
from adptycho.samples import complex_test_object


@pytest.fixture(scope="module")
def truth():
    return complex_test_object((128, 128), "camera", "astronaut").astype(np.complex128)


def test_nrmse_removes_global_phase_and_scale_but_not_structure(truth):
    assert nrmse(truth, 0.7 * np.exp(1.3j) * truth) < 1e-6
    assert nrmse(truth, np.exp(1.3j) * truth, scale=False) < 1e-6
    noisy = truth + 0.05 * np.random.default_rng(0).normal(size=truth.shape)
    expected = np.linalg.norm(noisy - truth) / np.linalg.norm(truth)
    assert nrmse(truth, noisy) == pytest.approx(expected, rel=0.05)
    assert nrmse(truth, np.ones_like(truth)) > 0.1


def test_nrmse_phase_only_alignment_keeps_scale_errors(truth):
    assert nrmse(truth, 0.5 * truth, scale=False) == pytest.approx(0.5, rel=1e-6)


def test_registration_and_ramp_removal_recover_a_shifted_ramped_copy(truth):
    shifted = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(truth), (2.3, -1.6)))
    yy, xx = np.mgrid[:128, :128]
    ramped = shifted * np.exp(1j * (0.05 * yy - 0.03 * xx))
    back, shift = register(ramped, truth, on="amplitude")
    np.testing.assert_allclose(shift, (-2.3, 1.6), atol=0.06)
    region = np.zeros(truth.shape, bool)
    region[16:-16, 16:-16] = True
    assert nrmse(truth, ramped, region) > 0.3
    assert nrmse(truth, ramped, region, registration=True, ramp=True) < 0.05
    # ramp removal alone on an unshifted ramped copy is exact up to float32
    assert nrmse(truth, remove_phase_ramp(truth * np.exp(0.07j * xx), truth)) < 1e-5


def test_psnr_matches_definition():
    truth = np.zeros((10, 10))
    estimate = truth + 0.1
    assert psnr(truth, estimate, data_range=1.0) == pytest.approx(20.0)


def test_phase_error_ignores_global_phase_and_measures_rms(truth):
    assert phase_error(truth, truth * np.exp(2.0j)) < 1e-6
    rng = np.random.default_rng(1)
    perturbation = rng.normal(scale=0.1, size=truth.shape)
    assert phase_error(truth, truth * np.exp(1j * perturbation)) == pytest.approx(0.1, rel=0.05)


def test_frc_is_one_for_identical_images_and_falls_for_independent_noise(truth):
    frequency, correlation, threshold = frc(truth, truth)
    np.testing.assert_allclose(correlation, 1.0, atol=1e-9)
    assert frequency[0] > 0 and frequency[-1] <= 1.0
    assert np.all(threshold > 0) and np.all(threshold <= 1)
    assert frc_resolution(truth, truth) == 1.0
    rng = np.random.default_rng(2)
    blurred = ndimage.gaussian_filter(truth.real, 3) + 0.2 * rng.normal(size=truth.shape)
    other = ndimage.gaussian_filter(truth.real, 3) + 0.2 * rng.normal(size=truth.shape)
    assert frc_resolution(blurred, other) < 0.6


def test_illuminated_region_covers_the_scanned_area():
    probe = np.ones((8, 8))
    region = illuminated_region(np.array([[0, 0], [0, 8]]), probe, (20, 20), 0.5)
    assert region[:8, :16].all() and not region[8:, :].any() and not region[:, 16:].any()

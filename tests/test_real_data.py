"""Real data from ../shared/data (skips cleanly where it is absent)."""

import numpy as np
import pytest

from adptycho.io import data_dir, load_petra_p25, load_tike_siemens_star
from adptycho.reconstruction import reconstruct

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def shared():
    root = data_dir()
    if root is None:
        pytest.skip("../shared/data not available")
    return root


def spoke_contrast(obj, positions_px, probe_shape, radius_px):
    """Peak / median of the angular power spectrum of the phase on a circle around the scan centre.

    A Siemens star gives one strong angular frequency (its number of spoke pairs); noise or a blank
    object gives a flat spectrum (about 20 for this statistic).
    """
    centre = np.asarray(positions_px).mean(axis=0) + np.asarray(probe_shape) / 2.0
    theta = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    ys = np.round(centre[0] + radius_px * np.sin(theta)).astype(int)
    xs = np.round(centre[1] + radius_px * np.cos(theta)).astype(int)
    ring = obj[ys, xs]
    ring = np.angle(ring * np.conj(np.mean(ring)))
    power = np.abs(np.fft.rfft(ring - ring.mean())) ** 2
    band = power[4:200]
    return float(band.max() / np.median(band)), int(4 + np.argmax(band))


def test_spoke_contrast_is_low_for_noise():
    rng = np.random.default_rng(0)
    noise = np.exp(0.1j * rng.normal(size=(200, 200)))
    assert spoke_contrast(noise, np.array([[50.0, 50.0]]), (100, 100), 35)[0] < 60


def test_tike_siemens_star_residual_drops_5x_within_30_epochs(shared):
    scan = load_tike_siemens_star()
    result = reconstruct(scan, epochs=30, batch_size=32, refine=("object", "probe"), verbose=0)
    residual = result.residual_history
    assert residual[0] / residual[-1] >= 5.0, residual
    contrast, _ = spoke_contrast(result.object, result.positions_px, scan.detector_shape, 100)
    assert contrast > 100, contrast


def test_petra_near_field_star_appears_at_z1_3_65_mm(shared):
    scan = load_petra_p25(focus_distance_m=3.65e-3)
    result = reconstruct(scan, epochs=20, batch_size=16, refine=("object", "probe"), verbose=0)
    residual = result.residual_history
    assert residual[0] / residual[-1] > 2.0, residual
    contrast, _ = spoke_contrast(result.object, result.positions_px, scan.detector_shape, 35)
    assert contrast > 100, contrast

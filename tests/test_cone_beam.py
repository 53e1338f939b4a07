"""Cone-beam (Fresnel scaling) near field: z1 as the trainable distance, rescaling, z1 search."""

import numpy as np
import pytest
import tensorflow as tf

from adptycho.calibration import rescale_focus_distance, search_focus_distance
from adptycho.geometry import circular_aperture, cone_beam_geometry, raster_scan
from adptycho.io import ScanData
from adptycho.model import NearFieldGeometry, PtychoModel
from adptycho.objects import PixelObject
from adptycho.physics import angular_spectrum_transfer
from adptycho.simulate import simulate

Z2 = 1.12
DETECTOR_PIXEL = 55e-6
WAVELENGTH = 9.8e-11


def _cone_scan(z1, size=96, window=48, seed=0):
    magnification, pixel, distance = cone_beam_geometry(z1, Z2, DETECTOR_PIXEL)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    angle = np.arctan2(yy - size / 2, xx - size / 2)
    obj = np.exp(1j * 0.4 * (np.cos(12 * angle) > 0) + 0.05j * rng.normal(size=(size, size)))
    probe = circular_aperture((window, window), 30, 3.0) * 1e3
    positions = raster_scan((6, 6), 8.0, start_px=(4, 4), jitter_px=0.6, seed=seed)
    near = NearFieldGeometry(WAVELENGTH, pixel, distance)
    sim = simulate(obj, probe, positions, near_field=near)
    scan = ScanData(sim.patterns, positions, geometry="nearfield", wavelength_m=WAVELENGTH,
                    pixel_size_m=pixel, propagation_distance_m=distance, focus_distance_m=z1,
                    detector_distance_m=Z2, detector_pixel_size_m=(DETECTOR_PIXEL, DETECTOR_PIXEL))
    return scan, obj.astype(np.complex64), probe


def _model(scan, obj, probe):
    near = NearFieldGeometry(scan.wavelength_m, scan.pixel_size_m, scan.propagation_distance_m,
                             focus_distance_m=scan.focus_distance_m, detector_distance_m=Z2,
                             detector_pixel_size_m=DETECTOR_PIXEL)
    return PtychoModel(PixelObject(obj.shape, initial=obj), probe, scan.positions_px, near_field=near)


def test_cone_beam_model_equals_parallel_model_at_nominal_z1():
    scan, obj, probe = _cone_scan(3.65e-3)
    model = _model(scan, obj, probe)
    assert model.near_field.cone_beam
    static = angular_spectrum_transfer(scan.detector_shape, scan.pixel_size_m, WAVELENGTH,
                                       scan.propagation_distance_m).numpy()
    np.testing.assert_allclose(model.transfer_function().numpy(), static, atol=2e-5)
    predicted = model(np.arange(scan.num_patterns)).numpy()
    np.testing.assert_allclose(predicted, scan.patterns, rtol=2e-3, atol=2e-3 * scan.patterns.max())
    assert model.get_focus_distance() == pytest.approx(3.65e-3, rel=1e-6)


def test_gradient_wrt_focus_distance_matches_finite_differences():
    scan, obj, probe = _cone_scan(3.65e-3)
    wrong = ScanData(scan.patterns, scan.positions_px, geometry="nearfield",
                     wavelength_m=WAVELENGTH, pixel_size_m=scan.pixel_size_m,
                     propagation_distance_m=scan.propagation_distance_m, focus_distance_m=3.4e-3,
                     detector_distance_m=Z2, detector_pixel_size_m=(DETECTOR_PIXEL, DETECTOR_PIXEL))
    model = _model(rescale_focus_distance(wrong, 3.4e-3), obj, probe)
    indices = np.arange(scan.num_patterns)

    def loss():
        return float(np.mean(np.asarray(model.pattern_losses(scan.patterns, model(indices)), np.float64)))

    with tf.GradientTape() as tape:
        value = tf.reduce_mean(model.pattern_losses(scan.patterns, model(indices)))
    gradient = float(tape.gradient(value, model.log_distance_scale.value))
    step = 1e-3
    model.log_distance_scale.assign(step)
    plus = loss()
    model.log_distance_scale.assign(-step)
    minus = loss()
    model.log_distance_scale.assign(0.0)
    numeric = (plus - minus) / (2 * step)
    assert gradient == pytest.approx(numeric, rel=2e-2)
    assert abs(gradient) > 0


def test_rescale_focus_distance_scales_positions_pixel_and_distance():
    scan, _, _ = _cone_scan(3.65e-3)
    other = rescale_focus_distance(scan, 4.0e-3)
    m_old = (3.65e-3 + Z2) / 3.65e-3
    m_new = (4.0e-3 + Z2) / 4.0e-3
    np.testing.assert_allclose(other.positions_px, scan.positions_px * m_new / m_old)
    assert other.pixel_size_m[0] == pytest.approx(DETECTOR_PIXEL / m_new)
    assert other.propagation_distance_m == pytest.approx(Z2 / m_new)
    # back again is the identity
    np.testing.assert_allclose(rescale_focus_distance(other, 3.65e-3).positions_px, scan.positions_px)


@pytest.mark.slow
def test_focus_search_finds_z1_from_either_side():
    scan, _, _ = _cone_scan(3.65e-3)
    for start in (3.0e-3, 4.3e-3):
        found, table = search_focus_distance(rescale_focus_distance(scan, start), epochs=15,
                                             batch_size=6)
        assert abs(found - 3.65e-3) < 0.15e-3, (start, found, table)

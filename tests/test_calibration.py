"""Calibration: staged joint refinement, the affine stage model, the calibration file, reuse."""

import numpy as np
import pytest

from adptycho.calibration import Calibration, apply_calibration, calibrate
from adptycho.errors import AdptychoError, DataError
from adptycho.geometry import circular_aperture, fermat_spiral_scan, normalize_probe_power
from adptycho.io import ScanData
from adptycho.analysis import illuminated_region, nrmse
from adptycho.reconstruction import build_model, reconstruct
from adptycho.samples import complex_test_object
from adptycho.simulate import simulate


def _rms(a):
    a = a - a.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(a ** 2, axis=1))))


@pytest.fixture(scope="module")
def fermat_case():
    obj = complex_test_object((192, 192))
    probe = normalize_probe_power(circular_aperture((64, 64), 32, 2.0), 1e6)
    true = fermat_spiral_scan(96, 3.0, center_px=(64, 64))
    return obj, probe, true, simulate(obj, probe, true)


@pytest.fixture(scope="module")
def calibrated(fermat_case):
    obj, probe, true, scan = fermat_case
    rng = np.random.default_rng(0)
    error = rng.normal(scale=2 / np.sqrt(2), size=true.shape)
    error -= error.mean(axis=0)
    return error, calibrate(ScanData(scan.patterns, true + error), epochs=60, batch_size=8)


def test_staged_calibration_recovers_positions_from_2px_errors(fermat_case, calibrated):
    obj, probe, true, scan = fermat_case
    error, calibration = calibrated
    assert _rms(error) > 1.5
    assert _rms(calibration.positions_px - true) < 0.2
    np.testing.assert_allclose(calibration.nominal_positions_px, true + error)
    assert calibration.probe.shape == (1, 64, 64)


def test_affine_model_recovers_stage_scale_and_rotation(fermat_case):
    obj, probe, nominal, _ = fermat_case
    angle = np.deg2rad(1.5)
    truth_affine = 1.03 * np.array([[np.cos(angle), -np.sin(angle)],
                                    [np.sin(angle), np.cos(angle)]])
    centroid = nominal.mean(axis=0)
    actual = centroid + (nominal - centroid) @ truth_affine.T
    scan = simulate(obj, probe, actual)
    model, _ = build_model(ScanData(scan.patterns, nominal), probe=probe, object_shape=obj.shape,
                           initial_object=obj, position_model="affine")
    model.compile(refine=("positions",), learning_rates={"positions": 0.05})
    model.fit(np.arange(scan.num_patterns), scan.patterns, batch_size=8, epochs=25, verbose=0)
    np.testing.assert_allclose(model.affine_matrix(), truth_affine, atol=4e-3)
    assert _rms(model.get_positions() - actual) < 0.1


def test_calibration_file_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    calibration = Calibration(
        probe=(rng.normal(size=(2, 8, 8)) + 1j * rng.normal(size=(2, 8, 8))).astype(np.complex64),
        positions_px=rng.normal(size=(5, 2)), nominal_positions_px=rng.normal(size=(5, 2)),
        affine=np.array([[1.01, 0.02], [-0.02, 0.99]]), distance_m=3.6e-3, geometry="nearfield",
        wavelength_m=1e-10, pixel_size_m=(1.8e-7, 1.8e-7), focus_distance_m=3.65e-3,
        loss_history=np.array([3.0, 2.0]), residual_history=np.array([0.3, 0.2]),
        settings={"epochs": 2})
    path = tmp_path / "calibration.h5"
    calibration.save(path)
    loaded = Calibration.load(path)
    np.testing.assert_array_equal(loaded.probe, calibration.probe)
    np.testing.assert_array_equal(loaded.positions_px, calibration.positions_px)
    np.testing.assert_array_equal(loaded.affine, calibration.affine)
    assert loaded.distance_m == 3.6e-3 and loaded.focus_distance_m == 3.65e-3
    assert loaded.geometry == "nearfield" and loaded.settings == {"epochs": 2}
    with pytest.raises(DataError, match="no such file"):
        Calibration.load(tmp_path / "missing.h5")


def test_apply_calibration_uses_shared_positions_or_the_affine_map():
    nominal = np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [10.0, 10.0]])
    refined = nominal + 0.3
    calibration = Calibration(probe=np.ones((1, 4, 4), np.complex64), positions_px=refined,
                              nominal_positions_px=nominal, affine=np.diag([1.1, 0.9]),
                              distance_m=None, geometry="farfield")
    same = ScanData(np.ones((4, 4, 4)), nominal + 0.1)
    np.testing.assert_allclose(apply_calibration(same, calibration).positions_px, refined)
    other = ScanData(np.ones((3, 4, 4)), np.array([[0.0, 0.0], [0.0, 20.0], [20.0, 10.0]]))
    applied = apply_calibration(other, calibration).positions_px
    centroid = other.positions_px.mean(axis=0)
    np.testing.assert_allclose(applied, centroid + (other.positions_px - centroid) @ np.diag([1.1, 0.9]))
    np.testing.assert_array_equal(apply_calibration(other, calibration).probe, calibration.probe)
    with pytest.raises(AdptychoError, match="does not match the detector"):
        apply_calibration(ScanData(np.ones((4, 6, 6)), nominal), calibration)


def test_low_dose_scan_is_better_with_the_calibration(fermat_case, calibrated):
    obj, probe, true, _ = fermat_case
    error, calibration = calibrated
    dim = simulate(obj, probe, true, photons_per_pattern=3e4, poisson=True, seed=3)
    uncalibrated = ScanData(dim.patterns, true + error)  # what the stage reported
    kwargs = dict(epochs=30, batch_size=8, loss="poisson", object_shape=obj.shape, verbose=0)
    plain = reconstruct(uncalibrated, refine=("object", "probe"), **kwargs, engine="adam")
    applied = apply_calibration(uncalibrated, calibration)
    with_calibration = reconstruct(applied, probe=applied.probe, refine=("object",), **kwargs, engine="adam")
    region = illuminated_region(true, probe, obj.shape, 0.3)
    error_plain = nrmse(obj, plain.object, region, registration=True, ramp=True)
    error_calibrated = nrmse(obj, with_calibration.object, region, registration=True, ramp=True)
    assert error_calibrated < 0.8 * error_plain, (error_calibrated, error_plain)


def test_farfield_distance_calibration_recovers_the_distance(fermat_case):
    """Far field: a 3 % wrong detector distance makes the nominal positions in pixels 3 % too
    small about their centroid (pixel = lambda z / N dx); calibration finds z to < 0.5 %."""
    obj, probe, true, scan = fermat_case
    z_true, z_start = 0.5, 0.5 * 1.03
    centroid = true.mean(axis=0)
    nominal = centroid + (true - centroid) * (z_true / z_start)
    start = ScanData(scan.patterns, nominal, wavelength_m=1e-10, detector_distance_m=z_start,
                     detector_pixel_size_m=(75e-6, 75e-6))
    calibration = calibrate(start, epochs=60, batch_size=8, refine_distance=True)
    assert abs(calibration.distance_m / z_true - 1) < 0.005, calibration.distance_m
    assert _rms(calibration.positions_px - true) < 0.2
    # the low-dose reuse carries the distance (and so the object pixel size) along
    applied = apply_calibration(start, calibration)
    np.testing.assert_allclose(applied.positions_px, calibration.positions_px)
    assert applied.detector_distance_m == pytest.approx(calibration.distance_m)


@pytest.mark.slow
def test_nearfield_distance_calibration_recovers_a_5_percent_error():
    """Seifert-like optical near field scaled down (561 nm, 27.6 um pixels, 6.5 cm, 128x128
    camera, a flat 1.5 mm pinhole image, 96-point Fermat spiral at 80 % overlap): calibration
    from a distance 5 % off, with the probe support and power constraints, finds it to < 1 %
    (the full-size case is ``experiments/calibration_seifert.py``)."""
    from adptycho.geometry import fermat_spacing_for_overlap
    from adptycho.model import NearFieldGeometry

    pixel, z_true = 27.6e-6, 0.065
    diameter = 1.5e-3 / pixel
    probe = circular_aperture((128, 128), diameter, edge_px=1.5)
    positions = fermat_spiral_scan(96, fermat_spacing_for_overlap(0.8, diameter))
    positions -= positions.min(axis=0) - 8.0
    shape = tuple(int(np.ceil(e)) + 128 + 16 for e in positions.max(axis=0))
    obj = complex_test_object(shape, "camera", "astronaut")
    near = NearFieldGeometry(561e-9, (pixel, pixel), z_true)
    bright = simulate(obj, probe, positions, photons_per_pattern=1e7, poisson=True, seed=1,
                      near_field=near)
    scan = ScanData(bright.patterns, positions, geometry="nearfield", wavelength_m=561e-9,
                    pixel_size_m=(pixel, pixel), propagation_distance_m=1.05 * z_true)
    support = np.abs(circular_aperture((128, 128), 1.15 * diameter, edge_px=2.0))
    calibration = calibrate(scan, epochs=60, batch_size=8, refine_positions=False,
                            probe=circular_aperture((128, 128), diameter, edge_px=3.0),
                            probe_support=support, probe_power="auto")
    assert abs(calibration.distance_m / z_true - 1) < 0.01, calibration.distance_m

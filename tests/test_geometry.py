"""Scan patterns, probe makers and object grids."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from adptycho.errors import AdptychoError, GeometryError
from adptycho.geometry import (area_overlap, check_positions_inside, circular_aperture,
                               cone_beam_geometry, farfield_pixel_size_m,
                               fermat_spacing_for_overlap, fermat_spiral_scan, gaussian_probe,
                               illumination_map, normalize_probe_power, object_grid,
                               overlap_to_step, raster_scan, step_to_overlap)


# --------------------------------------------------------------------------------------------
# overlap <-> step
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlap, step", [(0.25, 45.0), (0.0, 60.0), (-0.25, 75.0),
                                           (-0.5, 90.0)])
def test_overlap_to_step_and_back(overlap, step):
    assert overlap_to_step(overlap, 60) == pytest.approx(step, abs=1e-12)
    assert step_to_overlap(step, 60) == pytest.approx(overlap, abs=1e-12)


def test_overlap_step_round_trip_many_values():
    for overlap in np.linspace(-0.9, 0.95, 17):
        for diameter in (10.0, 37.5, 128.0):
            step = overlap_to_step(overlap, diameter)
            assert step_to_overlap(step, diameter) == pytest.approx(overlap, abs=1e-12)


@pytest.mark.parametrize("args", [(1.0, 60), (1.5, 60), (0.2, 0), (0.2, -3)])
def test_overlap_to_step_rejects_bad_input(args):
    with pytest.raises(GeometryError):
        overlap_to_step(*args)


def test_area_overlap_limits():
    assert area_overlap(0.0, 60) == pytest.approx(1.0)
    assert area_overlap(60.0, 60) == 0.0
    assert area_overlap(90.0, 60) == 0.0
    # half-diameter offset: 2/pi (acos(1/2) - 1/2 sqrt(3/4)) = 0.391
    assert area_overlap(30.0, 60) == pytest.approx(0.391002218, rel=1e-6)


# --------------------------------------------------------------------------------------------
# raster and Fermat scans
# --------------------------------------------------------------------------------------------
def test_raster_scan_shape_and_order():
    pos = raster_scan((3, 4), (10.0, 7.0), start_px=(2.0, 5.0))
    assert pos.shape == (12, 2)
    assert pos.dtype == np.float64
    # row-major: x runs fastest, y increases every 4 points; no snake
    np.testing.assert_array_equal(pos[:4], [[2, 5], [2, 12], [2, 19], [2, 26]])
    np.testing.assert_array_equal(pos[4], [12, 5])
    np.testing.assert_array_equal(pos[-1], [22, 26])
    expected = np.array([[2 + 10 * r, 5 + 7 * c] for r in range(3) for c in range(4)], float)
    np.testing.assert_array_equal(pos, expected)


def test_raster_scan_scalar_step():
    pos = raster_scan((2, 2), 45.0)
    np.testing.assert_array_equal(pos, [[0, 0], [0, 45], [45, 0], [45, 45]])


def test_raster_scan_jitter_reproducible():
    base = raster_scan((5, 6), 20.0)
    a = raster_scan((5, 6), 20.0, jitter_px=1.5, seed=3)
    b = raster_scan((5, 6), 20.0, jitter_px=1.5, seed=3)
    c = raster_scan((5, 6), 20.0, jitter_px=1.5, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    deviation = a - base
    assert np.all(deviation != 0)
    assert 0.8 < np.std(deviation) < 2.5  # jitter of the requested size
    assert np.max(np.abs(deviation)) < 10  # still a raster


def test_raster_scan_rejects_empty():
    with pytest.raises(GeometryError):
        raster_scan((0, 3), 10.0)


def test_fermat_spiral_radii_and_golden_angle():
    c, n_points, centre = 4.2, 200, np.array([50.0, -20.0])
    pos = fermat_spiral_scan(n_points, c, center_px=centre)
    assert pos.shape == (n_points, 2)
    rel = pos - centre
    n = np.arange(n_points)
    np.testing.assert_allclose(np.hypot(rel[:, 0], rel[:, 1]), c * np.sqrt(n), rtol=1e-12,
                               atol=1e-12)
    theta = np.arctan2(rel[1:, 0], rel[1:, 1])  # y = r sin, x = r cos
    increment = np.mod(np.diff(theta), 2 * np.pi)
    np.testing.assert_allclose(np.rad2deg(increment), 137.508, atol=1e-9)
    np.testing.assert_allclose(pos[0], centre)


@pytest.mark.parametrize("overlap", [0.5, 0.25, 0.0, -0.25])
def test_fermat_spacing_gives_requested_nearest_neighbour_distance(overlap):
    diameter = 60.0
    spacing = fermat_spacing_for_overlap(overlap, diameter)
    pos = fermat_spiral_scan(300, spacing)
    distances, _ = cKDTree(pos).query(pos, k=2)
    median = np.median(distances[:, 1])
    target = diameter * (1 - overlap)
    assert abs(median - target) < 0.1 * target, (median, target)


def test_fermat_spiral_rejects_empty():
    with pytest.raises(GeometryError):
        fermat_spiral_scan(0, 3.0)


# --------------------------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, diameter", [((64, 64), 30.0), ((65, 48), 21.0)])
def test_circular_aperture_radius(shape, diameter):
    probe = circular_aperture(shape, diameter, edge_px=1.0)
    assert probe.shape == shape and probe.dtype == np.complex64
    amp = np.abs(probe)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r)
    # the amplitude is a decreasing function of the distance to the centre; its half maximum
    # lies at r = diameter / 2
    half = 0.5 * amp.max()
    r_half = np.interp(-half, -amp.ravel()[order], r[order])
    assert r_half == pytest.approx(diameter / 2, abs=0.1)
    assert amp.max() == pytest.approx(1.0, abs=1e-3)
    assert np.all(np.angle(probe[amp > 1e-3]) == 0)
    # centred at ((H - 1) / 2, (W - 1) / 2)
    total = amp.sum()
    assert np.sum(amp * yy) / total == pytest.approx(cy, abs=1e-4)
    assert np.sum(amp * xx) / total == pytest.approx(cx, abs=1e-4)


def test_circular_aperture_area():
    amp = np.abs(circular_aperture((128, 128), 60.0, edge_px=1.0))
    assert np.sum(amp) == pytest.approx(np.pi * 30.0 ** 2, rel=0.01)


def test_gaussian_probe_fwhm():
    fwhm = 12.0
    probe = gaussian_probe((63, 63), fwhm)  # odd: centre on pixel 31
    amp = np.abs(probe)
    assert amp[31, 31] == pytest.approx(1.0)
    profile = amp[31]
    x = np.arange(63) - 31.0
    right = x >= 0
    r_half = np.interp(-0.5, -profile[right], x[right])
    assert 2 * r_half == pytest.approx(fwhm, rel=1e-2)
    # exactly Gaussian: ln(amp) is quadratic with the FWHM's sigma
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    np.testing.assert_allclose(profile, np.exp(-x ** 2 / (2 * sigma ** 2)), rtol=1e-5, atol=1e-7)


def test_gaussian_probe_curvature_phase():
    probe = gaussian_probe((32, 32), 10.0, curvature_px=200.0)
    yy, xx = np.mgrid[:32, :32] - 15.5
    expected = np.pi * (yy ** 2 + xx ** 2) / 200.0
    np.testing.assert_allclose(np.angle(probe * np.exp(-1j * expected)), 0.0, atol=1e-4)
    assert np.ptp(np.angle(probe)) > 1.0


@pytest.mark.parametrize("photons", [1.0, 1e6, 3.7e8])
def test_normalize_probe_power(photons):
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(3, 20, 20)) + 1j * rng.normal(size=(3, 20, 20))
    out = normalize_probe_power(probe, photons)
    assert out.dtype == np.complex64
    assert np.sum(np.abs(out.astype(np.complex128)) ** 2) == pytest.approx(photons, rel=1e-6)
    # a pure scaling: mode ratios and phases kept
    ratio = out / probe
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
    assert abs(np.angle(ratio.flat[0])) < 1e-6


def test_probe_makers_reject_bad_input():
    with pytest.raises(GeometryError):
        circular_aperture((16, 16), 0)
    with pytest.raises(GeometryError):
        gaussian_probe((16, 16), -1)
    with pytest.raises(GeometryError):
        gaussian_probe((1, 16), 3)
    with pytest.raises(GeometryError):
        normalize_probe_power(np.zeros((8, 8)), 10.0)


# --------------------------------------------------------------------------------------------
# object grids and units
# --------------------------------------------------------------------------------------------
def test_object_grid_keeps_non_negative_positions():
    positions = np.array([[0.0, 3.5], [10.25, 0.0], [20.0, 31.7]])
    grid = object_grid(positions, (16, 16), padding_px=4)
    assert grid.origin_px == (0.0, 0.0)
    np.testing.assert_array_equal(grid.corners(positions), positions)
    # largest window (corner 20, 31.7 -> ceil 32) plus padding
    assert grid.shape == (20 + 16 + 4, 32 + 16 + 4)


def test_object_grid_shifts_negative_positions():
    positions = np.array([[-165.3, -10.0], [150.0, 164.2], [0.0, 20.0]])
    grid = object_grid(positions, (128, 128), padding_px=4)
    corners = grid.corners(positions)
    # smallest corner lands at padding (up to the fractional part kept for sub-pixel accuracy)
    assert np.all(corners.min(axis=0) >= 4) and np.all(corners.min(axis=0) < 5)
    fractional = np.mod(corners - positions, 1.0)
    np.testing.assert_allclose(fractional, 0.0, atol=1e-12)  # integer offset
    np.testing.assert_allclose(corners - positions,
                               np.broadcast_to(np.asarray(grid.origin_px), positions.shape))
    assert np.all(corners.max(axis=0) + 128 <= np.asarray(grid.shape))
    check_positions_inside(corners, (128, 128), grid.shape)


def test_object_grid_only_negative_axis_is_shifted():
    positions = np.array([[-3.0, 2.0], [5.0, 9.0]])
    grid = object_grid(positions, (8, 8), padding_px=2)
    assert grid.origin_px[1] == 0.0
    assert grid.origin_px[0] == 5.0


def test_object_grid_with_explicit_shape():
    positions = np.array([[0.0, 0.0], [10.0, 12.0]])
    grid = object_grid(positions, (8, 8), object_shape=(20, 20))
    assert grid.shape == (20, 20) and grid.origin_px == (0.0, 0.0)
    with pytest.raises(GeometryError):
        object_grid(positions, (8, 8), object_shape=(18, 18))


def test_check_positions_inside_names_the_position():
    corners = np.array([[0.0, 0.0], [8.0, 8.0], [13.5, 3.0], [-0.5, 2.0]])
    with pytest.raises(GeometryError) as info:
        check_positions_inside(corners, (16, 16), (28, 28))
    message = str(info.value)
    assert "position 2" in message
    assert "13.50" in message
    assert "2 scan positions" in message
    assert isinstance(info.value, AdptychoError) and isinstance(info.value, ValueError)


def test_check_positions_inside_accepts_edges():
    # floor(12.9) = 12 = limit: allowed; 0 allowed
    check_positions_inside(np.array([[0.0, 0.0], [12.0, 12.9]]), (16, 16), (28, 28))
    with pytest.raises(GeometryError, match="position 0"):
        check_positions_inside(np.array([[13.0, 0.0]]), (16, 16), (28, 28))


def test_farfield_pixel_size():
    dy, dx = farfield_pixel_size_m(1e-10, 5.0, (128, 256), (75e-6, 55e-6))
    assert dy == pytest.approx(1e-10 * 5.0 / (128 * 75e-6))
    assert dx == pytest.approx(1e-10 * 5.0 / (256 * 55e-6))


def test_cone_beam_geometry_petra_numbers():
    m, pixel, z_eff = cone_beam_geometry(3.65e-3, 1.12, 55e-6)
    assert m == pytest.approx((3.65e-3 + 1.12) / 3.65e-3)
    assert m == pytest.approx(307.8, abs=0.1)
    assert pixel[0] == pytest.approx(178.7e-9, rel=1e-3) and pixel[0] == pixel[1]
    assert z_eff == pytest.approx(3.638e-3, rel=1e-3)
    with pytest.raises(GeometryError):
        cone_beam_geometry(0.0, 1.0, 55e-6)


def test_illumination_map():
    probe = np.ones((2, 4, 4), complex)
    out = illumination_map(np.array([[0, 0], [2, 2]]), probe, (8, 8))
    assert out[0, 0] == 2.0 and out[3, 3] == 4.0 and out[5, 5] == 2.0 and out[7, 7] == 0.0
    assert out.sum() == pytest.approx(2 * 2 * 16)

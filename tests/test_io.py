"""ScanData validation, CXI files, reconstruction files and the real-data loaders."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from adptycho.errors import AdptychoError, DataError
from adptycho.geometry import cone_beam_geometry, farfield_pixel_size_m
from adptycho.io import (FARFIELD, NEARFIELD, ReconstructionResult, ScanData, load_cxi,
                         load_petra_p25, load_reconstruction, load_tike_siemens_star, save_cxi,
                         save_reconstruction)
from adptycho.io.cxi import PLANCK_JOULE_METRE

DETECTOR = "entry_1/instrument_1/detector_1"
SOURCE = "entry_1/instrument_1/source_1"
TRANSLATION = "entry_1/sample_1/geometry_1/translation"


def _patterns(n=4, h=16, w=16, seed=0):
    return np.random.default_rng(seed).poisson(20.0, size=(n, h, w)).astype(np.float32)


def _positions(n=4, seed=0):
    return np.random.default_rng(seed).uniform(-30, 30, size=(n, 2))


# --------------------------------------------------------------------------------------------
# ScanData validation
# --------------------------------------------------------------------------------------------
def test_scan_data_valid_construction():
    patterns = _patterns().astype(np.int32)
    scan = ScanData(patterns, _positions().tolist(), mask=np.ones((16, 16), int))
    assert scan.patterns.dtype == np.float32 and scan.positions_px.dtype == np.float64
    assert scan.mask.dtype == bool and scan.num_patterns == 4 and scan.detector_shape == (16, 16)
    np.testing.assert_array_equal(scan.patterns, patterns)
    sub = scan.subset([3, 1])
    np.testing.assert_array_equal(sub.patterns, patterns[[3, 1]])
    np.testing.assert_array_equal(sub.positions_px, scan.positions_px[[3, 1]])


def test_scan_data_mean_counts_uses_mask():
    patterns = np.ones((2, 4, 4), np.float32)
    mask = np.ones((4, 4), bool)
    mask[0] = False
    assert ScanData(patterns, np.zeros((2, 2))).mean_counts() == 16.0
    assert ScanData(patterns, np.zeros((2, 2)), mask=mask).mean_counts() == 12.0


@pytest.mark.parametrize("make_kwargs, words", [
    (lambda: dict(patterns=_patterns()[0], positions_px=_positions(1)), ["shape", "(N, H, W)"]),
    (lambda: dict(patterns=np.where(np.eye(16, dtype=bool)[None], np.nan, _patterns()),
                  positions_px=_positions()), ["non-finite", "NaN"]),
    (lambda: dict(patterns=_patterns() - 25.0, positions_px=_positions()),
     ["negative", "allow_negative"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions()[:, :1]), ["positions_px", "(N, 2)"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(3)), ["3 rows", "4 patterns"]),
    (lambda: dict(patterns=_patterns(),
                  positions_px=np.where([[False, False], [True, False], [False, False],
                                         [False, False]], np.nan, _positions())),
     ["positions_px", "non-finite"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(), mask=np.ones((16, 15), bool)),
     ["mask", "(16, 15)", "(16, 16)"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(), mask=np.zeros((16, 16), bool)),
     ["mask", "invalid"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(), wavelength_m=0.0),
     ["wavelength_m", "positive"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(), wavelength_m=-1e-10),
     ["wavelength_m", "positive"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(),
                  probe=np.ones((16, 15), np.complex64)), ["probe", "(16, 15)"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(),
                  probe=np.ones((1, 1, 16, 16), np.complex64)), ["probe"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(), geometry="nearfield"),
     ["near-field", "propagation_distance_m"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(), geometry="fresnel"),
     ["geometry"]),
    (lambda: dict(patterns=np.zeros((4, 16, 16)), positions_px=_positions()), ["all 4", "zero"]),
    (lambda: dict(patterns=-_patterns(), positions_px=_positions(), allow_negative=True),
     ["all 4", "zero"]),
    (lambda: dict(patterns=_patterns().astype(np.complex64), positions_px=_positions()),
     ["real numbers", "complex64"]),
    (lambda: dict(patterns=_patterns(), positions_px=np.full((4, 2), "a")), ["positions_px"]),
    (lambda: dict(patterns=_patterns(), positions_px=_positions(),
                  probe=np.full((16, 16), "x")), ["probe", "numbers"]),
], ids=["2d-patterns", "nan-patterns", "negative", "positions-shape", "positions-count",
        "nan-positions", "mask-shape", "mask-all-invalid", "zero-wavelength",
        "negative-wavelength", "probe-shape", "probe-ndim", "nearfield-missing", "bad-geometry",
        "all-zero", "all-zero-or-negative", "complex-patterns", "string-positions",
        "string-probe"])
def test_scan_data_validation_errors(make_kwargs, words):
    with pytest.raises(DataError) as info:
        ScanData(**make_kwargs())
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert isinstance(info.value, AdptychoError)


def test_scan_data_is_immutable_and_replace_runs_the_checks_again():
    patterns = _patterns()
    scan = ScanData(patterns, _positions(), mask=np.ones((16, 16), bool), wavelength_m=1e-10,
                    probe=np.ones((16, 16), np.complex64))
    with pytest.raises(dataclasses.FrozenInstanceError):
        scan.wavelength_m = -1.0  # would bypass the check
    with pytest.raises(dataclasses.FrozenInstanceError):
        scan.patterns = np.full_like(patterns, np.nan)
    for array in (scan.patterns, scan.positions_px, scan.mask, scan.probe):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = -1
    patterns[0, 0, 0] = 1.0  # the caller's own array keeps its flags (the scan holds a view)
    changed = scan.replace(wavelength_m=2e-10, probe=None)
    assert changed.wavelength_m == 2e-10 and changed.probe is None
    assert scan.wavelength_m == 1e-10 and scan.probe is not None  # the original is unchanged
    np.testing.assert_array_equal(changed.patterns, scan.patterns)
    with pytest.raises(DataError, match="wavelength_m"):
        scan.replace(wavelength_m=0.0)
    with pytest.raises(DataError, match="non-finite"):
        scan.replace(patterns=np.where(np.eye(16, dtype=bool)[None], np.inf, _patterns()))
    with pytest.raises(DataError, match="3 rows"):
        scan.replace(positions_px=_positions(3))
    with pytest.raises(DataError, match="zero"):
        scan.replace(patterns=np.zeros_like(patterns))
    sub = scan.subset([2, 0])  # derived copies are validated and read-only too
    assert sub.num_patterns == 2 and not sub.patterns.flags.writeable


def test_scan_data_nan_pattern_location_reported():
    patterns = _patterns()
    patterns[2, 5, 7] = np.inf
    with pytest.raises(DataError, match=r"pattern 2, pixel \(5, 7\)"):
        ScanData(patterns, _positions())


def test_scan_data_negative_counts_allowed_when_requested():
    patterns = _patterns() - 25.0
    assert patterns.min() < 0
    scan = ScanData(patterns, _positions(), allow_negative=True)
    assert scan.patterns.min() == patterns.min()


def test_scan_data_probe_2d_becomes_single_mode():
    probe = np.ones((16, 16), complex)
    scan = ScanData(_patterns(), _positions(), probe=probe)
    assert scan.probe.shape == (1, 16, 16) and scan.probe.dtype == np.complex64


# --------------------------------------------------------------------------------------------
# CXI
# --------------------------------------------------------------------------------------------
def _far_field_scan(with_mask=True, with_probe=True):
    wavelength, distance, det_pixel = 1.3e-10, 2.5, (75e-6, 55e-6)
    pixel = farfield_pixel_size_m(wavelength, distance, (16, 18), det_pixel)
    mask = np.ones((16, 18), bool)
    mask[3, 4] = mask[10, 0] = mask[15, 17] = False
    rng = np.random.default_rng(1)
    probe = (rng.normal(size=(2, 16, 18)) + 1j * rng.normal(size=(2, 16, 18))).astype(np.complex64)
    return ScanData(_patterns(5, 16, 18), _positions(5), mask=mask if with_mask else None,
                    wavelength_m=wavelength, detector_distance_m=distance,
                    detector_pixel_size_m=det_pixel, pixel_size_m=pixel,
                    probe=probe if with_probe else None)


def test_cxi_round_trip_far_field(tmp_path):
    scan = _far_field_scan()
    path = tmp_path / "sub" / "scan.cxi"
    save_cxi(path, scan)
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    loaded = load_cxi(path)
    assert loaded.geometry == FARFIELD
    np.testing.assert_array_equal(loaded.patterns, scan.patterns)
    np.testing.assert_allclose(loaded.positions_px, scan.positions_px, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(loaded.mask, scan.mask)
    assert loaded.wavelength_m == pytest.approx(scan.wavelength_m, rel=1e-12)
    assert loaded.detector_distance_m == pytest.approx(2.5, rel=1e-12)
    assert loaded.detector_pixel_size_m == pytest.approx((75e-6, 55e-6), rel=1e-12)
    assert loaded.pixel_size_m == pytest.approx(scan.pixel_size_m, rel=1e-12)
    np.testing.assert_array_equal(loaded.probe, scan.probe)
    assert loaded.propagation_distance_m is None


def test_cxi_file_layout_follows_convention(tmp_path):
    scan = _far_field_scan()
    path = tmp_path / "scan.cxi"
    save_cxi(path, scan)
    with h5py.File(path, "r") as f:
        stored_mask = f[f"{DETECTOR}/mask"][()]
        translation = f[TRANSLATION][()]
        energy = float(f[f"{SOURCE}/energy"][()])
        np.testing.assert_array_equal(f["entry_1/data_1/data"][()], scan.patterns)
    # CXI: 0 = good pixel; ScanData: True = valid
    np.testing.assert_array_equal(stored_mask == 0, scan.mask)
    assert stored_mask[3, 4] != 0 and stored_mask[0, 0] == 0
    # translations in metres, (x, y, z) order
    assert translation.shape == (5, 3)
    np.testing.assert_allclose(translation[:, 0], scan.positions_px[:, 1] * scan.pixel_size_m[1])
    np.testing.assert_allclose(translation[:, 1], scan.positions_px[:, 0] * scan.pixel_size_m[0])
    assert energy == pytest.approx(PLANCK_JOULE_METRE / scan.wavelength_m)


def test_cxi_round_trip_without_optional_fields(tmp_path):
    scan = _far_field_scan(with_mask=False, with_probe=False)
    save_cxi(tmp_path / "scan.cxi", scan)
    loaded = load_cxi(tmp_path / "scan.cxi")
    assert loaded.mask is None and loaded.probe is None
    np.testing.assert_allclose(loaded.positions_px, scan.positions_px, atol=1e-9)


def test_save_cxi_needs_geometry(tmp_path):
    scan = ScanData(_patterns(), _positions())
    with pytest.raises(DataError, match="wavelength_m"):
        save_cxi(tmp_path / "never_written.cxi", scan)
    assert not list(tmp_path.iterdir())


def test_cxi_near_field_cone_beam(tmp_path):
    z1, z2, det_pixel, wavelength = 3.65e-3, 1.12, (55e-6, 55e-6), 9.7949e-11
    magnification, pixel, z_eff = cone_beam_geometry(z1, z2, det_pixel)
    scan = ScanData(_patterns(), _positions(), geometry=NEARFIELD, wavelength_m=wavelength,
                    detector_distance_m=z2, detector_pixel_size_m=det_pixel, pixel_size_m=pixel,
                    propagation_distance_m=z_eff, focus_distance_m=z1)
    save_cxi(tmp_path / "near.cxi", scan)
    loaded = load_cxi(tmp_path / "near.cxi", focus_distance_m=z1)
    assert loaded.geometry == NEARFIELD
    assert loaded.metadata["magnification"] == pytest.approx((z1 + z2) / z1, rel=1e-12)
    assert loaded.pixel_size_m == pytest.approx((55e-6 * z1 / (z1 + z2),) * 2, rel=1e-12)
    assert loaded.propagation_distance_m == pytest.approx(z2 * z1 / (z1 + z2), rel=1e-12)
    assert loaded.focus_distance_m == z1
    assert loaded.detector_distance_m == pytest.approx(z2)
    np.testing.assert_allclose(loaded.positions_px, scan.positions_px, atol=1e-9)
    # the same file read as far field gives different (far-field) pixels
    far = load_cxi(tmp_path / "near.cxi")
    assert far.geometry == FARFIELD
    assert far.pixel_size_m[0] == pytest.approx(wavelength * z2 / (16 * 55e-6))


def test_cxi_parallel_beam_near_field(tmp_path):
    scan = _far_field_scan()
    save_cxi(tmp_path / "scan.cxi", scan)
    loaded = load_cxi(tmp_path / "scan.cxi", propagation_distance_m=0.01)
    assert loaded.geometry == NEARFIELD
    assert loaded.propagation_distance_m == 0.01
    assert loaded.pixel_size_m == pytest.approx((75e-6, 55e-6))
    with h5py.File(tmp_path / "scan.cxi", "r") as f:
        translation = f[TRANSLATION][()]
    np.testing.assert_allclose(loaded.positions_px[:, 0], translation[:, 1] / 75e-6)
    np.testing.assert_allclose(loaded.positions_px[:, 1], translation[:, 0] / 55e-6)


def _write_cxi(path, omit=(), data_path=f"{DETECTOR}/data", energy=None, **overrides):
    """A minimal CXI file by hand (h5py), leaving out the paths in ``omit``."""
    n = 3
    fields = {
        data_path: np.ones((n, 8, 8), np.int32),
        f"{DETECTOR}/distance": 1.5,
        f"{DETECTOR}/x_pixel_size": 75e-6,
        f"{SOURCE}/wavelength": 1e-10,
        TRANSLATION: np.stack([np.arange(n) * 1e-7, np.arange(n) * 2e-7, np.zeros(n)], axis=1),
    }
    if energy is not None:
        fields[f"{SOURCE}/energy"] = energy
        del fields[f"{SOURCE}/wavelength"]
    fields.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in fields.items():
            if key not in omit:
                f.create_dataset(key, data=value)
    return path


def test_load_minimal_handwritten_cxi(tmp_path):
    scan = load_cxi(_write_cxi(tmp_path / "m.cxi"))
    pixel = 1e-10 * 1.5 / (8 * 75e-6)  # y pixel size defaults to x
    assert scan.pixel_size_m == pytest.approx((pixel, pixel))
    np.testing.assert_allclose(scan.positions_px[:, 0], np.arange(3) * 2e-7 / pixel)  # row <- y
    np.testing.assert_allclose(scan.positions_px[:, 1], np.arange(3) * 1e-7 / pixel)  # col <- x
    assert scan.mask is None and scan.probe is None


def test_load_cxi_data_1_fallback(tmp_path):
    scan = load_cxi(_write_cxi(tmp_path / "d.cxi", data_path="entry_1/data_1/data"))
    assert scan.patterns.shape == (3, 8, 8)


def test_load_cxi_energy_instead_of_wavelength(tmp_path):
    energy = PLANCK_JOULE_METRE / 1.2e-10  # joules
    scan = load_cxi(_write_cxi(tmp_path / "e.cxi", energy=energy))
    assert scan.wavelength_m == pytest.approx(1.2e-10, rel=1e-12)
    with pytest.raises(DataError, match="energy"):
        load_cxi(_write_cxi(tmp_path / "e0.cxi", energy=-1.0))


@pytest.mark.parametrize("missing", [f"{DETECTOR}/data", TRANSLATION, f"{DETECTOR}/distance",
                                     f"{DETECTOR}/x_pixel_size"])
def test_load_cxi_missing_field_named(tmp_path, missing):
    path = _write_cxi(tmp_path / "missing.cxi", omit=(missing,))
    with pytest.raises(DataError) as info:
        load_cxi(path)
    assert missing in str(info.value)


def test_load_cxi_missing_wavelength_and_energy(tmp_path):
    path = _write_cxi(tmp_path / "nolambda.cxi", omit=(f"{SOURCE}/wavelength",))
    with pytest.raises(DataError) as info:
        load_cxi(path)
    assert f"{SOURCE}/wavelength" in str(info.value) and f"{SOURCE}/energy" in str(info.value)


@pytest.mark.parametrize("overrides, words", [
    ({TRANSLATION: np.zeros((2, 3))}, ["2 rows", "3 patterns"]),
    ({TRANSLATION: np.zeros((3, 4))}, ["translation", "(3, 4)"]),
    ({f"{DETECTOR}/distance": -1.0}, ["distance", "positive"]),
    ({f"{DETECTOR}/data": np.ones((8, 8))}, ["(N, H, W)"]),
])
def test_load_cxi_bad_values(tmp_path, overrides, words):
    path = _write_cxi(tmp_path / "bad.cxi", **overrides)
    with pytest.raises(DataError) as info:
        load_cxi(path)
    for word in words:
        assert word in str(info.value)


def test_load_cxi_not_hdf5(tmp_path):
    path = tmp_path / "text.cxi"
    path.write_text("this is not an HDF5 file\n")
    with pytest.raises(DataError, match="HDF5"):
        load_cxi(path)


def test_load_cxi_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_cxi(tmp_path / "absent.cxi")


# --------------------------------------------------------------------------------------------
# reconstruction files
# --------------------------------------------------------------------------------------------
def test_reconstruction_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    result = ReconstructionResult(
        object=(rng.normal(size=(30, 40)) + 1j * rng.normal(size=(30, 40))).astype(np.complex64),
        probe=(rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16))).astype(np.complex64),
        positions_px=rng.uniform(0, 14, size=(6, 2)),
        nominal_positions_px=rng.uniform(0, 14, size=(6, 2)),
        loss_history=np.array([3.0, 2.0, 1.5]),
        residual_history=np.array([0.3, 0.2, 0.1]),
        distance_m=3.638e-3, pixel_size_m=(1.787e-7, 1.787e-7), geometry="nearfield",
        object_origin_px=(4.0, 170.0), settings={"loss": "poisson", "epochs": 3, "refine": ["object"]},
        extra_histories={"validation_loss": np.array([3.5, 2.5, 2.0])})
    path = tmp_path / "out" / "result.h5"
    save_reconstruction(path, result)
    loaded = load_reconstruction(path)
    np.testing.assert_array_equal(loaded.object, result.object)
    np.testing.assert_array_equal(loaded.probe, result.probe)
    np.testing.assert_array_equal(loaded.positions_px, result.positions_px)
    np.testing.assert_array_equal(loaded.nominal_positions_px, result.nominal_positions_px)
    np.testing.assert_array_equal(loaded.loss_history, result.loss_history)
    np.testing.assert_array_equal(loaded.residual_history, result.residual_history)
    assert loaded.distance_m == result.distance_m
    assert loaded.pixel_size_m == pytest.approx(result.pixel_size_m)
    assert loaded.geometry == "nearfield"
    assert loaded.object_origin_px == pytest.approx((4.0, 170.0))
    assert loaded.settings == {"loss": "poisson", "epochs": 3, "refine": ["object"]}
    assert set(loaded.extra_histories) == {"validation_loss"}
    np.testing.assert_array_equal(loaded.extra_histories["validation_loss"], [3.5, 2.5, 2.0])
    with h5py.File(path, "r") as f:
        assert f.attrs["adptycho_version"]
        assert f["probe"].dtype == np.complex64


def test_reconstruction_far_field_defaults(tmp_path):
    result = ReconstructionResult(
        object=np.ones((8, 8), np.complex64), probe=np.ones((4, 4), np.complex64),
        positions_px=np.zeros((2, 2)), nominal_positions_px=np.zeros((2, 2)),
        loss_history=np.array([1.0]), residual_history=np.array([0.5]))
    save_reconstruction(tmp_path / "r.h5", result)
    loaded = load_reconstruction(tmp_path / "r.h5")
    assert loaded.probe.shape == (1, 4, 4)  # single mode stored as (M, H, W)
    assert loaded.distance_m is None and loaded.pixel_size_m is None
    assert loaded.geometry == "farfield" and loaded.extra_histories == {}


def test_load_reconstruction_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_reconstruction(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="HDF5"):
        load_reconstruction(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("object", data=np.ones((2, 2)))
    with pytest.raises(DataError, match="'probe'"):
        load_reconstruction(tmp_path / "other.h5")


# --------------------------------------------------------------------------------------------
# real data (../shared/data)
# --------------------------------------------------------------------------------------------
@pytest.mark.real_data
def test_load_tike_siemens_star(shared_data):
    scan = load_tike_siemens_star(shared_data / "tike_siemens_star" / "siemens-star-small.npz.bz2")
    assert scan.patterns.shape == (516, 128, 128)
    assert scan.positions_px.shape == (516, 2)
    assert scan.geometry == FARFIELD and scan.wavelength_m is None
    assert scan.probe.shape == (1, 128, 128)
    mean = scan.patterns.mean(axis=0)
    brightest = np.array(np.unravel_index(np.argmax(mean), mean.shape))
    assert np.hypot(*(brightest - 64)) < 24  # centred (the raw file has it at a corner)
    yy, xx = np.mgrid[:128, :128]
    central = mean[np.hypot(yy - 64, xx - 64) < 32].sum() / mean.sum()
    assert central > 0.8
    low, high = scan.positions_px.min(axis=0), scan.positions_px.max(axis=0)
    np.testing.assert_allclose(low, [-165, -165], atol=5)
    np.testing.assert_allclose(high, [165, 165], atol=5)
    assert scan.mean_counts() == pytest.approx(4.6e5, rel=0.05)


@pytest.mark.real_data
def test_load_petra_p25(shared_data):
    scan = load_petra_p25(shared_data / "petra_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi")
    assert scan.patterns.shape == (200, 100, 100)
    assert scan.geometry == NEARFIELD
    assert int((~scan.mask).sum()) == 5
    assert scan.wavelength_m == pytest.approx(9.7949e-11, rel=1e-4)
    assert scan.detector_distance_m == pytest.approx(1.12, rel=1e-3)
    assert scan.focus_distance_m == 3.65e-3
    assert scan.metadata["magnification"] == pytest.approx(307.8, abs=0.1)
    assert scan.pixel_size_m[0] == pytest.approx(178.7e-9, rel=1e-3)
    assert scan.pixel_size_m[1] == pytest.approx(178.7e-9, rel=1e-3)
    assert scan.propagation_distance_m == pytest.approx(3.638e-3, rel=1e-3)
    assert np.all(np.isfinite(scan.positions_px))
    # positions spread over many pixels (metres converted with the 178.7 nm pixel)
    assert np.all(np.ptp(scan.positions_px, axis=0) > 50)

"""ePIE / rPIE / mPIE engines: update formula vs numpy, weights, batch vs sequential,
convergence, probe recovery, reconstruct(, engine="adam") and CLI dispatch, bad input."""

import h5py
import numpy as np
import pytest

from adptycho.analysis import illuminated_region, nrmse
from adptycho.errors import AdptychoError, DataError
from adptycho.geometry import (circular_aperture, gaussian_probe, normalize_probe_power,
                               overlap_to_step, raster_scan)
from adptycho.model import NearFieldGeometry, PtychoModel
from adptycho.objects import PixelObject
from adptycho.samples import complex_test_object
from adptycho.simulate import simulate
from adptycho.training.epie import PIETrainer, pie_settings


def _random_complex(rng, shape):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def _poisson_amplitude_variance_reference(lam):
    """E[(sqrt X - sqrt lam)^2], X ~ Poisson(lam), by direct summation (per element)."""
    from scipy.stats import poisson

    out = np.empty(np.shape(lam))
    for i, value in np.ndenumerate(np.asarray(lam, np.float64)):
        k = np.arange(int(value + 15 * np.sqrt(value) + 60))
        out[i] = np.sum(poisson.pmf(k, value) * (np.sqrt(k) - np.sqrt(value)) ** 2)
    return out


def _numpy_pie_step(obj, probe, corner, intensity, alpha, beta, a=1.0, weight=1.0, near=None,
                    relax=0.0):
    """Hand-written reference of one rPIE/ePIE update (Maiden et al. 2017 Eq. 6; a=1: ePIE);
    ``relax > 0``: projection onto the Poisson noise ball (Fourier relaxation) instead of the
    exact modulus."""
    h, w = probe.shape
    y, x = corner
    patch = obj[y:y + h, x:x + w].astype(np.complex128)
    psi = probe.astype(np.complex128) * patch
    if near is None:
        spectrum = np.fft.fftshift(np.fft.fft2(psi)) / np.sqrt(h * w)
        target = np.sqrt(intensity)
        if relax > 0:
            model = np.abs(spectrum)
            excess = np.sum((model - target) ** 2)
            bound = relax * np.sum(_poisson_amplitude_variance_reference(model ** 2))
            if excess > bound:
                target = target + (model - target) * np.sqrt(bound / excess)
            else:
                target = model
        projected = target * spectrum / np.abs(spectrum)
        psi_new = np.fft.ifft2(np.fft.ifftshift(projected)) * np.sqrt(h * w)
    else:
        spectrum = np.fft.ifft2(np.fft.fft2(psi) * near)
        projected = np.sqrt(intensity) * spectrum / np.abs(spectrum)
        psi_new = np.fft.ifft2(np.fft.fft2(projected) * np.conj(near))
    dpsi = psi_new - psi
    p2 = np.abs(probe) ** 2
    o2 = np.abs(patch) ** 2
    out_obj = obj.astype(np.complex128).copy()
    out_obj[y:y + h, x:x + w] += alpha * weight * np.conj(probe) * dpsi / ((1 - a) * p2 + a * p2.max())
    out_probe = probe + beta * weight * np.conj(patch) * dpsi / ((1 - a) * o2 + a * o2.max())
    return out_obj, out_probe


@pytest.mark.parametrize("engine, a", [("epie", 1.0), ("rpie", 0.3)])
def test_single_update_equals_hand_computed_formula(engine, a):
    rng = np.random.default_rng(0)
    obj = _random_complex(rng, (12, 13))
    probe = _random_complex(rng, (8, 8))
    intensity = rng.uniform(0.5, 5.0, size=(1, 8, 8)).astype(np.float32)
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, [[2.0, 3.0]])
    trainer = PIETrainer(model, pie_settings(engine, object_step=0.7, probe_step=0.5,
                                             regularisation=a))
    trainer.fit(intensity, 1, sample_weight=[0.8])
    ref_obj, ref_probe = _numpy_pie_step(obj, probe, (2, 3), intensity[0], 0.7, 0.5, a, 0.8)
    np.testing.assert_allclose(model.get_object(), ref_obj, atol=2e-5 * np.abs(ref_obj).max())
    np.testing.assert_allclose(model.get_probe()[0], ref_probe, atol=2e-5 * np.abs(ref_probe).max())


def test_poisson_amplitude_variance_matches_exact_sums():
    from adptycho.training.epie import poisson_amplitude_variance

    lam = np.array([0.0, 3e-5, 0.003, 0.05, 0.4, 1.0, 1.7, 6.0, 42.0, 900.0, 2e4], np.float32)
    got = poisson_amplitude_variance(lam).numpy()
    ref = _poisson_amplitude_variance_reference(lam)
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-9)
    # the limits: 2 lambda for few counts, 1/4 (variance-stabilised amplitude) for many
    assert got[0] == 0.0 and got[1] == pytest.approx(6e-5, rel=0.01)
    assert got[-1] == pytest.approx(0.25, abs=1e-4) and got.max() == pytest.approx(0.4536, abs=1e-3)


@pytest.mark.parametrize("relax", [0.3, 50.0])
def test_relaxed_update_equals_the_noise_ball_projection(relax):
    """Fourier relaxation: a pattern whose amplitude misfit exceeds the Poisson bound is moved
    onto the ball (relax 0.3); one within the bound leaves object and probe unchanged (50)."""
    rng = np.random.default_rng(5)
    obj = _random_complex(rng, (12, 13))
    probe = 2.0 * _random_complex(rng, (8, 8))
    # counts near the model's (a misfit of a few noise deviations), some below one photon
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, [[2.0, 3.0]])
    clean = model(np.array([0])).numpy()
    intensity = rng.poisson(clean).astype(np.float32)
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, [[2.0, 3.0]])
    trainer = PIETrainer(model, pie_settings("epie", object_step=0.7, probe_step=0.5,
                                             fourier_relaxation=relax))
    trainer.fit(intensity, 1)
    ref_obj, ref_probe = _numpy_pie_step(obj, probe, (2, 3), intensity[0], 0.7, 0.5, relax=relax)
    np.testing.assert_allclose(model.get_object(), ref_obj, atol=2e-5 * np.abs(ref_obj).max())
    np.testing.assert_allclose(model.get_probe()[0], ref_probe, atol=2e-5 * np.abs(ref_probe).max())
    exact, _ = _numpy_pie_step(obj, probe, (2, 3), intensity[0], 0.7, 0.5)
    moved = np.abs(ref_obj - obj).max()
    if relax > 1:
        assert moved < 1e-9  # within the bound: no step (up to FFT round-off)
        np.testing.assert_allclose(model.get_object(), obj, atol=1e-6)
    else:  # a partial step: less than the exact projection, not nothing
        assert 0 < moved < 0.9 * np.abs(exact - obj).max()


def test_relaxation_stops_epie_fitting_poisson_noise(scan_70):
    """Started from the truth, exact projection drifts toward the noise; the relaxed
    constraint stays close. A weight of 0 for a pattern means the exact projection."""
    scan, obj, probe = scan_70
    noisy = np.random.default_rng(6).poisson(scan.patterns).astype(np.float32)  # 1e4 photons
    region = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    errors, objects = {}, {}
    for name, rho, per_pattern in (("exact", 0.0, None), ("relaxed", 1.0, None),
                                   ("switched off", 1.0, np.zeros(scan.num_patterns))):
        model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, scan.positions_px)
        PIETrainer(model, pie_settings("epie", refine_probe=False, fourier_relaxation=rho)).fit(
            noisy, 5, relaxation_weight=per_pattern)
        objects[name] = model.get_object()
        errors[name] = nrmse(obj, objects[name], region)
    assert errors["relaxed"] < 0.5 * errors["exact"], errors
    np.testing.assert_allclose(objects["switched off"], objects["exact"], atol=1e-5)
    with pytest.raises(AdptychoError, match="fourier_relaxation"):
        pie_settings("epie", fourier_relaxation=-1.0)
    with pytest.raises(DataError, match="relaxation_weight"):
        PIETrainer(model).fit(noisy, 1, relaxation_weight=[1.0])


def test_single_update_near_field_equals_hand_computed_formula():
    rng = np.random.default_rng(1)
    obj = _random_complex(rng, (10, 10))
    probe = _random_complex(rng, (8, 8))
    intensity = rng.uniform(0.5, 5.0, size=(1, 8, 8)).astype(np.float32)
    geometry = NearFieldGeometry(1e-9, (1e-7, 1e-7), 2e-5)
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, [[1.0, 2.0]], near_field=geometry)
    trainer = PIETrainer(model, pie_settings("epie", refine_probe=False))
    trainer.fit(intensity, 1)
    transfer = np.asarray(model.transfer_function())
    ref_obj, _ = _numpy_pie_step(obj, probe, (1, 2), intensity[0], 1.0, 0.0, near=transfer)
    np.testing.assert_allclose(model.get_object(), ref_obj, atol=2e-5 * np.abs(ref_obj).max())


def test_zero_weights_leave_object_and_probe_untouched():
    rng = np.random.default_rng(2)
    obj = _random_complex(rng, (20, 20))
    probe = _random_complex(rng, (8, 8))
    positions = [[0, 0], [5, 7], [12, 12], [3, 10]]
    intensity = rng.uniform(0.5, 5.0, size=(4, 8, 8)).astype(np.float32)
    for batch_size in (1, 4):
        model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, positions)
        PIETrainer(model, pie_settings("epie", batch_size=batch_size), jit_compile=False).fit(
            intensity, 2, sample_weight=np.zeros(4))
        np.testing.assert_array_equal(model.get_object(), obj)
        np.testing.assert_allclose(model.get_probe()[0], probe, rtol=1e-6)
    # one weight non-zero: only that window changes
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, positions)
    PIETrainer(model, pie_settings("epie", refine_probe=False)).fit(
        intensity, 1, sample_weight=[0, 0, 1, 0])
    changed = np.abs(model.get_object() - obj) > 0
    assert changed[12:20, 12:20].any() and not changed[:12].any() and not changed[:, :12].any()


def test_batch_mode_equals_sequential_mode_without_overlap():
    rng = np.random.default_rng(3)
    obj = _random_complex(rng, (40, 40))
    probe = _random_complex(rng, (8, 8))
    positions = [[0, 0], [0, 10], [10, 0], [10, 10], [20, 30], [31, 5]]  # windows do not overlap
    intensity = rng.uniform(0.5, 5.0, size=(6, 8, 8)).astype(np.float32)
    weights = rng.uniform(0.2, 1.0, size=6)
    results = []
    for engine in ("epie", "rpie"):
        for batch_size in (1, 6):
            model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, positions)
            PIETrainer(model, pie_settings(engine, batch_size=batch_size, refine_probe=False),
                       jit_compile=False).fit(intensity, 3, sample_weight=weights, seed=batch_size)
            results.append((engine, model.get_object()))
    for engine in ("epie", "rpie"):
        objs = [o for e, o in results if e == engine]
        assert np.abs(objs[0] - obj).max() > 0.1  # the updates did something
        for other in objs[1:]:
            np.testing.assert_allclose(other, objs[0], atol=1e-5 * np.abs(objs[0]).max())


def _scan_70(size=96, probe_size=32, diameter=16.0):
    obj = complex_test_object((size, size), "camera", "astronaut")
    probe = normalize_probe_power(circular_aperture((probe_size, probe_size), diameter, 2.0), 1e4)
    step = overlap_to_step(0.7, diameter)
    n = int((size - probe_size) // step) + 1
    positions = np.round(np.clip(raster_scan((n, n), step, start_px=(2, 2), jitter_px=1.0, seed=1),
                                 0, size - probe_size))
    return simulate(obj, probe, positions), obj, probe


@pytest.fixture(scope="module")
def scan_70():
    return _scan_70()


@pytest.mark.parametrize("engine, batch_size, epochs", [("epie", 1, 30), ("epie", 8, 40),
                                                        ("rpie", 1, 20), ("mpie", 1, 20)])
def test_noise_free_70_percent_overlap_reaches_nrmse_below_0_05(scan_70, engine, batch_size, epochs):
    scan, obj, probe = scan_70
    model = PtychoModel(PixelObject(obj.shape), probe, scan.positions_px)
    history = PIETrainer(model, pie_settings(engine, batch_size=batch_size, refine_probe=False)).fit(
        scan.patterns, epochs)
    region = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    error = nrmse(obj, model.get_object(), region)
    assert error < 0.05, (engine, batch_size, error)
    assert history["residual"][-1] < 0.01 * history["residual"][0]


def test_probe_update_recovers_probe_from_wrong_guess(scan_70):
    scan, obj, probe = scan_70
    guess = normalize_probe_power(gaussian_probe(probe.shape, 14.0), scan.mean_counts())
    model = PtychoModel(PixelObject(obj.shape), guess, scan.positions_px)
    PIETrainer(model, pie_settings("epie", probe_start_epoch=2)).fit(scan.patterns, 50)
    before = nrmse(probe, guess)
    after = nrmse(probe, model.get_probe()[0])
    region = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    assert before > 0.2 and after < 0.06, (before, after)
    assert nrmse(obj, model.get_object(), region, registration=True, ramp=True) < 0.05
    # without the probe update the wrong probe leaves a large object error
    frozen = PtychoModel(PixelObject(obj.shape), guess, scan.positions_px)
    PIETrainer(frozen, pie_settings("epie", refine_probe=False)).fit(scan.patterns, 10)
    np.testing.assert_allclose(frozen.get_probe()[0], guess, rtol=1e-5, atol=1e-6 * np.abs(guess).max())


def test_momentum_changes_the_result_and_is_validated():
    with pytest.raises(AdptychoError, match="momentum"):
        pie_settings("mpie", momentum=1.5)
    with pytest.raises(AdptychoError, match="regularisation"):
        pie_settings("rpie", regularisation=-0.1)
    with pytest.raises(AdptychoError, match="unknown PIE engine"):
        pie_settings("dm")
    assert pie_settings("mpie").momentum > 0 and pie_settings("epie").regularisation == 1.0


def test_bad_input_is_reported():
    rng = np.random.default_rng(4)
    probe = _random_complex(rng, (8, 8))
    model = PtychoModel(PixelObject((16, 16)), probe, [[0, 0], [4, 4]])
    trainer = PIETrainer(model)
    with pytest.raises(DataError, match="patterns must have shape"):
        trainer.fit(np.ones((3, 8, 8)), 1)
    with pytest.raises(DataError, match="sample_weight"):
        trainer.fit(np.ones((2, 8, 8)), 1, sample_weight=[1.0, -1.0])
    with pytest.raises(DataError, match="non-finite"):
        trainer.fit(np.full((2, 8, 8), np.nan), 1)

    class NotPixels(PixelObject.__mro__[1]):  # an ObjectRepresentation that is not pixels
        def __init__(self):
            super().__init__((16, 16))

        def transmission(self):
            import tensorflow as tf
            return tf.ones((16, 16), tf.complex64)

    other = PtychoModel(NotPixels(), probe, [[0, 0]])
    with pytest.raises(AdptychoError, match="PixelObject"):
        PIETrainer(other)


def test_phase_only_parametrisation_is_kept(scan_70):
    scan, obj, probe = scan_70
    model = PtychoModel(PixelObject(obj.shape, "phase"), probe, scan.positions_px)
    PIETrainer(model, pie_settings("epie", refine_probe=False)).fit(scan.patterns, 2)
    np.testing.assert_allclose(np.abs(model.get_object()), 1.0, atol=1e-5)


# -- reconstruct(, engine="adam") and the CLI -------------------------------------------------------------
def test_reconstruct_with_pie_engines_returns_a_result(scan_70):
    from adptycho.reconstruction import reconstruct

    scan, obj, probe = scan_70
    region = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    result = reconstruct(scan, engine="rpie", probe=probe, refine=("object",), epochs=15,
                         batch_size=1, object_shape=obj.shape, verbose=0)
    assert nrmse(obj, result.object, region) < 0.05
    assert result.settings["engine"] == "rpie" and len(result.residual_history) == 15
    with pytest.raises(AdptychoError, match="distance"):
        reconstruct(scan, engine="epie", refine=("object", "distance"), epochs=1, verbose=0)


def test_cli_reconstruct_epie_and_errors(tmp_path, capsys):
    from adptycho.cli import main

    cxi = tmp_path / "scan.cxi"
    assert main(["simulate", "--out", str(cxi), "--object-size", "96", "--probe-size", "32",
                 "--probe-diameter", "16", "--overlap", "0.7", "--photons", "1e5"]) == 0
    out = tmp_path / "rec.h5"
    code = main(["reconstruct", str(cxi), "--out", str(out), "--engine", "epie", "--epochs", "3",
                 "--batch-size", "1", "--alpha", "0.9", "--beta", "0.5", "--no-png", "--quiet"])
    assert code == 0
    with h5py.File(out, "r") as f:  # the same public file contract as the adam engine
        assert f["object"].dtype == np.complex64 and f["object"].ndim == 2
        assert f["residual_history"].shape == (3,) and f["loss_history"].shape == (3,)
        assert f["probe"].shape == (1, 32, 32)
        assert f["residual_history"][-1] < f["residual_history"][0]
    capsys.readouterr()
    code = main(["reconstruct", str(cxi), "--out", str(tmp_path / "x.h5"), "--engine", "pie9"])
    assert code == 2
    assert "adptycho: error: unknown engine" in capsys.readouterr().err
    code = main(["reconstruct", str(cxi), "--out", str(tmp_path / "x.h5"), "--engine", "adam",
                 "--alpha", "0.5"])
    assert code == 2
    assert "PIE engines" in capsys.readouterr().err
    code = main(["reconstruct", str(cxi), "--out", str(tmp_path / "x.h5"), "--engine", "mpie",
                 "--momentum", "1.5"])
    assert code == 2
    assert "momentum" in capsys.readouterr().err
    code = main(["reconstruct", str(cxi), "--out", str(tmp_path / "x.h5"), "--engine", "epie",
                 "--fourier-relaxation", "-1"])
    assert code == 2
    assert "fourier_relaxation" in capsys.readouterr().err
    relaxed = tmp_path / "relaxed.h5"
    code = main(["reconstruct", str(cxi), "--out", str(relaxed), "--engine", "epie", "--epochs",
                 "2", "--fourier-relaxation", "1", "--no-png", "--quiet"])
    assert code == 0
    with h5py.File(relaxed, "r") as f:
        assert f["residual_history"].shape == (2,)
    assert not (tmp_path / "x.h5").exists()


def test_probe_power_cap_bounds_a_runaway_probe(scan_70):
    """A probe 50x brighter than the data allow is scaled down to ``probe_power_cap`` times the
    largest pattern's counts after the first probe epoch; with the cap off it stays far above;
    a detector mask switches the cap off; a negative cap is refused."""
    scan, obj, probe = scan_70
    largest = float(np.max(scan.patterns.sum(axis=(1, 2))))
    bright = probe * np.sqrt(50.0 * largest / np.sum(np.abs(probe) ** 2))

    def power_after(mask=None, **options):
        model = PtychoModel(PixelObject(obj.shape), bright, scan.positions_px, mask=mask)
        # a tiny probe step: ePIE itself leaves the probe's power where it is
        PIETrainer(model, pie_settings("epie", probe_step=1e-3, **options)).fit(scan.patterns, 2)
        return float(np.sum(np.abs(model.get_probe()) ** 2)) / largest

    assert power_after() <= 16.0 * (1 + 1e-4)
    assert power_after(probe_power_cap=2.0) <= 2.0 * (1 + 1e-4)
    assert power_after(probe_power_cap=0.0) > 40.0
    assert power_after(mask=np.ones(probe.shape, bool)) > 40.0
    with pytest.raises(AdptychoError, match="probe_power_cap"):
        pie_settings("epie", probe_power_cap=-1.0)

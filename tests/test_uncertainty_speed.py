"""The fast paths of the pixel uncertainty maps (issue 22, cost of a large map): the cached,
scipy.fft and complex64 Fisher products against a plain numpy Fisher product written from the
definition, and the ``fast`` preset's maps against the default's on a small simulated problem."""

from __future__ import annotations

import numpy as np
import pytest

from adptycho.errors import AdptychoError
from adptycho.geometry.probes import circular_aperture
from adptycho.uncertainty import pixels as px
from adptycho.uncertainty.far_field import FarFieldFisher
from adptycho.uncertainty.fisher import fisher_c, fisher_weights


def _problem(seed=3, size=40, window=16):
    rng = np.random.default_rng(seed)
    obj = (0.6 + 0.4 * rng.random((size, size))) * np.exp(1j * rng.random((size, size)))
    probe = 40 * circular_aperture((window, window), 6.0) * np.exp(
        1j * 0.5 * rng.random((window, window)))
    corners = rng.integers(0, size - window + 1, size=(23, 2)).astype(float)
    mask = np.ones((window, window), bool)
    mask[window // 2, window // 2 - 3:window // 2 + 2] = False  # a centred beamstop strip
    return obj, probe, corners, mask


def _plain_fisher_product(obj, probe, corners, mask, v):
    """``sum_j J_j^T diag(w(I_j)) J_j v`` pattern by pattern (fisher.py docstring), Poisson
    ``w = 1/I``, with ``J v = 2 Re(conj(Psi) F(P v))`` and its adjoint, in numpy complex128."""
    h, w = probe.shape
    valid = np.fft.ifftshift(mask)  # the mask is stored centred, the FFT output is not
    out = np.zeros_like(v)
    for cy, cx in corners.astype(int):
        psi = np.fft.fft2(probe * obj[cy:cy + h, cx:cx + w], norm="ortho")
        weight = fisher_weights(np.abs(psi) ** 2, "poisson") * valid
        for s in range(len(v)):
            jv = 2 * np.real(np.conj(psi) * np.fft.fft2(probe * v[s, cy:cy + h, cx:cx + w],
                                                        norm="ortho"))
            out[s, cy:cy + h, cx:cx + w] += 2 * np.conj(probe) * np.fft.ifft2(
                psi * weight * jv, norm="ortho")
    return out


@pytest.mark.parametrize("options, tolerance", [({}, 1e-11), ({"cache_bytes": 0}, 1e-11),
                                                ({"single": True}, 1e-5),
                                                ({"batch": 5}, 1e-11)])
def test_fisher_products_match_a_plain_numpy_product(options, tolerance):
    obj, probe, corners, mask = _problem()
    rng = np.random.default_rng(0)
    v = rng.standard_normal((3,) + obj.shape) + 1j * rng.standard_normal((3,) + obj.shape)
    expected = _plain_fisher_product(obj, probe, corners, mask, v)
    fisher = FarFieldFisher(obj, probe, corners, fisher_c("poisson"), mask=mask, **options)
    for _ in range(2):  # the second product reuses the cached detector weights (if kept)
        got = fisher.matvec(v)
        assert got.dtype == np.complex128 and got.shape == v.shape
        assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < tolerance
    assert bool(fisher.waves.weight_cache) == (options.get("cache_bytes", 1) > 0)
    # a second operator of the same fit and weights reuses them (the probe's, the score's)
    other = FarFieldFisher(obj, probe, corners, fisher.weights, mask=mask, waves=fisher.waves,
                           **{k: v for k, v in options.items() if k != "cache_bytes"})
    if fisher.waves.weight_cache:
        cached = list(fisher.waves.weight_cache.values())[0]
        assert list(other._amplitude_weights()) is not cached
        assert all(a[1] is b[1] for a, b in zip(other._amplitude_weights(), cached))


def test_presets_and_bad_settings():
    fast, name = px.pixel_settings({"preset": "fast"})
    assert name == "fast" and fast.probes == 1 and fast.tolerance == 1e-2
    assert fast.single_precision and fast.smoothing_px == 4.0
    default, name = px.pixel_settings(None)
    assert name == "default" and default == px.PixelSettings()
    override, _ = px.pixel_settings({"preset": "fast", "probes": 3})
    assert override.probes == 3 and override.tolerance == 1e-2
    with pytest.raises(AdptychoError, match="unknown fisher preset 'quick'"):
        px.pixel_settings({"preset": "quick"})
    with pytest.raises(AdptychoError, match="bad fisher settings"):
        px.pixel_settings({"probe": 3})
    with pytest.raises(AdptychoError, match="unknown estimator 'exact'"):
        px.pixel_settings({"estimator": "exact"})
    with pytest.raises(AdptychoError, match="unknown preconditioner 'jacobi'"):
        px.pixel_settings({"preconditioner": "jacobi"})
    assert default.preconditioner == "fourier"
    assert default.estimator == "sampling" and fast.estimator == "sampling"


def test_fast_preset_maps_stay_close_to_the_default_maps():
    from adptycho.reconstruction import reconstruct
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate
    from adptycho.uncertainty import object_uncertainty

    truth = complex_test_object((32, 32), amplitude_range=(0.6, 1.0), phase_range=(0.0, 1.0))
    probe = circular_aperture((16, 16), 8.0)
    positions = np.array([(y, x) for y in range(0, 17, 2) for x in range(0, 17, 2)], float)
    scan = simulate(truth, probe, positions, photons_per_pattern=1e5, poisson=True, seed=5)
    rec = reconstruct(scan, probe=scan.probe, refine=("object",), loss="poisson",
                      engine="epie:20,adam:30", object_shape=truth.shape, verbose=0, seed=0)
    default = object_uncertainty(scan, rec)
    fast = object_uncertainty(scan, rec, settings={"preset": "fast"})
    assert fast.settings["preset"] == "fast" and fast.settings["probes"] == 1
    assert fast.info["cg_iterations"] < default.info["cg_iterations"]
    ref = default.reference
    for name in ("object_phase_std", "object_amplitude_std"):
        ratio = (getattr(fast, name) / getattr(default, name))[ref]
        assert abs(np.median(ratio) - 1) < 0.08, (name, np.median(ratio))
        assert 0.85 < np.quantile(ratio, 0.05) and np.quantile(ratio, 0.95) < 1.15, name
    # the comparison sees a wrong map: CG stopped after one iteration stays near the diagonal
    # bound, well below the default map
    stopped = object_uncertainty(scan, rec, settings={"preset": "fast", "max_iterations": 1})
    assert np.median((stopped.object_phase_std / default.object_phase_std)[ref]) < 0.92
    # the default sampling estimator against Hutchinson probes (the same vector count): the same
    # maps, in fewer CG iterations (one solve per vector instead of two, better conditioned)
    hutchinson = object_uncertainty(scan, rec, settings={"estimator": "hutchinson"})
    assert default.info["cg_iterations"] < hutchinson.info["cg_iterations"]
    ratio = (default.object_phase_std / hutchinson.object_phase_std)[ref]
    assert abs(np.median(ratio) - 1) < 0.06, np.median(ratio)
    # the default Fourier preconditioner against block-Jacobi: the same draws solved to the same
    # tolerance give the same map, in fewer iterations
    block = object_uncertainty(scan, rec, settings={"preconditioner": "block"})
    assert default.info["preconditioner"] == "fourier" and block.info["preconditioner"] == "block"
    assert default.info["cg_iterations"] < 0.8 * block.info["cg_iterations"], (
        default.info["cg_iterations"], block.info["cg_iterations"])
    ratio = (default.object_phase_std / block.object_phase_std)[ref]
    assert np.max(np.abs(ratio - 1)) < 0.01, np.max(np.abs(ratio - 1))


def test_fourier_preconditioner_transfer_and_inverse():
    """``transfer_on_grid`` samples the mean detector weight at the object's frequencies, and
    the preconditioner inverts ``S (K + rho + floor) S`` exactly on a fully determined grid."""
    import scipy.fft as sfft

    from adptycho.uncertainty.preconditioners import FourierPreconditioner, transfer_on_grid

    rng = np.random.default_rng(0)
    mean_c = rng.random((8, 6))
    np.testing.assert_allclose(transfer_on_grid(mean_c, (8, 6)), 0.5 * mean_c)
    coarse = transfer_on_grid(mean_c, (16, 12))  # twice the detector: every other frequency
    np.testing.assert_allclose(coarse[::2, ::2], 0.5 * mean_c, atol=1e-12)
    np.testing.assert_allclose(coarse[1, 0], 0.25 * (mean_c[0, 0] + mean_c[1, 0]))
    illumination = 1 + rng.random((16, 12))
    ridge = 0.3 * illumination
    pre = FourierPreconditioner(illumination, mean_c, np.ones((16, 12), bool), ridge, floor=0.1)
    transfer = coarse + 0.3 + 0.1 * coarse.max()
    v = rng.standard_normal((2, 16, 12)) + 1j * rng.standard_normal((2, 16, 12))
    s = np.sqrt(illumination)
    forward = s * sfft.ifft2(transfer * sfft.fft2(s * v))  # S (K + rho + floor) S v
    np.testing.assert_allclose(pre(forward), v, atol=1e-10)
    # undetermined pixels pass through
    determined = np.ones((16, 12), bool)
    determined[:3] = False
    out = FourierPreconditioner(illumination, mean_c, determined)(v)
    np.testing.assert_array_equal(out[:, :3], v[:, :3])


def test_sampling_and_hutchinson_agree_on_a_blind_fit():
    """With a refined probe the phase ramps and the scale are gauges too (fixed on the reference
    region): the sampled draws, projected off them, give the maps the Hutchinson probes give."""
    from adptycho.reconstruction import reconstruct
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate
    from adptycho.uncertainty import object_uncertainty

    truth = complex_test_object((32, 32), amplitude_range=(0.6, 1.0), phase_range=(0.0, 1.0))
    probe = circular_aperture((16, 16), 8.0)
    positions = np.array([(y, x) for y in range(0, 17, 2) for x in range(0, 17, 2)], float)
    scan = simulate(truth, probe, positions, photons_per_pattern=1e5, poisson=True, seed=6)
    rec = reconstruct(scan, refine=("object", "probe"), loss="poisson", engine="epie:20,adam:30",
                      object_shape=truth.shape, verbose=0, seed=0)
    sampled = object_uncertainty(scan, rec, settings={"probes": 16})
    probed = object_uncertainty(scan, rec, settings={"probes": 16, "estimator": "hutchinson",
                                                     "tolerance": 1e-4})
    assert "phase ramps" in sampled.info["gauges"]
    ref = sampled.reference
    for name in ("object_phase_std", "object_amplitude_std"):
        ratio = (getattr(sampled, name) / getattr(probed, name))[ref]
        assert abs(np.median(ratio) - 1) < 0.06, (name, np.median(ratio))


def test_a_blind_fit_at_sub_pixel_positions_gets_the_analytic_maps_and_a_probe_std():
    """Measured scans have non-integer positions: the far-field operator shifts each pattern's
    probe (no autodiff fallback), the probe std is computed, and the default map (sampling,
    Fourier preconditioner) agrees with Hutchinson probes under block-Jacobi."""
    from adptycho.reconstruction import reconstruct
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate
    from adptycho.uncertainty import object_uncertainty

    truth = complex_test_object((32, 32), amplitude_range=(0.6, 1.0), phase_range=(0.0, 1.0))
    probe = circular_aperture((16, 16), 8.0)
    grid = np.array([(y, x) for y in range(0, 15, 2) for x in range(0, 15, 2)], float)
    positions = grid + np.random.default_rng(2).uniform(0.1, 0.9, grid.shape)
    scan = simulate(truth, probe, positions, photons_per_pattern=1e5, poisson=True, seed=4)
    rec = reconstruct(scan, refine=("object", "probe"), loss="poisson", engine="epie:20,adam:30",
                      object_shape=truth.shape, verbose=0, seed=0)
    assert not np.allclose(rec.positions_px, np.round(rec.positions_px), atol=1e-3)
    default = object_uncertainty(scan, rec, settings={"probes": 16})
    other = object_uncertainty(scan, rec, settings={"probes": 16, "estimator": "hutchinson",
                                                    "preconditioner": "block",
                                                    "tolerance": 1e-4})
    assert default.info["operator"] == "FarFieldFisher"
    assert default.info["preconditioner"] == "fourier" and other.info["preconditioner"] == "block"
    probe_phase = default.extras["probe_phase_std"]
    assert probe_phase.shape == (1, 16, 16) and np.isfinite(probe_phase).sum() > 50
    assert default.info["probe_std"].startswith("conditional")
    ref = default.reference
    for name in ("object_phase_std", "object_amplitude_std"):
        ratio = (getattr(default, name) / getattr(other, name))[ref]
        assert abs(np.median(ratio) - 1) < 0.06, (name, np.median(ratio))
    ratio = probe_phase / other.extras["probe_phase_std"]
    assert abs(np.nanmedian(ratio) - 1) < 0.1, np.nanmedian(ratio)

"""Uncertainty maps (issue 22): the analytic Fisher diagonal and products against TensorFlow's
autodiff Jacobian of the forward model, the Hutchinson / CG estimate against the dense gauge-fixed
pseudo-inverse, coverage on a tiny simulated problem, the latent Laplace Hessian against finite
differences, the CLI contract."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from adptycho.geometry.probes import circular_aperture
from adptycho.physics.forward import forward_intensities
from adptycho.uncertainty import pixels as px
from adptycho.uncertainty.far_field import FarFieldFisher
from adptycho.uncertainty.fisher import (AutodiffFisher, _sqrt_poisson_moments,
                                         estimator_c, fisher_c, fisher_weights)


def _tiny(seed=1, size=14, window=8):
    rng = np.random.default_rng(seed)
    obj = (0.6 + 0.4 * rng.random((size, size))) * np.exp(1j * rng.random((size, size)))
    probe = circular_aperture((window, window), 5.0) * np.exp(1j * 0.3 * rng.random((window,) * 2))
    corners = np.array([(y, x) for y in range(0, size - window + 1, 2)
                        for x in range(0, size - window + 1, 2)], float)
    return obj, probe * 30, corners


def _dense_fisher(obj, probe, positions, weight, subpixel=False):
    """(2n, 2n) Fisher matrix J^T diag(w(I)) J from the autodiff Jacobian of the forward model."""
    probe = np.asarray(probe)
    probe = probe[None] if probe.ndim == 2 else probe
    parts = [tf.constant(obj.real, tf.float32), tf.constant(obj.imag, tf.float32)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(parts)
        intensity = forward_intensities(tuple(parts), tf.constant(probe, tf.complex64),
                                        tf.constant(positions, tf.float32), None,
                                        subpixel=subpixel)
    j_real, j_imag = tape.jacobian(intensity, parts)
    intensity = intensity.numpy().astype(np.float64).ravel()
    jac = np.concatenate([j_real.numpy().reshape(intensity.size, -1),
                          j_imag.numpy().reshape(intensity.size, -1)], axis=1).astype(np.float64)
    return jac.T @ (jac * weight(intensity)[:, None])


def _as_real(v):
    return np.concatenate([v.real.reshape(len(v), -1), v.imag.reshape(len(v), -1)], axis=1)


def _subpixel(obj, probe, corners, seed):
    """The corners moved by random sub-pixel amounts (windows kept inside the object)."""
    shifted = corners + np.random.default_rng(seed).uniform(0, 0.9, corners.shape)
    return np.minimum(shifted, obj.shape[0] - probe.shape[-1])


@pytest.mark.parametrize("noise, subpixel", [("poisson", False), ("poisson-gaussian", False),
                                             ("poisson", True)])
def test_analytic_diagonal_blocks_and_products_match_the_autodiff_fisher(noise, subpixel):
    """Exact blocks and products against the Jacobian of the TensorFlow forward model; with
    sub-pixel positions the operator shifts the probe of each pattern as the forward model does."""
    obj, probe, corners = _tiny()
    if subpixel:
        corners = _subpixel(obj, probe, corners, seed=5)
    dense = _dense_fisher(obj, probe, corners, lambda i: fisher_weights(i, noise, 2.0),
                          subpixel=subpixel)
    fisher = FarFieldFisher(obj, probe, corners, fisher_c(noise, 2.0))
    assert (fisher.waves.fractions is not None) == subpixel
    n = obj.size
    blocks = fisher.diagonal_blocks().reshape(n, 2, 2)
    expected = np.stack([np.stack([np.diag(dense[:n, :n]), np.diag(dense[:n, n:])], -1),
                         np.stack([np.diag(dense[n:, :n]), np.diag(dense[n:, n:])], -1)], -2)
    scale = np.abs(expected).max()
    assert np.abs(blocks - expected).max() < 1e-5 * scale
    # the anisotropic part is real: a block proportional to the identity would fail
    assert np.abs(expected[:, 0, 0] - expected[:, 1, 1]).max() > 0.05 * scale
    if noise == "poisson":  # trace = 4 sum_j |P(p - c_j)|^2, exactly
        np.testing.assert_allclose(np.trace(blocks, axis1=1, axis2=2),
                                   4 * fisher.illumination().ravel(), rtol=1e-5, atol=1e-6 * scale)
    v = np.random.default_rng(0).normal(size=(2,) + obj.shape) * (1 + 1j)
    product = _as_real(fisher.matvec(v))
    reference = (dense @ _as_real(v).T).T
    assert np.abs(product - reference).max() < 1e-5 * np.abs(reference).max()


def test_autodiff_operator_handles_modes_and_subpixel_positions():
    obj, probe, corners = _tiny(seed=2)
    modes = np.stack([probe, 0.4 * np.roll(probe, 1, axis=0)])
    positions = _subpixel(obj, probe, corners, seed=3)
    dense = _dense_fisher(obj, modes, positions, lambda i: fisher_weights(i, "poisson"),
                          subpixel=True)
    fisher = AutodiffFisher(obj, modes, positions, fisher_c("poisson"), subpixel=True)
    v = np.random.default_rng(4).normal(size=(2,) + obj.shape) + 0j
    product = _as_real(fisher.matvec(v))
    reference = (dense @ _as_real(v).T).T
    assert np.abs(product - reference).max() < 1e-4 * np.abs(reference).max()


@pytest.mark.parametrize("estimator, sandwich", [("hutchinson", False), ("sampling", False),
                                                 ("hutchinson", True), ("sampling", True)])
def test_estimates_match_the_dense_gauge_fixed_covariance(estimator, sandwich):
    """Both estimators against the dense gauge-fixed pseudo-inverse ``Q F^+ Q^T`` and, for the
    sandwich of the offset ``poisson`` loss, ``Q H^+ B H^+ Q^T`` (Jacobians by autodiff)."""
    obj, probe, corners = _tiny()
    if sandwich:
        c_h, c_b = estimator_c("poisson")
    else:
        c_h, c_b = fisher_c("poisson"), None
    fisher = FarFieldFisher(obj, probe, corners, c_h)
    score = None if c_b is None else FarFieldFisher(obj, probe, corners, c_b)
    draws = 600 if estimator == "hutchinson" else 1000
    settings = px.PixelSettings(estimator=estimator, probes=draws, smoothing_px=0.0,
                                tolerance=1e-7)
    blocks, bound, determined, reference, info = px.pixel_covariance_blocks(fisher, obj, settings,
                                                                            score=score)
    floor = 1e-9

    def dense(c):
        return _dense_fisher(obj, probe, corners, lambda i: c(i) / (4 * np.maximum(i, floor)))

    keep = np.concatenate([determined.ravel(), determined.ravel()])
    hessian = dense(c_h)[np.ix_(keep, keep)]
    covariance = np.linalg.pinv(hessian, rcond=1e-10)
    if sandwich:
        covariance = covariance @ dense(c_b)[np.ix_(keep, keep)] @ covariance
    gauge = px.gauge_vectors(obj, determined, blind=False)[0]
    v = np.concatenate([gauge.real.ravel(), gauge.imag.ravel()])[keep][:, None]
    u = v * np.concatenate([reference.ravel(), reference.ravel()])[keep][:, None]
    q = np.eye(len(v)) - v @ np.linalg.inv(u.T @ v) @ u.T
    exact = np.diag(q @ covariance @ q.T)
    k = int(determined.sum())
    estimate = np.concatenate([blocks[..., 0, 0][determined], blocks[..., 1, 1][determined]])
    ratio = estimate / exact
    assert abs(np.median(ratio) - 1) < 0.03 and np.percentile(np.abs(ratio - 1), 90) < 0.12
    # the diagonal-only bound is clearly smaller: the coupling matters, and the test sees it
    diagonal_only = np.concatenate([bound[..., 0, 0][determined], bound[..., 1, 1][determined]])
    assert np.median(diagonal_only / exact) < 0.9
    assert k < obj.size and info["cg_relative_residual"] < 1e-6


def test_sampling_right_hand_sides_have_the_fisher_covariance():
    """``sample_rhs`` draws ``r = K^T e`` with ``E[r r^T] = F`` (far-field and autodiff
    operators): the empirical quadratic forms along fixed directions against ``a^T F a``."""
    obj, probe, corners = _tiny(size=10, window=8)
    rng = np.random.default_rng(3)
    directions = rng.standard_normal((3,) + obj.shape) + 1j * rng.standard_normal((3,) + obj.shape)
    modes = np.stack([probe, 0.4 * np.roll(probe, 1, axis=0)])  # the general operator: modes,
    shifted = _subpixel(obj, probe, corners, seed=4)  # sub-pixel positions
    for op, draws, tolerance in (
            (FarFieldFisher(obj, probe, corners, fisher_c("poisson")), 3000, 0.12),
            (FarFieldFisher(obj, probe, shifted, fisher_c("poisson")), 3000, 0.12),
            (AutodiffFisher(obj, modes, shifted, fisher_c("poisson"), subpixel=True), 800, 0.25)):
        expected = np.sum(_as_real(directions) * _as_real(op.matvec(directions)), axis=1)
        rhs = _as_real(op.sample_rhs(draws, np.random.default_rng(0)))
        empirical = np.mean((rhs @ _as_real(directions).T) ** 2, axis=0)
        assert np.max(np.abs(empirical / expected - 1)) < tolerance, type(op).__name__


def test_estimator_weights():
    intensity = np.array([0.01, 0.5, 3.0, 29.9, 30.1, 1e4])
    c_a, c_b = estimator_c("poisson")
    np.testing.assert_allclose(c_a(intensity), 4 * intensity / (intensity + 1))
    np.testing.assert_allclose(c_b(intensity), 4 * intensity ** 2 / (intensity + 1) ** 2)
    mean, var = _sqrt_poisson_moments(intensity)
    rng = np.random.default_rng(0)
    draws = np.sqrt(rng.poisson(intensity, size=(200000, intensity.size)))
    np.testing.assert_allclose(mean, draws.mean(0), rtol=5e-3, atol=2e-3)
    np.testing.assert_allclose(var, draws.var(0), rtol=3e-2, atol=2e-3)
    a, b = estimator_c("poisson-gaussian", 2.0)
    np.testing.assert_allclose(a(intensity), b(intensity))


def test_sqrt_poisson_moments_match_the_exact_sums():
    """The interpolated table against the exact sums over the Poisson pmf, at rates between the
    grid points, down to dark pixels (where the amplitude weight is ``2 E sqrt(X) / sqrt(I)``)."""
    from scipy.stats import poisson

    rate = np.concatenate([np.geomspace(1e-8, 29.9, 400),
                           np.random.default_rng(1).uniform(0, 30, 400)])
    k = np.arange(200.0)[:, None]
    pmf = poisson.pmf(k, rate[None])
    exact_mean = np.sum(pmf * np.sqrt(k), axis=0)
    exact_var = np.sum(pmf * k, axis=0) - exact_mean ** 2
    mean, var = _sqrt_poisson_moments(rate)
    np.testing.assert_allclose(mean / np.sqrt(rate), exact_mean / np.sqrt(rate), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(var / rate, exact_var / rate, rtol=1e-6, atol=1e-7)


def _simulated_pixel_case(seed, dose=1e5):
    from adptycho.reconstruction import reconstruct
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    truth = complex_test_object((32, 32), amplitude_range=(0.6, 1.0), phase_range=(0.0, 1.0))
    probe = circular_aperture((16, 16), 8.0)
    positions = np.array([(y, x) for y in range(0, 17, 2) for x in range(0, 17, 2)], float)
    from adptycho.geometry.grids import farfield_pixel_size_m

    pixel = farfield_pixel_size_m(561e-9, 0.065, (16, 16), 2.28e-6)  # CXI round trip exact
    scan = simulate(truth, probe, positions, photons_per_pattern=dose, poisson=True, seed=seed,
                    wavelength_m=561e-9, pixel_size_m=pixel)
    scan = scan.replace(detector_distance_m=0.065, detector_pixel_size_m=(2.28e-6, 2.28e-6))
    rec = reconstruct(scan, probe=scan.probe, refine=("object",), loss="poisson",
                      engine="epie:20,adam:50", object_shape=truth.shape, verbose=0, seed=seed)
    return truth, scan, rec


@pytest.fixture(scope="module")
def pixel_case():
    return _simulated_pixel_case(0)


def test_phase_intervals_cover_the_truth_on_a_tiny_simulated_problem(pixel_case):
    from adptycho.analysis.metrics import global_factor
    from adptycho.uncertainty import object_uncertainty

    truth, scan, rec = pixel_case
    result = object_uncertainty(scan, rec, settings={"probes": 16})
    ref = result.reference
    aligned = rec.object * global_factor(rec.object, truth, mask=ref, scale=False)
    z = np.abs(np.angle(aligned * np.conj(truth)))[ref] / result.object_phase_std[ref]
    assert np.isnan(result.object_phase_std[~result.determined]).all()
    assert np.isfinite(result.object_phase_std[result.determined]).all()
    # a std map off by 1.5x either way gives 95% coverage of about 80% or 99.8%
    assert 0.87 <= np.mean(z <= 1.96) <= 0.99, np.mean(z <= 1.96)
    assert 0.55 <= np.mean(z <= 1.0) <= 0.82, np.mean(z <= 1.0)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, pixel_case):
    from adptycho.io import save_cxi, save_reconstruction

    root = tmp_path_factory.mktemp("uncertainty")
    truth, scan, rec = pixel_case
    paths = {"scan": root / "scan.cxi", "rec": root / "rec.h5", "truth": root / "truth.h5"}
    save_cxi(paths["scan"], scan)
    save_reconstruction(paths["rec"], rec)
    with h5py.File(paths["truth"], "w") as f:
        f.create_dataset("object", data=truth)
    other = scan.subset(np.arange(scan.num_patterns - 1))
    paths["other"] = root / "other.cxi"
    save_cxi(paths["other"], other)
    return paths


def test_cli_writes_the_std_maps(cli_files, tmp_path, capsys):
    from adptycho.cli import main

    out = tmp_path / "u.h5"
    code = main(["uncertainty", str(cli_files["scan"]), str(cli_files["rec"]), "--out", str(out),
                 "--truth", str(cli_files["truth"]), "--probes", "8"])
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        phase = f["object_phase_std"][()]
        assert phase.dtype == np.float32 and phase.shape == (32, 32)
        assert f["object_amplitude_std"].dtype == np.float32
        assert f.attrs["method"] == "fisher"
        assert np.isnan(phase[~f["determined"][()]]).all()
        assert np.all(phase[f["reference"][()]] > 0)
    assert (tmp_path / "u.png").exists()


def test_cli_reads_a_tike_scan_like_reconstruct_does(cli_files, pixel_case, tmp_path, capsys):
    """``adptycho uncertainty`` takes the inputs ``adptycho reconstruct`` takes: the same scan as a
    tike ``.npz.bz2`` (zero frequency at [0, 0]) gives the map the CXI file gives."""
    import bz2
    import io

    from adptycho.cli import main

    _, scan, _ = pixel_case
    buffer = io.BytesIO()
    patterns = np.fft.ifftshift(scan.read_patterns(np.arange(scan.num_patterns)), axes=(-2, -1))
    np.savez(buffer, data=patterns[None], scan=np.asarray(scan.positions_px)[None],
             probe=np.asarray(scan.probe)[None])
    tike = tmp_path / "scan.npz.bz2"
    tike.write_bytes(bz2.compress(buffer.getvalue()))
    maps = []
    for name, source in (("tike", tike), ("cxi", cli_files["scan"])):
        out = tmp_path / f"{name}.h5"
        code = main(["uncertainty", str(source), str(cli_files["rec"]), "--out", str(out),
                     "--preset", "fast", "--no-png"])
        assert code == 0, capsys.readouterr().err
        with h5py.File(out) as f:
            maps.append(f["object_phase_std"][()])
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-4)


def test_cli_fast_preset_reaches_the_settings(cli_files, tmp_path, capsys):
    import json

    from adptycho.cli import main

    out = tmp_path / "fast.h5"
    code = main(["uncertainty", str(cli_files["scan"]), str(cli_files["rec"]), "--out", str(out),
                 "--preset", "fast", "--no-png"])
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        settings = json.loads(f.attrs["settings"])
        assert settings["preset"] == "fast" and settings["probes"] == 1
        assert settings["single_precision"] is True and settings["estimator"] == "sampling"
        assert np.all(f["object_phase_std"][()][f["reference"][()]] > 0)
    out = tmp_path / "hutchinson.h5"
    code = main(["uncertainty", str(cli_files["scan"]), str(cli_files["rec"]), "--out", str(out),
                 "--preset", "fast", "--estimator", "hutchinson", "--probes", "2", "--no-png"])
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        settings = json.loads(f.attrs["settings"])
        assert settings["estimator"] == "hutchinson" and settings["probes"] == 2


@pytest.mark.parametrize("case", ["other-scan", "overwrite", "method"])
def test_cli_refuses_bad_input_with_one_line(cli_files, tmp_path, capsys, case):
    from adptycho.cli import main

    out = tmp_path / "u.h5"
    args = ["uncertainty", str(cli_files["scan"]), str(cli_files["rec"]), "--out", str(out),
            "--no-png"]
    if case == "other-scan":
        args[1] = str(cli_files["other"])
    elif case == "overwrite":
        args[4] = str(cli_files["rec"])
    else:
        args += ["--method", "laplace"]
    before = cli_files["rec"].read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adptycho: error:")
    assert {"other-scan": "not of this scan", "overwrite": "refusing to overwrite",
            "method": "pixel object"}[case] in err[0]
    assert not out.exists() and cli_files["rec"].read_bytes() == before


LATENT = 8


@pytest.fixture(scope="module")
def latent_case(tmp_path_factory):
    from adptycho.nn.irmae import IRMAE, save_irmae
    from adptycho.objects.latent import LatentObject
    from adptycho.reconstruction import reconstruct
    from adptycho.simulate import simulate

    keras.utils.set_random_seed(0)
    directory = tmp_path_factory.mktemp("latent") / "tiny-irmae"
    # the fit starts at the stored mean latent (not 0: a ReLU decoder is flat at exactly 0)
    save_irmae(IRMAE(LATENT, 2), directory,
               np.random.default_rng(6).normal(size=LATENT).astype(np.float32))
    true_latent = np.random.default_rng(5).normal(size=LATENT).astype(np.float32)
    obj = LatentObject.from_pretrained((40, 40), str(directory), initial_latent=true_latent,
                                       region_px=(4, 4, 32, 32), background=0.3)
    probe = circular_aperture((16, 16), 10.0)
    positions = np.array([(y, x) for y in range(0, 25, 4) for x in range(0, 25, 4)], float)
    scan = simulate(obj.to_numpy(), probe, positions, photons_per_pattern=3e3, poisson=True,
                    seed=3)
    rec = reconstruct(scan, object=str(directory), refine=("object",), loss="poisson",
                      probe=scan.probe, optimizer="lbfgs", epochs=60, object_shape=(40, 40),
                      latent_options={"region_px": (4, 4, 32, 32), "background": 0.3},
                      verbose=0, engine="adam")
    return scan, rec, true_latent


def test_latent_hessian_matches_the_latent_fisher_of_the_pixel_operator(latent_case):
    """The autodiff Hessian of the negative log posterior against J^T F J + prior, with J the
    decoder's Jacobian and F the analytic far-field Fisher operator (independent code). At a
    well-fitted optimum the observed and expected information agree up to noise terms."""
    from adptycho.objects.latent import LatentObject
    from adptycho.uncertainty.latent import LatentPosterior, _laplace_covariance

    scan, rec, true_latent = latent_case
    fit = rec.extra_histories["latent"]
    representation = LatentObject.from_pretrained((40, 40), rec.settings["object"],
                                                  initial_latent=fit,
                                                  **rec.settings["latent_options"])
    posterior = LatentPosterior(representation, scan.patterns, rec.probe, rec.positions_px,
                                "poisson", 1.0, fit, 10.0)
    hessian = posterior.hessian(fit)
    latent = tf.constant(fit)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(latent)
        obj = representation.transmissions(latent[None])[0]
        real, imag = tf.math.real(obj), tf.math.imag(obj)
    jac = (tape.jacobian(real, latent).numpy() + 1j * tape.jacobian(imag, latent).numpy())
    columns = np.moveaxis(jac, -1, 0).astype(np.complex128)  # (n, Y, X)
    fisher = FarFieldFisher(rec.object, rec.probe, rec.positions_px, fisher_c("poisson"))
    expected = np.real(np.einsum("iyx,jyx->ij", np.conj(columns), fisher.matvec(columns)))
    expected += np.eye(LATENT) / 10.0 ** 2
    assert np.linalg.norm(hessian - expected) < 0.3 * np.linalg.norm(expected)
    ratio = np.diag(hessian) / np.diag(expected)
    assert 0.7 < np.median(ratio) < 1.3, ratio
    covariance, _ = _laplace_covariance(hessian)
    z = (fit - true_latent) / np.sqrt(np.diag(covariance))
    assert np.sqrt(np.mean(z ** 2)) < 4.0, z


def test_latent_laplace_result_and_method_check(latent_case):
    from adptycho.errors import AdptychoError
    from adptycho.uncertainty import object_uncertainty

    scan, rec, _ = latent_case
    result = object_uncertainty(scan, rec, "laplace", settings={"samples": 200})
    assert result.method == "laplace" and result.extras["latent_std"].shape == (LATENT,)
    amplitude = result.object_amplitude_std
    assert np.all(np.isfinite(amplitude)) and amplitude[4:36, 4:36].max() > 0
    assert np.allclose(amplitude[:4], 0, atol=1e-6)  # the background is fixed: no uncertainty
    with pytest.raises(AdptychoError, match="latent"):
        object_uncertainty(scan, rec, "fisher")


@pytest.mark.slow
def test_latent_hmc_agrees_with_laplace(latent_case):
    from adptycho.uncertainty import object_uncertainty

    scan, rec, _ = latent_case
    laplace = object_uncertainty(scan, rec, "laplace", settings={"samples": 400})
    hmc = object_uncertainty(scan, rec, "hmc", settings={"samples": 300, "burnin": 200})
    assert 0.5 < hmc.info["acceptance"] < 0.95
    ratio = hmc.extras["latent_std"] / laplace.extras["latent_std"]
    assert 0.7 < np.median(ratio) < 1.3, ratio


def test_posterior_mode_reaches_the_mode_an_independent_optimiser_finds(tmp_path):
    """From a latent 3 posterior std off the mode, ``posterior_mode``'s Newton steps land on
    the minimiser that scipy's float64 BFGS finds for the same negative log posterior (smooth
    gelu decoder), and report the distance they covered; started at the mode, they stay."""
    from scipy.optimize import minimize

    from adptycho.nn.irmae import IRMAE, save_irmae
    from adptycho.objects.latent import LatentObject
    from adptycho.simulate import simulate
    from adptycho.uncertainty.latent import LatentPosterior, posterior_mode

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    save_irmae(IRMAE(LATENT, 2, "gelu"), tmp_path / "smooth", np.zeros(LATENT, np.float32))
    truth = rng.normal(size=LATENT).astype(np.float32)
    obj = LatentObject.from_pretrained((40, 40), str(tmp_path / "smooth"), initial_latent=truth,
                                       region_px=(4, 4, 32, 32), background=0.3)
    probe = circular_aperture((16, 16), 10.0)
    positions = np.array([(y, x) for y in range(0, 25, 4) for x in range(0, 25, 4)], float)
    scan = simulate(obj.to_numpy(), probe, positions, photons_per_pattern=1e6, poisson=True,
                    seed=4)
    posterior = LatentPosterior(obj, scan.patterns, scan.probe, positions, "poisson", 0.0,
                                truth, 1e3)
    reference = minimize(posterior.value_and_gradient, truth.astype(np.float64), jac=True,
                         method="BFGS", options={"gtol": 1e-3}).x
    hessian = posterior.hessian(reference)
    std = np.sqrt(np.diag(np.linalg.inv(hessian)))
    start = reference + 3.0 * std * np.sign(rng.normal(size=LATENT))
    mode, _, info = posterior_mode(posterior, start)
    assert info["newton_decrement"] < 1e-2 and info["newton_steps"] >= 1
    assert np.abs((mode - reference) / std).max() < 0.1, (mode - reference) / std
    assert info["mode_shift_std"] > 2.0
    again, _, info = posterior_mode(posterior, mode)
    assert info["newton_steps"] == 0 and np.array_equal(again, mode)

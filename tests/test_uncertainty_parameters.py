"""Probe and position uncertainty (issue 22): the per-position std against a Monte-Carlo of
maximum-likelihood position fits to Poisson draws, the probe std against the dense inverse of the
Fisher matrix built from TensorFlow's Jacobian of the forward model; the result file carries
them, and ``adptycho show`` draws an uncertainty file."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import tensorflow as tf

from adptycho.geometry.probes import circular_aperture
from adptycho.physics.forward import forward_intensities
from adptycho.uncertainty.fisher import estimator_c, fisher_c
from adptycho.uncertainty.parameters import probe_std, positions_std_px
from adptycho.uncertainty.pixels import PixelSettings
from test_uncertainty import _tiny  # the same tiny problem (tests/ is on sys.path)


def _intensities(obj, probe, positions):
    return forward_intensities(tf.constant(obj, tf.complex64),
                               tf.constant(np.asarray(probe)[None], tf.complex64),
                               tf.constant(positions, tf.float32)).numpy().astype(np.float64)


@pytest.mark.parametrize("covariance", ["fisher", "estimator"])
def test_position_std_matches_the_spread_of_monte_carlo_position_fits(covariance):
    obj, probe, _ = _tiny()
    positions = np.array([[1.3, 2.6], [4.7, 0.4]])
    if covariance == "fisher":  # exact Poisson likelihood: score J^T (X / I - 1)
        c_a, c_b = fisher_c("poisson"), None
        offset, weight = 0.0, lambda i: 1.0 / i
    else:  # the offset poisson loss: score J^T ((X + 1) / (I + 1) - 1)
        c_a, c_b = estimator_c("poisson")
        offset, weight = 1.0, lambda i: 1.0 / (i + 1.0)
    predicted = positions_std_px(obj, probe, positions, c_a, c_b)
    draws, h = 600, 1e-2
    rng = np.random.default_rng(0)
    for j, true in enumerate(positions):
        counts = rng.poisson(_intensities(obj, probe, np.repeat(true[None], draws, 0)))
        estimate = np.repeat(true[None], draws, 0)
        for _ in range(6):  # Fisher scoring with a central-difference Jacobian
            intensity = _intensities(obj, probe, estimate)
            jac = np.stack([(_intensities(obj, probe, estimate + h * e)
                             - _intensities(obj, probe, estimate - h * e)) / (2 * h)
                            for e in np.eye(2)], axis=1)  # (D, 2, H, W)
            a = np.einsum("dihw,djhw,dhw->dij", jac, jac, weight(intensity))
            g = np.einsum("dihw,dhw->di", jac, (counts + offset) / (intensity + offset) - 1)
            estimate = estimate + np.linalg.solve(a, g[..., None])[..., 0]
        spread = estimate.std(axis=0, ddof=1)
        np.testing.assert_allclose(estimate.mean(axis=0), true, atol=3 * spread.max())
        # 600 draws: the spread is known to about 3%; a wrong weight or Jacobian is off by 2x
        np.testing.assert_allclose(predicted[j], spread, rtol=0.12)


def _dense_probe_covariance(obj, probe, corners, c_a, c_b, subpixel=False):
    # the Jacobian column by column in forward mode: TensorFlow's vectorised (pfor)
    # ``tape.jacobian`` is wrong through the probe's sub-pixel Fourier shift (checked against
    # finite differences; ``tape.gradient``, what the fits use, is right)
    parts = [tf.constant(probe.real, tf.float32), tf.constant(probe.imag, tf.float32)]
    columns = []
    for k in range(2 * probe.size):
        tangent = np.zeros(2 * probe.size, np.float32)
        tangent[k] = 1.0
        tangents = [tf.constant(t.reshape(probe.shape)) for t in np.split(tangent, 2)]
        with tf.autodiff.ForwardAccumulator(parts, tangents) as acc:
            intensity = forward_intensities(tf.constant(obj, tf.complex64),
                                            tf.complex(*parts)[None],
                                            tf.constant(corners, tf.float32), subpixel=subpixel)
        columns.append(acc.jvp(intensity).numpy().ravel())
    intensity = intensity.numpy().astype(np.float64).ravel()
    jac = np.stack(columns, axis=1).astype(np.float64)

    def matrix(c):
        return jac.T @ (jac * (c(intensity) / (4 * intensity))[:, None])

    # the global phase i P is a null direction: pseudo-inverse, then the projection that fixes
    # it by least squares over all pixels (the alignment probe_std applies)
    a_inv = np.linalg.pinv(matrix(c_a), rcond=1e-6, hermitian=True)
    cov = a_inv if c_b is None else a_inv @ matrix(c_b) @ a_inv
    gauge = np.concatenate([(1j * probe).real.ravel(), (1j * probe).imag.ravel()])
    q = np.eye(gauge.size) - np.outer(gauge, gauge) / (gauge @ gauge)
    return q @ cov @ q.T


@pytest.mark.parametrize("covariance, subpixel", [("fisher", False), ("estimator", False),
                                                  ("estimator", True)])
def test_probe_std_matches_the_dense_inverse_of_the_jacobian_fisher(covariance, subpixel):
    """Against the dense covariance from TensorFlow Jacobians; at sub-pixel positions the probe
    operator shifts the probe of every pattern as the forward model does."""
    obj, probe, corners = _tiny()
    probe = probe + 3.0  # no exactly dark pixel: every probe pixel has a phase
    if subpixel:
        corners = np.minimum(corners + np.random.default_rng(8).uniform(0, 0.9, corners.shape),
                             obj.shape[0] - probe.shape[0])
    c_a, c_b = (fisher_c("poisson"), None) if covariance == "fisher" else estimator_c("poisson")
    cov = _dense_probe_covariance(obj, probe, corners, c_a, c_b, subpixel)
    n = probe.size
    unit = (probe / np.abs(probe)).ravel()
    re, im = unit.real, unit.imag
    diag = np.diagonal
    var_amp = (re ** 2 * diag(cov)[:n] + im ** 2 * diag(cov)[n:]
               + 2 * re * im * diag(cov[:n, n:]))
    var_phase = (im ** 2 * diag(cov)[:n] + re ** 2 * diag(cov)[n:]
                 - 2 * re * im * diag(cov[:n, n:])) / np.abs(probe).ravel() ** 2
    # both estimators: Hutchinson probes for the Fisher bound, sampled draws for the sandwich
    settings = PixelSettings(probes=800, smoothing_px=0.0, tolerance=1e-8, reference_above=0.0,
                             single_precision=False,
                             estimator="hutchinson" if covariance == "fisher" else "sampling")
    amplitude, phase, info = probe_std(obj, probe, corners, c_a, c_b, settings=settings,
                                       dark_below=0.0)
    for got, expected in ((amplitude, var_amp), (phase, var_phase)):
        ratio = got.ravel() / np.sqrt(expected)
        assert abs(np.median(ratio) - 1) < 0.05, np.median(ratio)
        assert np.all(np.abs(ratio - 1) < 0.3), (ratio.min(), ratio.max())
    assert info["probe_cg_relative_residual"] < 1e-6


@pytest.fixture(scope="module")
def refined_files(tmp_path_factory):
    """A saved scan and a reconstruction that says it refined the probe and the positions."""
    from adptycho.io import save_cxi, save_reconstruction
    from adptycho.reconstruction import reconstruct
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    from adptycho.geometry.grids import farfield_pixel_size_m

    truth = complex_test_object((24, 24), amplitude_range=(0.6, 1.0), phase_range=(0.0, 1.0))
    pixel = farfield_pixel_size_m(561e-9, 0.065, (12, 12), 2.28e-6)
    scan = simulate(truth, circular_aperture((12, 12), 6.0),
                    np.array([(y, x) for y in range(0, 13, 3) for x in range(0, 13, 3)], float),
                    photons_per_pattern=1e5, poisson=True, seed=0, wavelength_m=561e-9,
                    pixel_size_m=pixel)
    scan = scan.replace(detector_distance_m=0.065, detector_pixel_size_m=(2.28e-6, 2.28e-6))
    rec = reconstruct(scan, probe=scan.probe, refine=("object",), loss="poisson",
                      engine="epie:10,adam:10", object_shape=truth.shape, verbose=0, seed=0)
    rec = dataclasses.replace(rec, settings={**rec.settings,
                                             "refine": ["object", "probe", "positions"]})
    root = tmp_path_factory.mktemp("refined")
    paths = {"scan": root / "scan.cxi", "rec": root / "rec.h5", "truth": root / "truth.h5"}
    save_cxi(paths["scan"], scan)
    save_reconstruction(paths["rec"], rec)
    with h5py.File(paths["truth"], "w") as f:
        f.create_dataset("object", data=truth)
    return paths, rec


def test_the_result_file_carries_probe_and_position_stds_and_show_draws_it(
        refined_files, tmp_path, capsys):
    from adptycho.cli import main
    from adptycho.uncertainty import load_uncertainty

    paths, rec = refined_files
    out = tmp_path / "u.h5"
    code = main(["uncertainty", str(paths["scan"]), str(paths["rec"]), "--out", str(out),
                 "--probes", "4", "--truth", str(paths["truth"]), "--no-png"])
    assert code == 0, capsys.readouterr().err
    result = load_uncertainty(out)
    positions = result.extras["positions_std_px"]
    assert positions.shape == (len(rec.positions_px), 2) and positions.dtype == np.float32
    assert np.all(np.isfinite(positions)) and np.all(positions > 0)
    probe = result.extras["probe_std"]
    assert probe.shape == np.asarray(rec.probe).shape and np.all(probe >= 0)
    phase = result.extras["probe_phase_std"]
    bright = np.abs(rec.probe) ** 2 >= 0.01 * np.max(np.abs(rec.probe) ** 2)
    assert np.all(np.isfinite(phase[bright])) and np.all(np.isnan(phase[~bright]))
    np.testing.assert_array_equal(result.extras["object"], rec.object)
    ratio = result.extras["phase_error_over_std"]
    assert ratio.shape == rec.object.shape and np.isfinite(ratio[result.reference]).all()
    png = tmp_path / "shown.png"
    capsys.readouterr()
    assert main(["show", str(out), "--out", str(png)]) == 0, capsys.readouterr().err
    assert png.stat().st_size > 0 and "wrote" in capsys.readouterr().out


def _residual_diagonal(obj, probe, positions, counts, subpixel):
    """(2, Y, X) diagonal of the poisson loss Hessian (TensorFlow's second derivatives) minus
    its Gauss-Newton part, and the diagonal of the whole Hessian."""
    from adptycho.losses import get_pixel_loss

    loss = get_pixel_loss("poisson")
    parts = [tf.constant(obj.real, tf.float64), tf.constant(obj.imag, tf.float64)]

    def predicted(real, imag):
        waves = forward_intensities((tf.cast(real, tf.float32), tf.cast(imag, tf.float32)),
                                    tf.constant(probe[None], tf.complex64),
                                    tf.constant(positions, tf.float32), subpixel=subpixel)
        return tf.cast(waves, tf.float64)

    with tf.GradientTape(persistent=True) as outer:
        outer.watch(parts)
        with tf.GradientTape() as inner:
            inner.watch(parts)
            total = tf.reduce_sum(loss.values(tf.constant(counts), predicted(*parts)))
        grads = inner.gradient(total, parts)
        i_pred = predicted(*parts)
    n = obj.size
    hess = [outer.jacobian(g, parts) for g in grads]  # [d/dre, d/dim] x [re, im]
    diag_h = np.concatenate([np.diag(hess[0][0].numpy().reshape(n, n)),
                             np.diag(hess[1][1].numpy().reshape(n, n))])
    jac = outer.jacobian(i_pred, parts)
    jac = np.concatenate([j.numpy().reshape(-1, n) for j in jac], axis=1)
    i_flat = i_pred.numpy().ravel()
    second = (counts.ravel() + 1.0) / (i_flat + 1.0) ** 2  # l'' of the offset poisson loss
    diag_gn = np.einsum("ki,k,ki->i", jac, second, jac)
    return (diag_h - diag_gn).reshape(2, *obj.shape), diag_h


def test_residual_curvature_is_the_diagonal_of_the_loss_hessian_beyond_gauss_newton():
    """``fisher.residual_curvature`` and ``FarFieldWaves.residual_curvature`` against the exact
    Hessian of the poisson loss minus its Gauss-Newton part, on the diagonal, at integer and at
    sub-pixel positions (where the probe of every pattern is shifted)."""
    from adptycho.uncertainty.far_field import FarFieldWaves
    from adptycho.uncertainty.fisher import residual_curvature

    obj, probe, corners = _tiny()
    shifted = np.minimum(corners + np.random.default_rng(6).uniform(0, 0.9, corners.shape),
                         obj.shape[0] - probe.shape[0])
    previous = None
    for positions, subpixel in ((corners, False), (shifted, True)):
        intensity = _intensities(obj, probe, positions)  # 0.6: every pattern's slope is > 0
        counts = np.random.default_rng(2).poisson(0.6 * intensity).astype(np.float64)
        expected, diag_h = _residual_diagonal(obj, probe, positions, counts, subpixel)
        got = residual_curvature(obj, probe, positions, lambda idx: counts[idx], "poisson",
                                 subpixel=subpixel)
        assert np.all(got >= 0) and got.max() > 0.1 * np.abs(diag_h).max()
        np.testing.assert_allclose(expected[0], got, rtol=2e-3, atol=2e-3 * got.max())
        np.testing.assert_allclose(expected[1], got, rtol=2e-3, atol=2e-3 * got.max())
        # the far-field path of a map computes it from the waves it already has: the same values
        shared = FarFieldWaves(obj, probe, positions).residual_curvature(
            lambda idx: counts[idx], "poisson")
        np.testing.assert_allclose(shared, got, rtol=1e-4, atol=1e-5 * got.max())
        if previous is not None:  # the shift matters
            assert np.abs(previous - got).max() > 0.05 * got.max()
        previous = got

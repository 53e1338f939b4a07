"""Oversampling algorithm (Barutcu et al.): dense scan, mixed data set, weights, improvement
on the initial reconstruction, CLI."""

import dataclasses

import h5py
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from adptycho.analysis import align
from adptycho.errors import AdptychoError
from adptycho.geometry import circular_aperture, normalize_probe_power
from adptycho.io import ReconstructionResult, save_reconstruction
from adptycho.samples import picture
from adptycho.simulate import simulate
from adptycho.training.oversampling import (dense_positions, mixed_dataset, oversample,
                                            oversampling_weights, scan_step_px)

FIELD, PAD, WINDOW, DIAMETER = 48, 14, 32, 16.0


def _diffuser_probe():
    rng = np.random.default_rng(3)
    noise = gaussian_filter(rng.normal(size=(WINDOW, WINDOW)), 2.0)
    probe = circular_aperture((WINDOW, WINDOW), DIAMETER, 1.0) * np.exp(1j * np.pi * noise / noise.std())
    return normalize_probe_power(probe.astype(np.complex64), 1e6)


def _sparse_problem(step=16):
    """Pure phase object (camera in [0, pi]) in free space, 0% linear overlap raster."""
    phase = np.pi * picture("camera", (FIELD, FIELD))
    size = FIELD + 2 * PAD
    truth = np.ones((size, size), np.complex64)
    truth[PAD:PAD + FIELD, PAD:PAD + FIELD] = np.exp(1j * phase)
    centres = DIAMETER / 2 + step * np.arange(3)
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    corners = np.stack([cy.ravel(), cx.ravel()], 1) - WINDOW / 2 + PAD
    probe = _diffuser_probe()
    return simulate(truth, probe, corners), truth, probe, phase


def _phase_mse(truth, obj):
    sel = (slice(PAD, PAD + FIELD),) * 2
    aligned = align(obj[sel], truth[sel], scale=False)
    return float(np.mean((np.angle(aligned * np.conj(truth[sel])) / np.pi) ** 2))


@pytest.fixture(scope="module")
def sparse():
    return _sparse_problem()


def test_dense_positions_keep_measured_exactly_and_form_a_finer_raster():
    corners = np.array([[100.0, 100.0], [100.0, 160.0], [160.0, 100.0], [160.0, 160.0]])
    for factor in (2, 3, 4):
        positions, measured = dense_positions(corners, factor, 60.0, (300, 300), (32, 32))
        assert len(positions) == factor ** 2 * len(corners)
        np.testing.assert_array_equal(positions[:4], corners)
        assert measured[:4].all() and not measured[4:].any()
        # all positions lie on one raster of step 60 / Y, origin at a measured corner
        steps = (positions - 100.0) / (60.0 / factor)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
        assert len(np.unique(positions, axis=0)) == len(positions)
    # fractional measured corners are kept bit for bit; simulated ones are whole pixels
    fractional = corners + 0.37
    positions, measured = dense_positions(fractional, 3, 60.0, (300, 300), (32, 32))
    np.testing.assert_array_equal(positions[:4], fractional)
    np.testing.assert_array_equal(positions[4:], np.round(positions[4:]))
    # windows that would leave the object are dropped
    positions, _ = dense_positions(corners, 3, 60.0, (200, 200), (32, 32))
    assert positions.max() <= 200 - 32 and positions.min() >= 0 and len(positions) < 36
    assert scan_step_px(corners) == pytest.approx(60.0)
    with pytest.raises(AdptychoError, match="factor"):
        dense_positions(corners, 0, 60.0, (300, 300), (32, 32))


def test_mixed_dataset_places_measured_patterns_exactly_at_measured_positions(sparse):
    scan, truth, probe, _ = sparse
    guess = np.exp(1j * gaussian_filter(np.angle(truth), 2.0)).astype(np.complex64)
    patterns, positions, measured = mixed_dataset(scan, guess, probe, factor=3, step_px=16)
    m = scan.num_patterns
    assert measured.sum() == m and measured[:m].all()
    np.testing.assert_array_equal(positions[:m], scan.positions_px)
    np.testing.assert_array_equal(patterns[:m], scan.patterns)  # measured data, bit for bit
    # simulated patterns are the forward model of the guess at the simulated positions
    expected = simulate(guess, probe, positions[m:]).patterns
    np.testing.assert_allclose(patterns[m:], expected, rtol=1e-4, atol=1e-3 * expected.max())
    # and not the measured data of the truth
    truth_sim = simulate(truth, probe, positions[m:]).patterns
    assert np.abs(patterns[m:] - truth_sim).max() > 1e-2 * truth_sim.max()


def test_weights_follow_the_paper_with_a_stable_cap():
    measured = np.array([True, False, False])
    np.testing.assert_allclose(oversampling_weights(measured, 20.0), [1.0, 0.05, 0.05])
    np.testing.assert_allclose(oversampling_weights(measured, 0.5), [0.5, 1.0, 1.0])
    with pytest.raises(AdptychoError, match="weight"):
        oversampling_weights(measured, 0.0)


def test_oversampling_improves_on_its_initial_reconstruction(sparse):
    scan, truth, probe, phase = sparse
    # a smooth initial reconstruction (like a generator's), not consistent with the data
    initial = truth.copy()
    initial[PAD:PAD + FIELD, PAD:PAD + FIELD] = np.exp(1j * gaussian_filter(phase, 1.5))
    before = _phase_mse(truth, initial)
    result = oversample(scan, initial, probe, factor=3, weight=20, repeats=2, epochs=40,
                        step_px=16, warm_start=True, error_fn=lambda o: _phase_mse(truth, o))
    assert result.objects.shape == (2,) + truth.shape and result.error_history.shape == (2,)
    assert result.settings["num_patterns"] == 9 * scan.num_patterns
    assert result.error_history[0] < 0.8 * before, (before, result.error_history)
    assert result.error_history[1] <= result.error_history[0] * 1.02
    # fidelity to the measured data improves
    assert result.measured_residual[-1] < result.measured_residual[0] * 1.05
    # w -> 0: the simulated data (i.e. the initial reconstruction) win
    frozen = oversample(scan, initial, probe, factor=3, weight=1e-6, repeats=1, epochs=5,
                        step_px=16, warm_start=True)
    assert _phase_mse(initial, frozen.object) < 1e-4


def test_fourier_relaxation_keeps_oversampling_from_fitting_poisson_noise(sparse):
    """With noisy counts the exact projection pulls the object toward the noise; relaxing
    the measured patterns to their expected Poisson misfit does not."""
    scan, truth, probe, phase = sparse
    scale = 1e-3  # 1e3 photons per exposure
    noisy = dataclasses.replace(scan, patterns=np.random.default_rng(8).poisson(
        scan.patterns * scale).astype(np.float32))
    initial = truth.copy()
    initial[PAD:PAD + FIELD, PAD:PAD + FIELD] = np.exp(1j * gaussian_filter(phase, 1.0))
    before = _phase_mse(truth, initial)
    errors = {}
    for rho in (0.0, 1.0):
        result = oversample(noisy, initial, probe * np.float32(np.sqrt(scale)), factor=3,
                            weight=20, epochs=40, step_px=16, warm_start=True,
                            fourier_relaxation=rho, error_fn=lambda o: _phase_mse(truth, o))
        errors[rho] = float(result.error_history[0])
        assert result.settings["fourier_relaxation"] == rho
    # measured here: initial 2.3e-3, exact projection 11.6e-3, relaxed 2.2e-3
    assert errors[0.0] > 2 * before and errors[1.0] < before, (before, errors)


def test_bad_arguments_are_reported(sparse):
    scan, truth, probe, _ = sparse
    with pytest.raises(AdptychoError, match="repeats"):
        oversample(scan, truth, probe, repeats=0)
    with pytest.raises(AdptychoError, match="weight_schedule"):
        oversample(scan, truth, probe, repeats=2, weight_schedule=[20.0])
    with pytest.raises(AdptychoError, match="probe"):
        oversample(dataclasses.replace(scan, probe=None), truth)
    with pytest.raises(AdptychoError, match="2-D"):
        oversample(scan, truth[0], probe)


def test_cli_oversample_writes_reconstruction_with_repeats(tmp_path, sparse, capsys):
    from adptycho.cli import main
    from adptycho.io import load_cxi, load_reconstruction, save_cxi

    scan, truth, probe, phase = sparse
    scan = scan.replace(wavelength_m=1e-9, detector_distance_m=1.0,
                        detector_pixel_size_m=(1e-9 / (WINDOW * 1e-8),) * 2,  # object pixel 10 nm
                        pixel_size_m=(1e-8, 1e-8))
    cxi = tmp_path / "low.cxi"
    save_cxi(cxi, scan)
    initial = truth.copy()
    initial[PAD:PAD + FIELD, PAD:PAD + FIELD] = np.exp(1j * gaussian_filter(phase, 1.5))
    init = tmp_path / "init.h5"
    save_reconstruction(init, ReconstructionResult(
        object=initial, probe=probe[None], positions_px=scan.positions_px,
        nominal_positions_px=scan.positions_px, loss_history=np.zeros(1),
        residual_history=np.zeros(1)))
    truth_file = tmp_path / "truth.h5"
    with h5py.File(truth_file, "w") as f:
        f.create_dataset("object", data=truth)
    out = tmp_path / "over.h5"
    code = main(["oversample", str(cxi), "--init", str(init), "--factor", "3", "--weight", "20",
                 "--repeats", "2", "--epochs", "5", "--step", "16", "--truth", str(truth_file),
                 "--fourier-relaxation", "0.5", "--out", str(out),
                 "--tensorboard", str(tmp_path / "tb")])
    assert code == 0, capsys.readouterr().err
    # TensorBoard: every ePIE epoch of both repeats, numbered across the repeats, and the images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    assert [e.step for e in events.Tensors("loss")] == list(range(10))
    assert any(tag.startswith("object/") for tag in events.Tags()["tensors"])
    result = load_reconstruction(out)
    assert result.object.shape == truth.shape
    assert result.settings["oversampling"]["fourier_relaxation"] == 0.5
    with h5py.File(out, "r") as f:
        assert f["repeat_objects"].shape == (2,) + truth.shape
        assert f["repeat_objects"].dtype == np.complex64
        assert f["error_history"].shape == (2,) and f["measured_residual_history"].shape == (2,)
        assert f["oversampled_positions_px"].shape == (9 * scan.num_patterns, 2)
        # measured positions as read from the CXI file, exactly
        np.testing.assert_array_equal(f["positions_px"][()], load_cxi(cxi).positions_px)
    capsys.readouterr()
    code = main(["oversample", str(cxi), "--init", str(tmp_path / "missing.h5"), "--out",
                 str(tmp_path / "bad.h5")])
    assert code == 2 and "adptycho: error: no such file" in capsys.readouterr().err
    code = main(["oversample", str(cxi), "--init", str(init), "--repeats", "2",
                 "--weight-schedule", "20", "--out", str(tmp_path / "bad.h5")])
    assert code == 2 and "weight_schedule" in capsys.readouterr().err
    code = main(["oversample", str(cxi), "--init", str(init), "--fourier-relaxation", "-2",
                 "--out", str(tmp_path / "bad.h5")])
    assert code == 2 and "fourier_relaxation" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()

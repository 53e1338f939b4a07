"""PtychoModel / reconstruct: convergence on simulated data, schedules, callbacks, bad input."""

import keras
import numpy as np
import pytest

from adptycho.analysis import illuminated_region, nrmse
from adptycho.errors import AdptychoError, GeometryError
from adptycho.geometry import (circular_aperture, gaussian_probe, normalize_probe_power,
                               overlap_to_step, raster_scan)
from adptycho.io import ScanData
from adptycho.model import NearFieldGeometry, PtychoModel
from adptycho.objects import PixelObject
from adptycho.reconstruction import build_model, reconstruct
from adptycho.samples import complex_test_object
from adptycho.simulate import simulate


def _standard_scan(size=256, probe_size=64, diameter=32.0, overlap=0.7, photons=1e6, seed=1):
    obj = complex_test_object((size, size), "camera", "astronaut")
    probe = circular_aperture((probe_size, probe_size), diameter, edge_px=2.0)
    step = overlap_to_step(overlap, diameter)
    n = int((size - probe_size) // step) + 1
    positions = np.clip(raster_scan((n, n), step, start_px=(2, 2), jitter_px=1.0, seed=seed),
                        0, size - probe_size)
    scan = simulate(obj, probe, positions, photons_per_pattern=photons)
    return scan, obj, normalize_probe_power(probe, photons)


@pytest.fixture(scope="module")
def standard():
    return _standard_scan()


def test_noise_free_object_reconstruction_reaches_nrmse_below_0_05(standard):
    scan, obj, probe = standard
    result = reconstruct(scan, probe=probe, refine=("object",), epochs=40, batch_size=16,
                         object_shape=obj.shape, verbose=0, engine="adam")
    region = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    error = nrmse(obj, result.object, region)
    assert error < 0.05, error
    assert result.loss_history[-1] < 0.01 * result.loss_history[0]


def test_probe_refinement_from_wrong_probe_reaches_nrmse_below_0_1(standard):
    scan, obj, probe = standard
    guess = normalize_probe_power(gaussian_probe(probe.shape, 30.0), scan.mean_counts())
    before = nrmse(probe, guess)
    result = reconstruct(scan, probe=guess, refine=("object", "probe"), epochs=80, batch_size=16,
                         object_shape=obj.shape, verbose=0, engine="adam")
    region = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    error = nrmse(obj, result.object, region, registration=True, ramp=True)
    assert error < 0.1, error
    # the probe moved towards the truth (up to the global factor and shift)
    after = nrmse(probe, result.probe[0])
    assert before > 0.3 and after < before


def _small_model(loss="amplitude", near_field=None, positions=None, probe_size=32, size=96):
    rng = np.random.default_rng(0)
    obj = (0.7 + 0.3 * rng.random((size, size))) * np.exp(1j * rng.random((size, size)))
    probe = normalize_probe_power(circular_aperture((probe_size, probe_size), 16, 2.0), 1e4)
    if positions is None:
        positions = raster_scan((6, 6), 10.0, start_px=(4, 4), jitter_px=0.7, seed=0)
    scan = simulate(obj, probe, positions, near_field=near_field)
    return scan, obj.astype(np.complex64), probe


def test_start_epoch_freezes_a_group_until_its_epoch():
    scan, obj, probe = _small_model()
    model, _ = build_model(scan, probe=probe, object_shape=obj.shape)
    model.compile(refine=("object", "probe"), start_epochs={"probe": 2})
    initial = model.get_probe()
    after = {}

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            after[epoch] = self.model.get_probe()

    model.fit(np.arange(scan.num_patterns), scan.patterns, batch_size=8, epochs=3, verbose=0,
              callbacks=[Spy()])
    np.testing.assert_array_equal(after[0], initial)
    np.testing.assert_array_equal(after[1], initial)
    assert np.abs(after[2] - initial).max() > 0


def test_learning_rate_decays_by_0_97_per_epoch_from_group_start():
    scan, obj, probe = _small_model()
    model, _ = build_model(scan, probe=probe, object_shape=obj.shape)
    model.compile(refine=("object", "probe"), learning_rates={"object": 0.1, "probe": 0.2},
                  start_epochs={"probe": 1})
    model.fit(np.arange(scan.num_patterns), scan.patterns, batch_size=36, epochs=4, verbose=0)
    assert float(model.group_optimizers["object"].learning_rate) == pytest.approx(0.1 * 0.97 ** 3, rel=1e-5)
    assert float(model.group_optimizers["probe"].learning_rate) == pytest.approx(0.2 * 0.97 ** 2, rel=1e-5)


def test_position_refinement_recovers_an_offset_and_keeps_zero_mean():
    true_positions = raster_scan((6, 6), 10.0, start_px=(6, 6), jitter_px=0.5, seed=2)
    scan, obj, probe = _small_model(positions=true_positions)
    rng = np.random.default_rng(5)
    error = rng.normal(scale=1.0, size=true_positions.shape)
    error -= error.mean(axis=0)
    wrong = ScanData(scan.patterns, true_positions + error)
    # Mechanism test with the true object; joint object + position calibration is tested in
    # the calibration suite.
    model, grid = build_model(wrong, probe=probe, object_shape=obj.shape, initial_object=obj)
    model.compile(refine=("positions",), learning_rates={"positions": 0.05}, decay_rate=0.97)
    model.fit(np.arange(scan.num_patterns), scan.patterns, batch_size=6, epochs=40, verbose=0)
    corrections = model.position_corrections.numpy()
    np.testing.assert_allclose(corrections.mean(axis=0), 0.0, atol=1e-4)
    refined = model.get_positions()
    rms_before = np.sqrt(np.mean(np.sum(error ** 2, axis=1)))
    residual = refined - true_positions
    residual -= residual.mean(axis=0)
    rms_after = np.sqrt(np.mean(np.sum(residual ** 2, axis=1)))
    assert rms_after < 0.2 * rms_before, (rms_before, rms_after)


@pytest.mark.parametrize("refine", [("object", "probe"), ("object", "probe", "positions")])
def test_cpu_fit_with_ffts_outside_xla_equals_the_whole_xla_fit(refine, monkeypatch):
    """On CPU, ``compile(jit_compile="auto")`` runs far-field steps on the fused path as
    XLA-compiled pieces joined by TensorFlow FFT ops (``accel.xla_pieces``). The fit is the
    same as with one XLA program (``jit_compile=True``): loss history, object, probe, positions."""
    import adptycho.accel.plan as accel_plan
    import adptycho.accel.xla_pieces as xla_pieces

    monkeypatch.setattr(accel_plan, "WINDOW_MIN_PIXELS", 0)  # the fused path for 32x32 windows
    scan, obj, probe = _small_model()
    guess = normalize_probe_power(gaussian_probe(probe.shape, 12.0), scan.mean_counts())
    split_traces = []
    original = xla_pieces.fft_outside_xla

    def spy(enabled=True):
        split_traces.append(enabled)
        return original(enabled)

    monkeypatch.setattr(xla_pieces, "fft_outside_xla", spy)
    fits = {}
    for jit in ("auto", True):
        keras.utils.set_random_seed(0)
        model, _ = build_model(scan, probe=guess, object_shape=obj.shape)
        model.compile(refine=refine, learning_rates={"positions": 0.05}, jit_compile=jit)
        assert model.execution_plan.pieces == (jit == "auto")
        split_traces.clear()
        # batch 7 of 36 patterns: the last batch has one pattern, so one chain is empty
        history = model.fit(np.arange(scan.num_patterns), scan.patterns, batch_size=7,
                            epochs=3, shuffle=False, verbose=0)
        assert model.execution_plan.chains == (xla_pieces.chains() if jit == "auto" else 1)
        assert split_traces and all(t == (jit == "auto") for t in split_traces)
        fits[jit] = (np.array(history.history["loss"]), model.get_object(), model.get_probe(),
                     model.get_positions())
    for name, a, b in zip(("loss", "object", "probe", "positions"), fits["auto"], fits[True]):
        # relative L2 difference: Adam turns float-rounding differences of near-zero gradients
        # (unilluminated edge pixels) into differences of the order of its step size
        difference = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert difference < 1e-3, (name, difference)
    assert fits[True][0][-1] < fits[True][0][0]


def test_near_field_distance_refinement_moves_towards_the_truth():
    near = NearFieldGeometry(wavelength_m=1e-10, pixel_size_m=(180e-9, 180e-9), distance_m=3.6e-3)
    scan, obj, probe = _small_model(near_field=near)
    wrong = NearFieldGeometry(near.wavelength_m, near.pixel_size_m, near.distance_m * 1.03)
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, scan.positions_px,
                        near_field=wrong)
    model.compile(refine=("distance",), learning_rates={"distance": 2e-3}, decay_rate=1.0)
    model.fit(np.arange(scan.num_patterns), scan.patterns, batch_size=12, epochs=15, verbose=0)
    distance = model.get_distance()
    assert abs(distance - near.distance_m) < 0.2 * abs(wrong.distance_m - near.distance_m)


def test_keras_callbacks_checkpoint_and_early_stopping(tmp_path):
    scan, obj, probe = _small_model()
    model, _ = build_model(scan, probe=probe, object_shape=obj.shape)
    model.compile(refine=("object",))
    path = tmp_path / "ckpt.weights.h5"
    history = model.fit(
        np.arange(scan.num_patterns), scan.patterns, batch_size=8, epochs=50, verbose=0,
        callbacks=[keras.callbacks.ModelCheckpoint(str(path), save_weights_only=True),
                   keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e12)])
    assert len(history.history["loss"]) == 2  # stopped early: no improvement of 1e12
    assert path.exists()
    fresh, _ = build_model(scan, probe=probe, object_shape=obj.shape)
    fresh.load_weights(str(path))
    np.testing.assert_allclose(fresh.get_object(), model.get_object())


def test_interrupted_fit_resumes_from_its_checkpoint_with_the_uninterrupted_result(tmp_path):
    scan, obj, probe = _small_model()
    kwargs = dict(probe=probe, refine=("object", "probe"), batch_size=36, object_shape=obj.shape,
                  verbose=0, decay_rate=1.0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct(scan, epochs=6, callbacks=[Interrupt()], checkpoint_dir=tmp_path / "ck",
                    **kwargs, engine="adam")
    resumed = reconstruct(scan, epochs=6, checkpoint_dir=tmp_path / "ck", **kwargs, engine="adam")
    uninterrupted = reconstruct(scan, epochs=6, **kwargs, engine="adam")
    assert len(resumed.loss_history) == 6  # the histories cover every epoch
    np.testing.assert_allclose(resumed.loss_history, uninterrupted.loss_history, rtol=1e-6)
    np.testing.assert_allclose(resumed.object, uninterrupted.object, rtol=1e-5, atol=1e-6)


def test_bad_input_errors_name_the_problem():
    scan, obj, probe = _small_model()
    with pytest.raises(GeometryError, match="probe shape"):
        build_model(scan, probe=np.ones((16, 16), np.complex64))
    with pytest.raises(GeometryError, match="outside"):
        PtychoModel(PixelObject((40, 40)), probe, scan.positions_px)
    model, _ = build_model(scan, probe=probe)
    with pytest.raises(AdptychoError, match="unknown parameter group"):
        model.compile(refine=("object", "focus"))
    with pytest.raises(AdptychoError, match="farfield_distance_m"):
        model.compile(refine=("distance",))
    with pytest.raises(AdptychoError, match="unknown engine"):
        reconstruct(scan, engine="dm")
    with pytest.raises(AdptychoError, match="unknown loss"):
        reconstruct(scan, loss="gauss", engine="adam")
    with pytest.raises(AdptychoError, match="readout_noise must be positive"):
        build_model(scan, loss="poisson-gaussian", readout_noise=0.0)


def test_probe_mode_orthogonalisation_keeps_intensities_and_orders_modes():
    scan, obj, probe = _small_model()
    rng = np.random.default_rng(3)
    modes = np.stack([probe, 0.5 * probe * np.exp(1j * rng.uniform(0, 6, probe.shape)),
                      0.8 * np.roll(probe, 3, axis=1)])
    model = PtychoModel(PixelObject(obj.shape, initial=obj), modes, scan.positions_px)
    before = model(np.arange(scan.num_patterns)).numpy()
    model.orthogonalise_probe()
    after = model(np.arange(scan.num_patterns)).numpy()
    np.testing.assert_allclose(after, before, rtol=2e-4, atol=1e-3 * before.max())
    flat = model.get_probe().reshape(3, -1)
    gram = flat.conj() @ flat.T
    off_diagonal = np.abs(gram - np.diag(np.diag(gram)))
    assert off_diagonal.max() < 1e-4 * np.abs(np.diag(gram)).max()
    power = np.real(np.diag(gram))
    assert np.all(np.diff(power) <= 0)


def test_probe_power_and_support_constraints_hold_during_the_fit():
    scan, obj, probe = _small_model()
    support = np.abs(circular_aperture(probe.shape, 22, 2.0))
    guess = gaussian_probe(probe.shape, 12.0) * 30.0  # wrong power (about 3e3 photons) and shape
    model, _ = build_model(scan, probe=guess, object_shape=obj.shape, probe_power=1e4,
                           probe_support=support)
    model.compile(refine=("object", "probe"))
    model.fit(np.arange(scan.num_patterns), scan.patterns, batch_size=6, epochs=3, verbose=0)
    fitted = model.get_probe()
    assert np.sum(np.abs(fitted) ** 2) == pytest.approx(1e4, rel=1e-4)
    assert np.all(np.abs(fitted[0][support == 0]) == 0)  # nothing outside the support
    assert np.abs(fitted[0][support > 0.99]).min() > 0
    # without the constraints the same fit leaves the power where Adam took it
    free, _ = build_model(scan, probe=guess, object_shape=obj.shape)
    free.compile(refine=("object", "probe"))
    free.fit(np.arange(scan.num_patterns), scan.patterns, batch_size=6, epochs=3, verbose=0)
    assert abs(np.sum(np.abs(free.get_probe()) ** 2) / 1e4 - 1) > 1e-2
    with pytest.raises(GeometryError, match="probe_support shape"):
        build_model(scan, probe=probe, probe_support=np.ones((5, 5)))
    with pytest.raises(AdptychoError, match="probe_power"):
        build_model(scan, probe=probe, probe_power=-1.0)


def test_total_variation_prior_matches_numpy_and_denoises_a_low_dose_fit():
    """``PixelObject(tv_weight=...)``: the penalty equals a plain numpy isotropic TV of the
    complex object, and a low-dose fit of a piecewise-constant object with the prior ends
    closer to the truth than the same fit without it (the prior reaches the Adam steps)."""
    from adptycho.objects.pixels import TV_EPS

    rng = np.random.default_rng(0)
    value = (rng.normal(size=(12, 9)) + 1j * rng.normal(size=(12, 9))).astype(np.complex64)
    obj = PixelObject((12, 9), initial=value, tv_weight=0.5)
    dy = np.zeros_like(value)
    dx = np.zeros_like(value)
    dy[:-1] = value[1:] - value[:-1]
    dx[:, :-1] = value[:, 1:] - value[:, :-1]
    reference = 0.5 * np.sum(np.sqrt(np.abs(dy) ** 2 + np.abs(dx) ** 2 + TV_EPS))
    np.testing.assert_allclose(float(obj.penalty()), reference, rtol=1e-5)
    assert PixelObject((12, 9)).penalty() is None
    with pytest.raises(AdptychoError, match="tv_weight"):
        PixelObject((12, 9), tv_weight=-1.0)

    truth = np.ones((64, 64), np.complex64)
    truth[16:40, 20:44] = 0.6 * np.exp(0.8j)
    probe = circular_aperture((32, 32), 16.0, edge_px=2.0)
    positions = raster_scan((9, 9), 4.0)
    scan = simulate(truth, probe, positions, photons_per_pattern=300, poisson=True, seed=2)
    errors = {}
    for weight in (0.0, 3.0):
        keras.utils.set_random_seed(0)
        model = PtychoModel(PixelObject((64, 64), tv_weight=weight), scan.probe, positions,
                            loss="poisson")
        model.compile(refine=("object",), learning_rates={"object": 0.05}, decay_rate=1.0)
        model.fit(np.arange(len(positions)), scan.patterns, batch_size=27, epochs=40, verbose=0)
        region = illuminated_region(positions, scan.probe, truth.shape, 0.5)
        errors[weight] = nrmse(truth[region], model.get_object()[region])
    assert errors[3.0] < 0.8 * errors[0.0], errors


def test_reconstruct_passes_the_tv_weight_to_the_pixel_object_and_refuses_bad_values():
    from adptycho.config import ReconstructConfig

    scan, obj, probe = _standard_scan(size=96, probe_size=32, diameter=16.0, photons=1e4)
    result = reconstruct(scan, probe=probe, refine=("object",), engine="adam", epochs=2,
                         verbose=0, tv_weight=0.5)
    assert result.settings["tv_weight"] == 0.5
    model, _ = build_model(scan, probe=probe, tv_weight=0.5)
    assert model.object_representation.tv_weight == 0.5
    assert float(model.object_representation.penalty()) > 0
    for bad in (-1.0, float("nan")):
        with pytest.raises(AdptychoError, match="tv_weight"):
            ReconstructConfig(tv_weight=bad)
    with pytest.raises(AdptychoError, match="pixel objects"):
        ReconstructConfig(tv_weight=1.0, object="irmae-mnist")

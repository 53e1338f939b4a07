"""Position correction inside the PIE engines (``PIESettings.position_correction``): the
Gauss-Newton shift estimate, recovery of 2 px RMS scan-position errors with a diffuser probe
(sequential ePIE, rPIE with fractional errors and probe refinement, batch mode), the write-back
into the model, the untouched default, and bad settings.

The data come from a small numpy far-field simulator written here (not ``adptycho.simulate``):
``I_j = |FFTSHIFT(FFT2(P(r - f_j) O(r + c_j))) / sqrt(H W)|^2`` for the true corner ``c_j + f_j``
(integer part ``c_j``, sub-pixel part ``f_j`` applied as a Fourier shift of the probe, the
model's convention), Poisson counts at 1e7 photons per pattern.
"""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from adptycho.analysis import illuminated_region
from adptycho.analysis.metrics import nrmse
from adptycho.errors import AdptychoError
from adptycho.model import PtychoModel
from adptycho.objects import PixelObject
from adptycho.samples import complex_test_object
from adptycho.training.epie import PIESettings, PIETrainer, _position_shifts, pie_settings

PROBE = 32
SIDE, STEP, PAD = 8, 7, 4  # 8 x 8 raster, 7 px step (about 63% linear overlap), 4 px margin


def _fourier_shift(field, shift):
    """``out(r) = field(r - shift)`` (cyclic), shift (y, x) in pixels."""
    ky = np.fft.fftfreq(field.shape[-2])[:, None]
    kx = np.fft.fftfreq(field.shape[-1])[None, :]
    ramp = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    return np.fft.ifft2(np.fft.fft2(field) * ramp)


def _diffuser_probe(rng):
    """(32, 32) complex128 soft disc (diameter ~19 px) behind a random-phase diffuser
    (correlation ~1.5 px, 2 rad std)."""
    y, x = np.mgrid[:PROBE, :PROBE] - (PROBE - 1) / 2
    disc = gaussian_filter((np.hypot(y, x) < 0.3 * PROBE).astype(float), 1.0)
    phase = gaussian_filter(rng.normal(size=(PROBE, PROBE)), 1.5)
    return disc * np.exp(2j * phase / phase.std())


def _simulate(error_rms=2.0, fractional=False, seed=0, photons=1e7):
    """(object, probe, nominal, true, patterns): ``error_rms`` is the RMS length (px) of the
    position errors (rounded to whole pixels unless ``fractional``)."""
    rng = np.random.default_rng(seed)
    probe = _diffuser_probe(rng)
    probe *= np.sqrt(photons / np.sum(np.abs(probe) ** 2))
    size = (SIDE - 1) * STEP + PROBE + 2 * PAD
    obj = complex_test_object((size, size), "camera", "astronaut")
    grid = np.arange(SIDE) * STEP + PAD
    nominal = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2).astype(float)
    error = np.clip(rng.normal(0.0, error_rms / np.sqrt(2), nominal.shape), -PAD, PAD)
    true = nominal + (error if fractional else np.round(error))
    patterns = []
    for corner in true:
        c = np.floor(corner).astype(int)
        psi = _fourier_shift(probe, corner - c) * obj[c[0]:c[0] + PROBE, c[1]:c[1] + PROBE]
        patterns.append(np.abs(np.fft.fftshift(np.fft.fft2(psi))) ** 2 / PROBE ** 2)
    patterns = rng.poisson(np.array(patterns)).astype(np.float32)
    return obj, probe.astype(np.complex64), nominal, true, patterns


def _rms(positions, true):
    """RMS distance (px) after removing the mean offset (a global shift is a gauge)."""
    d = positions - true
    d = d - d.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(d ** 2, axis=1))))


@pytest.fixture(scope="module")
def integer_errors():
    return _simulate(2.0, fractional=False, seed=0)


def _reconstruct(data, engine, epochs, **options):
    obj, probe, nominal, true, patterns = data
    model = PtychoModel(PixelObject(obj.shape), probe, nominal)
    history = PIETrainer(model, pie_settings(engine, **options)).fit(patterns, epochs)
    region = illuminated_region(true, probe, obj.shape, 0.3)
    error = nrmse(obj, model.get_object(), region, registration=True,
                  ramp=options.get("refine_probe", True))
    return model, history, _rms(model.get_positions(), true), error


# -- the shift estimate --------------------------------------------------------------------
@pytest.mark.parametrize("shift", [(0.3, -0.2), (-0.15, 0.25)])
def test_shift_estimate_recovers_a_known_sub_pixel_shift(shift):
    """dpsi = P [O(r + c + delta) - O(r + c)] (a smooth object): the 2x2 Gauss-Newton estimate
    returns delta, with the sign that moves the window toward the truth; the exactly singular
    direction of a patch without gradient gives no shift, not a NaN."""
    rng = np.random.default_rng(1)
    obj = complex_test_object((64, 64), "camera", "astronaut")
    obj = (gaussian_filter(obj.real, 2.0)
           + 1j * gaussian_filter(obj.imag, 2.0)).astype(np.complex64)
    probe = _diffuser_probe(rng).astype(np.complex64)[None]
    corner = np.array([[16, 12]], np.int32)
    moved = _fourier_shift(obj, -np.asarray(shift))  # moved(r) = obj(r + shift)
    window = (slice(16, 16 + PROBE), slice(12, 12 + PROBE))
    dpsi = (probe[0] * (moved[window] - obj[window]))[None, None].astype(np.complex64)
    estimate = _position_shifts(obj, probe, corner, dpsi).numpy()[0]
    np.testing.assert_allclose(estimate, shift, atol=0.08 * np.abs(shift).max())
    # a patch that varies along x only: no y shift, a finite x shift
    stripes = np.tile(np.exp(1j * np.sin(np.arange(64) / 3.0)), (64, 1)).astype(np.complex64)
    stripes_moved = _fourier_shift(stripes, (0.0, -0.3))
    dpsi = (probe[0] * (stripes_moved[window] - stripes[window]))[None, None].astype(np.complex64)
    estimate = _position_shifts(stripes, probe, corner, dpsi).numpy()[0]
    assert np.all(np.isfinite(estimate)) and abs(estimate[0]) < 1e-3
    assert estimate[1] == pytest.approx(0.3, abs=0.03)


# -- reconstructions -----------------------------------------------------------------------
def test_epie_position_correction_recovers_2px_errors_with_a_diffuser_probe(integer_errors):
    """50 sequential ePIE epochs (known probe) from nominal positions 2 px RMS off: the
    corrected positions end below 0.45 px RMS and the object error is under half of the
    uncorrected run's."""
    obj, probe, nominal, true, _ = integer_errors
    before = _rms(nominal, true)
    off_model, off_history, off_rms, off_error = _reconstruct(
        integer_errors, "epie", 50, refine_probe=False)
    on_model, on_history, on_rms, on_error = _reconstruct(
        integer_errors, "epie", 50, refine_probe=False, position_correction=True)
    assert 1.8 < before < 2.3 and off_rms == pytest.approx(before)
    assert on_rms < 0.45 and on_rms < 0.25 * before, (before, on_rms)
    assert on_error < 0.5 * off_error, (on_error, off_error)
    assert on_history["residual"][-1] < 0.3 * off_history["residual"][-1]
    # the positions start moving at position_start_epoch (default 5) and the log says how far
    change = on_history["position_change"]
    assert len(change) == 50 and change[4] == 0.0 and change[5] > 0.0
    assert change[-1] == pytest.approx(_rms(on_model.get_positions(), nominal), rel=1e-4)
    assert "position_change" not in off_history


def test_rpie_corrects_fractional_errors_while_refining_the_probe():
    """Fractional (sub-pixel) errors, probe refined from the true probe: 30 rPIE epochs with
    position correction end below 0.3 px RMS, at sub-pixel positions."""
    data = _simulate(2.0, fractional=True, seed=2)
    obj, probe, nominal, true, _ = data
    _, _, off_rms, off_error = _reconstruct(data, "rpie", 30, refine_probe=True)
    model, _, on_rms, on_error = _reconstruct(data, "rpie", 30, refine_probe=True,
                                             position_correction=True)
    assert on_rms < 0.3, (_rms(nominal, true), on_rms)
    assert on_error < 0.5 * off_error, (on_error, off_error)
    assert np.any(np.abs(model.get_positions() - np.round(model.get_positions())) > 0.05)


def test_batch_mode_position_correction(integer_errors):
    """Vectorised rPIE (4 patterns per update, one object per batch) moves every pattern of
    the batch from the same object: still below 0.3 px RMS."""
    _, _, on_rms, _ = _reconstruct(integer_errors, "rpie", 50, refine_probe=False,
                                   position_correction=True, batch_size=4)
    assert on_rms < 0.3, on_rms


# -- the model and the settings -------------------------------------------------------------
def test_refined_positions_are_written_into_the_model(integer_errors):
    """get_positions() returns the refined positions as nominal + zero-mean corrections (the
    mean position is kept); fit resumes from them; the off default leaves them untouched."""
    obj, probe, nominal, true, patterns = integer_errors
    model = PtychoModel(PixelObject(obj.shape), probe, nominal)
    trainer = PIETrainer(model, pie_settings("epie", refine_probe=False, position_correction=True,
                                             position_start_epoch=1))
    trainer.fit(patterns, 6)
    refined = model.get_positions()
    corrections = model.position_corrections.numpy()
    assert np.abs(corrections).max() > 0.5
    np.testing.assert_allclose(refined, nominal + corrections, atol=1e-5)
    np.testing.assert_allclose(corrections.mean(axis=0), 0.0, atol=1e-4)
    assert _rms(refined, true) < _rms(nominal, true)
    # a second call starts from the written positions (no move before its first moving epoch)
    history = trainer.fit(patterns, 1, initial_epoch=0)
    np.testing.assert_allclose(model.get_positions(), refined, atol=1e-6)
    assert history["position_change"] == [0.0]
    # default: off, positions exactly as given
    off = PtychoModel(PixelObject(obj.shape), probe, nominal)
    assert PIESettings().position_correction is False
    history = PIETrainer(off, pie_settings("rpie", refine_probe=False)).fit(patterns, 6)
    np.testing.assert_array_equal(off.get_positions(), nominal)
    assert not np.any(off.position_corrections.numpy()) and set(history) == {"loss", "residual"}


def test_whole_pixel_search_frees_positions_far_from_the_truth(integer_errors):
    """With the true object and probe, two patterns put 3 and 2.8 px off (beyond the gradient
    step's reach) jump back at the first search; a switched-off pattern (weight 0) does not."""
    obj, probe, _, true, patterns = integer_errors
    start = true.copy()
    start[10] += (3.0, -2.0)
    start[37] += (-2.0, 2.0)
    start[50] += (2.0, 1.0)
    weights = np.ones(len(true))
    weights[50] = 0.0
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, start)
    settings = pie_settings("epie", object_step=0.0, refine_probe=False, position_correction=True,
                            position_start_epoch=0, position_step=1e-6, position_momentum=0.0,
                            position_search_radius=3, position_search_interval=1)
    history = PIETrainer(model, settings).fit(patterns, 2, sample_weight=weights)
    assert history["position_jumps"] == [0, 2]
    moved = model.get_positions() - true
    moved -= moved.mean(axis=0)  # the gauge: the jumps shift the mean, which is restored
    others = np.delete(np.arange(len(true)), 50)
    assert np.abs(moved[others] - moved[others].mean(axis=0)).max() < 1e-3
    np.testing.assert_allclose(moved[50] - moved[others].mean(axis=0), (2.0, 1.0), atol=1e-3)


def test_isotropic_scale_is_kept_while_the_probe_is_refined(integer_errors):
    """A common scale of the scan is nearly a gauge when the probe is free (Fresnel scaling):
    the corrections keep zero mean and zero isotropic scale about the centroid then, and not
    with a fixed probe."""
    obj, probe, nominal, true, patterns = integer_errors
    centred = nominal - nominal.mean(axis=0)
    scales = {}
    for refine in (True, False):
        model = PtychoModel(PixelObject(obj.shape), probe, nominal)
        PIETrainer(model, pie_settings("rpie", refine_probe=refine, position_correction=True,
                                       position_start_epoch=1)).fit(patterns, 8)
        corrections = model.position_corrections.numpy()
        np.testing.assert_allclose(corrections.mean(axis=0), 0.0, atol=1e-4)
        assert np.abs(corrections).max() > 0.5
        scales[refine] = np.sum(corrections * centred) / np.sum(centred * centred)
    assert abs(scales[True]) < 1e-5 and abs(scales[False]) > 1e-3, scales


def _numpy_epie_step(obj, probe, corner, intensity, alpha, beta):
    """Reference ePIE update (Maiden & Rodenburg 2009, Eq. 6) of one pattern."""
    h, w = probe.shape
    y, x = corner
    patch = obj[y:y + h, x:x + w].astype(np.complex128)
    psi = probe.astype(np.complex128) * patch
    spectrum = np.fft.fftshift(np.fft.fft2(psi)) / np.sqrt(h * w)
    projected = np.sqrt(intensity) * spectrum / np.abs(spectrum)
    dpsi = np.fft.ifft2(np.fft.ifftshift(projected)) * np.sqrt(h * w) - psi
    out_obj = obj.astype(np.complex128).copy()
    out_obj[y:y + h, x:x + w] += alpha * np.conj(probe) * dpsi / np.max(np.abs(probe) ** 2)
    out_probe = probe + beta * np.conj(patch) * dpsi / np.max(np.abs(patch) ** 2)
    return out_obj, out_probe


@pytest.mark.parametrize("correction", [False, True])
def test_single_update_formula_holds_with_correction_off_and_before_it_starts(correction):
    """With correction off, and with it on but before position_start_epoch (integer positions:
    no sub-pixel probe shift), one epoch is exactly the hand-computed ePIE update and the
    positions do not move."""
    rng = np.random.default_rng(3)
    obj = (rng.normal(size=(12, 13)) + 1j * rng.normal(size=(12, 13))).astype(np.complex64)
    probe = (rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))).astype(np.complex64)
    intensity = rng.uniform(0.5, 5.0, size=(1, 8, 8)).astype(np.float32)
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, [[2.0, 3.0]])
    PIETrainer(model, pie_settings("epie", object_step=0.7, probe_step=0.5,
                                   position_correction=correction,
                                   position_start_epoch=1)).fit(intensity, 1)
    ref_obj, ref_probe = _numpy_epie_step(obj, probe, (2, 3), intensity[0], 0.7, 0.5)
    np.testing.assert_allclose(model.get_object(), ref_obj, atol=2e-5 * np.abs(ref_obj).max())
    np.testing.assert_allclose(model.get_probe()[0], ref_probe, atol=2e-5 * np.abs(ref_probe).max())
    np.testing.assert_array_equal(model.get_positions(), [[2.0, 3.0]])


@pytest.mark.parametrize("name, value", [
    ("position_step", 0.0), ("position_step", 2.5), ("position_step", float("nan")),
    ("position_max_shift", 0.0), ("position_max_shift", float("inf")),
    ("position_start_epoch", -1), ("position_start_epoch", 1.5),
    ("position_momentum", 1.0), ("position_momentum", -0.1),
    ("position_search_radius", -1), ("position_search_radius", 1.5),
    ("position_search_interval", 0), ("position_correction", "yes"),
])
def test_bad_position_settings_are_refused(name, value):
    with pytest.raises(AdptychoError, match=name):
        pie_settings("epie", **{name: value})


def test_position_settings_defaults_and_pass_through():
    s = pie_settings("mpie", position_correction=True, position_start_epoch=3)
    assert s.position_correction is True and s.position_start_epoch == 3
    assert s.engine == "mpie" and s.momentum > 0  # the engine defaults are kept
    d = PIESettings()
    assert (d.position_correction, d.position_start_epoch, d.position_step,
            d.position_max_shift, d.position_momentum, d.position_search_radius,
            d.position_search_interval) == (False, 5, 1.0, 1.0, 0.8, 3, 10)
    # None means "the default" as for the other options
    assert pie_settings("epie", position_correction=None).position_correction is False

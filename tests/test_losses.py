"""Noise-model losses and the noise of simulated data."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.losses import (LOSSES, PIXEL_LOSSES, POISSON_OFFSET, amplitude_loss,
                             amplitude_residual_sums, get_loss, get_pixel_loss, masked_count_sum,
                             paired_pixel_sums, pixel_sums, poisson_gaussian_loss, poisson_loss,
                             sum_of_pattern_values)
from adptycho.model import NearFieldGeometry
from adptycho.simulate import simulate

SCALES = np.round(np.linspace(0.5, 1.5, 101), 10)  # includes 1.0 exactly (index 50)


def f32(x):
    return tf.constant(np.asarray(x), tf.float32)


def _truth(shape=(64, 64), seed=0, mean=50.0):
    return np.random.default_rng(seed).uniform(0.2 * mean, 1.8 * mean, size=shape)


def _scan_losses(loss_fn, measured, truth, scales, **kwargs):
    """Loss of predicted = a * truth for every a in ``scales`` (one 'pattern' per scale)."""
    predicted = f32(np.asarray(scales)[:, None, None] * truth[None])
    measured = f32(np.broadcast_to(measured, predicted.shape))
    return loss_fn(measured, predicted, **kwargs).numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------
# general properties
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_pixel_loss_matches_loss_and_its_gradient_matches_autodiff(name):
    """The per-pixel form used by the fused far-field path: its masked pixel sums are the
    loss, and its analytic derivative w.r.t. the intensity equals autodiff of the loss, at
    zero and positive predictions, zero and negative (dark-subtracted) counts."""
    rng = np.random.default_rng(3)
    measured = np.concatenate([rng.poisson(4.0, (2, 8, 8)), np.zeros((1, 8, 8)),
                               rng.normal(0.0, 1.0, (1, 8, 8))]).astype(np.float32)
    predicted = rng.uniform(0.0, 9.0, (4, 8, 8)).astype(np.float32)
    predicted[1, :3] = 0.0
    mask = (rng.uniform(size=(8, 8)) > 0.2).astype(np.float32)
    readout = rng.uniform(0.5, 2.0, (8, 8)).astype(np.float32)
    pixel = get_pixel_loss(name)
    assert pixel is PIXEL_LOSSES[name]
    predicted_t = f32(predicted)
    with tf.GradientTape() as tape:
        tape.watch(predicted_t)
        losses = get_loss(name)(f32(measured), predicted_t, f32(mask), readout)
    expected = tape.gradient(losses, predicted_t).numpy()
    values = pixel.values(f32(measured), predicted_t, readout).numpy()
    np.testing.assert_allclose((values * mask).sum(axis=(1, 2)), losses.numpy(), rtol=1e-5)
    gradient = pixel.gradient(f32(measured), predicted_t, readout).numpy() * mask
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(gradient, expected, rtol=2e-5, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(4, 64, 64), (3, 128, 96), (2, 15, 17), (5, 8, 8)])
def test_pixel_sums_equal_reduce_sum_also_under_xla(shape):
    values = np.random.default_rng(5).uniform(0.0, 3.0, shape).astype(np.float32)
    expected = values.astype(np.float64).sum(axis=(-2, -1))
    np.testing.assert_allclose(pixel_sums(f32(values)).numpy(), expected, rtol=1e-5)
    compiled = tf.function(pixel_sums, jit_compile=True,
                           input_signature=[tf.TensorSpec([None] + list(shape[1:]), tf.float32)])
    np.testing.assert_allclose(compiled(f32(values)).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(sum_of_pattern_values(f32(expected)).numpy(), expected.sum(),
                               rtol=1e-6)


def test_paired_pixel_sums_equal_two_sums():
    rng = np.random.default_rng(6)
    first, second = rng.uniform(0, 2, (2, 3, 64, 64)).astype(np.float32)
    a, b = tf.function(paired_pixel_sums, jit_compile=True)(f32(first), f32(second))
    np.testing.assert_allclose(a.numpy(), first.sum(axis=(-2, -1)), rtol=1e-5)
    np.testing.assert_allclose(b.numpy(), second.sum(axis=(-2, -1)), rtol=1e-5)


def test_masked_count_sum_ignores_negative_counts_and_masked_pixels():
    measured = np.full((2, 4, 4), 3.0, np.float32)
    measured[0, 0, 0] = -5.0
    mask = np.ones((4, 4), np.float32)
    mask[3, 3] = 0.0
    assert masked_count_sum(f32(measured)).numpy() == pytest.approx(3.0 * 31)
    assert masked_count_sum(f32(measured), f32(mask)).numpy() == pytest.approx(3.0 * 29)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_finite_with_finite_gradient_at_zero_prediction(name):
    loss_fn = LOSSES[name]
    rng = np.random.default_rng(1)
    measured = rng.poisson(30.0, size=(3, 16, 16)).astype(np.float32)
    measured[0, :4] = 0.0  # zero counts as well
    if name == "poisson-gaussian":
        measured[1, :4] = -2.5  # dark-subtracted values
    predicted = tf.Variable(tf.zeros((3, 16, 16)))
    with tf.GradientTape() as tape:
        values = loss_fn(f32(measured), predicted)
        total = tf.reduce_sum(values)
    grad = tape.gradient(total, predicted).numpy()
    assert values.shape == (3,)
    assert np.all(np.isfinite(values.numpy()))
    assert np.all(np.isfinite(grad))
    # the loss must push a zero prediction up where photons were measured
    assert np.all(grad[measured > 1] < 0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_respects_mask(name):
    rng = np.random.default_rng(2)
    truth = _truth((2, 16, 16), seed=2)
    measured = rng.poisson(truth).astype(np.float32)
    mask = np.ones((16, 16), np.float32)
    mask[3:9, 4:12] = 0.0
    wrong = measured.copy()
    wrong[:, mask == 0] = 1e5
    loss_fn = LOSSES[name]
    good = loss_fn(f32(measured), f32(truth), f32(mask)).numpy()
    bad = loss_fn(f32(wrong), f32(truth), f32(mask)).numpy()
    np.testing.assert_allclose(bad, good, rtol=1e-6)
    assert np.all(loss_fn(f32(wrong), f32(truth)).numpy() > loss_fn(f32(measured), f32(truth)).numpy() + 1e3)


def test_get_loss():
    assert get_loss("amplitude") is amplitude_loss
    assert get_loss("poisson") is poisson_loss
    assert get_loss("poisson-gaussian") is poisson_gaussian_loss
    with pytest.raises(AdptychoError, match="unknown loss 'gaussian'"):
        get_loss("gaussian")
    with pytest.raises(AdptychoError, match="amplitude"):  # lists the choices
        get_loss("Poisson")


# --------------------------------------------------------------------------------------------
# formulas (float64 numpy references)
# --------------------------------------------------------------------------------------------
def test_amplitude_and_poisson_formulas():
    rng = np.random.default_rng(3)
    truth = _truth((3, 20, 24), seed=3)
    measured = rng.poisson(truth).astype(np.float64)
    predicted = truth * rng.uniform(0.7, 1.3, size=truth.shape)
    eps = 1e-6
    amp = np.sum((np.sqrt(predicted + eps) - np.sqrt(measured)) ** 2, axis=(1, 2))
    b = POISSON_OFFSET
    poi = np.sum((predicted + b) - (measured + b) - (measured + b) * np.log((predicted + b) / (measured + b)),
                 axis=(1, 2))
    np.testing.assert_allclose(amplitude_loss(f32(measured), f32(predicted)).numpy(), amp,
                               rtol=1e-4)
    np.testing.assert_allclose(poisson_loss(f32(measured), f32(predicted)).numpy(), poi, rtol=1e-4)


@pytest.mark.parametrize("per_pixel", [False, True])
def test_poisson_gaussian_formula(per_pixel):
    rng = np.random.default_rng(4)
    truth = _truth((3, 24, 20), seed=4)
    measured = rng.poisson(truth) + rng.normal(scale=3.0, size=truth.shape)
    measured[0, 0, :5] = -4.0  # negative dark-subtracted counts are legal here
    predicted = truth * rng.uniform(0.8, 1.2, size=truth.shape)
    s = rng.uniform(1.0, 5.0, size=(24, 20)) if per_pixel else 3.0
    variance = predicted + np.square(s)
    expected = np.sum(np.log(variance) + (measured - predicted) ** 2 / variance, axis=(1, 2))
    actual = poisson_gaussian_loss(f32(measured), f32(predicted),
                                   readout_noise=f32(s) if per_pixel else s).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_amplitude_residual_sums():
    rng = np.random.default_rng(5)
    truth = _truth((2, 8, 8), seed=5)
    measured = rng.poisson(truth).astype(np.float64)
    num, den = amplitude_residual_sums(f32(measured), f32(truth))
    np.testing.assert_allclose(float(num), np.sum((np.sqrt(truth) - np.sqrt(measured)) ** 2),
                               rtol=1e-4)
    np.testing.assert_allclose(float(den), measured.sum(), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# minima
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["amplitude", "poisson"])
def test_noise_free_minimum_at_true_scale(name):
    truth = _truth((48, 48), seed=6)
    losses = _scan_losses(LOSSES[name], truth, truth, SCALES)
    assert SCALES[np.argmin(losses)] == 1.0
    assert losses[50] == pytest.approx(0.0, abs=1e-3 * truth.size)
    # strictly convex around the minimum over the scanned range
    assert np.all(np.diff(losses[:51]) < 0) and np.all(np.diff(losses[50:]) > 0)


def _argmin_scale(loss_fn, measured, truth, **kwargs):
    coarse = _scan_losses(loss_fn, measured, truth, SCALES, **kwargs)
    centre = SCALES[np.argmin(coarse)]
    fine = np.linspace(centre - 0.01, centre + 0.01, 81)
    return fine[np.argmin(_scan_losses(loss_fn, measured, truth, fine, **kwargs))]


def test_poisson_minimum_with_noisy_data():
    rng = np.random.default_rng(7)
    truth = _truth((256, 256), seed=7)  # mean 50 counts
    measured = rng.poisson(truth).astype(np.float32)
    best = _argmin_scale(poisson_loss, measured, truth)
    assert abs(best - 1.0) < 0.02
    # the Poisson maximum-likelihood scale is sum X / sum I
    assert best == pytest.approx(measured.sum() / truth.sum(), abs=5e-4)


def test_poisson_gaussian_minimum_with_noisy_data():
    rng = np.random.default_rng(8)
    truth = _truth((256, 256), seed=8)
    measured = (rng.poisson(truth) + rng.normal(scale=3.0, size=truth.shape)).astype(np.float32)
    best = _argmin_scale(poisson_gaussian_loss, measured, truth, readout_noise=3.0)
    assert abs(best - 1.0) < 0.02
    # and the loss discriminates: a 10% wrong scale costs much more than the noise floor
    losses = _scan_losses(poisson_gaussian_loss, measured, truth, [best, 0.9, 1.1],
                          readout_noise=3.0)
    assert losses[1] - losses[0] > 100 and losses[2] - losses[0] > 100


# --------------------------------------------------------------------------------------------
# simulate()
# --------------------------------------------------------------------------------------------
def _sim_inputs(rng, absorbing=False):
    shape = (40, 40)
    phase = rng.uniform(-1.0, 1.0, size=shape)
    amplitude = rng.uniform(0.3, 1.0, size=shape) if absorbing else 1.0
    obj = (amplitude * np.exp(1j * phase)).astype(np.complex64)
    yy, xx = np.mgrid[:16, :16] - 7.5
    probe = np.exp(-(yy ** 2 + xx ** 2) / 18.0).astype(np.complex64)
    positions = np.array([[r, c] for r in (0.0, 7.5, 15.25, 24.0) for c in (0.0, 8.3, 16.0, 24.0)])
    return obj, probe, positions


def test_simulate_poisson_reproducible_for_seed():
    obj, probe, positions = _sim_inputs(np.random.default_rng(9))
    kwargs = dict(photons_per_pattern=2e4, poisson=True)
    a = simulate(obj, probe, positions, seed=11, **kwargs).patterns
    b = simulate(obj, probe, positions, seed=11, **kwargs).patterns
    c = simulate(obj, probe, positions, seed=12, **kwargs).patterns
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.3
    np.testing.assert_array_equal(a, np.round(a))  # Poisson counts are integers
    assert a.min() >= 0


def test_simulate_photon_budget_non_absorbing():
    obj, probe, positions = _sim_inputs(np.random.default_rng(10))
    photons = 5e4
    clean = simulate(obj, probe, positions, photons_per_pattern=photons)
    # Parseval: each noise-free pattern holds exactly the probe's photons
    np.testing.assert_allclose(clean.patterns.sum(axis=(1, 2)), photons, rtol=1e-4)
    assert clean.metadata["photons_per_pattern"] == pytest.approx(photons, rel=1e-5)
    np.testing.assert_allclose(np.sum(np.abs(clean.probe[0].astype(complex)) ** 2), photons,
                               rtol=1e-5)
    noisy = simulate(obj, probe, positions, photons_per_pattern=photons, poisson=True, seed=3)
    assert noisy.mean_counts() == pytest.approx(photons, rel=0.01)
    # Poisson statistics: variance equals the mean
    bright = clean.patterns > 20
    ratio = np.mean((noisy.patterns[bright] - clean.patterns[bright]) ** 2 / clean.patterns[bright])
    assert ratio == pytest.approx(1.0, abs=0.1)
    # an absorbing object loses photons
    absorbing = simulate(*_sim_inputs(np.random.default_rng(10), absorbing=True),
                         photons_per_pattern=photons)
    assert absorbing.mean_counts() < 0.8 * photons


def test_simulate_photon_budget_near_field():
    obj, probe, positions = _sim_inputs(np.random.default_rng(12))
    near = NearFieldGeometry(1e-10, (180e-9, 180e-9), 3.6e-3)  # band limit inactive
    scan = simulate(obj, probe, positions, photons_per_pattern=1e4, near_field=near)
    assert scan.geometry == "nearfield" and scan.propagation_distance_m == 3.6e-3
    np.testing.assert_allclose(scan.patterns.sum(axis=(1, 2)), 1e4, rtol=1e-4)


def test_simulate_readout_noise_std():
    obj, probe, positions = _sim_inputs(np.random.default_rng(13))
    clean = simulate(obj, probe, positions, photons_per_pattern=1e4)
    noisy = simulate(obj, probe, positions, photons_per_pattern=1e4, readout_noise=3.0, seed=5)
    difference = (noisy.patterns - clean.patterns).astype(np.float64)  # 16 x 16 x 16 samples
    assert np.std(difference) == pytest.approx(3.0, rel=0.05)
    assert abs(np.mean(difference)) < 0.1
    assert noisy.allow_negative and noisy.patterns.min() < 0
    both = simulate(obj, probe, positions, photons_per_pattern=1e4, poisson=True,
                    readout_noise=3.0, seed=5)
    excess = np.var(both.patterns.astype(np.float64) - clean.patterns) - np.mean(clean.patterns)
    assert excess == pytest.approx(9.0, rel=0.25)


def test_simulate_rejects_bad_input():
    obj, probe, positions = _sim_inputs(np.random.default_rng(14))
    with pytest.raises(AdptychoError):
        simulate(obj, probe, positions, readout_noise=-1.0)
    with pytest.raises(AdptychoError):
        simulate(obj, probe, positions, photons_per_pattern=0.0)
    with pytest.raises(AdptychoError):
        simulate(obj, probe, positions + 30.0)

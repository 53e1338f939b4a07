"""Posterior of a latent object (IRMAE ``LatentObject``): Laplace approximation and HMC.

The posterior of the latent h given the patterns X is ``p(h | X) ~ exp(-NLL(h)) N(h; h_fit,
prior_std^2 I)``, with the exact negative log-likelihood of the noise model

* ``poisson``: ``sum I - X ln I``;
* ``amplitude``: ``2 sum (sqrt I - sqrt X)^2`` (Gaussian of variance 1/4 on sqrt I);
* ``poisson-gaussian``: ``1/2 sum ln(I + s^2) + (X - I)^2 / (I + s^2)``;

and a broad Gaussian prior (``prior_std``, latent units) that only matters along latent
directions the decoder ignores (IRMAE latents are low-rank by design).

* ``laplace``: ``N(h_mode, H^-1)`` with H the full (n, n) Hessian of the negative log posterior
  (``tf.GradientTape`` jacobian of the gradient) at its mode ``h_mode``, reached from the fitted
  latent by damped Newton steps (``posterior_mode``: fits stop short along flat latent
  directions, and the spread of such fits over noise draws is smaller than the posterior's);
* ``hmc``: ``tfp.mcmc.HamiltonianMonteCarlo`` with step-size adaptation on the same posterior,
  in the coordinates ``h = h_fit + L e`` (L the Cholesky factor of the Laplace covariance:
  preconditioning only; the chain's stationary law is the exact posterior).

With a ReLU decoder (the paper's) the decoded object is piecewise smooth in h: the likelihood
has kinks, the Hessian is that of the linear piece the mode lies on, and Laplace and HMC can
disagree (``experiments/uncertainty/README.md`` measures where).

Either way ``samples`` latents are decoded; the per-pixel std of the decoded amplitude and phase
are the result (the representation fixes the other one: phase 0 in amplitude mode, amplitude 1
in phase mode, std 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.io.results import ReconstructionResult
from adptycho.io.scan_data import NEARFIELD, ScanData
from adptycho.uncertainty.result import UncertaintyResult

__all__ = ["LatentSettings", "LatentPosterior", "latent_uncertainty"]


@dataclasses.dataclass
class LatentSettings:
    """Attributes: samples (decoded posterior samples), prior_std (latent units), burnin and
    leapfrog_steps (HMC), batch (patterns per forward pass), seed, saved_samples (decoded
    samples kept in the file), newton_steps (at most, from the fit to the posterior mode;
    0 keeps the fitted latent as the centre)."""

    samples: int = 500
    prior_std: float = 10.0
    burnin: int = 300
    leapfrog_steps: int = 8
    batch: int = 64
    seed: int = 0
    saved_samples: int = 16
    newton_steps: int = 10


class LatentPosterior:
    """Negative log posterior of a latent object and its derivatives.

    Args:
        representation: the ``LatentObject`` (its decoder and placement on the grid).
        patterns: (N, H, W) measured counts; probe: (M, H, W) complex; positions_px: (N, 2).
        noise_model, readout_noise: see the module docstring.
        latent_fit: (n,) fitted latent (the prior's centre; the Laplace mean is the posterior
            mode found from it by ``posterior_mode``).
        transfer: None (far field) or the near-field transfer function.
    """

    def __init__(self, representation, patterns, probe, positions_px, noise_model,
                 readout_noise, latent_fit, prior_std, transfer=None, mask=None, batch=64):
        self.representation = representation
        self.patterns = tf.constant(np.asarray(patterns, np.float32))
        probe = np.asarray(probe, np.complex64)
        self.probe = tf.constant(probe[None] if probe.ndim == 2 else probe)
        positions = np.asarray(positions_px, np.float32)
        self.positions = tf.constant(positions)
        self.subpixel = not np.allclose(positions, np.round(positions), atol=1e-4)
        self.noise_model = noise_model
        self.readout_var = float(np.square(readout_noise))
        self.latent_fit = tf.constant(np.asarray(latent_fit, np.float32))
        self.prior_std = float(prior_std)
        self.transfer = transfer
        self.mask = None if mask is None else tf.constant(np.asarray(mask, np.float32))
        self.batch = int(batch)

    def _pixel_nll(self, measured, intensity):
        if self.noise_model == "poisson":  # minus its value at I = X (exact in float32 near 0)
            counts = tf.maximum(measured, 0.0)
            values = intensity - counts - counts * tf.math.log((intensity + 1e-6) / (counts + 1e-6))
        elif self.noise_model == "amplitude":
            values = 2.0 * tf.square(tf.sqrt(intensity + 1e-6) - tf.sqrt(tf.maximum(measured, 0.0)))
        else:
            variance = intensity + self.readout_var
            values = 0.5 * (tf.math.log(variance) + tf.square(measured - intensity) / variance)
        if self.mask is not None:
            values = values * self.mask
        return tf.reduce_sum(values)

    def negative_log_posterior(self, latent):
        """Scalar float32 for a (n,) latent tensor."""
        from adptycho.physics.forward import forward_intensities

        obj = self.representation.transmissions(latent[None])[0]
        real, imag = tf.math.real(obj), tf.math.imag(obj)
        total = 0.5 * tf.reduce_sum(tf.square((latent - self.latent_fit) / self.prior_std))
        n = int(self.patterns.shape[0])
        for start in range(0, n, self.batch):
            intensity = forward_intensities((real, imag), self.probe,
                                            self.positions[start:start + self.batch],
                                            self.transfer, subpixel=self.subpixel)
            total += self._pixel_nll(self.patterns[start:start + self.batch], intensity)
        return total

    def value_and_gradient(self, latent):
        """(float, (n,) float64 gradient) of the negative log posterior at a (n,) latent."""
        latent = tf.constant(np.asarray(latent, np.float32))
        with tf.GradientTape() as tape:
            tape.watch(latent)
            value = self.negative_log_posterior(latent)
        return float(value), tape.gradient(value, latent).numpy().astype(np.float64)

    def hessian(self, latent) -> np.ndarray:
        """(n, n) float64 Hessian of the negative log posterior (autodiff, symmetrised)."""
        latent = tf.constant(np.asarray(latent, np.float32))
        with tf.GradientTape(persistent=True) as outer:
            outer.watch(latent)
            with tf.GradientTape() as inner:
                inner.watch(latent)
                value = self.negative_log_posterior(latent)
            gradient = inner.gradient(value, latent)
        hessian = outer.jacobian(gradient, latent, experimental_use_pfor=False).numpy()
        hessian = hessian.astype(np.float64)
        return 0.5 * (hessian + hessian.T)

    def decode(self, latents) -> np.ndarray:
        """(K, n) latents -> (K, Y, X) complex64 objects."""
        out = []
        for start in range(0, len(latents), 64):
            out.append(self.representation.transmissions(
                tf.constant(np.asarray(latents[start:start + 64], np.float32))).numpy())
        return np.concatenate(out)


def posterior_mode(posterior, latent, max_steps: int = 10, decrement: float = 1e-2):
    """Damped Newton iterations from ``latent`` to the posterior mode (the Laplace centre).

    A fit that stopped short (L-BFGS in float32 stalls on flat latent directions) is not the
    centre the Laplace approximation assumes. Each step solves ``H d = -g`` (with the Hessian
    shifted to positive definite where it is not) and halves it until the negative log
    posterior does not increase; iterations stop once the Newton decrement ``sqrt(g^T H^-1 g)``
    (the distance to the mode in posterior standard deviations) is below ``decrement``.

    Returns ``(mode (n,) float64, hessian at the mode (n, n), info dict)``; ``info`` has
    ``newton_steps``, ``newton_decrement`` (at the mode) and ``mode_shift_std`` (the distance
    from ``latent`` to the mode in posterior standard deviations).
    """
    start = current = np.asarray(latent, np.float64)
    hessian = posterior.hessian(current)
    value, gradient = posterior.value_and_gradient(current)
    steps = 0
    for steps in range(max_steps + 1):
        values, vectors = np.linalg.eigh(hessian)
        shifted = np.maximum(values, 1e-3 * max(abs(values).max(), 1e-12))
        direction = -(vectors / shifted) @ (vectors.T @ gradient)
        newton = float(np.sqrt(max(-gradient @ direction, 0.0)))
        if newton < decrement or steps == max_steps:
            break
        t, trial = 1.0, posterior.value_and_gradient(current + direction)
        while trial[0] > value and t * 0.5 > 1e-3:
            t *= 0.5
            trial = posterior.value_and_gradient(current + t * direction)
        if trial[0] > value:  # no decrease along the Newton direction (float32 or a kink)
            break
        current = current + t * direction
        value, gradient = trial  # the accepted point's, evaluated by the line search
        hessian = posterior.hessian(current)
    shift = current - start
    return current, hessian, {"newton_steps": steps, "newton_decrement": newton,
                              "mode_shift_std": float(np.sqrt(max(shift @ hessian @ shift, 0.0)))}


def _laplace_covariance(hessian):
    values, vectors = np.linalg.eigh(hessian)
    if values.min() <= 0:
        raise AdptychoError(f"the Hessian of the negative log posterior is not positive definite "
                            f"(smallest eigenvalue {values.min():.3g}): the latent is not at a "
                            "minimum; fit longer or give a larger prior precision")
    return (vectors / values) @ vectors.T, values


def _hmc(posterior, latent_fit, chol, options: LatentSettings):
    import tensorflow_probability as tfp

    chol_t = tf.constant(chol, tf.float32)
    fit = tf.constant(np.asarray(latent_fit, np.float32))

    def target(e):
        return -posterior.negative_log_posterior(fit + tf.linalg.matvec(chol_t, e))

    kernel = tfp.mcmc.HamiltonianMonteCarlo(target, step_size=0.5,
                                            num_leapfrog_steps=options.leapfrog_steps)
    kernel = tfp.mcmc.SimpleStepSizeAdaptation(kernel, int(0.8 * options.burnin),
                                               target_accept_prob=0.75)
    @tf.function  # one graph for the whole chain (eager sampling is ~10x slower)
    def sample():
        return tfp.mcmc.sample_chain(
            options.samples, tf.zeros([len(latent_fit)], tf.float32), kernel=kernel,
            num_burnin_steps=options.burnin, seed=tf.constant([options.seed, 22], tf.int32),
            trace_fn=lambda _, results: results.inner_results.is_accepted)

    chain, accepted = sample()
    return (np.asarray(latent_fit)[None] + chain.numpy() @ chol.T,
            float(np.mean(accepted.numpy())))


def latent_uncertainty(scan: ScanData, rec: ReconstructionResult, method: str, noise_model: str,
                       readout_noise, settings: dict) -> UncertaintyResult:
    """Laplace or HMC posterior of a latent reconstruction (see ``api.object_uncertainty``)."""
    from adptycho.objects.latent import LatentObject

    try:
        options = LatentSettings(**settings)
    except TypeError as exc:
        raise AdptychoError(f"bad {method} settings: {exc}") from None
    name = rec.settings.get("object", "pixels")
    latent_fit = np.asarray(rec.extra_histories["latent"], np.float32)
    latent_options = dict(rec.settings.get("latent_options") or {})
    if latent_options.get("train_decoder"):
        raise AdptychoError("the decoder was trained with the latent: its weights are not in "
                            "the reconstruction file, so its posterior cannot be evaluated")
    representation = LatentObject.from_pretrained(rec.object.shape, name,
                                                  initial_latent=latent_fit, **latent_options)
    transfer = None
    if scan.geometry == NEARFIELD:
        from adptycho.physics.propagators import angular_spectrum_transfer

        transfer = angular_spectrum_transfer(scan.detector_shape, rec.pixel_size_m or
                                             scan.pixel_size_m, scan.wavelength_m,
                                             rec.distance_m or scan.propagation_distance_m)
    posterior = LatentPosterior(representation, scan.patterns, rec.probe, rec.positions_px,
                                noise_model, readout_noise, latent_fit, options.prior_std,
                                transfer, scan.mask, options.batch)
    mode, hessian, info = posterior_mode(posterior, latent_fit, options.newton_steps)
    covariance, eigenvalues = _laplace_covariance(hessian)
    rng = np.random.default_rng(options.seed)
    chol = np.linalg.cholesky(covariance)
    info.update(hessian_eigenvalue_min=float(eigenvalues.min()),
                hessian_eigenvalue_max=float(eigenvalues.max()))
    if method == "laplace":
        latents = mode[None] + rng.standard_normal((options.samples, len(mode))) @ chol.T
    else:
        latents, acceptance = _hmc(posterior, mode, chol, options)
        info["acceptance"] = acceptance
    objects = posterior.decode(latents)
    mode_object = posterior.decode(mode[None])[0]
    amplitude, phase = np.abs(objects), np.angle(objects)
    determined = np.ones(rec.object.shape, bool)
    from adptycho.geometry.grids import illumination_map

    illumination = illumination_map(rec.positions_px, rec.probe, rec.object.shape)
    reference = illumination >= 0.5 * illumination.max()
    return UncertaintyResult(
        amplitude.std(axis=0).astype(np.float32), phase.std(axis=0).astype(np.float32),
        determined, reference, method=method, noise_model=noise_model,
        settings={**dataclasses.asdict(options), "readout_noise": readout_noise}, info=info,
        extras={"object": mode_object.astype(np.complex64),
                "object_amplitude_samples": amplitude[:options.saved_samples],
                "object_phase_samples": phase[:options.saved_samples],
                "latent_std": np.sqrt(np.diag(covariance)) if method == "laplace"
                else latents.std(axis=0), "latent_mode": mode.astype(np.float32)})

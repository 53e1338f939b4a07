"""The probe of a ``PtychoModel``: storage, scale, support, power, modes, orthogonalisation.

The (M, H, W) probe modes are stored as real float32 pairs scaled by a fixed factor, so that
Adam's step is relative to the probe amplitude (cdtools' ``probe_norm`` idea). A support mask
multiplies every mode; a fixed total power removes the probe/object scale ambiguity.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError, GeometryError

__all__ = ["ProbeModes", "checked_probe"]


def checked_probe(probe) -> np.ndarray:
    """(M, H, W) complex array from an (H, W) or (M, H, W) probe; one-line errors."""
    probe = np.asarray(probe)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3:
        raise AdptychoError(f"probe must have shape (modes, H, W), got {probe.shape}")
    if not np.isfinite(probe).all():
        raise AdptychoError("probe contains non-finite values")
    return probe


class ProbeModes:
    """Probe modes stored as scaled real/imaginary variables made by ``add_weight``.

    Args:
        probe: (M, H, W) complex initial probe in photon units (``checked_probe``).
        add_weight: ``name, shape, initializer -> variable`` (the owning model's, so the
            variables are the model's weights).
        support: optional (H, W) real mask (1 inside, 0 outside; soft edges allowed).
        power: optional total power sum_m sum |P_m|^2 in photons per exposure.
    """

    def __init__(self, probe: np.ndarray, add_weight, support=None,
                 power: Optional[float] = None):
        self.num_modes = int(probe.shape[0])
        self.shape = tuple(int(s) for s in probe.shape[1:])
        self.support = None
        if support is not None:
            support = np.asarray(support, np.float32)
            if support.shape != self.shape:
                raise GeometryError(f"probe_support shape {support.shape} does not match the "
                                    f"probe/detector shape {self.shape}")
            if not (np.isfinite(support).all() and support.min() >= 0 and support.max() > 0):
                raise AdptychoError("probe_support must be finite, non-negative and not all zero")
            self.support = tf.constant(support)
            probe = probe * support
        if power is not None:
            if not (np.isfinite(power) and power > 0):
                raise AdptychoError(f"probe_power must be positive and finite, got {power}")
            power = float(power)
        self.power = power
        self.scale = float(np.abs(probe).max()) or 1.0
        scaled = probe / self.scale
        self.real = add_weight("probe_real", probe.shape, _constant(scaled.real))
        self.imag = add_weight("probe_imag", probe.shape, _constant(scaled.imag))

    @property
    def variables(self) -> list:
        return [self.real, self.imag]

    def stored(self) -> tf.Tensor:
        """(M, H, W) complex64 probe in photon units, times the support (if any)."""
        real = tf.convert_to_tensor(self.real)
        imag = tf.convert_to_tensor(self.imag)
        if self.support is not None:
            real = real * self.support
            imag = imag * self.support
        return tf.complex(real, imag) * self.scale

    def assign(self, probe) -> None:
        """Set the stored modes to the (M, H, W) complex ``probe`` in photon units."""
        probe = tf.cast(tf.convert_to_tensor(probe), tf.complex64)
        self.real.assign(tf.math.real(probe) / self.scale)
        self.imag.assign(tf.math.imag(probe) / self.scale)

    def constrain_power(self) -> None:
        """Rescale the modes to ``power`` photons in total (no-op without a power)."""
        if self.power is None:
            return
        real = tf.convert_to_tensor(self.real)
        imag = tf.convert_to_tensor(self.imag)
        weight = 1.0 if self.support is None else self.support ** 2
        power = tf.reduce_sum((real ** 2 + imag ** 2) * weight) * self.scale ** 2
        factor = tf.sqrt(self.power / tf.maximum(power, 1e-30))
        self.real.assign(real * factor)
        self.imag.assign(imag * factor)

    def orthogonalise(self) -> None:
        """Make the modes orthogonal and sort them by power (SVD of the (M, H*W) stack).

        The incoherent sum sum_m |Prop(P_m O)|^2 is invariant under unitary mixing of the modes
        (Thibault & Menzel 2013), so this changes no prediction; it gives the modes a unique,
        interpretable form (the dominant mode first).
        """
        if self.num_modes < 2:
            return
        probe = self.stored().numpy().reshape(self.num_modes, -1).astype(np.complex128)
        _, singular, vh = np.linalg.svd(probe, full_matrices=False)
        modes = (singular[:, None] * vh).reshape((self.num_modes,) + self.shape)
        self.real.assign((modes.real / self.scale).astype(np.float32))
        self.imag.assign((modes.imag / self.scale).astype(np.float32))


def _constant(value):
    value = np.asarray(value, np.float32)

    def init(shape, dtype=None):
        return tf.constant(value, dtype=dtype or tf.float32)
    return init

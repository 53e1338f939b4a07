"""Standard deviations of refined probes and positions, conditional on the rest of the fit.

Both use the same noise-model weights as the object (``fisher.fisher_c`` for the inverse Fisher
information, ``fisher.estimator_c`` for the sandwich ``A^-1 B A^-1`` of the loss's minimiser) and
are conditional: every other parameter (the object, the other positions, the probe) is held at its
fitted value, so they are lower bounds on the std of a joint fit in which those parameters trade
off against each other (the global shift of all positions with the object, for instance).

* **Positions** (``positions_std_px``): pattern j depends on position j only, so the Fisher
  information of the positions is block-diagonal with one exact 2x2 block per position,
  ``F_j = sum_k w(I_jk) g_jk g_jk^T`` with ``g_jk = dI_jk / d(y_j, x_j)`` (forward-mode autodiff of
  ``physics.forward.forward_intensities`` through its Fourier sub-pixel shift, the model the
  positions were refined with) and ``w = c / (4 I)``.
* **Probe** (``probe_std``; far field, one probe mode, integer positions): the probe plays the role
  of the object in ``far_field.FarFieldFisher`` with the object window ``O_j`` as its multiplier
  (``Psi_j = F(O_j P)``): products ``F v = sum_j conj(O_j) F^-1(u_j c_j Re(conj(u_j) F(O_j v)))``,
  exact 2x2 diagonal blocks from the same one-FFT-per-pattern formula, and the diagonal of the
  inverse by Hutchinson probes and preconditioned conjugate gradients
  (``pixels.pixel_covariance_blocks``), with the probe's global phase (the intensities do not
  depend on it) fixed on the pixels the object probes most strongly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.uncertainty.far_field import FarFieldFisher
from adptycho.uncertainty.fisher import _FLOOR
from adptycho.uncertainty.pixels import (PixelSettings, amplitude_phase_std,
                                         pixel_covariance_blocks)

__all__ = ["position_blocks", "positions_std_px", "ProbeFarFieldFisher", "probe_std"]


def position_blocks(object_, probe, positions_px, weights, mask=None, transfer=None,
                    batch: int = 16):
    """(N, 2, 2) float64 Fisher-type blocks ``sum_k w(I_jk) g_jk g_jk^T`` of every position.

    Args:
        object_: (Y, X) complex; probe: (M, H, W) or (H, W) complex (photon units).
        positions_px: (N, 2) float corners (y, x).
        weights: ``I -> c`` per-pixel weights in amplitude form (``fisher_c`` / ``estimator_c``).
        mask: optional (H, W) bool valid detector pixels; transfer: near-field transfer or None.
    """
    from adptycho.physics.forward import forward_intensities

    obj = (tf.constant(np.real(object_), tf.float32), tf.constant(np.imag(object_), tf.float32))
    probe = np.asarray(probe, np.complex64)
    probe = tf.constant(probe[None] if probe.ndim == 2 else probe)
    positions = np.asarray(positions_px, np.float32)
    blocks = np.zeros((len(positions), 2, 2))
    for start in range(0, len(positions), batch):
        pos = tf.constant(positions[start:start + batch])
        grads = []
        for axis in range(2):
            tangent = np.zeros(pos.shape, np.float32)
            tangent[:, axis] = 1.0
            with tf.autodiff.ForwardAccumulator(pos, tf.constant(tangent)) as acc:
                intensity = forward_intensities(obj, probe, pos, transfer, subpixel=True)
            grads.append(acc.jvp(intensity).numpy().astype(np.float64))
        intensity = intensity.numpy().astype(np.float64)
        w = weights(intensity) / (4.0 * np.maximum(intensity, _FLOOR))
        if mask is not None:
            w = w * np.asarray(mask, np.float64)
        g = np.stack(grads, axis=1)  # (B, 2, H, W)
        blocks[start:start + batch] = np.einsum("bihw,bjhw,bhw->bij", g, g, w)
    return blocks


def positions_std_px(object_, probe, positions_px, hessian_c, score_c=None, mask=None,
                     transfer=None):
    """(N, 2) float64 std (y, x) in object pixels of each refined position (module docstring):
    ``sqrt(diag(A^-1 B A^-1))`` with ``A``, ``B`` the blocks of ``hessian_c`` and ``score_c``
    (``score_c=None``: ``A^-1``, the inverse Fisher information). NaN where a block is
    singular (a pattern that does not depend on its position)."""
    a = position_blocks(object_, probe, positions_px, hessian_c, mask, transfer)
    scale = np.maximum(np.trace(a, axis1=1, axis2=2), 1e-300)
    singular = np.linalg.det(a) <= 1e-10 * scale ** 2
    a_inv = np.linalg.inv(np.where(singular[:, None, None], np.eye(2), a))
    cov = a_inv
    if score_c is not None:
        b = position_blocks(object_, probe, positions_px, score_c, mask, transfer)
        cov = a_inv @ b @ a_inv
    std = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
    return np.where(singular[:, None], np.nan, std)


class ProbeFarFieldFisher(FarFieldFisher):
    """Fisher-type operator of a far-field, single-mode probe with the object held fixed
    (arguments as ``FarFieldFisher``); perturbations are (S, H, W) complex probe arrays."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.waves.fractions is not None:
            raise AdptychoError("the probe operator takes integer positions only")
        self.shape = self.probe.shape

    def matvec(self, v):
        """``F v`` for (S, H, W) complex probe perturbations."""
        v = np.asarray(v, np.complex128)
        out = np.zeros_like(v)
        for idx, u, c in self._detector_chunks():  # the waves are computed once, kept
            window = self.waves.windows(self.object, idx)  # (B, H, W)
            dv = np.fft.fft2(window * v[:, None], norm="ortho")  # (S, B, H, W)
            a = np.real(np.conj(u) * dv) * c
            out += np.sum(np.conj(window) * np.fft.ifft2(u * a, norm="ortho"), axis=1)
        return out

    def diagonal_blocks(self):
        """(H, W, 2, 2) exact diagonal blocks over (real, imag) of each probe pixel."""
        h, w = self.probe.shape
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        twice = ((2 * yy) % h, (2 * xx) % w)
        blocks = np.zeros((h, w, 2, 2))
        for idx, u, c in self._detector_chunks():
            window = self.waves.windows(self.object, idx)
            t = c.sum(axis=(-2, -1)) / self.npix
            g = np.fft.fft2(c * np.conj(u) ** 2)[:, twice[0], twice[1]] / self.npix
            q = np.sum(window ** 2 * g, axis=0)
            iso = np.sum(np.abs(window) ** 2 * t[:, None, None], axis=0)
            blocks[..., 0, 0] += 0.5 * (iso + q.real)
            blocks[..., 1, 1] += 0.5 * (iso - q.real)
            blocks[..., 0, 1] += -0.5 * q.imag
        blocks[..., 1, 0] = blocks[..., 0, 1]
        return blocks

    def illumination(self):
        """(H, W) sum over positions of |O_j|^2 (how strongly each probe pixel is probed)."""
        return np.sum(np.abs(self.waves.windows(self.object, np.arange(len(self.corners)))) ** 2,
                      axis=0)


def probe_std(object_, probe, corners_px, hessian_c, score_c=None, mask=None,
              settings: PixelSettings = PixelSettings(), dark_below: float = 0.01):
    """Std of the amplitude and phase of a far-field, single-mode probe (module docstring).

    Args:
        object_: (Y, X) complex fitted object; probe: (H, W) or (1, H, W) complex fitted probe.
        corners_px: (N, 2) integer corners; hessian_c, score_c: as ``positions_std_px``.
        settings: ``pixels.PixelSettings`` (probes, smoothing, solver; ``reference_above``
            selects the probe pixels, by how strongly the object probes them, on which the
            global phase is fixed).
        dark_below: probe pixels with |P|^2 below this fraction of the maximum get a NaN phase
            std (the phase of a dark pixel is meaningless).

    Returns:
        ``(amplitude_std, phase_std, info)``: (H, W) float64 maps and the solver figures.
    """
    # Hutchinson probes: the probe operator has no sampling right-hand side (a small problem);
    # block-Jacobi: the Fourier preconditioner models a smooth multiplier (the probe), and here
    # the multiplier is the object
    settings = dataclasses.replace(settings, estimator="hutchinson", preconditioner="block")
    op = ProbeFarFieldFisher(object_, probe, corners_px, hessian_c, mask=mask)
    score = None if score_c is None else ProbeFarFieldFisher(object_, probe, corners_px, score_c,
                                                             mask=mask, waves=op.waves)
    blocks, bound, determined, _, solver = pixel_covariance_blocks(op, op.probe, settings,
                                                                   score=score)
    amplitude, phase = amplitude_phase_std(op.probe, blocks, bound, determined,
                                           settings.smoothing_px)
    intensity = np.abs(op.probe) ** 2
    phase = np.where(intensity >= dark_below * intensity.max(), phase, np.nan)
    return amplitude, phase, {"probe_cg_iterations": solver["cg_iterations"],
                              "probe_cg_relative_residual": solver["cg_relative_residual"]}

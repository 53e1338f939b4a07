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
* **Probe** (``probe_std``; far field, one probe mode): the probe plays the role
  of the object in ``far_field.FarFieldFisher`` with the object window ``O_j`` as its multiplier
  (``Psi_j = F(O_j P)``): products ``F v = sum_j conj(O_j) F^-1(u_j c_j Re(conj(u_j) F(O_j v)))``,
  exact 2x2 diagonal blocks from the same one-FFT-per-pattern formula (at sub-pixel positions
  the products shift the probe exactly and the blocks are approximate: ``ProbeFarFieldFisher``),
  and the diagonal of the inverse from the same estimators as the object's (sampled draws by
  default, or Hutchinson probes) and block-Jacobi preconditioned conjugate gradients
  (``pixels.pixel_covariance_blocks``), with the probe's global phase (the intensities do not
  depend on it) fixed on the pixels the object probes most strongly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft as sfft
import tensorflow as tf

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
    (arguments as ``FarFieldFisher``); perturbations are (S, H, W) complex probe arrays.

    At sub-pixel positions pattern j sees the probe shifted by its remainder, ``S_j P``
    (``S_j = IFFT diag(ramp_j) FFT``, ``far_field.FarFieldWaves.probes``): the products apply
    ``S_j`` and its adjoint exactly. The diagonal blocks then use the approximation
    ``O_j S_j P ~ S_j((S_j^H O_j) P)`` (the object window shifted back instead of the probe
    forward; exact at integer positions), which makes them the integer-position formula with the
    window ``S_j^H O_j`` and the detector phasors turned by ``conj(ramp_j)``: they serve as the
    preconditioner and as the template the estimate's ratio is smoothed against, while the
    estimate itself rests on the exact products and right-hand sides.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shape = self.probe.shape

    def _adjoint_terms(self, back, idx):
        """``sum_b S_b^H back_b`` over the patterns of a chunk, in Fourier space at sub-pixel
        positions (``_finish`` returns to pixels once for all chunks); (S, H, W)."""
        ramps = self.waves.ramps(idx)
        if ramps is None:
            return np.sum(back, axis=1)
        return np.sum(np.conj(ramps) * sfft.fft2(back, workers=-1), axis=1)

    def _finish(self, total):
        total = total if self.waves.fractions is None else sfft.ifft2(total, workers=-1)
        return total.astype(np.complex128, copy=False)

    def matvec(self, v):
        """``F v`` for (S, H, W) complex probe perturbations; (S, H, W) complex128."""
        v = np.asarray(v).astype(self.complex_dtype, copy=False)
        spectrum = None if self.waves.fractions is None else sfft.fft2(v, workers=-1)[:, None]
        total = np.zeros(v.shape, self.complex_dtype)
        for idx, weight in self._amplitude_weights():  # w = u sqrt(c), cached
            window = self.waves.object_windows(idx)  # (B, H, W)
            shifted = v[:, None] if spectrum is None else sfft.ifft2(
                spectrum * self.waves.ramps(idx), workers=-1, overwrite_x=True)  # S_j v
            dv = sfft.fft2(window * shifted, norm="ortho", workers=-1, overwrite_x=True)
            dv = weight * (weight.real * dv.real + weight.imag * dv.imag)
            back = np.conj(window) * sfft.ifft2(dv, norm="ortho", workers=-1, overwrite_x=True)
            total += self._adjoint_terms(back, idx)
        return self._finish(total)

    def sample_rhs(self, count: int, rng):
        """(S, H, W) complex ``K^T e`` for S draws of real standard-normal detector noise
        (``FarFieldFisher.sample_rhs`` with the object window as the multiplier)."""
        total = np.zeros((count,) + self.shape, self.complex_dtype)
        for idx, weight in self._amplitude_weights():
            noise = rng.standard_normal((count,) + weight.shape).astype(weight.real.dtype)
            back = np.conj(self.waves.object_windows(idx)) * sfft.ifft2(
                weight * noise, norm="ortho", workers=-1, overwrite_x=True)
            total += self._adjoint_terms(back, idx)
        return self._finish(total)

    def diagonal_blocks(self):
        """(H, W, 2, 2) diagonal blocks over (real, imag) of each probe pixel: exact at integer
        positions, the approximation of the class docstring at sub-pixel ones."""
        h, w = self.probe.shape
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        twice = ((2 * yy) % h, (2 * xx) % w)
        blocks = np.zeros((h, w, 2, 2))
        for idx, weight in self._amplitude_weights():  # c = |w|^2, c conj(u)^2 = conj(w)^2
            window = self.waves.back_shifted_windows(idx)
            turned = np.conj(weight).astype(np.complex128) ** 2
            ramps = self.waves.ramps(idx)
            if ramps is not None:  # the phasors turned by conj(ramp): conj(conj(ramp) w)^2
                turned *= ramps ** 2
            t = np.sum(np.abs(weight) ** 2, axis=(-2, -1), dtype=np.float64) / self.npix
            g = sfft.fft2(turned, workers=-1)[:, twice[0], twice[1]] / self.npix
            q = np.sum(window ** 2 * g, axis=0)
            iso = np.sum(np.abs(window) ** 2 * t[:, None, None], axis=0)
            blocks[..., 0, 0] += 0.5 * (iso + q.real)
            blocks[..., 1, 1] += 0.5 * (iso - q.real)
            blocks[..., 0, 1] += -0.5 * q.imag
        blocks[..., 1, 0] = blocks[..., 0, 1]
        return blocks

    def illumination(self):
        """(H, W) sum over positions of |O_j|^2 (how strongly each probe pixel is probed)."""
        return sum(np.sum(np.abs(self.waves.back_shifted_windows(idx)) ** 2, axis=0)
                   for idx in self.waves.index_chunks)


def probe_std(object_, probe, positions_px, hessian_c, score_c=None, mask=None,
              settings: PixelSettings = PixelSettings(), dark_below: float = 0.01, waves=None):
    """Std of the amplitude and phase of a far-field, single-mode probe (module docstring).

    Args:
        object_: (Y, X) complex fitted object; probe: (H, W) or (1, H, W) complex fitted probe.
        positions_px: (N, 2) float corners (y, x); hessian_c, score_c: as
            ``positions_std_px``.
        settings: ``pixels.PixelSettings`` (probes, smoothing, solver; ``reference_above``
            selects the probe pixels, by how strongly the object probes them, on which the
            global phase is fixed).
        dark_below: probe pixels with |P|^2 below this fraction of the maximum get a NaN phase
            std (the phase of a dark pixel is meaningless).
        waves: optional ``far_field.FarFieldWaves`` of the same fit (the object map's: its
            waves, shifts and detector weights are then computed once for both).

    Returns:
        ``(amplitude_std, phase_std, info)``: (H, W) float64 maps and the solver figures.
    """
    # block-Jacobi: the Fourier preconditioner models a smooth multiplier (the probe), and here
    # the multiplier is the object
    settings = dataclasses.replace(settings, preconditioner="block")
    single = settings.single_precision
    op = ProbeFarFieldFisher(object_, probe, positions_px, hessian_c, mask=mask, single=single,
                             waves=waves)
    score = None if score_c is None else ProbeFarFieldFisher(
        object_, probe, positions_px, score_c, mask=mask, single=single, waves=op.waves)
    blocks, bound, determined, _, solver = pixel_covariance_blocks(op, op.probe, settings,
                                                                   score=score)
    amplitude, phase = amplitude_phase_std(op.probe, blocks, bound, determined,
                                           settings.smoothing_px)
    intensity = np.abs(op.probe) ** 2
    phase = np.where(intensity >= dark_below * intensity.max(), phase, np.nan)
    return amplitude, phase, {"probe_cg_iterations": solver["cg_iterations"],
                              "probe_cg_relative_residual": solver["cg_relative_residual"]}

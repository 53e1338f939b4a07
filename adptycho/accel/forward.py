"""The forward model and its losses executed per an ``ExecutionPlan`` (the fast ways).

Same values as the composed reference ops of ``physics.forward`` (tests compare them), with:

* the hand-written adjoint of the sub-pixel shift (``shifted_probes``; ``plan.shift_adjoint``);
* the sub-pixel ramps and transfer functions ``materialise``d (XLA evaluates them once);
* patch extraction as loops of XLA dynamic slices for large windows (``accel.windows``);
* the fused far-field gather/FFT/adjoint (``accel.fused``; ``plan.use_fused``);
* XLA pieces joined by TensorFlow FFT ops, in independent chains (``accel.xla_pieces``;
  ``plan.pieces``, ``chained_losses``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adptycho.accel.fused import fused_far_field_intensities, fused_far_field_losses
from adptycho.accel.plan import REFERENCE
from adptycho.accel.windows import extract_patches, materialise
from adptycho.accel.xla_pieces import piece, same_mode
from adptycho.physics import forward as reference
from adptycho.physics.shifts import split_positions

__all__ = ["shifted_probes", "exit_waves", "forward_intensities", "forward_losses",
           "chained_losses", "separable_ramp"]


def separable_ramp(fractions, fy, fx, factor):
    """``physics.forward.separable_ramp`` with its (B, H) and (B, W) factors materialised."""
    return reference.separable_ramp(fractions, fy, fx, factor, materialise=materialise)


def shifted_probes(probe, fractions=None, fold_fftshift: bool = False, plan=REFERENCE):
    """``physics.forward.shifted_probes`` with the hand-written adjoint of the shift
    (``_shift_spectrum``) unless ``plan.shift_adjoint`` is off."""
    if fractions is None or not plan.shift_adjoint:
        return reference.shifted_probes(probe, fractions, fold_fftshift)
    spectrum, fy, fx = reference.shift_spectrum_inputs(probe, fold_fftshift)
    return _shift_spectrum(spectrum, tf.cast(fractions, tf.float32), fy, fx)


def _shift_spectrum(spectrum, fractions, fy, fx):
    """``ifft2d(spectrum * ramp_b)`` for (B, 2) ``fractions`` with a hand-written adjoint.

    ``ramp_b(k) = exp(-2 pi i (f_by fy(k_y) + f_bx fx(k_x)))``. With ``G_b = fft2d(dL/dout_b)/N``
    (the adjoint of the inverse FFT), the gradients are ``dL/dspectrum = sum_b G_b conj(ramp_b)``
    and ``dL/df_by = -2 pi sum_k fy(k_y) Im(T_b(k))`` (likewise x) with
    ``T_b = sum_m G_bm conj(spectrum_m ramp_b)``. Both position sums come from one pass over
    ``G`` (``losses.paired_pixel_sums``); autodiff went through the two per-axis ramp
    gradients, writing two (B, H, W) products and reading them back. The ramp product and the
    adjoint sums are ``xla_pieces.piece`` functions: separate XLA clusters inside
    ``xla_pieces.fft_outside_xla()``, with the FFTs between them TensorFlow ops.
    """
    from adptycho.losses import paired_pixel_sums

    fy_t = tf.constant(fy, tf.float32)
    fx_t = tf.constant(fx, tf.float32)

    @piece
    def ramp_product(spectrum_in, fractions_in):
        ramp = separable_ramp(fractions_in, fy, fx, -2.0 * np.pi)  # (B, H, W)
        return spectrum_in[None] * ramp[:, None]

    @piece
    def adjoint_sums(g, spectrum_in, fractions_in):
        h, w = int(g.shape[-2]), int(g.shape[-1])
        g = g / (h * w)
        # rebuilt from its (B, H) and (B, W) factors rather than kept from the forward
        # pass, where XLA fuses it into the spectrum product without writing it out
        back_ramp = tf.math.conj(separable_ramp(fractions_in, fy, fx, -2.0 * np.pi))
        d_spectrum = tf.reduce_sum(g * back_ramp[:, None], axis=0)
        t = tf.math.imag(tf.reduce_sum(
            g * tf.math.conj(spectrum_in)[None] * back_ramp[:, None], axis=1))  # (B, H, W)
        d_y, d_x = paired_pixel_sums(t * fy_t[:, None], t * fx_t[None, :])
        return d_spectrum, -2.0 * np.pi * tf.stack([d_y, d_x], axis=-1)

    @tf.custom_gradient
    def shift(spectrum_in, fractions_in):
        out = tf.signal.ifft2d(ramp_product(spectrum_in, fractions_in))

        @same_mode
        def grad(upstream):
            g = tf.signal.fft2d(tf.convert_to_tensor(upstream, tf.complex64))
            return adjoint_sums(g, spectrum_in, fractions_in)

        return out, grad

    return shift(spectrum, fractions)


def exit_waves(object_, probe, positions_px, subpixel: bool = True,
               fold_fftshift: bool = False, plan=REFERENCE) -> tf.Tensor:
    """``physics.forward.exit_waves`` (same arguments and values) executed per ``plan``."""
    probe = tf.convert_to_tensor(probe, tf.complex64)
    real, imag = reference.object_parts(object_)
    h, w = probe.shape[-2], probe.shape[-1]
    corners, fractions = split_positions(positions_px)
    # Gathering the real and imaginary parts separately is faster (real scatter-add gradient).
    patches = tf.complex(extract_patches(real, corners, (h, w), plan),
                         extract_patches(imag, corners, (h, w), plan))  # (B, H, W)
    probes = shifted_probes(probe, fractions if subpixel else None, fold_fftshift, plan)
    return probes * patches[:, None]


def _fused_inputs(object_, probe, positions_px, transfer, subpixel, plan):
    """``(real, imag, probes, corners)`` for the fused far-field functions, or None where they
    do not apply (near field, odd shapes, or ``plan.use_fused`` says no)."""
    fold = transfer is None and reference.can_fold_fftshift(np.shape(probe))
    if not (fold and plan.use_fused(np.shape(probe)[-2:])):
        return None
    real, imag = reference.object_parts(object_)
    corners, fractions = split_positions(positions_px)
    probes = shifted_probes(probe, fractions if subpixel else None, True, plan)
    return real, imag, probes, corners


def forward_intensities(object_, probe, positions_px, transfer=None, subpixel=True,
                        plan=REFERENCE):
    """``physics.forward.forward_intensities`` executed per ``plan``: far-field models with
    large windows go through ``fused.fused_far_field_intensities`` where it applies."""
    with plan.scope():
        return _forward_intensities(object_, probe, positions_px, transfer, subpixel, plan)


def _forward_intensities(object_, probe, positions_px, transfer, subpixel, plan):
    fused = _fused_inputs(object_, probe, positions_px, transfer, subpixel, plan)
    if fused is not None:
        return fused_far_field_intensities(*fused)
    fold = transfer is None and reference.can_fold_fftshift(np.shape(probe))
    waves = exit_waves(object_, probe, positions_px, subpixel, fold, plan)
    if subpixel and transfer is not None:
        # the detector is fixed to the probe: the shift back is a ramp folded into the transfer
        h, w = waves.shape[-2], waves.shape[-1]
        fractions = split_positions(positions_px)[1]
        ramp = separable_ramp(fractions, np.fft.fftfreq(h), np.fft.fftfreq(w), 2.0 * np.pi)
        transfer = (transfer[None] * ramp)[:, None]  # (B, 1, H, W)
    return reference.intensities_from_waves(waves, transfer, folded=fold)


def forward_losses(object_, probe, positions_px, measured, loss_name, transfer=None,
                   subpixel=True, mask=None, readout_noise=None, plan=REFERENCE):
    """``physics.forward.forward_losses`` executed per ``plan``: where the fused path applies
    (``fused.fused_far_field_losses``) the predicted intensities are never formed."""
    from adptycho.losses import get_pixel_loss

    with plan.scope():
        fused = _fused_inputs(object_, probe, positions_px, transfer, subpixel, plan)
        if fused is not None:
            return fused_far_field_losses(*fused, measured, get_pixel_loss(loss_name), mask,
                                          readout_noise)
        predicted = _forward_intensities(object_, probe, positions_px, transfer, subpixel, plan)
    return reference.losses_of_intensities(measured, predicted, loss_name, mask, readout_noise)


def chained_losses(plan, losses_fn, indices, measured):
    """``losses_fn(indices, measured) -> (losses, residuals, counts)`` of a batch, inside the
    plan's scope; on the pieces path cut into ``plan.chains`` independent chains over
    consecutive parts of the batch, which TensorFlow's executor runs concurrently (an XLA
    window loop runs on one core).

    An XLA loop cannot be compiled for an empty part: a batch smaller than the number of
    chains is padded with zero counts at pattern 0 (tf.pad forwards its input when there is
    nothing to pad); the padded losses are dropped, so their gradients are zero.
    """
    with plan.scope():
        if not plan.pieces or plan.chains < 2:
            return losses_fn(indices, measured)
        size = tf.shape(indices)[0]
        count = plan.chains
        pad = tf.maximum(count - size, 0)
        indices = tf.pad(indices, [[0, pad]])
        measured = tf.pad(measured, [[0, pad], [0, 0], [0, 0]])
        edges = [(k * (size + pad)) // count for k in range(count + 1)]
        parts = [losses_fn(indices[a:b], measured[a:b]) for a, b in zip(edges[:-1], edges[1:])]
        return tuple(tf.concat(values, axis=0)[:size] for values in zip(*parts))

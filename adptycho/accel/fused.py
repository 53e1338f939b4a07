"""Fused far-field intensities and losses for XLA on CPU: gather, exit wave, FFT and their adjoint.

Inside ``xla_pieces.fft_outside_xla()`` the loops and the loss passes are separate XLA clusters
and the FFTs between them TensorFlow ops (see ``xla_pieces`` for why).

``fused_far_field_intensities`` computes exactly what ``exit_waves`` + ``intensities_from_waves``
compute for folded far-field models (Seifert et al. 2024, Sec. 2.2; Thibault & Menzel 2013 for
mixed states)::

    I_b = sum_m | FFT( P_{b,m} * O[c_b + window] ) |^2 / (H W)

but with a hand-written gradient that does the whole adjoint of the window product in one loop:
for each pattern, the object gradient ``sum_m chi_{b,m} conj(P_{b,m})`` is added into the
(Y, X) gradient and the probe gradient ``chi_{b,m} conj(O_b)`` is accumulated, reading the
back-propagated wave ``chi_b`` once. Autodiff of the composed ops instead writes the (B, H, W)
patch gradient, reads it again for the scatter-add and reads the waves once more for the probe
gradient. The forward loop likewise writes the exit waves directly from the object windows.
On the standard benchmark problem (batch 64, 2 CPU cores) the object+probe physics gradient
went from 0.214 to 0.136 s per epoch (``experiments/speed_breakdown.py``) and a whole Adam
epoch from 0.220-0.276 to 0.189-0.214 s (three interleaved runs, ``experiments/fused_ab.py``).

``fused_far_field_losses`` (what ``PtychoModel.train_step`` uses) goes one step further and
never forms the intensities: the per-pattern loss is one reduction over the far field and the
measured counts, and the far-field gradient is formed, from the loss's analytic per-pixel
derivative (``losses.PixelLoss``), in the expression that feeds the inverse FFT. Autodiff of
intensities-then-loss kept ``sqrt(I)``, ``sqrt(X)``, ``max(X, 0)`` and the squared residuals as
(B, H, W) arrays, each written once and read back: at batch 400 those passes took 62 ms per
step against 46 ms for the fused form (XLA CPU profile, ``tf.profiler``).

Only for XLA compilation (the loops use XLA dynamic slices); ``accel.forward`` takes it where
the model's ``ExecutionPlan`` says so (``ExecutionPlan.use_fused``: an XLA program or XLA
pieces, large far-field windows).
"""

from __future__ import annotations

import tensorflow as tf

from adptycho.accel.xla_pieces import piece, same_mode

__all__ = ["fused_far_field_intensities", "fused_far_field_losses"]


def _prepare(real, imag, probes, corners):
    probes = tf.convert_to_tensor(probes, tf.complex64)
    return (tf.convert_to_tensor(real, tf.float32), tf.convert_to_tensor(imag, tf.float32),
            probes, tf.cast(corners, tf.int32))


class _WindowLoops:
    """The forward gather/exit-wave loop and the adjoint scatter loop shared by the fused
    functions. ``probes``: (1 or B, M, H, W) complex64; ``corners``: (B, 2) int32.

    The loops are ``xla_pieces.piece`` functions: inside ``xla_pieces.fft_outside_xla()`` each
    is its own XLA cluster and the FFTs between them are TensorFlow ops."""

    def __init__(self, probes, corners):
        self.probes, self.corners = probes, corners
        self.h, self.w = int(probes.shape[-2]), int(probes.shape[-1])

    def far_field(self, re, im):
        """(B, M, H, W) complex64 ``FFT(P_bm O_b)`` (unnormalised FFT)."""
        return tf.signal.fft2d(_exit_wave_loop(re, im, self.probes, self.corners))

    def intensities(self, far):
        """(B, H, W) float32 ``sum_m |far|^2 / (H W)``."""
        return _intensities(far, self.h * self.w)

    def adjoint(self, re, im, scaled_far):
        """Gradients (d_re, d_im, d_probes) for ``scaled_far = 2 dL/dI far`` (B, M, H, W)
        complex64 (``_scaled_far``), whose inverse FFT is the exit-wave gradient."""
        back = tf.signal.ifft2d(scaled_far)  # (B, M, H, W)
        return _adjoint_loop(re, im, back, self.probes, self.corners)


def _window(re, im, corner, h, w):
    from tensorflow.compiler.tf2xla.python import xla

    return tf.complex(xla.dynamic_slice(re, corner, [h, w]), xla.dynamic_slice(im, corner, [h, w]))


def _intensities(far, pixels):
    return tf.reduce_sum(tf.math.real(far) ** 2 + tf.math.imag(far) ** 2, axis=1) / pixels


# the intensities as a piece of their own (``fused_far_field_intensities``); inside the loss
# pieces they are part of the same XLA cluster
_intensities_piece = piece(_intensities)


@piece
def _scaled_far(far, d_intensity):
    """``2 dL/dI far`` (B, M, H, W) complex64 for the (B, H, W) intensity gradient: with
    ``I = sum_m |far_m|^2 / N`` its ``ifft2d`` (1/N included) is the exit-wave gradient."""
    return tf.complex(2.0 * d_intensity, tf.zeros_like(d_intensity))[:, None] * far


@piece
def _exit_wave_loop(re, im, probes, corners):
    """(B, M, H, W) complex64 exit waves ``P_bm O[c_b + window]``, one dynamic slice each."""
    from tensorflow.compiler.tf2xla.python import xla

    h, w, modes = int(probes.shape[-2]), int(probes.shape[-1]), int(probes.shape[-3])
    shared = probes.shape[0] == 1
    count = tf.shape(corners)[0]

    def body(i, waves):
        probe = probes[0] if shared else probes[i]
        wave = probe * _window(re, im, corners[i], h, w)[None]  # (M, H, W)
        return i + 1, xla.dynamic_update_slice(waves, wave[None], tf.stack([i, 0, 0, 0]))

    _, waves = tf.while_loop(
        lambda i, _: i < count, body,
        (tf.constant(0), tf.zeros(tf.stack([count, modes, h, w]), tf.complex64)))
    waves.set_shape([corners.shape[0], modes, h, w])
    return waves


@piece
def _adjoint_loop(re, im, back, probes, corners):
    """Adjoint of the window product for the back-propagated waves ``back`` (B, M, H, W): the
    object gradient ``sum_m back_bm conj(P_bm)`` scatter-added into (Y, X) parts, and the probe
    gradient ``back_bm conj(O_b)`` (summed over b for a shared probe), one pass over ``back``."""
    from tensorflow.compiler.tf2xla.python import xla

    h, w = int(probes.shape[-2]), int(probes.shape[-1])
    shared = probes.shape[0] == 1
    count = tf.shape(corners)[0]

    def body(i, acc_re, acc_im, probe_grad):
        corner = corners[i]
        x = back[i]  # (M, H, W)
        probe = probes[0] if shared else probes[i]
        obj = _window(re, im, corner, h, w)
        d_obj = tf.reduce_sum(x * tf.math.conj(probe), axis=0)
        acc_re = xla.dynamic_update_slice(
            acc_re, xla.dynamic_slice(acc_re, corner, [h, w]) + tf.math.real(d_obj), corner)
        acc_im = xla.dynamic_update_slice(
            acc_im, xla.dynamic_slice(acc_im, corner, [h, w]) + tf.math.imag(d_obj), corner)
        d_probe = x * tf.math.conj(obj)[None]
        if shared:
            probe_grad = probe_grad + d_probe[None]
        else:
            probe_grad = xla.dynamic_update_slice(probe_grad, d_probe[None],
                                                  tf.stack([i, 0, 0, 0]))
        return i + 1, acc_re, acc_im, probe_grad

    _, d_re, d_im, d_probes = tf.while_loop(
        lambda i, *_: i < count, body,
        (tf.constant(0), tf.zeros_like(re), tf.zeros_like(im), tf.zeros_like(probes)))
    return d_re, d_im, d_probes


def fused_far_field_intensities(real: tf.Tensor, imag: tf.Tensor, probes: tf.Tensor,
                                corners: tf.Tensor) -> tf.Tensor:
    """Far-field intensities of a batch of windows, with a fused adjoint (XLA only).

    Args:
        real, imag: (Y, X) float32 parts of the object.
        probes: (1, M, H, W) complex64 probe modes shared by all patterns, or (B, M, H, W)
            per-pattern (sub-pixel shifted) modes; already multiplied by the fftshift
            checkerboard (``accel.forward.shifted_probes(..., fold_fftshift=True)``) so that a plain
            FFT gives centred patterns.
        corners: (B, 2) int32 top-left window corners (y, x); windows inside the object.

    Returns:
        (B, H, W) float32 intensities ``sum_m |FFT(P_bm O_b)|^2 / (H W)``. Differentiable
        w.r.t. ``real``, ``imag`` and ``probes`` (not ``corners``).
    """
    real, imag, probes, corners = _prepare(real, imag, probes, corners)
    loops = _WindowLoops(probes, corners)

    pixels = loops.h * loops.w

    @tf.custom_gradient
    def intensities(re, im, probes_in):
        far = loops.far_field(re, im)
        result = _intensities_piece(far, pixels)

        @same_mode
        def grad(upstream):
            return loops.adjoint(re, im, _scaled_far(far, tf.convert_to_tensor(upstream,
                                                                                 tf.float32)))

        return result, grad

    return intensities(real, imag, probes)


def fused_far_field_losses(real: tf.Tensor, imag: tf.Tensor, probes: tf.Tensor,
                           corners: tf.Tensor, measured: tf.Tensor, pixel_loss, mask=None,
                           readout_noise=None):
    """Per-pattern noise-model losses of a batch of windows, with a fused adjoint (XLA only).

    The same value as ``loss(measured, fused_far_field_intensities(...), mask, readout_noise)``
    but the predicted intensities are never materialised: the loss is one reduction over the
    far field and the data, and its gradient w.r.t. the far field is formed in the expression
    that feeds the inverse FFT, from the analytic per-pixel derivative ``pixel_loss.gradient``
    (``losses.PixelLoss``). Autodiff of the composed ops kept square roots, residuals and the
    intensity gradient as separate (B, H, W) arrays, each written once and read back.

    Args:
        real, imag, probes, corners: as ``fused_far_field_intensities``.
        measured: (B, H, W) float32 counts X.
        pixel_loss: ``losses.PixelLoss``.
        mask: None or (H, W) float32 (1 = valid pixel).
        readout_noise: scalar or (H, W) readout standard deviation (Poisson-Gaussian loss).

    Returns:
        ``(losses, residuals, counts)``: (B,) float32 losses ``sum_pixels mask * values(X, I)``,
        differentiable w.r.t. ``real``, ``imag`` and ``probes``; (B,) float32 amplitude-loss
        sums and (B,) sums of ``mask * max(X, 0)`` (numerator and denominator of the relative
        residual, ``losses.amplitude_residual_sums``), not differentiated.
    """
    from adptycho.losses import get_pixel_loss, paired_pixel_sums, pixel_sums

    real, imag, probes, corners = _prepare(real, imag, probes, corners)
    measured = tf.convert_to_tensor(measured, tf.float32)
    loops = _WindowLoops(probes, corners)

    def masked(values):
        return values if mask is None else values * mask

    amplitude = get_pixel_loss("amplitude")

    @piece
    def loss_sums(far, measured):
        intensity = loops.intensities(far)
        values = masked(pixel_loss.values(measured, intensity, readout_noise))
        counts = masked(tf.maximum(measured, 0.0))
        # Two sums from one pass over the far field and the data: the real and imaginary parts
        # of one complex reduction.
        if pixel_loss is amplitude:
            result, count_sums = paired_pixel_sums(values, counts)
            return result, result, count_sums
        result, residual = paired_pixel_sums(
            values, masked(amplitude.values(measured, intensity)))
        return result, residual, pixel_sums(counts)

    @piece
    def far_gradient(far, measured, weights):
        # the analytic per-pixel derivative, in the expression that feeds the inverse FFT
        d_intensity = weights[:, None, None] * masked(
            pixel_loss.gradient(measured, loops.intensities(far), readout_noise))
        return _scaled_far.__wrapped__(far, d_intensity)

    @tf.custom_gradient
    def losses(re, im, probes_in):
        far = loops.far_field(re, im)
        result, residual, count_sums = loss_sums(far, measured)

        @same_mode
        def grad(upstream, upstream_residual, upstream_counts):
            del upstream_residual, upstream_counts  # diagnostics, not differentiated
            weights = tf.convert_to_tensor(upstream, tf.float32)  # (B,)
            return loops.adjoint(re, im, far_gradient(far, measured, weights))

        return (result, tf.stop_gradient(residual), tf.stop_gradient(count_sums)), grad

    return losses(real, imag, probes)

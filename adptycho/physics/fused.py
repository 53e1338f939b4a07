"""Fused far-field intensities for XLA on CPU: gather, exit wave, FFT and their adjoint.

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
epoch from 0.220-0.276 to 0.189-0.214 s (three interleaved runs, ``experiments/fused_ab.py``);
the loss value, metrics and optimiser steps take most of the rest.

Only for XLA compilation (the loops use XLA dynamic slices); ``forward.forward_intensities``
(and through it ``PtychoModel.call``) picks it when tracing under ``jit_compile`` (``use_fused``).
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["fused_far_field_intensities", "use_fused", "FUSED_ENABLED"]

# Switch for A/B timing and for the tests that compare both paths.
FUSED_ENABLED = True


def use_fused(patch_shape) -> bool:
    """True when tracing under XLA for windows where loops of dynamic slices pay off
    (``shifts.use_window_loops``), unless switched off with ``FUSED_ENABLED``."""
    from adptycho.physics.shifts import use_window_loops

    return FUSED_ENABLED and use_window_loops(patch_shape)


def fused_far_field_intensities(real: tf.Tensor, imag: tf.Tensor, probes: tf.Tensor,
                                corners: tf.Tensor) -> tf.Tensor:
    """Far-field intensities of a batch of windows, with a fused adjoint (XLA only).

    Args:
        real, imag: (Y, X) float32 parts of the object.
        probes: (1, M, H, W) complex64 probe modes shared by all patterns, or (B, M, H, W)
            per-pattern (sub-pixel shifted) modes; already multiplied by the fftshift
            checkerboard (``forward.shifted_probes(..., fold_fftshift=True)``) so that a plain
            FFT gives centred patterns.
        corners: (B, 2) int32 top-left window corners (y, x); windows inside the object.

    Returns:
        (B, H, W) float32 intensities ``sum_m |FFT(P_bm O_b)|^2 / (H W)``. Differentiable
        w.r.t. ``real``, ``imag`` and ``probes`` (not ``corners``).
    """
    from tensorflow.compiler.tf2xla.python import xla

    probes = tf.convert_to_tensor(probes, tf.complex64)
    corners = tf.cast(corners, tf.int32)
    h, w = int(probes.shape[-2]), int(probes.shape[-1])
    modes = int(probes.shape[-3])
    shared = probes.shape[0] == 1
    count = tf.shape(corners)[0]

    def probe_for(i):
        return probes[0] if shared else probes[i]

    def window(re, im, corner):
        return tf.complex(xla.dynamic_slice(re, corner, [h, w]),
                          xla.dynamic_slice(im, corner, [h, w]))

    @tf.custom_gradient
    def intensities(re, im, probes_in):
        def forward_body(i, waves):
            wave = probe_for(i) * window(re, im, corners[i])[None]  # (M, H, W)
            return i + 1, xla.dynamic_update_slice(waves, wave[None], tf.stack([i, 0, 0, 0]))

        _, waves = tf.while_loop(
            lambda i, _: i < count, forward_body,
            (tf.constant(0), tf.zeros(tf.stack([count, modes, h, w]), tf.complex64)))
        waves.set_shape([corners.shape[0], modes, h, w])
        far = tf.signal.fft2d(waves)  # (B, M, H, W)
        result = tf.reduce_sum(tf.math.real(far) ** 2 + tf.math.imag(far) ** 2, axis=1) / (h * w)

        def grad(upstream):
            # d I / d far* : grad_far = 2 dI far / N; grad_wave = N ifft(grad_far)
            scale = tf.complex(2.0 * tf.convert_to_tensor(upstream, tf.float32),
                               tf.zeros_like(upstream))
            back = tf.signal.ifft2d(scale[:, None] * far)  # (B, M, H, W)

            def backward_body(i, acc_re, acc_im, probe_grad):
                corner = corners[i]
                x = back[i]  # (M, H, W)
                obj = window(re, im, corner)
                d_obj = tf.reduce_sum(x * tf.math.conj(probe_for(i)), axis=0)
                acc_re = xla.dynamic_update_slice(
                    acc_re, xla.dynamic_slice(acc_re, corner, [h, w]) + tf.math.real(d_obj),
                    corner)
                acc_im = xla.dynamic_update_slice(
                    acc_im, xla.dynamic_slice(acc_im, corner, [h, w]) + tf.math.imag(d_obj),
                    corner)
                d_probe = x * tf.math.conj(obj)[None]
                if shared:
                    probe_grad = probe_grad + d_probe[None]
                else:
                    probe_grad = xla.dynamic_update_slice(probe_grad, d_probe[None],
                                                          tf.stack([i, 0, 0, 0]))
                return i + 1, acc_re, acc_im, probe_grad

            _, d_re, d_im, d_probes = tf.while_loop(
                lambda i, *_: i < count, backward_body,
                (tf.constant(0), tf.zeros_like(re), tf.zeros_like(im),
                 tf.zeros_like(probes_in)))
            return d_re, d_im, d_probes

        return result, grad

    return intensities(tf.convert_to_tensor(real, tf.float32),
                       tf.convert_to_tensor(imag, tf.float32), probes)

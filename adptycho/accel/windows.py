"""Patch extraction as loops of XLA dynamic slices, and ``materialise`` (speed code under XLA;
the reference gather is ``physics.shifts.extract_patches``)."""

from __future__ import annotations

import tensorflow as tf

from adptycho.physics.shifts import extract_patches as gather_patches

__all__ = ["extract_patches", "materialise"]


def extract_patches(image: tf.Tensor, corners: tf.Tensor, patch_shape, plan) -> tf.Tensor:
    """``physics.shifts.extract_patches`` (same values and gradient) executed per ``plan``.

    XLA's generic scatter (the gather's gradient) is slow for large windows on CPU; a loop of
    dynamic-update-slices adds whole rows (3x faster at 128x128, but its per-patch loop
    overhead loses for small windows): ``plan.window_loops`` decides.

    Args:
        image: (Y, X) tensor; corners: (B, 2) int32; patch_shape: (H, W).
        plan: ``accel.ExecutionPlan``.

    Returns:
        (B, H, W) patches.
    """
    h, w = int(patch_shape[0]), int(patch_shape[1])
    corners = tf.cast(corners, tf.int32)
    if image.dtype in (tf.float32, tf.float64) and plan.window_loops((h, w)):
        return _extract_patches_xla(image, corners, h, w)
    return gather_patches(image, corners, (h, w))


def _extract_patches_xla(image, corners, h, w):
    """Patch extraction as two loops of XLA dynamic slices.

    Forward: each window is copied with one dynamic slice into a (B, H, W) buffer. XLA fuses
    an element-wise ``tf.gather`` into every consumer of the patches (the exit wave and, in
    the gradient, the probe's adjoint), recomputing the H*W index arithmetic each time; the
    loop materialises the patches once (the object+probe gradient on the standard problem
    went from 0.257 to 0.192 s per epoch, ``experiments/speed_breakdown.py``).

    Gradient (the adjoint, a scatter-add of the patches): a loop of dynamic-update-slices that
    adds each patch as H contiguous rows instead of H*W scattered elements (about 3x faster
    than XLA's generic scatter on CPU)."""
    from tensorflow.compiler.tf2xla.python import xla

    def windows(image):
        count = tf.shape(corners)[0]

        def body(i, out):
            window = xla.dynamic_slice(image, corners[i], [h, w])
            return i + 1, xla.dynamic_update_slice(out, window[None],
                                                   tf.stack([i, 0, 0]))

        _, out = tf.while_loop(lambda i, _: i < count, body,
                               (tf.constant(0), tf.zeros(tf.stack([count, h, w]), image.dtype)))
        out.set_shape([corners.shape[0], h, w])
        return out

    @tf.custom_gradient
    def gather(image):
        def grad(upstream):
            upstream = tf.convert_to_tensor(upstream)

            def body(i, acc):
                corner = corners[i]
                window = xla.dynamic_slice(acc, corner, [h, w])
                return i + 1, xla.dynamic_update_slice(acc, window + upstream[i], corner)

            _, total = tf.while_loop(lambda i, _: i < tf.shape(corners)[0], body,
                                     (tf.constant(0), tf.zeros_like(image)))
            return total
        return windows(image), grad

    return gather(image)


def materialise(x):
    """``x @ I``: an exact copy of (..., N) ``x`` that XLA computes once.

    XLA on CPU fuses cheap-looking producers such as ``cos``/``sin`` of the (B, H) and (B, W)
    phases into their broadcast consumer, recomputing them for every one of the B H W ramp
    elements (the trigonometry then costs as much as an inverse FFT). A dot is never fused
    into an element-wise consumer, so the sines and cosines are evaluated B (H + W) times
    (standard problem, batch 64: the sub-pixel ramp went from 40 to 14 ms per 448 patterns).
    The same holds for an (H, W) transfer function broadcast over a batch of waves. The product
    with the identity adds only exact zeros (finite inputs)."""
    return tf.matmul(x, tf.eye(int(x.shape[-1]), dtype=x.dtype))

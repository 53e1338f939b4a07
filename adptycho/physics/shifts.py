"""Patch extraction and Fourier sub-pixel shifts (pure tf functions; the loops of XLA dynamic
slices for large windows are ``accel.windows``)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["fourier_shift", "extract_patches", "split_positions"]


def fourier_shift(field: tf.Tensor, shift_px: tf.Tensor) -> tf.Tensor:
    """Circularly shift ``field`` by ``shift_px`` pixels with the Fourier shift theorem.

    ``out(r) = field(r - shift)``: the content moves towards larger indices for positive shifts,
    like ``np.roll``. Differentiable w.r.t. ``shift_px`` (signed FFT frequencies, so a shift by a
    whole pixel equals a roll exactly up to rounding).

    Args:
        field: (..., H, W) complex64.
        shift_px: (..., 2) float32 shifts in (y, x) order, broadcast against the leading axes of
            ``field``.

    Returns:
        (..., H, W) complex64.
    """
    field = tf.convert_to_tensor(field, dtype=tf.complex64)
    shift_px = tf.cast(shift_px, tf.float32)
    h, w = field.shape[-2], field.shape[-1]
    fy = tf.constant(np.fft.fftfreq(h), dtype=tf.float32)
    fx = tf.constant(np.fft.fftfreq(w), dtype=tf.float32)
    sy = shift_px[..., 0:1, None]  # (..., 1, 1)
    sx = shift_px[..., 1:2, None]
    phase = (-2.0 * np.pi) * (sy * fy[:, None] + sx * fx[None, :])  # (..., H, W)
    ramp = tf.complex(tf.cos(phase), tf.sin(phase))
    return tf.signal.ifft2d(tf.signal.fft2d(field) * ramp)


def split_positions(positions_px: tf.Tensor):
    """Split float positions into integer corners and fractional remainders in [0, 1).

    Args:
        positions_px: (B, 2) float32 (y, x).

    Returns:
        ``(corners, fractions)``: (B, 2) int32 and (B, 2) float32 with
        ``positions = corners + fractions``. Gradients flow through ``fractions`` only.
    """
    positions_px = tf.cast(positions_px, tf.float32)
    corners = tf.floor(tf.stop_gradient(positions_px))
    return tf.cast(corners, tf.int32), positions_px - corners


def extract_patches(image: tf.Tensor, corners: tf.Tensor, patch_shape) -> tf.Tensor:
    """Gather (H, W) windows of a 2-D image at integer top-left corners.

    Args:
        image: (Y, X) tensor (any dtype; complex64 for objects).
        corners: (B, 2) int32 top-left corners (y, x); each window must lie inside the image
            (callers check or clip).
        patch_shape: (H, W).

    Returns:
        (B, H, W) patches, ``out[b, i, j] = image[corners[b, 0] + i, corners[b, 1] + j]``.
        The gradient w.r.t. ``image`` is the scatter-add of the patch gradients.
    """
    h, w = int(patch_shape[0]), int(patch_shape[1])
    return _gather_patches(image, tf.cast(corners, tf.int32), h, w)


def _gather_patches(image, corners, h, w):
    num_cols = tf.shape(image)[1]
    rows = corners[:, 0:1] + tf.range(h, dtype=tf.int32)[None, :]  # (B, H)
    cols = corners[:, 1:2] + tf.range(w, dtype=tf.int32)[None, :]  # (B, W)
    flat_index = rows[:, :, None] * num_cols + cols[:, None, :]  # (B, H, W)
    return tf.gather(tf.reshape(image, [-1]), flat_index)

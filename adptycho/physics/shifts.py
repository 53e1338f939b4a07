"""Patch extraction and Fourier sub-pixel shifts (pure tf functions)."""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf

__all__ = ["fourier_shift", "extract_patches", "split_positions", "materialise"]

# Under XLA, windows of at least this many pixels get the dynamic-update-slice adjoint.
DUS_MIN_PIXELS = 96 * 96


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
    corners = tf.cast(corners, tf.int32)
    # XLA's generic scatter (the gather's gradient) is slow for large windows on CPU; a loop of
    # dynamic-update-slices adds whole rows (3x faster at 128x128, but its per-patch loop
    # overhead loses for small windows)
    if image.dtype in (tf.float32, tf.float64) and use_window_loops((h, w)):
        return _extract_patches_xla(image, corners, h, w)
    return _gather_patches(image, corners, h, w)


def _gather_patches(image, corners, h, w):
    num_cols = tf.shape(image)[1]
    rows = corners[:, 0:1] + tf.range(h, dtype=tf.int32)[None, :]  # (B, H)
    cols = corners[:, 1:2] + tf.range(w, dtype=tf.int32)[None, :]  # (B, W)
    flat_index = rows[:, :, None] * num_cols + cols[:, None, :]  # (B, H, W)
    return tf.gather(tf.reshape(image, [-1]), flat_index)


def large_window(patch_shape) -> bool:
    """True for windows of at least ``DUS_MIN_PIXELS`` pixels, where loops of XLA dynamic
    slices beat XLA's gather and scatter (patch extraction here, the fused far field in
    ``fused.py``)."""
    return int(patch_shape[0]) * int(patch_shape[1]) >= DUS_MIN_PIXELS


def use_window_loops(patch_shape) -> bool:
    """True while tracing under XLA for a ``large_window``."""
    return large_window(patch_shape) and _in_xla_context()


_FAST_PATH_WARNED = False


def _in_xla_context() -> bool:
    """True while tracing a function compiled with XLA (``jit_compile=True``).

    Needs two private TensorFlow modules; where they cannot be imported (moved in another
    TensorFlow release) the answer is False, which switches off the window loops and the fused
    far field (slower, same results), and a ``RuntimeWarning`` says so once per process."""
    global _FAST_PATH_WARNED
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError as exc:
        if not _FAST_PATH_WARNED:
            _FAST_PATH_WARNED = True
            warnings.warn(f"adptycho: the XLA fast path (window loops, fused far field) is off: "
                          f"cannot import a private TensorFlow module ({exc}); fits run slower "
                          "with the same results", RuntimeWarning, stacklevel=2)
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


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

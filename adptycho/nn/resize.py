"""Mitchell-Netravali (B = C = 1/3) resize as two matrices: ``out = R_y @ X @ R_x^T``.

``tf.image.resize(method="mitchellcubic")`` (TF's ``ScaleAndTranslate`` op, half-pixel centres,
kernel radius 2) is separable and linear, but it has only CPU kernels, no XLA lowering and rejects
complex input. Resizing identity impulses once gives the two matrices of the same linear map;
matrix products then work for float32 and complex64, on any device and under ``jit_compile``
(methods notes, section 4; Mitchell & Netravali, SIGGRAPH 1988, cited by Seifert et al. 2024,
Sec. 2.2).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError

__all__ = ["mitchell_matrix", "mitchell_resize_matrices", "resize_with_matrices"]


def mitchell_matrix(size_in: int, size_out: int, antialias: bool = False) -> np.ndarray:
    """(size_out, size_in) float32 matrix of the 1-D Mitchell-Netravali resize.

    Row ``i`` holds the weights with which the input samples form output sample ``i``, exactly as
    ``tf.image.resize(..., method="mitchellcubic", antialias=antialias)`` computes them (rows sum
    to one). ``antialias`` only matters when shrinking (it widens the kernel by 1 / scale).
    """
    size_in, size_out = int(size_in), int(size_out)
    if size_in < 1 or size_out < 1:
        raise AdptychoError(f"resize sizes must be positive, got {size_in} -> {size_out}")
    impulses = tf.eye(size_in, dtype=tf.float32)[:, :, None, None]  # (n, n, 1, 1) batch of columns
    resized = tf.image.resize(impulses, (size_out, 1), method="mitchellcubic", antialias=antialias)
    return np.ascontiguousarray(resized.numpy()[:, :, 0, 0].T)  # (m, n)


def mitchell_resize_matrices(shape_in, shape_out, antialias: bool = False):
    """``(R_y, R_x)`` float32 matrices, (Y_out, Y_in) and (X_out, X_in), for a 2-D resize."""
    return (mitchell_matrix(shape_in[0], shape_out[0], antialias),
            mitchell_matrix(shape_in[1], shape_out[1], antialias))


def resize_with_matrices(images, r_y, r_x):
    """Apply ``R_y @ X @ R_x^T`` to the last two axes of ``images``.

    Args:
        images: (..., Y_in, X_in) float32 or complex64 tensor.
        r_y, r_x: (Y_out, Y_in) and (X_out, X_in) float32 matrices (numpy or tensors).

    Returns:
        (..., Y_out, X_out) tensor of the input dtype.
    """
    images = tf.convert_to_tensor(images)
    r_y = tf.cast(tf.convert_to_tensor(r_y), images.dtype)
    r_x = tf.cast(tf.convert_to_tensor(r_x), images.dtype)
    rows = tf.einsum("ij,...jk->...ik", r_y, images)
    return tf.einsum("...ik,lk->...il", rows, r_x)

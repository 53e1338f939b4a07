"""Wave propagators: Fraunhofer far field and the band-limited angular spectrum (pure tf functions).

All functions act on the two innermost axes of complex64 tensors, so any leading batch/mode axes
are carried through. Conventions:

* Far field: ``far_field(psi) = fftshift(fft2(psi)) / sqrt(H W)`` -- orthonormal (Parseval holds:
  sum |psi|^2 = sum |Psi|^2), with the zero spatial frequency at pixel (H // 2, W // 2) of the
  output, which is how detector images are stored.
* Near field: ``near_field(psi, H) = ifft2(fft2(psi) * H)`` with the band-limited angular-spectrum
  transfer function of Matsushima & Shimobaba, Opt. Express 17, 19662 (2009), Eqs. (13)-(14):
  ``H(fy, fx; z) = exp(i 2 pi z [sqrt(1/lambda^2 - f^2) - 1/lambda]) * rect(fx / 2 f_lim) rect(fy / 2 f_lim)``
  with ``f_lim = 1 / (lambda sqrt((2 df z)^2 + 1))`` per axis and ``df = 1 / (N dx)``. The constant
  phase ``exp(i 2 pi z / lambda)`` is dropped (it does not change intensities and would lose float32
  precision); the remaining phase is computed in the cancellation-free form
  ``-2 pi z f^2 / (1/lambda + sqrt(1/lambda^2 - f^2))``. No zero padding: the field of view is the
  detector window, as in near-field ptychography. The phase is linear in ``z``, so intensities are
  differentiable w.r.t. a trainable distance; the band-limit window is piecewise constant in ``z``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


__all__ = [
    "far_field",
    "inverse_far_field",
    "angular_spectrum_kernel",
    "angular_spectrum_transfer",
    "near_field",
    "angular_spectrum_transfer_tf",
]


def _fftshift2(x):
    h, w = x.shape[-2], x.shape[-1]
    return tf.roll(x, shift=(h // 2, w // 2), axis=(-2, -1))


def _ifftshift2(x):
    h, w = x.shape[-2], x.shape[-1]
    return tf.roll(x, shift=(-(h // 2), -(w // 2)), axis=(-2, -1))


def far_field(field: tf.Tensor) -> tf.Tensor:
    """Fraunhofer propagation to the detector, centred and orthonormal.

    Args:
        field: (..., H, W) complex64 exit wave.

    Returns:
        (..., H, W) complex64 detector wave, zero frequency at (H // 2, W // 2).
    """
    field = tf.convert_to_tensor(field, dtype=tf.complex64)
    h, w = field.shape[-2], field.shape[-1]
    norm = tf.constant(1.0 / np.sqrt(h * w), dtype=tf.complex64)
    return _fftshift2(tf.signal.fft2d(field)) * norm


def inverse_far_field(wave: tf.Tensor) -> tf.Tensor:
    """Inverse of ``far_field``: (..., H, W) centred detector wave -> (..., H, W) exit wave."""
    wave = tf.convert_to_tensor(wave, dtype=tf.complex64)
    h, w = wave.shape[-2], wave.shape[-1]
    norm = tf.constant(np.sqrt(h * w), dtype=tf.complex64)
    return tf.signal.ifft2d(_ifftshift2(wave)) * norm


def angular_spectrum_kernel(shape, pixel_size_m, wavelength_m):
    """Distance-independent parts of the angular-spectrum transfer function (numpy, float64).

    Args:
        shape: (H, W) grid shape.
        pixel_size_m: scalar or (dy, dx) sample-plane pixel size in metres.
        wavelength_m: wavelength in metres.

    Returns:
        ``(phase_per_metre, fy, fx)``: (H, W) float64 array ``k(f)`` such that the transfer
        function phase is ``z * k(f)`` (radians, z in metres), and the (H, 1) / (1, W) signed
        spatial frequencies in 1/m in FFT order.
    """
    h, w = int(shape[0]), int(shape[1])
    dy, dx = np.broadcast_to(np.asarray(pixel_size_m, dtype=np.float64), (2,))
    fy = np.fft.fftfreq(h, d=dy)[:, None]
    fx = np.fft.fftfreq(w, d=dx)[None, :]
    f2 = fy ** 2 + fx ** 2
    inv_lambda = 1.0 / float(wavelength_m)
    root = np.sqrt(np.maximum(inv_lambda ** 2 - f2, 0.0))
    phase_per_metre = -2.0 * np.pi * f2 / (inv_lambda + root)
    phase_per_metre[f2 >= inv_lambda ** 2] = 0.0  # evanescent: removed by the window below
    return phase_per_metre, fy, fx


def angular_spectrum_transfer(shape, pixel_size_m, wavelength_m, distance_m,
                              materialise=None) -> tf.Tensor:
    """Band-limited angular-spectrum transfer function in FFT order.

    Args:
        shape: (H, W) grid shape.
        pixel_size_m: scalar or (dy, dx) pixel size in metres.
        wavelength_m: wavelength in metres (python float).
        distance_m: propagation distance in metres; a python float or a scalar float32 tensor
            (differentiable; negative values back-propagate).
        materialise: optional identity applied to the cosine and sine before they are combined
            (``accel.windows.materialise``: XLA evaluates them once).

    Returns:
        (H, W) complex64 transfer function (Matsushima & Shimobaba 2009, Eqs. 13-14; see module doc).
    """
    phase_per_metre, fy, fx = angular_spectrum_kernel(shape, pixel_size_m, wavelength_m)
    h, w = phase_per_metre.shape
    dy, dx = np.broadcast_to(np.asarray(pixel_size_m, dtype=np.float64), (2,))
    distance = tf.cast(distance_m, tf.float32)
    phase = distance * tf.constant(phase_per_metre, dtype=tf.float32)
    # Band limit (piecewise constant in z: no gradient through the window).
    z = tf.abs(tf.stop_gradient(distance))
    lam = float(wavelength_m)
    dfy, dfx = 1.0 / (h * dy), 1.0 / (w * dx)
    fy_lim = 1.0 / (lam * tf.sqrt((2.0 * dfy * z) ** 2 + 1.0))
    fx_lim = 1.0 / (lam * tf.sqrt((2.0 * dfx * z) ** 2 + 1.0))
    inv_lambda2 = (1.0 / lam) ** 2
    propagating = tf.constant(fy ** 2 + fx ** 2 < inv_lambda2)
    window = tf.logical_and(
        tf.logical_and(tf.abs(tf.constant(fy, tf.float32)) < fy_lim,
                       tf.abs(tf.constant(fx, tf.float32)) < fx_lim), propagating)
    window = tf.cast(window, tf.float32)
    return _complex_exp(window, phase, materialise)


def angular_spectrum_transfer_tf(shape, pixel_size_m, wavelength_m, distance_m,
                                 materialise=None) -> tf.Tensor:
    """``angular_spectrum_transfer`` with a pixel size that may be a tensor (cone-beam z1 fits).

    Same transfer function, built in float32 with the cancellation-free phase
    ``-2 pi z f^2 / (1/lambda + sqrt(1/lambda^2 - f^2))``; differentiable w.r.t. both
    ``pixel_size_m`` (scalar, square pixels) and ``distance_m``; ``materialise`` as there.
    """
    h, w = int(shape[0]), int(shape[1])
    dx = tf.cast(pixel_size_m, tf.float32)
    distance = tf.cast(distance_m, tf.float32)
    fy = tf.constant(np.fft.fftfreq(h)[:, None], tf.float32) / dx  # 1/m
    fx = tf.constant(np.fft.fftfreq(w)[None, :], tf.float32) / dx
    f2 = fy * fy + fx * fx
    inv_lambda = 1.0 / float(wavelength_m)
    root = tf.sqrt(tf.maximum(inv_lambda ** 2 - f2, 0.0))
    phase = distance * (-2.0 * np.pi) * f2 / (inv_lambda + root)
    z = tf.abs(tf.stop_gradient(distance))
    step = tf.stop_gradient(dx)
    fy_lim = 1.0 / (float(wavelength_m) * tf.sqrt((2.0 * z / (h * step)) ** 2 + 1.0))
    fx_lim = 1.0 / (float(wavelength_m) * tf.sqrt((2.0 * z / (w * step)) ** 2 + 1.0))
    window = tf.cast(tf.logical_and(tf.logical_and(tf.abs(fy) < fy_lim, tf.abs(fx) < fx_lim),
                                    f2 < inv_lambda ** 2), tf.float32)
    return _complex_exp(window, phase, materialise)


def _complex_exp(window, phase, materialise=None):
    """(H, W) ``window * exp(i phase)`` (``materialise``: see ``angular_spectrum_transfer``)."""
    cos_sin = tf.stack([window * tf.cos(phase), window * tf.sin(phase)])
    if materialise is not None:
        cos_sin = materialise(cos_sin)
    return tf.complex(cos_sin[0], cos_sin[1])


def near_field(field: tf.Tensor, transfer: tf.Tensor) -> tf.Tensor:
    """Angular-spectrum propagation: (..., H, W) complex64 field, (H, W) (or broadcastable)
    transfer -> (..., H, W)."""
    field = tf.convert_to_tensor(field, dtype=tf.complex64)
    return tf.signal.ifft2d(tf.signal.fft2d(field) * transfer)

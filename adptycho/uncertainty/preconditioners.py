"""Preconditioners of the conjugate-gradient solves of the pixel uncertainty maps.

The far-field Hessian of a pixel object (``far_field.FarFieldFisher``) is

    H v = sum_j P_j^* F^* W_j F P_j v,    W_j d = 1/2 (c_j d + w_j^2 conj(d)),

a complex-linear part ``T`` (the detector weights ``c_j`` acting on the spectrum of the exit-wave
perturbation) plus a conjugate-linear part (the unmeasured detector phase). ``T`` is where the
spread of H's spectrum comes from: an object perturbation at spatial frequency f lands on the
detector near pixel ``f N`` (N: the window size), whose weight is large in the bright centre of the
diffraction patterns and small in their dark outskirts, so smooth perturbations are determined
tens of times better than pixel-scale ones. With the probe intensity summed over the scan,
``S^2 = sum_j |P_j|^2``, and the detector weight averaged over the patterns, ``c_bar``,

    T ~ S K S,    K: the convolution on the object grid with transfer 1/2 c_bar(f N),

and the Fourier preconditioner applies the inverse of ``S (K + rho + floor) S``: one FFT pair of
the object's size per application (the products cost an FFT pair per pattern). ``rho`` is the
median of the residual curvature over ``S^2`` (``fisher.residual_curvature``, the ridge of the
Hessian) and ``floor`` (a fraction of the transfer's maximum) stands for the conjugate-linear
part, which the transfer does not model. The object grid is treated as periodic; the
undetermined pixels are held at zero.

Measured in ``experiments/uncertainty`` (``conditioning.json``, ``cost.json``): against the
block-Jacobi preconditioner (the exact 2x2 diagonal blocks of H) it needs about a third fewer
iterations for the same solution.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

__all__ = ["PRECONDITIONERS", "FourierPreconditioner", "transfer_on_grid"]

PRECONDITIONERS = ("fourier", "block")


def transfer_on_grid(mean_c, shape):
    """(Y, X) float64 ``1/2 c_bar`` at the object grid's FFT frequencies.

    Args:
        mean_c: (H, W) float mean detector weight over the patterns, in unshifted FFT order
            (detector pixel k carries the spatial frequency k / H of the exit wave).
        shape: (Y, X) object grid.

    The detector index of object frequency ``f`` (cycles per pixel) is ``f H``; the weights are
    interpolated bilinearly and periodically between detector pixels.
    """
    mean_c = np.asarray(mean_c, np.float64)
    h, w = mean_c.shape
    fy = np.fft.fftfreq(shape[0]) * h
    fx = np.fft.fftfreq(shape[1]) * w
    y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    ty, tx = (fy - y0)[:, None], (fx - x0)[None, :]

    def at(dy, dx):
        return mean_c[np.ix_((y0 + dy) % h, (x0 + dx) % w)]

    return 0.5 * ((1 - ty) * (1 - tx) * at(0, 0) + ty * (1 - tx) * at(1, 0)
                  + (1 - ty) * tx * at(0, 1) + ty * tx * at(1, 1))


class FourierPreconditioner:
    """``v -> S^-1 IFFT(FFT(S^-1 v) / t)`` on the determined pixels (module docstring).

    Args:
        illumination: (Y, X) ``S^2 = sum_j |P_j|^2`` (``FarFieldFisher.illumination``).
        mean_c: (H, W) mean detector weight (``FarFieldFisher.mean_detector_weight``).
        determined: (Y, X) bool pixels the solve acts on (others pass through unchanged).
        ridge: optional (Y, X) residual curvature added to H.
        floor: added to the transfer, as a fraction of its maximum.
    """

    def __init__(self, illumination, mean_c, determined, ridge=None, floor: float = 0.2):
        illumination = np.asarray(illumination, np.float64)
        self.determined = np.asarray(determined, bool)
        scale = np.sqrt(np.maximum(illumination, 1e-300))
        self.inverse_scale = np.where(self.determined, 1.0 / scale, 0.0)
        transfer = transfer_on_grid(mean_c, illumination.shape)
        rho = 0.0
        if ridge is not None:
            rho = float(np.median((np.asarray(ridge) / np.maximum(illumination, 1e-300))[
                self.determined]))
        self.inverse_transfer = 1.0 / (transfer + rho + floor * transfer.max())

    def __call__(self, v):
        """(S, Y, X) complex -> (S, Y, X) complex."""
        spectrum = sfft.fft2(v * self.inverse_scale, workers=-1)
        spectrum *= self.inverse_transfer
        out = sfft.ifft2(spectrum, workers=-1, overwrite_x=True) * self.inverse_scale
        return np.where(self.determined, out, v)

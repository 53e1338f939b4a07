"""Fisher information of a pixel object: products, exact diagonal blocks, noise-model weights.

Parameters are the real and imaginary parts of every object pixel; a perturbation is stored as a
complex (Y, X) array ``v`` (real part = the real-part parameter), and the real inner product of
two perturbations is ``Re sum conj(a) b``.

With the detector wave of pattern j written ``Psi_j = L_j O`` (``L_j``: probe window, shift and
propagation, linear in the object) and ``I_j = sum_modes |Psi_j|^2``, the expected Fisher
information of any noise model whose likelihood depends on the intensity only is

    F = sum_j J_j^T diag(w(I_j)) J_j,    J_j v = dI_j/dO . v = 2 Re(conj(Psi_j) L_j v),

with the per-pixel weight ``w(I)`` = the Fisher information of one detector pixel about its mean:

* ``poisson``: ``1 / I`` (exact);
* ``amplitude``: Gaussian noise of variance 1/4 on sqrt(I) (the model the amplitude loss is the
  likelihood of): ``1 / I`` as well;
* ``poisson-gaussian``: the Gaussian approximation N(I, I + s^2) of Seifert et al.:
  ``1 / (I + s^2) + 1 / (2 (I + s^2)^2)``.

Far field, one probe mode, integer positions (``FarFieldFisher``): with the orthonormal DFT
``F_kr`` (``|F_kr|^2 = 1/N``), unit phasors ``u = Psi / |Psi|`` and ``c = 4 I w`` (4 for
Poisson), the Fisher information along a complex direction ``d`` at object pixel p is

    F_p(d) = 1/2 sum_j [ |P_r|^2 |d|^2 T_j + Re(d^2 P_r^2 G_j(r)) ],   r = p - corner_j,
    T_j = (1/N) sum_k c_jk,    G_j(r) = (1/N) DFT[c_j conj(u_j)^2](2 r),

one FFT per pattern for the exact 2x2 diagonal block of every pixel. Its trace,
``sum_j |P_r|^2 T_j``, is the probe intensity summed over the positions that see the pixel
(times 4 for Poisson: ``F_aa + F_bb = 4 sum_j |P(p - c_j)|^2``). ``tests/test_uncertainty.py``
checks the blocks against the Fisher matrix that TensorFlow's autodiff builds from the forward
model's Jacobian.

General case (``AutodiffFisher``: modes, near field, sub-pixel positions): the intensities are a
quadratic form of the object, so ``J v = (I(O + v) - I(O - v)) / 2`` exactly, and ``J^T y`` is a
``tf.GradientTape`` gradient of the forward model (``physics.forward.forward_intensities``).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view

from adptycho.errors import AdptychoError

__all__ = ["NOISE_MODELS", "fisher_weights", "fisher_c", "estimator_c", "residual_curvature",
           "FarFieldFisher", "AutodiffFisher"]

NOISE_MODELS = ("poisson", "amplitude", "poisson-gaussian")
_FLOOR = 1e-9  # photons: intensities below it count as this (the weight c = 4 I w stays finite)


def fisher_weights(intensity, noise_model: str, readout_noise=1.0):
    """Per-pixel Fisher information about the mean intensity, ``w(I)`` (module docstring).

    Args:
        intensity: (..., H, W) float64 predicted intensities (photons).
        noise_model: ``poisson``, ``amplitude`` or ``poisson-gaussian``.
        readout_noise: scalar or (H, W) readout std s in photons (poisson-gaussian only).

    Returns:
        (..., H, W) float64 weights.
    """
    intensity = np.maximum(np.asarray(intensity, np.float64), _FLOOR)
    if noise_model in ("poisson", "amplitude"):
        return 1.0 / intensity
    if noise_model == "poisson-gaussian":
        variance = intensity + np.square(np.asarray(readout_noise, np.float64))
        return 1.0 / variance + 0.5 / variance ** 2
    raise AdptychoError(f"unknown noise model {noise_model!r}; choose one of "
                        f"{', '.join(NOISE_MODELS)}")


def fisher_c(noise_model: str, readout_noise=1.0):
    """``I -> c = 4 I w(I)``: the Fisher weight in the amplitude form the operators use."""
    def weights(intensity):
        intensity = np.maximum(np.asarray(intensity, np.float64), _FLOOR)
        return 4.0 * intensity * fisher_weights(intensity, noise_model, readout_noise)
    return weights


def _sqrt_poisson_moments(rate):
    """``(E sqrt(X), Var sqrt(X))`` for X ~ Poisson(rate): exact sums below 30 photons, the
    asymptotic series above."""
    rate = np.asarray(rate, np.float64)
    mean = np.sqrt(rate) * (1 - 1 / (8 * rate + 1e-300) - 7 / (128 * rate ** 2 + 1e-300))
    var = 0.25 + 3 / (32 * rate + 1e-300)
    low = rate < 30
    if np.any(low):
        from scipy.stats import poisson

        k = np.arange(120.0)[:, None]
        pmf = poisson.pmf(k, rate[low][None])
        m1 = np.sum(pmf * np.sqrt(k), axis=0)
        mean[low] = m1
        var[low] = np.sum(pmf * k, axis=0) - m1 ** 2
    return mean, var


def estimator_c(loss: str, readout_noise=1.0):
    """``(I -> c_A, I -> c_B)`` of the sandwich ``A^-1 B A^-1``: the covariance of the minimiser
    of ``loss`` (``adptycho.losses``) for Poisson data, with ``A`` the expected Hessian and
    ``B`` the variance of the gradient of the loss (per pixel ``E l''`` and ``Var l'``, in the
    amplitude form ``c = 4 I w``).

    * ``poisson`` (offset b = ``losses.POISSON_OFFSET``): ``c_A = 4 I / (I + b)``,
      ``c_B = 4 I^2 / (I + b)^2``;
    * ``amplitude``: ``c_A = 2 E sqrt(X) / sqrt(I)``, ``c_B = 4 Var sqrt(X)``;
    * ``poisson-gaussian``: the exact likelihood of its model: both the Fisher weight.
    """
    from adptycho.losses import POISSON_OFFSET

    if loss == "poisson":
        def c_a(intensity):
            intensity = np.maximum(np.asarray(intensity, np.float64), 0.0)
            return 4.0 * intensity / (intensity + POISSON_OFFSET)

        def c_b(intensity):
            return c_a(intensity) ** 2 / 4.0
        return c_a, c_b
    if loss == "amplitude":
        def c_a(intensity):
            intensity = np.maximum(np.asarray(intensity, np.float64), _FLOOR)
            return 2.0 * _sqrt_poisson_moments(intensity)[0] / np.sqrt(intensity)

        def c_b(intensity):
            intensity = np.maximum(np.asarray(intensity, np.float64), _FLOOR)
            return 4.0 * _sqrt_poisson_moments(intensity)[1]
        return c_a, c_b
    weights = fisher_c(loss, readout_noise)
    return weights, weights


def residual_curvature(object_, probe, positions_px, read_counts, loss: str, readout_noise=1.0,
                       mask=None, transfer=None, subpixel=False, batch: int = 64):
    """(Y, X) float64 diagonal of the residual term of the loss Hessian at the fit.

    The Hessian of a loss ``sum_k l(X_k, I_k)`` is ``A + R``: the Gauss-Newton part
    ``A = sum_k l''_k J_k^T J_k`` (what ``estimator_c`` weights in expectation) and the residual
    part ``R = sum_k l'_k d^2 I_k = 2 sum_j L_j^H diag(l'_j) L_j``. At the truth ``E l' = 0`` and
    R is dropped in the usual asymptotics; at the fit of low-dose data it is not negligible: the
    fit's own noise scatters light into detector pixels that see almost none (``I_fit > I``, so
    ``l' > 0`` there), which adds curvature against exactly the weakly determined object
    components that the linearised A leaves loose (measured: without R the std maps are 1.5x the
    spread of the reconstructions over noise draws at 1e4 photons per pattern, see
    ``experiments/uncertainty``). Pixel by pixel ``l'`` is noisy and of either sign; its diagonal
    is exact and smooth: with the orthonormal DFT (``|F_kr|^2 = 1/N``)

        R_rr = 2 sum_j mean_k(l'_jk) sum_m |P_m(r - c_j)|^2

    (far field; near field and sub-pixel shifts: the same expression, an approximation). Each
    pattern's mean is clipped at 0 so that the term is positive semi-definite.

    Args:
        object_, probe, positions_px: the fit ((Y, X), (M, H, W) complex, (N, 2) corners).
        read_counts: ``indices -> (B, H, W)`` measured counts (``ScanData.read_patterns``).
        loss: the loss the reconstruction minimised (``adptycho.losses`` names).
        readout_noise: scalar readout std (poisson-gaussian).
        mask: optional (H, W) bool valid detector pixels; transfer, subpixel: as
            ``AutodiffFisher``.

    Returns:
        (Y, X) float64 ``R_rr`` for each of the two real parameters of every pixel.
    """
    from adptycho.losses import get_pixel_loss
    from adptycho.physics.forward import forward_intensities

    gradient = get_pixel_loss(loss).gradient
    obj = np.asarray(object_)
    parts = (tf.constant(obj.real, tf.float32), tf.constant(obj.imag, tf.float32))
    probe = np.asarray(probe, np.complex64)
    probe = probe[None] if probe.ndim == 2 else probe
    positions = np.asarray(positions_px, np.float32)
    valid = np.ones(probe.shape[1:]) if mask is None else np.asarray(mask, np.float64)
    out = np.zeros(obj.shape)
    intensity = np.sum(np.abs(probe) ** 2, axis=0)  # (H, W)
    h, w = intensity.shape
    corners = np.round(positions).astype(int)
    for start in range(0, len(positions), batch):
        idx = np.arange(start, min(start + batch, len(positions)))
        predicted = forward_intensities(parts, tf.constant(probe), tf.constant(positions[idx]),
                                        transfer, subpixel=subpixel)
        counts = tf.constant(np.asarray(read_counts(idx), np.float32))
        slope = gradient(counts, predicted, readout_noise).numpy().astype(np.float64)
        means = np.sum(slope * valid, axis=(-2, -1)) / valid.size
        for j, mean in zip(idx, np.maximum(means, 0.0)):
            cy, cx = corners[j]  # illumination_map's integer windows, added in place
            out[cy:cy + h, cx:cx + w] += 2.0 * mean * intensity
    return out


class FarFieldFisher:
    """Fisher information of a far-field, single-mode, integer-position pixel object (numpy).

    Args:
        object_: (Y, X) complex object at which F is evaluated (the fitted optimum).
        probe: (H, W) or (1, H, W) complex probe in photon units.
        corners_px: (N, 2) integer top-left corners (y, x) on the object grid.
        weights: ``I -> c`` per-pixel weights in amplitude form (``fisher_c`` or one of
            ``estimator_c``), applied to (B, H, W) intensities.
        mask: optional (H, W) bool valid detector pixels (centred, as stored).
        batch: patterns per vectorised step.
        single: products in complex64 (about twice as fast; relative error ~1e-6, checked in
            ``tests/test_uncertainty_speed.py``); the diagonal blocks are summed in float64.
        cache_bytes: the detector-side weights ``u sqrt(c)`` of all patterns are computed once
            and kept when they take at most this many bytes (else recomputed per product).
    """

    def __init__(self, object_, probe, corners_px, weights, mask=None, batch: int = 16,
                 single: bool = False, cache_bytes: int = 1 << 30):
        probe = np.asarray(probe, np.complex128)
        if probe.ndim == 3:
            if probe.shape[0] != 1:
                raise AdptychoError("FarFieldFisher takes one probe mode (use AutodiffFisher)")
            probe = probe[0]
        self.probe = probe
        self.object = np.asarray(object_, np.complex128)
        corners = np.asarray(corners_px, np.float64)
        if not np.allclose(corners, np.round(corners), atol=1e-6):
            raise AdptychoError("FarFieldFisher needs integer positions (use AutodiffFisher)")
        self.corners = np.round(corners).astype(int)
        self.shape = self.object.shape
        h, w = probe.shape
        self.npix = h * w
        self.weights = weights
        # detector-side arrays in unshifted FFT order (the DFT sums do not depend on the order)
        self._mask = None if mask is None else np.fft.ifftshift(np.asarray(mask, bool))
        self.batch = int(batch)
        self.complex_dtype = np.complex64 if single else np.complex128
        self.cache_bytes = int(cache_bytes)
        self._cache = None

    # -- per-pattern detector quantities ------------------------------------------------
    def _windows(self, array, idx):
        h, w = self.probe.shape
        return np.stack([array[..., cy:cy + h, cx:cx + w] for cy, cx in self.corners[idx]],
                        axis=-3)

    def _phasors_and_weights(self, idx):
        """(B, H, W) unit phasors u = Psi/|Psi| and weights c = 4 I w(I) of patterns ``idx``."""
        waves = sfft.fft2(self.probe * self._windows(self.object, idx), norm="ortho", workers=-1)
        intensity = np.abs(waves) ** 2
        c = np.fft.ifftshift(self.weights(np.fft.fftshift(intensity, axes=(-2, -1))),
                             axes=(-2, -1))
        if self._mask is not None:
            c = c * self._mask
        phasors = np.where(intensity > 0, waves / np.sqrt(np.maximum(intensity, 1e-300)), 1.0)
        return phasors, c

    def _chunks(self):
        n = len(self.corners)
        for start in range(0, n, self.batch):
            yield np.arange(start, min(start + self.batch, n))

    def _amplitude_weights(self):
        """Yield ``(idx, w)`` per chunk: (B, H, W) ``w = u sqrt(c)`` (so ``c Re(conj(u) d) u =
        w Re(conj(w) d)`` and ``c conj(u)^2 = conj(w)^2``), cached when small enough."""
        if self._cache is not None:
            yield from self._cache
            return
        h, w = self.probe.shape
        keep = len(self.corners) * h * w * np.dtype(self.complex_dtype).itemsize
        keep = keep <= self.cache_bytes
        chunks = []
        for idx in self._chunks():
            u, c = self._phasors_and_weights(idx)
            item = (idx, (u * np.sqrt(np.maximum(c, 0.0))).astype(self.complex_dtype))
            if keep:
                chunks.append(item)
            yield item
        if keep:
            self._cache = chunks

    # -- products and diagonal -------------------------------------------------------------
    def matvec(self, v):
        """``F v`` for (S, Y, X) complex perturbations (S independent vectors); (S, Y, X)
        complex128."""
        v = np.asarray(v)
        out = np.zeros(v.shape, np.complex128)
        h, w = self.probe.shape
        probe = self.probe.astype(self.complex_dtype)
        view = sliding_window_view(v.astype(self.complex_dtype, copy=False), (h, w),
                                   axis=(-2, -1))
        for idx, weight in self._amplitude_weights():
            corners = self.corners[idx]
            dv = sfft.fft2(probe * view[:, corners[:, 0], corners[:, 1]], norm="ortho",
                           workers=-1, overwrite_x=True)  # (S, B, H, W)
            dv = weight * (weight.real * dv.real + weight.imag * dv.imag)
            back = np.conj(probe) * sfft.ifft2(dv, norm="ortho", workers=-1, overwrite_x=True)
            for b, (cy, cx) in enumerate(corners):
                out[:, cy:cy + h, cx:cx + w] += back[:, b]
        return out

    def diagonal_blocks(self):
        """(Y, X, 2, 2) float64 exact diagonal blocks of F over (real, imag) of each pixel."""
        h, w = self.probe.shape
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        twice = ((2 * yy) % h, (2 * xx) % w)
        p2 = np.abs(self.probe) ** 2
        psq = self.probe ** 2
        blocks = np.zeros(self.shape + (2, 2))
        for idx, weight in self._amplitude_weights():
            weight = weight.astype(np.complex128)
            t = np.sum(np.abs(weight) ** 2, axis=(-2, -1)) / self.npix  # (B,)
            g = sfft.fft2(np.conj(weight) ** 2, workers=-1)[:, twice[0], twice[1]] / self.npix
            q = psq * g  # (B, H, W)
            iso = p2 * t[:, None, None]
            block = np.empty(q.shape + (2, 2))
            block[..., 0, 0] = 0.5 * (iso + q.real)
            block[..., 1, 1] = 0.5 * (iso - q.real)
            block[..., 0, 1] = block[..., 1, 0] = -0.5 * q.imag
            for b, (cy, cx) in enumerate(self.corners[idx]):
                blocks[cy:cy + h, cx:cx + w] += block[b]
        return blocks

    def illumination(self):
        """(Y, X) float64 sum over positions of |P|^2 (photons per pixel over the scan)."""
        h, w = self.probe.shape
        out = np.zeros(self.shape)
        for cy, cx in self.corners:
            out[cy:cy + h, cx:cx + w] += np.abs(self.probe) ** 2
        return out


class AutodiffFisher:
    """Fisher-vector products of any pixel-object forward model, by TensorFlow autodiff.

    ``J v = (I(O + v) - I(O - v)) / 2`` (exact: I is quadratic in O) and ``J^T y`` from a
    ``tf.GradientTape`` of ``physics.forward.forward_intensities``.

    Args:
        object_: (Y, X) complex object; probe: (M, H, W) complex; positions_px: (N, 2) corners.
        transfer: None (far field) or the (H, W) near-field transfer function.
        subpixel: Fourier sub-pixel shifts of the probe (fractional positions).
        weights, mask, batch: as ``FarFieldFisher``.
    """

    def __init__(self, object_, probe, positions_px, weights, mask=None, transfer=None,
                 subpixel=True, batch: int = 16):
        self.object = np.asarray(object_, np.complex128)
        probe = np.asarray(probe, np.complex64)
        self.probe = tf.constant(probe[None] if probe.ndim == 2 else probe)
        self.positions = np.asarray(positions_px, np.float32)
        self.shape = self.object.shape
        self.weights = weights
        self.mask = None if mask is None else np.asarray(mask, np.float64)
        self.transfer = transfer
        self.subpixel = bool(subpixel)
        self.batch = int(batch)

    def _intensities(self, obj, positions):
        from adptycho.physics.forward import forward_intensities

        return forward_intensities((tf.math.real(obj), tf.math.imag(obj)), self.probe,
                                   positions, self.transfer, subpixel=self.subpixel)

    def _one(self, v):
        obj = tf.constant(self.object, tf.complex64)
        vt = tf.constant(v, tf.complex64)
        out = np.zeros(self.shape, np.complex128)
        for start in range(0, len(self.positions), self.batch):
            pos = tf.constant(self.positions[start:start + self.batch])
            intensity = self._intensities(obj, pos).numpy().astype(np.float64)
            jv = 0.5 * (self._intensities(obj + vt, pos)
                        - self._intensities(obj - vt, pos)).numpy().astype(np.float64)
            y = self.weights(intensity) / (4.0 * np.maximum(intensity, _FLOOR)) * jv
            if self.mask is not None:
                y = y * self.mask
            parts = [tf.constant(self.object.real, tf.float32),
                     tf.constant(self.object.imag, tf.float32)]
            with tf.GradientTape() as tape:
                tape.watch(parts)
                predicted = self._intensities(tf.complex(*parts), pos)
                inner = tf.reduce_sum(predicted * tf.constant(y, tf.float32))
            g_real, g_imag = tape.gradient(inner, parts)
            out += g_real.numpy() + 1j * g_imag.numpy()
        return out

    def matvec(self, v):
        """``F v`` for (S, Y, X) complex perturbations."""
        v = np.asarray(v, np.complex128)
        return np.stack([self._one(x) for x in v])

    def diagonal_blocks(self):
        """(Y, X, 2, 2) isotropic approximation of the diagonal blocks (a preconditioner):
        ``1/2 sum_j sum_m |P_m(r)|^2 mean_k(c_jk)``, exact in trace for far field."""
        from adptycho.geometry.grids import illumination_map

        obj = tf.constant(self.object, tf.complex64)
        probe = self.probe.numpy()
        out = np.zeros(self.shape)
        for start in range(0, len(self.positions), self.batch):
            pos = self.positions[start:start + self.batch]
            intensity = self._intensities(obj, tf.constant(pos)).numpy().astype(np.float64)
            c = self.weights(intensity)
            if self.mask is not None:
                c = c * self.mask
            for j, corner in enumerate(pos):
                out += 0.5 * c[j].mean() * illumination_map(corner[None], probe, self.shape)
        return out[..., None, None] * np.eye(2)

    def illumination(self):
        from adptycho.geometry.grids import illumination_map

        return illumination_map(self.positions, self.probe.numpy(), self.shape)

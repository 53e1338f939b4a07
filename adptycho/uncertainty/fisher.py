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

Far field, one probe mode (integer or sub-pixel positions): analytic products and exact diagonal
blocks (``far_field.FarFieldFisher``).

General case (``AutodiffFisher``: modes, near field): the intensities are a
quadratic form of the object, so ``J v = (I(O + v) - I(O - v)) / 2`` exactly, and ``J^T y`` is a
``tf.GradientTape`` gradient of the forward model (``physics.forward.forward_intensities``).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError

__all__ = ["NOISE_MODELS", "fisher_weights", "fisher_c", "estimator_c", "pattern_slopes",
           "residual_curvature", "AutodiffFisher"]

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


_TABLE_RATE = 30.0  # photons: exact sums below, the asymptotic series above


@functools.lru_cache(maxsize=1)
def _sqrt_poisson_table(points: int = 8193):
    """``(root, mean_ratio, var_ratio)``: on a grid of ``root = sqrt(rate)`` in [0, sqrt(30)],
    the exact ``E sqrt(X) / sqrt(rate)`` and ``Var sqrt(X) / rate`` for X ~ Poisson(rate) (sums
    over k < 120; smooth in ``root``, limits 0 and 1 at rate 0; built once per process, on
    first use)."""
    from scipy.special import gammaln, xlogy

    root = np.linspace(0.0, np.sqrt(_TABLE_RATE), points)
    rate = root[None] ** 2
    k = np.arange(120.0)[:, None]
    pmf = np.exp(xlogy(k, rate) - rate - gammaln(k + 1))
    m1 = np.sum(pmf * np.sqrt(k), axis=0)
    var = np.sum(pmf * k, axis=0) - m1 ** 2
    mean_ratio = np.divide(m1, root, out=np.zeros_like(m1), where=root > 0)
    var_ratio = np.divide(var, root ** 2, out=np.ones_like(var), where=root > 0)
    return root, mean_ratio, var_ratio


def _sqrt_poisson_ratio(rate, which: str):
    """``E sqrt(X) / sqrt(rate)`` (``which="mean"``) or ``Var sqrt(X) / rate`` (``"var"``) for
    X ~ Poisson(rate) > 0: below 30 photons the exact sums, interpolated linearly on a fine grid
    of sqrt(rate) (``_sqrt_poisson_table``; relative error below 1e-6, checked in
    ``tests/test_uncertainty.py``), the asymptotic series above."""
    rate = np.asarray(rate, np.float64)
    if which == "mean":
        out = 1 - 1 / (8 * rate) - 7 / (128 * rate ** 2)
    else:
        out = (0.25 + 3 / (32 * rate)) / rate
    low = rate < _TABLE_RATE
    if np.any(low):
        root_table, mean_ratio, var_ratio = _sqrt_poisson_table()
        table = mean_ratio if which == "mean" else var_ratio
        # direct indexing on the uniform grid (np.interp bisects)
        position = np.sqrt(rate[low]) * ((len(root_table) - 1) / root_table[-1])
        index = np.minimum(position.astype(np.intp), len(root_table) - 2)
        frac = position - index
        out[low] = table[index] + (table[index + 1] - table[index]) * frac
    return out


def _sqrt_poisson_moments(rate):
    """``(E sqrt(X), Var sqrt(X))`` for X ~ Poisson(rate > 0) (``_sqrt_poisson_ratio``)."""
    rate = np.asarray(rate, np.float64)
    return (np.sqrt(rate) * _sqrt_poisson_ratio(rate, "mean"),
            rate * _sqrt_poisson_ratio(rate, "var"))


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
            return 2.0 * _sqrt_poisson_ratio(intensity, "mean")

        def c_b(intensity):
            intensity = np.maximum(np.asarray(intensity, np.float64), _FLOOR)
            return 4.0 * intensity * _sqrt_poisson_ratio(intensity, "var")
        return c_a, c_b
    weights = fisher_c(loss, readout_noise)
    return weights, weights


def pattern_slopes(loss: str, counts, predicted, readout_noise=1.0, valid=None):
    """(B,) float64 per-pattern means of the loss's derivative ``l'`` over the detector pixels
    (``valid``: optional (H, W) 0/1 mask in the arrays' order; masked pixels count as 0),
    clipped at 0: the pattern weights of ``residual_curvature``."""
    from adptycho.losses import get_pixel_loss

    slope = get_pixel_loss(loss).gradient(tf.constant(counts, tf.float32),
                                          tf.constant(predicted, tf.float32), readout_noise)
    slope = slope.numpy().astype(np.float64)
    if valid is not None:
        slope = slope * valid
    return np.maximum(np.mean(slope, axis=(-2, -1)), 0.0)


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

    (far field, with the sub-pixel-shifted probes of the forward model; near field: the same
    expression, an approximation). Each pattern's mean is clipped at 0 so that the term is
    positive semi-definite.

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
    from adptycho.physics.forward import forward_intensities, shifted_probes
    from adptycho.uncertainty.far_field import corners_and_fractions

    obj = np.asarray(object_)
    parts = (tf.constant(obj.real, tf.float32), tf.constant(obj.imag, tf.float32))
    probe = np.asarray(probe, np.complex64)
    probe = probe[None] if probe.ndim == 2 else probe
    positions = np.asarray(positions_px, np.float32)
    valid = None if mask is None else np.asarray(mask, np.float64)
    out = np.zeros(obj.shape)
    h, w = probe.shape[-2:]
    corners, fractions = corners_and_fractions(positions if subpixel else np.round(positions))
    for start in range(0, len(positions), batch):
        idx = np.arange(start, min(start + batch, len(positions)))
        predicted = forward_intensities(parts, tf.constant(probe), tf.constant(positions[idx]),
                                        transfer, subpixel=subpixel)
        means = pattern_slopes(loss, read_counts(idx), predicted, readout_noise, valid)
        probes = shifted_probes(probe, None if fractions is None else fractions[idx])
        intensity = np.broadcast_to(np.sum(np.abs(probes.numpy()) ** 2, axis=1),
                                    (len(idx), h, w))  # (B, H, W) over the modes
        for j, mean, window in zip(idx, means, intensity):
            cy, cx = corners[j]
            out[cy:cy + h, cx:cx + w] += 2.0 * mean * window
    return out


class AutodiffFisher:
    """Fisher-vector products of any pixel-object forward model, by TensorFlow autodiff.

    ``J v = (I(O + v) - I(O - v)) / 2`` (exact: I is quadratic in O) and ``J^T y`` from a
    ``tf.GradientTape`` of ``physics.forward.forward_intensities``.

    Args:
        object_: (Y, X) complex object; probe: (M, H, W) complex; positions_px: (N, 2) corners.
        transfer: None (far field) or the (H, W) near-field transfer function.
        subpixel: Fourier sub-pixel shifts of the probe (fractional positions).
        weights, mask, batch: as ``far_field.FarFieldFisher``.
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

    def sample_rhs(self, count: int, rng):
        """(S, Y, X) complex ``J^T (sqrt(w) e)`` for S draws of real standard-normal detector
        noise e (``far_field.FarFieldFisher.sample_rhs``; ``w = c / 4I``, so
        ``F = J^T diag(w) J``)."""
        out = np.zeros((count,) + self.shape, np.complex128)
        parts = [tf.constant(self.object.real, tf.float32),
                 tf.constant(self.object.imag, tf.float32)]
        for start in range(0, len(self.positions), self.batch):
            pos = tf.constant(self.positions[start:start + self.batch])
            with tf.GradientTape(persistent=True) as tape:  # one forward, a backward per draw
                tape.watch(parts)
                predicted = self._intensities(tf.complex(*parts), pos)
            intensity = predicted.numpy().astype(np.float64)
            scale = np.sqrt(np.maximum(self.weights(intensity), 0.0)
                            / (4.0 * np.maximum(intensity, _FLOOR)))
            if self.mask is not None:
                scale = scale * self.mask
            for s in range(count):
                noise = tf.constant(scale * rng.standard_normal(intensity.shape), tf.float32)
                g_real, g_imag = tape.gradient(predicted, parts, output_gradients=noise)
                out[s] += g_real.numpy() + 1j * g_imag.numpy()
            del tape
        return out

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

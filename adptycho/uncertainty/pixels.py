"""Per-pixel standard deviations of a pixel object from its Fisher information.

The covariance of the (gauge-fixed) maximum-likelihood object is the pseudo-inverse of the
Fisher information F (``fisher.py``) on the determined pixels; of the minimiser of another loss
it is the sandwich ``H^-1 B H^-1`` (``H`` the loss's expected Hessian, ``B`` the variance of its
gradient). Its per-pixel 2x2 diagonal blocks are estimated from S random vectors, each needing
one preconditioned conjugate-gradient solve (``PixelSettings.preconditioner``: ``fourier``, the
probe intensity and the mean detector weight of the far-field operator,
``preconditioners.FourierPreconditioner``; ``block``, block-Jacobi with the exact diagonal
blocks of H, which the general operator always uses), with one of two estimators
(``PixelSettings.estimator``):

* ``sampling`` (default): draws of the linearised estimator's error. With ``B = K^T K``
  (``K``: the weighted Jacobian of the detector intensities, ``far_field.FarFieldFisher``), a draw
  of real standard-normal detector noise e gives ``x = H^-1 K^T e``, whose covariance is
  ``H^-1 B H^-1`` exactly: the block of pixel p is the mean of ``x_p x_p^T``. One solve per draw
  (the sandwich needs no second solve) and the right-hand side lies in the range of B, so the
  solve converges in fewer iterations than a random +-1 vector needs (measured in
  ``experiments/uncertainty``);
* ``hutchinson``: random +-1 probes z (independent real and imaginary parts),
  ``E[(C z)_p z_p^T] = C_pp``, with ``C z`` from one solve (two for the sandwich).

The random error of either estimate is reduced by smoothing its ratio to the diagonal-only bound
``(F_pp)^-1`` (which varies with the probe intensity pixel by pixel, while the ratio, the
inflation due to the coupling of neighbouring pixels, varies slowly) over ``smoothing_px``.
An optional diagonal ``ridge`` (the residual curvature of the loss at the fit,
``fisher.residual_curvature``) is added to H, projected off the gauge directions.

Gauges (directions of F's null space; ``gauge_vectors``):

* global phase ``i O`` (always);
* with a refined probe also the phase ramps ``i y O``, ``i x O`` and the scale ``O`` (traded
  with the probe).

A gauge is fixed the way a comparison with a reference fixes it: the estimate is aligned by
least squares over the ``reference`` pixels (``analysis.metrics.global_factor``); the
covariance of the aligned estimate is ``Q C Q^T`` with ``Q = I - V (U^T V)^-1 U^T``, ``V`` the
gauge vectors and ``U`` the same restricted to the reference region. Pixels whose summed probe
intensity is below ``undetermined_below`` of the maximum are undetermined (NaN).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from adptycho.errors import AdptychoError
from adptycho.uncertainty.preconditioners import PRECONDITIONERS, FourierPreconditioner

__all__ = ["PixelSettings", "PRESETS", "ESTIMATORS", "pixel_settings", "gauge_vectors",
           "block_inverse", "pcg", "pixel_covariance_blocks", "amplitude_phase_std"]


@dataclasses.dataclass
class PixelSettings:
    """Settings of the Fisher estimate (stored as attributes of the result file).

    Attributes:
        estimator: ``sampling`` (draws of the estimator's error, one solve each) or
            ``hutchinson`` (random +-1 probes); module docstring.
        probes: random vectors (draws or Hutchinson probes).
        smoothing_px: Gaussian sigma (object pixels) of the smoothing of the Hutchinson /
            diagonal-bound ratio; 0 uses the raw Hutchinson estimate.
        tolerance: relative residual at which the conjugate-gradient solves stop.
        max_iterations: cap on the conjugate-gradient iterations.
        undetermined_below: pixels with a summed probe intensity below this fraction of the
            maximum are reported as NaN.
        reference_above: pixels above this fraction of the maximum summed probe intensity form
            the reference region on which the gauges (global phase, ramps) are fixed.
        seed: seed of the probe vectors.
        residual_curvature: ``covariance="estimator"``: add the diagonal of the residual term
            of the loss Hessian at the fit (``fisher.residual_curvature``; without it the maps
            are too wide at low dose).
        single_precision: far-field operator products in complex64 (``FarFieldFisher``'s
            ``single``; the conjugate-gradient vectors stay complex128). The default: the maps
            agree with complex128 products to three digits (``experiments/uncertainty``).
        preconditioner: ``fourier`` (far-field operators; others fall back to ``block``) or
            ``block`` (block-Jacobi); ``preconditioners.py``.
    """

    estimator: str = "sampling"
    probes: int = 8
    smoothing_px: float = 2.0
    tolerance: float = 1e-3
    max_iterations: int = 300
    undetermined_below: float = 0.02
    reference_above: float = 0.5
    seed: int = 0
    residual_curvature: bool = True
    single_precision: bool = True
    preconditioner: str = "fourier"


ESTIMATORS = ("sampling", "hutchinson")

#: Named settings (``object_uncertainty(..., settings={"preset": NAME, ...})``). ``fast`` (for
#: large objects): one draw, CG tolerance 1e-2, the ratio smoothed over 4 px, complex64
#: products. Its accuracy against a 32-probe, tolerance-1e-5 reference map, its calibration and
#: its cost on a 512x512 object are measured in ``experiments/uncertainty`` (README there:
#: ``accuracy_cost.json``, ``results.json``, ``cost.json``).
PRESETS = {"default": {},
           "fast": {"probes": 1, "tolerance": 1e-2, "smoothing_px": 4.0,
                    "single_precision": True}}


def pixel_settings(settings=None):
    """``(PixelSettings, preset name)`` from a dict of ``PixelSettings`` fields and an optional
    ``preset`` (a ``PRESETS`` name whose values the other fields override)."""
    settings = dict(settings or {})
    preset = settings.pop("preset", "default")
    if preset not in PRESETS:
        raise AdptychoError(f"unknown fisher preset {preset!r}; choose one of "
                            f"{', '.join(PRESETS)}")
    try:
        options = PixelSettings(**{**PRESETS[preset], **settings})
    except TypeError as exc:
        raise AdptychoError(f"bad fisher settings: {exc}") from None
    if options.estimator not in ESTIMATORS:
        raise AdptychoError(f"unknown estimator {options.estimator!r}; choose one of "
                            f"{', '.join(ESTIMATORS)}")
    if options.preconditioner not in PRECONDITIONERS:
        raise AdptychoError(f"unknown preconditioner {options.preconditioner!r}; choose one of "
                            f"{', '.join(PRECONDITIONERS)}")
    return options, preset


def gauge_vectors(object_, determined, blind: bool):
    """(G, Y, X) complex null directions of F on the ``determined`` pixels (module docstring)."""
    obj = np.where(determined, np.asarray(object_, np.complex128), 0)
    vectors = [1j * obj]
    if blind:
        yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in obj.shape), indexing="ij")
        yy = (yy - yy[determined].mean()) / obj.shape[0]
        xx = (xx - xx[determined].mean()) / obj.shape[1]
        vectors += [1j * yy * obj, 1j * xx * obj, obj]
    return np.stack(vectors)


def _flat(v):
    """(..., 2 Y X) float64 view of (..., Y, X) complex128 arrays: real and imaginary parts."""
    v = np.ascontiguousarray(v, np.complex128)
    return v.view(np.float64).reshape(v.shape[:-2] + (-1,))


def _inner(a, b):
    """(S,) real inner products ``Re sum conj(a) b`` over the last two axes (same shapes)."""
    a, b = _flat(a), _flat(b)
    return (a[..., None, :] @ b[..., :, None])[..., 0, 0]  # BLAS dot products


def _coefficients(basis, v):
    """(S, G) real inner products of the (S, Y, X) vectors ``v`` with the (G, Y, X) ``basis``."""
    return _flat(v) @ _flat(basis).T


def _combine(coeff, basis):
    """(S, Y, X) ``sum_g coeff[s, g] basis[g]`` for (S, G) real ``coeff``."""
    return (coeff @ _flat(basis)).view(np.complex128).reshape((len(coeff),) + basis.shape[1:])


def block_inverse(blocks, determined):
    """(Y, X, 2, 2) inverses of the diagonal blocks (identity where undetermined)."""
    blocks = np.array(blocks, np.float64)
    blocks[~determined] = np.eye(2)
    det = blocks[..., 0, 0] * blocks[..., 1, 1] - blocks[..., 0, 1] ** 2
    scale = np.maximum(blocks[..., 0, 0] + blocks[..., 1, 1], 1e-300)
    det = np.maximum(det, 1e-12 * scale ** 2)
    inverse = np.empty_like(blocks)
    inverse[..., 0, 0] = blocks[..., 1, 1] / det
    inverse[..., 1, 1] = blocks[..., 0, 0] / det
    inverse[..., 0, 1] = inverse[..., 1, 0] = -blocks[..., 0, 1] / det
    return inverse


def _apply_blocks(blocks, v):
    """(S, Y, X) complex ``v`` times the per-pixel (2, 2) real ``blocks``."""
    re, im = v.real, v.imag
    return (blocks[..., 0, 0] * re + blocks[..., 0, 1] * im) + 1j * (
        blocks[..., 1, 0] * re + blocks[..., 1, 1] * im)


def pcg(matvec, rhs, preconditioner, tolerance=1e-4, max_iterations=300):
    """Preconditioned conjugate gradients on S right-hand sides at once.

    Args:
        matvec: (S, Y, X) complex -> (S, Y, X) complex, symmetric positive definite.
        rhs: (S, Y, X) complex.
        preconditioner: same signature, approximating the inverse.

    Returns:
        ``(x, iterations, relative_residual)``.
    """
    x = np.zeros_like(rhs)
    r = rhs.copy()
    z = preconditioner(r)
    p = z.copy()
    rz = _inner(r, z)
    norm0 = np.sqrt(_inner(rhs, rhs))
    relative = np.ones(len(rhs))
    for iteration in range(1, max_iterations + 1):
        q = matvec(p)
        alpha = rz / np.maximum(_inner(p, q), 1e-300)
        x += alpha[:, None, None] * p
        r -= alpha[:, None, None] * q
        relative = np.sqrt(_inner(r, r)) / np.maximum(norm0, 1e-300)
        if relative.max() < tolerance:
            return x, iteration, float(relative.max())
        z = preconditioner(r)
        rz_new = _inner(r, z)
        p = z + (rz_new / np.maximum(rz, 1e-300))[:, None, None] * p
        rz = rz_new
    return x, max_iterations, float(relative.max())


def _orthonormal_basis(vectors):
    """(G, Y, X) complex orthonormal basis (real inner product of the real and imaginary parts)
    of the span of the (G, Y, X) ``vectors``."""
    shape = vectors.shape[1:]
    basis, _ = np.linalg.qr(np.stack([np.concatenate([g.real.ravel(), g.imag.ravel()])
                                      for g in vectors], axis=1))
    n = int(np.prod(shape))
    return (basis[:n] + 1j * basis[n:]).T.reshape((-1,) + tuple(shape))


def _hutchinson_blocks(z, cz):
    """(Y, X, 2, 2) symmetrised per-pixel blocks ``mean_s [Re, Im](C z_s) x [Re, Im](z_s)`` of
    the (S, Y, X) random probes ``z`` and their images ``cz`` under the covariance C."""
    blocks = np.empty(z.shape[1:] + (2, 2))
    for a, za in enumerate((z.real, z.imag)):
        blocks[..., 0, a] = np.mean(cz.real * za, axis=0)
        blocks[..., 1, a] = np.mean(cz.imag * za, axis=0)
    return 0.5 * (blocks + np.swapaxes(blocks, -1, -2))


class _Alignment:
    """``Q = I - V (U^T V)^-1 U^T``: the estimate with its gauges fitted by least squares on the
    reference region (``V``: (G, Y, X) gauge vectors, ``U``: the same on the reference pixels)."""

    def __init__(self, gauges, reference):
        self.v, self.u = gauges, gauges * reference
        self.gram_inv = np.linalg.pinv(np.array([[_inner(a, b) for b in self.v]
                                                 for a in self.u]))  # (U^T V)^-1

    @staticmethod
    def _project(x, left, right):  # x - left right^T x
        return x - _combine(_coefficients(right, x), left)

    def apply(self, x):
        """``Q x`` for (S, Y, X) complex x."""
        return self._project(x, np.einsum("gh,gyx->hyx", self.gram_inv, self.v), self.u)

    def transpose(self, x):
        """``Q^T x`` for (S, Y, X) complex x."""
        return self._project(x, np.einsum("gh,hyx->gyx", self.gram_inv, self.u), self.v)


def _sample_blocks(x):
    """(Y, X, 2, 2) per-pixel ``mean_s [Re, Im](x_s) [Re, Im](x_s)^T`` of (S, Y, X) draws."""
    parts = (x.real, x.imag)
    blocks = np.empty(x.shape[1:] + (2, 2))
    for a in range(2):
        for b in range(2):
            blocks[..., a, b] = np.mean(parts[a] * parts[b], axis=0)
    return blocks


def pixel_covariance_blocks(fisher, object_, settings: PixelSettings, blind: bool = False,
                            score=None, ridge=None):
    """Per-pixel 2x2 covariance blocks of the gauge-fixed estimate (module docstring).

    Args:
        fisher: a ``FarFieldFisher`` or ``AutodiffFisher``: the Fisher information, or with
            ``score`` the expected Hessian A of the loss.
        score: optional operator of the same kind for the variance B of the loss gradient: the
            covariance is then the sandwich ``A^-1 B A^-1`` (``fisher.estimator_c``).
        object_: (Y, X) complex estimate (where F is evaluated; defines the gauge vectors).
        settings: ``PixelSettings``.
        blind: the probe was refined (ramps and scale are gauges too).
        ridge: optional (Y, X) diagonal added to ``fisher`` (``fisher.residual_curvature``),
            projected off the gauge directions so that they stay null.

    Returns:
        ``(blocks, bound, determined, reference, info)``: (Y, X, 2, 2) estimated covariance
        blocks, (Y, X, 2, 2) diagonal-only bound ``F_pp^-1``, (Y, X) bool masks and a dict of
        solver figures (iterations, residual).
    """
    illumination = fisher.illumination()
    peak = illumination.max()
    if not peak > 0:
        raise AdptychoError("the probe carries no intensity: nothing is determined")
    determined = illumination >= settings.undetermined_below * peak
    reference = illumination >= settings.reference_above * peak
    diagonal = fisher.diagonal_blocks()
    if ridge is not None:
        diagonal = diagonal + np.asarray(ridge)[..., None, None] * np.eye(2)
    precondition = block_inverse(diagonal, determined)
    bound = precondition
    if score is not None:
        bound = precondition @ score.diagonal_blocks() @ precondition
    gauges = gauge_vectors(object_, determined, blind)
    norms = np.sqrt(_inner(gauges, gauges))
    gauges = gauges / np.maximum(norms, 1e-300)[:, None, None]
    basis = _orthonormal_basis(gauges)
    kappa = float(np.median(np.trace(diagonal[determined], axis1=-2, axis2=-1)))

    def off_gauges(v):
        return v - _combine(_coefficients(basis, v), basis)

    def matvec(v):
        v = np.where(determined, v, 0)
        out = np.where(determined, fisher.matvec(v), v)
        if ridge is not None:
            out = out + off_gauges(np.where(determined, ridge, 0) * off_gauges(v))
        return out + kappa * _combine(_coefficients(basis, v), basis)

    fourier = settings.preconditioner == "fourier" and hasattr(fisher, "mean_detector_weight")
    if fourier:
        preconditioner = FourierPreconditioner(illumination, fisher.mean_detector_weight(),
                                               determined, ridge)
    else:
        def preconditioner(v):
            return _apply_blocks(precondition, v)

    def solve(rhs):
        return pcg(matvec, rhs, preconditioner, settings.tolerance, settings.max_iterations)

    rng = np.random.default_rng(settings.seed)
    align = _Alignment(gauges, reference)  # the covariance of the aligned estimate: Q C Q^T
    if settings.estimator == "sampling":
        draws = (score if score is not None else fisher).sample_rhs(settings.probes, rng)
        solution, iterations, residual = solve(off_gauges(np.where(determined, draws, 0)))
        blocks = _sample_blocks(align.apply(solution))  # draws of Q x
    else:
        shape = (settings.probes,) + object_.shape
        z = (rng.choice([-1.0, 1.0], shape) + 1j * rng.choice([-1.0, 1.0], shape)) * determined
        solution, iterations, residual = solve(align.transpose(z))
        if score is not None:
            middle = score.matvec(np.where(determined, solution, 0))
            solution, more, residual = solve(np.where(determined, middle, 0))
            iterations += more
        blocks = _hutchinson_blocks(z, align.apply(solution))  # Q C Q^T z
    info = {"cg_iterations": int(iterations), "cg_relative_residual": residual,
            "preconditioner": "fourier" if fourier else "block",
            "determined_pixels": int(determined.sum()), "reference_pixels": int(reference.sum())}
    return blocks, bound, determined, reference, info


def _directional(blocks, direction):
    """(Y, X) ``d^T B d`` for per-pixel unit real 2-vectors ``direction`` (Y, X, 2)."""
    d0, d1 = direction[..., 0], direction[..., 1]
    return d0 * d0 * blocks[..., 0, 0] + d0 * d1 * (blocks[..., 0, 1] + blocks[..., 1, 0]) \
        + d1 * d1 * blocks[..., 1, 1]


def _smooth(values, determined, sigma):
    if sigma <= 0:
        return values
    weight = ndimage.gaussian_filter(determined.astype(np.float64), sigma)
    filled = ndimage.gaussian_filter(np.where(determined, values, 0.0), sigma)
    return filled / np.maximum(weight, 1e-12)


def amplitude_phase_std(object_, blocks, bound, determined, smoothing_px: float):
    """(Y, X) float64 std of |O| and of arg O (radians) from 2x2 covariance blocks.

    With ``smoothing_px > 0`` the ratio of the Hutchinson variance to the diagonal bound is
    smoothed before it multiplies the bound (module docstring). NaN where undetermined.
    """
    obj = np.asarray(object_, np.complex128)
    amplitude = np.abs(obj)
    unit = np.where(amplitude > 0, obj / np.maximum(amplitude, 1e-300), 1.0)
    along = np.stack([unit.real, unit.imag], axis=-1)  # d|O|: along O
    across = np.stack([-unit.imag, unit.real], axis=-1)  # d arg O: across O, / |O|
    out = []
    for direction, scale in ((along, 1.0), (across, 1.0 / np.maximum(amplitude, 1e-12) ** 2)):
        variance = _directional(blocks, direction)
        if smoothing_px > 0:
            base = _directional(bound, direction)
            ratio = _smooth(variance / np.maximum(base, 1e-300), determined, smoothing_px)
            variance = ratio * base
        std = np.sqrt(np.maximum(variance * scale, 0.0))
        out.append(np.where(determined, std, np.nan))
    return out[0], out[1]

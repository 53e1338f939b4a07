"""Object NRMSE with the gauges of blind ptychography removed (independent of adptycho.analysis).

``nrmse(estimate, truth, mask, offset)``:

1. Placement: the estimate is read on the truth grid, ``estimate[r + offset]`` for truth pixel
   ``r`` (``offset`` = where truth pixel (0, 0) lies on the estimate's grid, as each tool's
   geometry says; integer part by indexing, zeros outside the estimate, fractional part left to
   step 2).
2. Gauges: a sub-pixel shift ``s`` (Fourier shift), a linear phase ramp ``exp(i 2 pi k . r)`` and
   a global complex factor ``a`` (phase and scale). ``a`` has a closed form (least squares on the
   mask); ``s`` and ``k`` are found by a coarse search (shift: peak of the complex
   cross-correlation of the masked fields, |s| <= 12 px; ramp: peak of the 4x zero-padded
   spectrum of ``estimate * conj(truth)`` on the mask, alternated twice) and then a local
   Nelder-Mead minimisation of the residual over (s, k).
3. Far field only (``score(..., allow_twin=True)``): the same on the twin ``conj(O(c - x))``
   (the estimate point-reflected about the mask centre and conjugated), which with the probe
   ``conj(P(-r))`` gives exactly the same far-field patterns at the same positions (an exact
   ambiguity of blind far-field ptychography); the smaller NRMSE is kept and flagged.
4. ``NRMSE = sqrt( sum_mask |a g - t|^2 / sum_mask |t|^2 )`` with ``g`` the shifted, de-ramped
   estimate; equivalently ``sqrt(1 - |<g, t>|^2 / (|g|^2 |t|^2))`` on the mask. 0 is perfect;
   an estimate uncorrelated with the truth gives 1.

Mask rule (made by ``cases.py`` from the truth, one per case): the summed probe intensity at the
true positions, smoothed by a 3 px Gaussian, at least 0.3 x its maximum, eroded by 4 px.

``python experiments/robustness/metric.py`` runs ``self_check()`` (gauges applied to a truth
are removed to < 1e-3; a noisy copy scores its noise level; a wrong picture scores ~ 1), and,
when adptycho is importable, prints ``adptycho.analysis.metrics.nrmse`` on the same pair for
comparison (not used by the suite).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


def place(estimate, shape, offset):
    """``estimate[r + round(offset)]`` on a grid of ``shape`` (zeros where it has no pixel);
    returns (placed, leftover fractional offset)."""
    offset = np.asarray(offset, np.float64)
    whole = np.round(offset).astype(int)
    out = np.zeros(shape, np.complex128)
    h, w = estimate.shape
    y0, x0 = whole
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(shape[0], h - y0), min(shape[1], w - x0)
    if ye > ys and xe > xs:
        out[ys:ye, xs:xe] = estimate[ys + y0:ye + y0, xs + x0:xe + x0]
    return out, offset - whole


def _shift(field_ft, s, ky, kx):
    """field(r + s) from its FFT (moves the estimate by -s)."""
    return np.fft.ifft2(field_ft * np.exp(2j * np.pi * (ky * s[0] + kx * s[1])))


def _residual(g, t, w, tt):
    inner = np.sum(w * np.conj(g) * t)
    gg = np.sum(w * np.abs(g) ** 2)
    if gg <= 0:
        return 1.0
    return max(0.0, 1.0 - abs(inner) ** 2 / (gg * tt))


def _coarse_shift(g, t, w, limit=12):
    a = np.fft.fft2(g * w)
    b = np.fft.fft2(t * w)
    cc = np.abs(np.fft.ifft2(a * np.conj(b)))  # peak at the shift of g relative to t
    h, wd = cc.shape
    dy = np.fft.fftfreq(h) * h
    dx = np.fft.fftfreq(wd) * wd
    cc[np.abs(dy) > limit, :] = 0
    cc[:, np.abs(dx) > limit] = 0
    iy, ix = np.unravel_index(np.argmax(cc), cc.shape)
    return np.array([dy[iy], dx[ix]])


def _coarse_ramp(g, t, w, pad=4):
    q = g * np.conj(t) * w
    h, wd = q.shape
    spec = np.abs(np.fft.fft2(q, s=(pad * h, pad * wd)))
    iy, ix = np.unravel_index(np.argmax(spec), spec.shape)
    fy = np.fft.fftfreq(pad * h)[iy]
    fx = np.fft.fftfreq(pad * wd)[ix]
    return np.array([fy, fx])  # cycles / px of the ramp carried by g


def remove_gauges(estimate, truth, mask, offset=(0.0, 0.0)):
    """Returns (nrmse, aligned estimate a*g on the truth grid, gauges dict)."""
    truth = np.asarray(truth, np.complex128)
    w = np.asarray(mask, np.float64)
    g0, frac = place(np.asarray(estimate, np.complex128), truth.shape, offset)
    if not np.any(np.abs(g0) * w > 0):
        return 1.0, np.zeros_like(truth), {"note": "estimate does not cover the mask"}
    h, wd = truth.shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.fftfreq(wd)[None, :]
    yy, xx = np.mgrid[:h, :wd].astype(np.float64)
    g_ft = np.fft.fft2(g0)
    tt = float(np.sum(w * np.abs(truth) ** 2))

    def apply(p):
        # de-ramp first, then shift: a ramped field is not periodic on the grid, so a Fourier
        # shift of it would ring; (ramp, shift) and (shift, ramp) differ by a constant phase only
        deramped = g0 * np.exp(-2j * np.pi * (p[2] * yy + p[3] * xx))
        return _shift(np.fft.fft2(deramped), p[:2], ky, kx)

    shift = np.asarray(frac, np.float64)
    ramp = np.zeros(2)
    for _ in range(2):
        ramp = _coarse_ramp(_shift(g_ft, shift, ky, kx), truth, w)
        deramped = g0 * np.exp(-2j * np.pi * (ramp[0] * yy + ramp[1] * xx))
        shift = _coarse_shift(deramped, truth, w)
    candidates = [np.r_[shift, ramp], np.r_[frac, 0.0, 0.0], np.r_[frac, ramp]]
    best = min(candidates, key=lambda p: _residual(apply(p), truth, w, tt))
    # local refinement; ramp in units of 1e-2 cycles/px for a balanced simplex
    scale = np.array([1.0, 1.0, 1e-2, 1e-2])
    fun = lambda z: _residual(apply(z * scale), truth, w, tt)  # noqa: E731
    z0 = best / scale
    res = minimize(fun, z0, method="Nelder-Mead",
                   options=dict(xatol=1e-3, fatol=1e-10, maxiter=600,
                                initial_simplex=np.vstack([z0] + [z0 + 0.5 * np.eye(4)[i]
                                                                   for i in range(4)])))
    p = res.x * scale if res.fun < fun(z0) else best
    g = apply(p)
    inner = np.sum(w * np.conj(g) * truth)
    gg = np.sum(w * np.abs(g) ** 2)
    factor = inner / gg if gg > 0 else 0.0
    aligned = factor * g
    err = float(np.sqrt(np.sum(w * np.abs(aligned - truth) ** 2) / tt))
    gauges = {"shift_px": [float(v) for v in p[:2]],
              "ramp_cycles_per_px": [float(v) for v in p[2:]],
              "factor_abs": float(abs(factor)), "factor_phase": float(np.angle(factor))}
    return err, aligned, gauges


def twin(estimate, truth_shape, mask, offset=(0.0, 0.0)):
    """The far-field twin ``conj(O(c - x))`` of the placed estimate, reflected about the centre of
    the mask (so that it lands on the scanned region; the remaining shift is a gauge)."""
    placed, _ = place(np.asarray(estimate, np.complex128), truth_shape, offset)
    ys, xs = np.nonzero(mask)
    centre2 = np.round([ys.min() + ys.max(), xs.min() + xs.max()]).astype(int)  # 2 x centre
    h, w = truth_shape
    flipped = np.flip(placed, (0, 1))  # flipped[i] = placed[h - 1 - i]
    return np.conj(np.roll(flipped, (centre2[0] - (h - 1), centre2[1] - (w - 1)), axis=(0, 1)))


def score(estimate, truth, mask, offset=(0.0, 0.0), allow_twin=False):
    """``remove_gauges``, and for far field (``allow_twin``) also on the twin ``conj(O(c - x))``,
    which gives exactly the same far-field patterns with the probe ``conj(P(-r))`` (an exact
    ambiguity of blind far-field ptychography); the better of the two is returned with
    ``gauges["twin"]`` saying which."""
    err, aligned, gauges = remove_gauges(estimate, truth, mask, offset)
    gauges["twin"] = False
    if allow_twin:
        t_err, t_aligned, t_gauges = remove_gauges(twin(estimate, truth.shape, mask, offset),
                                                   truth, mask)
        gauges["nrmse_direct"] = err
        gauges["nrmse_twin"] = t_err
        if t_err < err:
            t_gauges.update(twin=True, nrmse_direct=err, nrmse_twin=t_err)
            return t_err, t_aligned, t_gauges
    return err, aligned, gauges


def nrmse(estimate, truth, mask, offset=(0.0, 0.0)):
    return remove_gauges(estimate, truth, mask, offset)[0]


def self_check(verbose=True):
    """Gauges applied to a truth are removed; noise and a wrong picture score as expected."""
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cases import CASES_BY_NAME, make_object, simulate  # noqa: F401

    case = CASES_BY_NAME["ff_disc_strongphase_1e6"]
    sim = simulate(case)
    truth, mask = sim["obj"], sim["mask"]
    h, w = truth.shape
    yy, xx = np.mgrid[:h, :w]
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.fftfreq(w)[None, :]
    # shift by (2.3, -1.7) px, ramp (0.013, -0.021) cycles/px, factor 0.7 e^{1.1 i}, on a
    # larger grid placed at offset (5, 7)
    moved = np.fft.ifft2(np.fft.fft2(truth) * np.exp(-2j * np.pi * (ky * 2.3 + kx * -1.7)))
    moved = 0.7 * np.exp(1.1j) * moved * np.exp(2j * np.pi * (0.013 * yy - 0.021 * xx))
    big = np.zeros((h + 12, w + 14), np.complex128)
    big[5:5 + h, 7:7 + w] = moved
    err_gauge, _, gauges = remove_gauges(big, truth, mask, offset=(5, 7))
    rng = np.random.default_rng(0)
    noise = 0.05 * (rng.standard_normal(truth.shape) +
                    1j * rng.standard_normal(truth.shape)) / np.sqrt(2)
    noisy = truth + noise * np.abs(truth)
    err_noise = nrmse(noisy, truth, mask)
    expected_noise = float(np.sqrt(np.sum(mask * np.abs(noise * truth) ** 2) /
                                   np.sum(mask * np.abs(truth) ** 2)))
    twin_est = np.conj(np.flip(big, (0, 1)))
    err_twin, _, twin_gauges = score(twin_est, truth, mask, offset=(-7, -5), allow_twin=True)
    other = make_object(CASES_BY_NAME["ff_zoneplate_neg_1e5"], np.random.default_rng(0))
    err_other = nrmse(other, truth, mask)
    ok = (err_gauge < 1e-3 and abs(err_noise - expected_noise) < 0.01 and err_other > 0.5
          and err_twin < 1e-2 and twin_gauges["twin"])
    if verbose:
        print(f"gauges applied (shift 2.3,-1.7 px; ramp 0.013,-0.021; factor 0.7e^1.1i): "
              f"NRMSE {err_gauge:.2e}, recovered {gauges}")
        print(f"twin (conjugated, point-reflected copy of the above): NRMSE {err_twin:.2e} "
              f"(twin detected: {twin_gauges['twin']}; direct {twin_gauges['nrmse_direct']:.3f})")
        print(f"5% complex noise: NRMSE {err_noise:.4f} (noise level {expected_noise:.4f})")
        print(f"unrelated object: NRMSE {err_other:.3f}")
        try:
            from adptycho.analysis.metrics import nrmse as ad_nrmse

            ad = ad_nrmse(truth, np.fft.ifft2(np.fft.fft2(truth) * np.exp(
                -2j * np.pi * (ky * 2.0 + kx * -1.0))) * 0.7 * np.exp(1.1j), mask=mask,
                registration=True)
            mine = nrmse(np.fft.ifft2(np.fft.fft2(truth) * np.exp(
                -2j * np.pi * (ky * 2.0 + kx * -1.0))) * 0.7 * np.exp(1.1j), truth, mask)
            print(f"comparison, integer shift (2, -1) + factor: this metric {mine:.2e}, "
                  f"adptycho.analysis.metrics.nrmse(registration=True) {ad:.2e}")
        except Exception as exc:  # adptycho absent or API changed: comparison only
            print(f"(adptycho comparison skipped: {exc})")
        print("self-check", "PASSED" if ok else "FAILED")
    return ok


if __name__ == "__main__":
    import sys

    sys.exit(0 if self_check() else 1)

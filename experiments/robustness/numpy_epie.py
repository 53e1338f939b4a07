"""Textbook sequential ePIE in numpy (Maiden & Rodenburg, Ultramicroscopy 109, 1256 (2009)).

Independent of adptycho (imports only ``cases.py`` for the numpy propagators). One epoch visits
every position once in a fresh random order (seeded); for position j with window corner
``R0 + f`` (integer + fraction):

    P_j   = P shifted by f (Fourier sub-pixel shift; skipped for integer corners)
    psi   = P_j * O[R0 + r]
    Psi   = D(psi)                            D: far field (centred, orthonormal) or ASM
    psi'  = D^-1( sqrt(I_j) Psi / |Psi| )     (modulus replacement; all pixels, no mask)
    O    += alpha conj(P_j) / max|P_j|^2 (psi' - psi)
    P_j  += beta conj(O_old) / max|O_old|^2 (psi' - psi)     (probe refinement only)
    P     = P_j shifted back by -f

That is the far-field model of ``cases.py``. In near field the detector sees the lab frame
(probe fixed, object moving), and the update uses the simulator's model exactly: ``psi = P *
O(corner + r)``, the object patch Fourier-interpolated on a patch with an 8 px margin, and the
object correction passed through the adjoint of that interpolation (embedded in the margin
patch and shifted back). The object is held with that margin internally.

Two uses in the robustness suite (``run.py``):

* ``known-probe`` (the ceiling of issue 18): the TRUE probe and the TRUE positions, object only
  (beta = 0), alpha = 1, 60 epochs, object started at 1.
* ``numpy-epie-meanprobe`` (a textbook blind baseline): object and probe (alpha = beta = 1),
  100 epochs, from the NOMINAL positions, object started at 1 and the probe from the mean
  pattern: far field ``D^-1(sqrt(mean I))`` (flat detector phase, centred), near field the
  back-propagated ``sqrt(mean I)``; both therefore carry the right total power.
"""

from __future__ import annotations

import numpy as np

from cases import N_DET, NF_MARGIN, Propagator


def mean_pattern_probe(patterns, geometry):
    amplitude = np.sqrt(np.maximum(patterns.mean(0), 0.0))
    prop = Propagator(geometry)
    if geometry == "farfield":
        return np.fft.fftshift(prop.backward(amplitude))  # centred in the window
    return prop.backward(amplitude)


def _ramps(fractions, n):
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.fftfreq(n)[None, :]
    return np.exp(-2j * np.pi * (ky[None] * fractions[:, 0, None, None] +
                                 kx[None] * fractions[:, 1, None, None]))


def epie(patterns, corners, probe, object_shape, geometry, epochs=60, alpha=1.0, beta=0.0,
         seed=0, obj=None, callback=None):
    """Sequential ePIE. Returns (object, probe, per-epoch relative amplitude residual).

    Args:
        patterns: (N, H, W) measured intensities (counts).
        corners: (N, 2) float (row, col) window corners on the object grid (must fit it).
        probe: (H, W) initial / known probe.
        object_shape: (Y, X).
        geometry: "farfield" or "nearfield".
        beta: probe step (0: probe fixed).
    """
    rng = np.random.default_rng(seed)
    prop = Propagator(geometry)
    near = geometry == "nearfield"
    m = NF_MARGIN if near else 0  # the object is held with this margin (near field)
    corners = np.asarray(corners, np.float64)
    base = np.floor(corners).astype(int)
    if base.min() < 0 or np.any(base.max(0) + N_DET > np.asarray(object_shape)):
        raise ValueError("a probe window falls outside the object grid")
    frac = corners - base
    subpixel = np.any(frac != 0, axis=1)
    # far field: probe shifted by +f in the window; near field: object patch (with margin)
    # interpolated at +f, i.e. shifted by -f
    ramps = _ramps(frac, N_DET) if not near else _ramps(-frac, N_DET + 2 * m)
    amplitudes = np.sqrt(np.maximum(np.asarray(patterns, np.float64), 0.0))
    shape = (object_shape[0] + 2 * m, object_shape[1] + 2 * m)
    if obj is None:
        work = np.ones(shape, np.complex128)
    else:
        work = np.pad(np.asarray(obj, np.complex128), m, mode="edge")
    probe = np.asarray(probe, np.complex128).copy()
    history = []
    total = float(np.sum(amplitudes ** 2))
    inner = slice(m, m + N_DET)
    for epoch in range(epochs):
        misfit = 0.0
        for j in rng.permutation(len(corners)):
            r, c = base[j]  # top-left of the (margin-extended) patch in ``work``
            region = (slice(r, r + N_DET + 2 * m), slice(c, c + N_DET + 2 * m))
            if near:
                big = work[region]
                if subpixel[j]:
                    big = np.fft.ifft2(np.fft.fft2(big) * ramps[j])
                patch = big[inner, inner]
                pj = probe
            else:
                patch = work[region]
                pj = np.fft.ifft2(np.fft.fft2(probe) * ramps[j]) if subpixel[j] else probe
            psi = pj * patch
            wave = prop.forward(psi)
            modulus = np.abs(wave)
            misfit += float(np.sum((modulus - amplitudes[j]) ** 2))
            wave = amplitudes[j] * wave / np.maximum(modulus, 1e-12)
            diff = prop.backward(wave) - psi
            step = alpha * np.conj(pj) / np.max(np.abs(pj) ** 2) * diff
            if near:
                if subpixel[j]:  # adjoint of the interpolation: embed, shift back by +f
                    pad = np.zeros((N_DET + 2 * m,) * 2, np.complex128)
                    pad[inner, inner] = step
                    work[region] += np.fft.ifft2(np.fft.fft2(pad) * np.conj(ramps[j]))
                else:
                    work[region][inner, inner] += step
            else:
                work[region] += step
            if beta:
                pj = pj + beta * np.conj(patch) / np.max(np.abs(patch) ** 2) * diff
                if near or not subpixel[j]:
                    probe = pj
                else:
                    probe = np.fft.ifft2(np.fft.fft2(pj) * np.conj(ramps[j]))
        history.append(misfit / total)
        if callback is not None:
            callback(epoch, history[-1])
    obj = work[m:m + object_shape[0], m:m + object_shape[1]] if m else work
    return obj, probe, np.asarray(history)

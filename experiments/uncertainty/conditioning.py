"""Conditioning of the preconditioned Hessian that the uncertainty maps' CG solves (issue 22).

Why a 512x512 map needs about 20 CG iterations: the generalised eigenvalues of the Hessian ``H``
of a fit (``A + R``: the expected Gauss-Newton part of the ``poisson`` loss and the diagonal of the
residual curvature, as ``adptycho.uncertainty.object_uncertainty`` builds it, the global-phase
gauge penalised) against block-Jacobi preconditioners with square blocks of ``--blocks`` pixels
(1: the 2x2 real blocks of every pixel, the maps' preconditioner before stop 29) and against the
Fourier preconditioner (``adptycho.uncertainty.preconditioners``, the maps' default since stop
29; its dense inverse is built from its application to the unit vectors). The problem is a scaled-down copy of
``cost.py``'s (same probe-to-step ratio): a 64x64 object, a 32x32 detector, a 16 px aperture
probe, a 5x5 raster with an 8 px step, Poisson noise at 1e5 photons, fitted like the calibration
(known probe, ``epie:30,adam:100``). ``H`` is built densely from the far-field operator's products
with the unit vectors, on the determined pixels (summed probe intensity >= 2% of its maximum).

Rows: preconditioner (and block size), with or without the residual curvature ``R``, the smallest and the largest
eigenvalue (the gauge's own eigenvalue excluded) and their ratio, the condition number; CG needs
about ``sqrt(condition) / 2 * ln(2 / tolerance)`` iterations (the textbook bound,
``cg_iteration_estimate_1e-2``).

Run::

    python experiments/uncertainty/conditioning.py   # writes conditioning.json (about 3 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "conditioning.json")


def hessian(size=64, window=32, step=8, dose=1e5):
    """(dense H with the gauge penalty on the determined pixels, their mask, the pixel count)."""
    from adptycho.geometry.probes import circular_aperture
    from adptycho.reconstruction import reconstruct
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate
    from adptycho.uncertainty.api import _residual_curvature, pixel_fisher
    from adptycho.uncertainty.fisher import estimator_c
    from adptycho.uncertainty.pixels import gauge_vectors

    truth = complex_test_object((size, size), amplitude_range=(0.6, 1.0), phase_range=(0.0, 1.0))
    probe = circular_aperture((window, window), window / 2)
    positions = np.array([(y, x) for y in range(0, size - window + 1, step)
                          for x in range(0, size - window + 1, step)], float)
    scan = simulate(truth, probe, positions, photons_per_pattern=dose, poisson=True, seed=0)
    rec = reconstruct(scan, probe=scan.probe, refine=("object",), loss="poisson",
                      engine="epie:30,adam:100", object_shape=truth.shape, verbose=0, seed=0)
    operator = pixel_fisher(scan, rec, estimator_c("poisson")[0], single=False)
    n = truth.size
    unit = np.eye(2 * n)
    columns = [operator.matvec((unit[s:s + 512, :n] + 1j * unit[s:s + 512, n:]).reshape(
        (-1,) + truth.shape)) for s in range(0, 2 * n, 512)]
    dense = np.concatenate([np.concatenate([c.real.reshape(len(c), -1),
                                            c.imag.reshape(len(c), -1)], axis=1)
                            for c in columns]).T
    dense = 0.5 * (dense + dense.T)
    illumination = operator.illumination()
    determined = illumination >= 0.02 * illumination.max()
    keep = np.concatenate([determined.ravel(), determined.ravel()])
    gauge = gauge_vectors(np.asarray(rec.object), determined, blind=False)[0]
    gauge = np.concatenate([gauge.real.ravel(), gauge.imag.ravel()])
    gauge /= np.linalg.norm(gauge)
    ridge = _residual_curvature(scan, rec, "poisson", 1.0).ravel()
    out = {}
    for label, extra in (("A", 0.0), ("A + R", np.diag(np.concatenate([ridge, ridge])))):
        h = dense + extra
        h = h + np.median(np.diag(h)[keep]) * np.outer(gauge, gauge)
        out[label] = h[np.ix_(keep, keep)]
    fourier = {label: fourier_inverse(operator, determined, illumination,
                                      None if r is None else r.reshape(truth.shape))
               for label, r in (("A", None), ("A + R", ridge))}
    return out, determined, fourier


def fourier_inverse(operator, determined, illumination, ridge):
    """The dense inverse preconditioner ``M^-1`` of ``preconditioners.FourierPreconditioner``
    (the maps' default) on the determined pixels, in the (real, imag) layout of ``hessian``."""
    from adptycho.uncertainty.preconditioners import FourierPreconditioner

    apply = FourierPreconditioner(illumination, operator.mean_detector_weight(), determined,
                                  ridge)
    index = np.flatnonzero(determined.ravel())
    n, k = determined.size, len(index)
    columns = []
    for part in (1.0, 1j):
        for start in range(0, k, 512):
            chunk = index[start:start + 512]
            v = np.zeros((len(chunk), n), complex)
            v[np.arange(len(chunk)), chunk] = part
            out = apply(v.reshape((-1,) + determined.shape)).reshape(len(chunk), n)
            columns.append(np.concatenate([out.real[:, index], out.imag[:, index]], axis=1))
    dense = np.concatenate(columns).T
    return 0.5 * (dense + dense.T)


def block_preconditioner(h, determined, block):
    """The block-diagonal part of ``h`` for square blocks of ``block`` pixels (both real parts)."""
    yy, xx = np.nonzero(determined)
    labels = (yy // block) * 100000 + xx // block
    labels = np.concatenate([labels, labels])
    out = np.zeros_like(h)
    for label in np.unique(labels):
        index = np.nonzero(labels == label)[0]
        out[np.ix_(index, index)] = h[np.ix_(index, index)]
    return out


def main():
    from scipy.linalg import eigh

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    hessians, determined, fourier = hessian()
    rows = []
    for label, h in hessians.items():
        preconditioners = [(f"block {block} px", block,
                            block_preconditioner(h, determined, block)) for block in args.blocks]
        preconditioners.append(("fourier", None, np.linalg.inv(fourier[label])))
        for name, block, matrix in preconditioners:
            values = eigh(h, matrix, eigvals_only=True)
            top = values[-2]  # the largest is the penalised gauge direction
            rows.append({"hessian": label, "preconditioner": name, "block_px": block,
                         "smallest": float(values[0]), "largest": float(top),
                         "condition": float(top / values[0]),
                         "cg_iteration_estimate_1e-2": float(np.sqrt(top / values[0]) / 2
                                                     * np.log(2 / 1e-2))})
            print(json.dumps(rows[-1]), flush=True)
    meta = {"determined_pixels": int(determined.sum()),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
            "seconds": round(time.perf_counter() - started),
            "command": "python experiments/uncertainty/conditioning.py"}
    from adptycho.io.atomic import atomic_path

    with atomic_path(args.out, suffix=".json.tmp") as tmp, open(tmp, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Accuracy against cost of the pixel uncertainty maps: estimator, random vectors, CG tolerance.

Problem: the 64x64 calibration problem of ``calibration.py`` (known 16 px aperture probe, 81
integer positions) at one dose (``--dose``, default 1e5 photons per pattern). For each of
``--draws`` Poisson noise draws the object is reconstructed as in ``calibration.py`` (known
probe, ``poisson`` loss, ``epie:30,adam:100``), and its std maps are computed with
``adptycho.uncertainty.object_uncertainty`` (method ``fisher``, covariance ``estimator``) for
every setting of the grid: ``estimator`` (``sampling``: draws of the estimator's error, one
solve each; ``hutchinson``: +-1 probes, two solves each for the sandwich) times ``probes`` (the
random vectors) in ``--probes`` times ``tolerance`` in ``--tolerances`` (the other
``PixelSettings`` at their defaults, ``smoothing_px`` 2, complex128 products, the Fourier
preconditioner), plus the rows in ``EXTRA`` (single-precision products, wider smoothing: the
``fast`` preset; the block-Jacobi preconditioner of the maps before stop 29), and once with the
reference setting (Hutchinson, 32 probes, tolerance 1e-5, block-Jacobi, a different seed). On the reference pixels
(summed probe intensity >= 50% of its maximum) of every draw:

* ``phase_ratio_median`` / ``phase_ratio_p05`` / ``phase_ratio_p95``: median and 5%/95%
  quantiles, pooled over pixels and draws, of the per-pixel ratio of the map's phase std to the
  reference map's (the same for the amplitude: ``amplitude_ratio_...``);
* ``phase_std_over_spread``: median over pixels of (the mean of the map over the draws) / (the
  std of the reconstructions' phase over the draws, after the global phase of each is fitted to
  the truth), as in ``calibration.py``; with 10 draws the spread itself is uncertain by about
  +-24% per pixel (its median over 1220 pixels much less);
* ``cg_iterations``: mean over draws of the conjugate-gradient iterations (Hutchinson: both
  solves of the sandwich; each iteration applies the operator to every random vector),
  ``matvecs``: iterations times probes (operator applications to one vector);
* ``seconds``: median seconds per map (shared, loaded machine: indicative only).

Results: ``experiments/uncertainty/accuracy_cost.json``; the README table is rendered from it by
``python experiments/report.py``.

Run::

    python experiments/uncertainty/accuracy_cost.py   # about 15 min on 2 loaded cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "accuracy_cost.json")
REFERENCE = {"estimator": "hutchinson", "probes": 32, "tolerance": 1e-5, "max_iterations": 1000,
             "seed": 12345, "single_precision": False, "preconditioner": "block"}
EXTRA = [{"estimator": "sampling", "probes": 1, "tolerance": 1e-2, "smoothing_px": 4.0,
          "single_precision": True},  # the fast preset
         {"estimator": "sampling", "probes": 1, "tolerance": 3e-2, "smoothing_px": 4.0,
          "single_precision": False},
         {"estimator": "sampling", "probes": 2, "tolerance": 1e-2, "smoothing_px": 4.0,
          "single_precision": False},
         {"estimator": "sampling", "probes": 8, "tolerance": 1e-3, "single_precision": True},
         {"estimator": "hutchinson", "probes": 1, "tolerance": 1e-2, "smoothing_px": 4.0,
          "single_precision": True},  # the fast preset before stop 28
         {"estimator": "sampling", "probes": 1, "tolerance": 1e-2, "smoothing_px": 4.0,
          "single_precision": True, "preconditioner": "block"},  # fast before stop 29
         {"estimator": "sampling", "probes": 8, "tolerance": 1e-3, "single_precision": True,
          "preconditioner": "block"}]  # the default before stop 29


def grid(probes, tolerances):
    """The settings compared with the reference (dicts of ``PixelSettings`` fields)."""
    return [{"estimator": e, "probes": p, "tolerance": t, "single_precision": False}
            for e in ("sampling", "hutchinson") for t in tolerances for p in probes] + EXTRA


def _fit(truth, probe, positions, dose, draw):
    from adptycho.reconstruction import reconstruct
    from adptycho.simulate import simulate

    scan = simulate(truth, probe, positions, photons_per_pattern=dose, poisson=True,
                    seed=1000 * draw + 7)
    rec = reconstruct(scan, probe=scan.probe, refine=("object",), loss="poisson",
                      engine="epie:30,adam:100", object_shape=truth.shape, verbose=0, seed=draw)
    return scan, rec


def _map(scan, rec, settings):
    from adptycho.uncertainty import object_uncertainty

    started = time.perf_counter()
    unc = object_uncertainty(scan, rec, settings=settings)
    return unc, time.perf_counter() - started


def run(args) -> dict:
    from calibration import errors, problem

    truth, probe, positions = problem()
    settings = grid(args.probes, args.tolerances)
    maps = [[] for _ in settings]  # per setting: (phase, amplitude, iterations, seconds) per draw
    reference, phase_err = [], []
    for draw in range(args.draws):
        scan, rec = _fit(truth, probe, positions, args.dose, draw)
        ref, ref_s = _map(scan, rec, REFERENCE)
        reference.append((ref.object_phase_std, ref.object_amplitude_std,
                          ref.info["cg_iterations"], ref_s))
        mask = ref.reference
        phase_err.append(errors(rec.object, truth, mask)[0])
        for k, setting in enumerate(settings):
            unc, seconds = _map(scan, rec, setting)
            maps[k].append((unc.object_phase_std, unc.object_amplitude_std,
                            unc.info["cg_iterations"], seconds))
        print(f"draw {draw}: reference {ref.info['cg_iterations']} iterations {ref_s:.1f} s",
              flush=True)
    spread = np.array(phase_err).std(axis=0, ddof=1)
    rows = [_row(REFERENCE, reference, reference, spread, mask)]
    rows += [_row(s, m, reference, spread, mask) for s, m in zip(settings, maps)]
    return {"meta": {"dose": args.dose, "draws": args.draws, "reference": REFERENCE,
                     "reference_pixels": int(mask.sum()),
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                     "load_average_after": [round(x, 2) for x in os.getloadavg()],
                     "command": "python experiments/uncertainty/accuracy_cost.py"},
            "rows": rows}


def _row(setting, maps, reference, spread, mask):
    phase = np.array([m[0] for m in maps])
    amplitude = np.array([m[1] for m in maps])
    ref_phase = np.array([r[0] for r in reference])
    ref_amplitude = np.array([r[1] for r in reference])
    iterations = float(np.mean([m[2] for m in maps]))
    row = {"estimator": setting["estimator"], "probes": setting["probes"],
           "tolerance": setting["tolerance"],
           "smoothing_px": setting.get("smoothing_px", 2.0),
           "preconditioner": setting.get("preconditioner", "fourier"),
           "single_precision": bool(setting.get("single_precision", False)),
           "cg_iterations": iterations, "matvecs": iterations * setting["probes"],
           "seconds": float(np.median([m[3] for m in maps]))}
    for name, values, ref in (("phase", phase, ref_phase), ("amplitude", amplitude,
                                                            ref_amplitude)):
        ratio = (values / ref)[:, mask]
        row[f"{name}_ratio_median"] = float(np.median(ratio))
        row[f"{name}_ratio_p05"] = float(np.quantile(ratio, 0.05))
        row[f"{name}_ratio_p95"] = float(np.quantile(ratio, 0.95))
    row["phase_std_over_spread"] = float(np.median(phase.mean(axis=0)[mask] / spread[mask]))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dose", type=float, default=1e5)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 2, 4, 8, 32])
    parser.add_argument("--tolerances", type=float, nargs="+",
                        default=[1e-1, 3e-2, 1e-2, 1e-3, 1e-4])
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    import sys

    sys.path.insert(0, HERE)
    results = run(args)
    from adptycho.io.atomic import atomic_path

    with atomic_path(args.out, suffix=".json.tmp") as tmp, open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}; render the README table with: python experiments/report.py")


if __name__ == "__main__":
    main()

"""Calibration of the pixel uncertainty maps (issue 22, item 4) on simulated Poisson data.

Problem: a 64x64 complex test object (amplitude 0.6-1, phase 0-1 rad), a 32x32 detector, a
circular aperture probe of 16 px diameter (known), a 9x9 raster with a 4 px step (81 integer
positions), Poisson noise at each dose. For every dose, ``--draws`` noise realisations are
reconstructed with ``adptycho.reconstruction.reconstruct`` (known probe, object only, the
``poisson`` loss, schedule ``--engine``), and each reconstruction gets its std maps from
``adptycho.uncertainty.object_uncertainty`` (default ``covariance="estimator"``). On the
well-illuminated pixels (summed probe intensity >= 50% of its maximum, the ``reference`` region
on which the global phase is fixed):

* coverage: fraction of (pixel, draw) pairs whose true phase (amplitude) lies within 1 std
  (68% interval) and 1.96 std (95%) of the reconstruction, after the global phase of each
  reconstruction is fitted to the truth on the same region (``analysis.metrics.global_factor``);
* spread ratio: median over pixels of (mean std map) / (std of the reconstructions over the
  draws), 1 for a perfect map;
* the same coverage and ratio, from the first draw's reconstruction, for the sandwich without
  the residual curvature of the loss (``residual_curvature=False``: the Gauss-Newton Hessian
  alone, the linearised theory), for the inverse Fisher information of the Poisson noise model
  (``covariance="fisher"``: the Cramer-Rao bound of an exact maximum-likelihood fit) and for the
  diagonal-only bound ``1/F_pp`` (every other pixel known), to show what each ingredient
  contributes;
* on every draw, beside the default map (``sampling`` estimator, ``--probes`` draws), the
  ``fast`` preset's map and a map with ``--probes`` Hutchinson probes (the estimator the
  default used before): their coverage, spread ratio, seconds and CG iterations (``fast_...``,
  ``hutchinson_...``).

Results: ``experiments/uncertainty/results.json``; the README tables are rendered from it by
``python experiments/report.py``. Figure: ``experiments/uncertainty/example.png``.

Run::

    python experiments/uncertainty/calibration.py   # 45 min on 2 loaded cores (results.json)
    # or one process per dose, then merged into results.json:
    python experiments/uncertainty/calibration.py --doses 1e4 --out /tmp/d4.json  # (same for
    python experiments/uncertainty/calibration.py --merge /tmp/d4.json /tmp/d5.json /tmp/d6.json
    python experiments/report.py                    # README tables from results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.json")


#: Other estimators run on every draw beside the default map (their settings override the
#: default's): the ``fast`` preset, and Hutchinson probes (the default before stop 28).
VARIANTS = {"fast": {"preset": "fast"}, "hutchinson": {"estimator": "hutchinson"}}


def problem():
    from adptycho.geometry.probes import circular_aperture
    from adptycho.samples import complex_test_object

    truth = complex_test_object((64, 64), amplitude_range=(0.6, 1.0), phase_range=(0.0, 1.0))
    probe = circular_aperture((32, 32), 16.0)
    positions = np.array([(y, x) for y in range(0, 33, 4) for x in range(0, 33, 4)], float)
    return truth, probe, positions


def errors(obj, truth, reference):
    """Phase and amplitude errors of ``obj`` after fitting its global phase on ``reference``."""
    from adptycho.analysis.metrics import global_factor

    aligned = np.asarray(obj) * global_factor(obj, truth, mask=reference, scale=False)
    return np.angle(aligned * np.conj(truth)), np.abs(aligned) - np.abs(truth)


def coverage(err, std, reference):
    z = np.abs(err[:, reference]) / std[:, reference]
    return {"coverage68": float(np.mean(z <= 1.0)), "coverage95": float(np.mean(z <= 1.96)),
            "z_rms": float(np.sqrt(np.mean(z ** 2)))}


def bound_maps(scan, rec):
    """Diagonal-only bound: std from the 2x2 diagonal blocks of the Fisher information alone."""
    from adptycho.uncertainty.api import pixel_fisher
    from adptycho.uncertainty.fisher import fisher_c
    from adptycho.uncertainty.pixels import amplitude_phase_std, block_inverse

    fisher = pixel_fisher(scan, rec, fisher_c("poisson"))
    illumination = fisher.illumination()
    determined = illumination >= 0.02 * illumination.max()
    bound = block_inverse(fisher.diagonal_blocks(), determined)
    return amplitude_phase_std(rec.object, bound, bound, determined, 0.0)


def run_dose(dose, args, truth, probe, positions):
    from adptycho.reconstruction import reconstruct
    from adptycho.simulate import simulate
    from adptycho.uncertainty import object_uncertainty

    settings = {"probes": args.probes}
    phase_err, amp_err, phase_std, amp_std, seconds, iterations = [], [], [], [], [], []
    extra, variants = {}, {}
    for draw in range(args.draws):
        scan = simulate(truth, probe, positions, photons_per_pattern=dose, poisson=True,
                        seed=1000 * draw + 7)
        started = time.perf_counter()
        rec = reconstruct(scan, probe=scan.probe, refine=("object",), loss="poisson",
                          engine=args.engine, object_shape=truth.shape, verbose=0, seed=draw)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        unc = object_uncertainty(scan, rec, settings=settings)
        seconds.append((fit_s, time.perf_counter() - started))
        for label, other in VARIANTS.items():  # the same draw, other estimators
            started = time.perf_counter()
            variant = object_uncertainty(scan, rec, settings=(
                other if "preset" in other else {**settings, **other}))
            variants.setdefault(label, []).append((
                variant.object_phase_std, variant.object_amplitude_std,
                time.perf_counter() - started, variant.info["cg_iterations"]))
        iterations.append(unc.info["cg_iterations"])
        reference = unc.reference
        pe, ae = errors(rec.object, truth, reference)
        phase_err.append(pe)
        amp_err.append(ae)
        phase_std.append(unc.object_phase_std)
        amp_std.append(unc.object_amplitude_std)
        if draw == 0:
            fisher = object_uncertainty(scan, rec, covariance="fisher", settings=settings)
            plain = object_uncertainty(scan, rec, settings={**settings,
                                                            "residual_curvature": False})
            extra = {"fisher": (fisher.object_phase_std, fisher.object_amplitude_std),
                     "gauss_newton": (plain.object_phase_std, plain.object_amplitude_std),
                     "bound": bound_maps(scan, rec)[::-1], "example": (rec, unc)}
            if args.figure and abs(np.log10(dose) - 5) < 1e-9:
                from adptycho.uncertainty.figure import plot_uncertainty

                plot_uncertainty(rec.object, unc, os.path.join(HERE, "example.png"), truth=truth,
                                 title=f"{dose:.0e} photons/pattern, draw 0")
        print(f"  dose {dose:.0e} draw {draw}: fit {fit_s:.1f} s, uncertainty "
              f"{seconds[-1][1]:.1f} s, {unc.info['cg_iterations']} CG iterations", flush=True)
    phase_err, amp_err = np.array(phase_err), np.array(amp_err)
    phase_std, amp_std = np.array(phase_std), np.array(amp_std)
    spread_phase = phase_err.std(axis=0, ddof=1)
    spread_amp = amp_err.std(axis=0, ddof=1)
    row = {"dose": dose, "draws": args.draws, "reference_pixels": int(reference.sum()),
           "rms_phase_error_rad": float(np.sqrt(np.mean(phase_err[:, reference] ** 2))),
           "median_phase_std_rad": float(np.median(phase_std[:, reference])),
           "fit_s_median": float(np.median([s[0] for s in seconds])),
           "uncertainty_s_median": float(np.median([s[1] for s in seconds])),
           "cg_iterations_median": float(np.median(iterations))}
    for name, err, std, spread in (("phase", phase_err, phase_std, spread_phase),
                                   ("amplitude", amp_err, amp_std, spread_amp)):
        for key, value in coverage(err, std, reference).items():
            row[f"{name}_{key}"] = value
        row[f"{name}_std_over_spread"] = float(np.median(std.mean(axis=0)[reference]
                                                         / spread[reference]))
    for label, maps in variants.items():  # every draw: coverage, spread ratio, cost
        p_std = np.array([m[0] for m in maps])
        row[f"{label}_phase_coverage95"] = coverage(phase_err, p_std, reference)["coverage95"]
        row[f"{label}_phase_std_over_spread"] = float(np.median(
            p_std.mean(axis=0)[reference] / spread_phase[reference]))
        row[f"{label}_s_median"] = float(np.median([m[2] for m in maps]))
        row[f"{label}_cg_iterations_median"] = float(np.median([m[3] for m in maps]))
    for label in ("gauss_newton", "fisher", "bound"):
        p_std = extra[label][0]
        row[f"{label}_phase_coverage95"] = coverage(phase_err, np.broadcast_to(
            p_std, phase_err.shape), reference)["coverage95"]
        row[f"{label}_phase_std_over_spread"] = float(np.median(p_std[reference]
                                                                / spread_phase[reference]))
    return row


def run_all(args) -> dict:
    started = time.perf_counter()
    truth, probe, positions = problem()
    rows = []
    for dose in args.doses:
        rows.append(run_dose(dose, args, truth, probe, positions))
        print(json.dumps(rows[-1]), flush=True)
    return {"meta": {"engine": args.engine, "probes": args.probes, "draws": args.draws,
                     "covariance": "estimator, with the residual curvature",
                     "reference_pixels": rows[0]["reference_pixels"],
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                     "seconds": time.perf_counter() - started,
                     "command": "python experiments/uncertainty/calibration.py"},
            "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doses", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--engine", default="epie:30,adam:100")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--no-figure", dest="figure", action="store_false")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine the rows of results files written by runs with different "
                             "--doses into --out (no computation)")
    args = parser.parse_args()
    if args.merge:
        parts = []
        for path in args.merge:
            with open(path) as f:
                parts.append(json.load(f))
        rows = sorted((row for part in parts for row in part["rows"]), key=lambda r: r["dose"])
        meta = dict(parts[0]["meta"], seconds=sum(p["meta"]["seconds"] for p in parts),
                    command=parts[0]["meta"]["command"] + " (one process per dose, merged)")
        results = {"meta": meta, "rows": rows}
    else:
        results = run_all(args)
    from adptycho.io.atomic import atomic_path

    with atomic_path(args.out, suffix=".json.tmp") as tmp, open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}; render the README tables with: python experiments/report.py")


if __name__ == "__main__":
    main()

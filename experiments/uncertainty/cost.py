"""Cost of a 512x512-object uncertainty map in reconstruction epochs (issue 22, "Done when").

Problem: a 512x512 complex test object, a 64x64 detector, a circular aperture probe of 32 px
diameter (known), a 29x29 raster with a 16 px step (841 integer positions), Poisson noise at 1e5
photons per pattern. Measured in one process, each ``--repeats`` times (median reported):

* ``epoch_s``: one Adam epoch of ``adptycho.reconstruction.reconstruct`` (known probe, object only,
  ``poisson`` loss, default batch): the median of the ``--epochs`` epochs after the first (which
  includes tracing and compilation), timed by a Keras callback;
* rows (``rows``), each the seconds of one ``adptycho.uncertainty.object_uncertainty`` call of that
  reconstruction (method ``fisher``, covariance ``estimator``) and its cost in epochs
  (``seconds / epoch_s``): ``default`` (the library's default settings: the ``sampling``
  estimator with 8 draws, CG tolerance 1e-3, the Fourier preconditioner), ``fast``
  (``settings={"preset": "fast"}``: one draw, CG tolerance 1e-2, 4 px smoothing, complex64
  products), ``fast_hutchinson`` (the same with one Hutchinson probe: the ``fast`` preset before
  stop 28), ``default_block`` and ``fast_block`` (block-Jacobi preconditioner: the maps before
  stop 29); ``bound``: the
  diagonal-only bound (exact 2x2 diagonal blocks, ``FarFieldFisher.diagonal_blocks``, without
  the residual curvature);
* ``pieces``: a profile of a map's parts (first repeat): the detector waves (one FFT per
  pattern, shared by all operators of a map), the diagonal blocks of both sandwich operators,
  one Fisher product of one vector (double and single precision, detector weights cached), one
  sampled right-hand side, the residual curvature (from the shared waves), in seconds and
  epochs;
* ``accuracy`` (``--accuracy-size``, default 256: the same problem on a 256x256 object, 169
  patterns, one noise draw): the per-pixel ratio of the ``fast`` and ``default`` maps to a
  reference map (32 probes, tolerance 1e-5) on the reference pixels (median, 5% and 95%).

The machine is shared: the JSON records the load average before and after; timings are indicative
only, the costs in epochs are ratios measured in the same process.

Run::

    python experiments/uncertainty/cost.py       # writes experiments/uncertainty/cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "cost.json")
REFERENCE = {"estimator": "hutchinson", "probes": 32, "tolerance": 1e-5, "max_iterations": 1000,
             "seed": 12345, "single_precision": False}


def problem(size: int = 512, window: int = 64, step: int = 16, dose: float = 1e5, seed: int = 0):
    from adptycho.geometry.probes import circular_aperture
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    truth = complex_test_object((size, size), amplitude_range=(0.6, 1.0), phase_range=(0.0, 1.0))
    probe = circular_aperture((window, window), window / 2)
    positions = np.array([(y, x) for y in range(0, size - window + 1, step)
                          for x in range(0, size - window + 1, step)], float)
    return truth, simulate(truth, probe, positions, photons_per_pattern=dose, poisson=True,
                           seed=seed)


def _fit(scan, shape, epochs):
    """The reconstruction and the seconds of each of its epochs after the first."""
    import keras

    from adptycho.reconstruction import reconstruct

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    rec = reconstruct(scan, probe=scan.probe, refine=("object",), loss="poisson", engine="adam",
                      epochs=1 + epochs, object_shape=shape, verbose=0, seed=0,
                      callbacks=[timer])
    return rec, timer.seconds[1:]


def _timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _maps(args):
    """The ``object_uncertainty`` settings timed: label -> settings."""
    return {"default": {}, "fast": {"preset": "fast"},
            "fast_hutchinson": {"preset": "fast", "estimator": "hutchinson"},
            "default_block": {"preconditioner": "block"},
            "fast_block": {"preset": "fast", "preconditioner": "block"}}


def _pieces(scan, rec, epoch_s):
    """Seconds of the parts of a map (module docstring)."""
    from adptycho.uncertainty.api import pixel_fisher
    from adptycho.uncertainty.fisher import estimator_c

    c_a, c_b = estimator_c("poisson")
    row = {}
    for label, single in (("double", False), ("single", True)):
        fisher = pixel_fisher(scan, rec, c_a, single)
        row[f"waves_{label}_s"] = _timed(lambda: list(fisher.waves.chunks()))  # kept
        row[f"diagonal_blocks_{label}_s"] = _timed(fisher.diagonal_blocks)  # keeps u sqrt(c)
        vector = np.ones((1,) + rec.object.shape, np.complex128)
        row[f"product_one_vector_{label}_s"] = float(np.median(
            [_timed(lambda: fisher.matvec(vector)) for _ in range(5)]))
    score = pixel_fisher(scan, rec, c_b, True, fisher.waves)
    row["score_diagonal_blocks_s"] = _timed(score.diagonal_blocks)
    row["sample_one_rhs_s"] = _timed(lambda: score.sample_rhs(1, np.random.default_rng(0)))
    row["residual_curvature_s"] = _timed(lambda: fisher.waves.residual_curvature(
        scan.read_patterns, "poisson", 1.0, scan.mask))
    row.update({k[:-2] + "_epochs": v / epoch_s for k, v in list(row.items())})
    return row


def measure(args, write):
    """Time the pieces ``args.repeats`` times; ``write(result)`` after every repeat (the file
    always holds the repeats done so far)."""
    from adptycho.uncertainty import object_uncertainty
    from adptycho.uncertainty.api import pixel_fisher
    from adptycho.uncertainty.fisher import fisher_c

    truth, scan = problem(args.size, args.window, args.step, args.dose)
    times = {"epoch_s": [], "bound_s": [], **{f"{k}_s": [] for k in _maps(args)}}
    info, pieces = {}, None
    for repeat in range(args.repeats):
        rec, epochs = _fit(scan, truth.shape, args.epochs)
        times["epoch_s"].append(float(np.median(epochs)))
        for label, settings in _maps(args).items():
            result = []
            times[f"{label}_s"].append(_timed(lambda: result.append(object_uncertainty(
                scan, rec, settings=settings))))
            info[label] = result[0].info, result[0].settings
        times["bound_s"].append(_timed(
            lambda: pixel_fisher(scan, rec, fisher_c("poisson")).diagonal_blocks()))
        if pieces is None:
            pieces = _pieces(scan, rec, times["epoch_s"][-1])
        print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()),
              flush=True)
        write({"rows": _rows(args, scan, times, info), "pieces": [pieces], "repeats_s": times})
    return {"rows": _rows(args, scan, times, info), "pieces": [pieces], "repeats_s": times}


def _rows(args, scan, times, info):
    epoch = float(np.median(times["epoch_s"]))
    common = {"object_px": args.size, "patterns": scan.num_patterns, "dose": args.dose,
              "repeats": len(times["epoch_s"]), "epoch_s": epoch}
    rows = []
    for label, (solver, settings) in info.items():
        seconds = float(np.median(times[f"{label}_s"]))
        rows.append({"map": label, **common, "estimator": settings["estimator"],
                     "probes": settings["probes"], "tolerance": settings["tolerance"],
                     "smoothing_px": settings["smoothing_px"],
                     "single_precision": settings["single_precision"],
                     "preconditioner": solver["preconditioner"],
                     "cg_iterations": solver["cg_iterations"], "seconds": seconds,
                     "epochs": seconds / epoch})
    seconds = float(np.median(times["bound_s"]))
    rows.append({"map": "bound", **common, "seconds": seconds, "epochs": seconds / epoch})
    return rows


def accuracy(size, args):
    """Ratios of the ``fast`` and ``default`` maps to the reference map (module docstring)."""
    from adptycho.uncertainty import object_uncertainty

    truth, scan = problem(size, args.window, args.step, args.dose)
    rec, _ = _fit(scan, truth.shape, 1)
    reference = object_uncertainty(scan, rec, settings=REFERENCE)
    mask = reference.reference
    rows = []
    for label, settings in _maps(args).items():
        unc = object_uncertainty(scan, rec, settings=settings)
        row = {"map": label, "object_px": size, "patterns": scan.num_patterns,
               "probes": unc.settings["probes"], "tolerance": unc.settings["tolerance"],
               "cg_iterations": unc.info["cg_iterations"],
               "reference_cg_iterations": reference.info["cg_iterations"]}
        for name in ("phase", "amplitude"):
            key = f"object_{name}_std"
            ratio = (getattr(unc, key) / getattr(reference, key))[mask]
            row.update({f"{name}_ratio_median": float(np.median(ratio)),
                        f"{name}_ratio_p05": float(np.quantile(ratio, 0.05)),
                        f"{name}_ratio_p95": float(np.quantile(ratio, 0.95))})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--step", type=int, default=16)
    parser.add_argument("--dose", type=float, default=1e5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs in the timed difference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accuracy-size", type=int, default=256,
                        help="object size of the accuracy check (0: none)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()

    def write(result):
        from adptycho.io.atomic import atomic_path

        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "seconds": round(time.perf_counter() - started),
                "note": "shared, loaded machine: timings are indicative only",
                "command": "python experiments/uncertainty/cost.py"}
        with atomic_path(args.out, suffix=".json.tmp") as tmp, open(tmp, "w") as f:
            json.dump({"meta": meta, **result}, f, indent=1)
        print(f"wrote {args.out}", flush=True)

    result = measure(args, write)
    if args.accuracy_size:
        result["accuracy"] = accuracy(args.accuracy_size, args)
        write(result)


if __name__ == "__main__":
    main()

"""Cost of a 512x512-object uncertainty map in reconstruction epochs (issue 22, "Done when").

Problem: a 512x512 complex test object, a 64x64 detector, a circular aperture probe of 32 px
diameter (known), a 29x29 raster with a 16 px step (841 integer positions), Poisson noise at 1e5
photons per pattern. Measured, each ``--repeats`` times (median reported):

* ``epoch_s``: one Adam epoch of ``adptycho.reconstruction.reconstruct`` (known probe, object only,
  ``poisson`` loss, default batch): the median of the ``--epochs`` epochs after the first (which
  includes tracing and compilation), timed by a Keras callback;
* ``uncertainty_s``: ``adptycho.uncertainty.object_uncertainty`` of that reconstruction (method
  ``fisher``, covariance ``estimator``) with ``--probes`` Hutchinson probes (default 2, not the
  library's 32: on a shared 2-core machine a 32-probe map of this size takes hours);
* ``bound_s``: the diagonal-only bound (exact 2x2 diagonal blocks, ``FarFieldFisher.diagonal_blocks``).

The ratios ``..._s / epoch_s`` are the costs in epochs. Every conjugate-gradient iteration applies
the Fisher operator to every probe vector (one FFT pair per pattern each, like one epoch's
forward and backward pass), so the cost grows linearly with the probes:
``default_probes_epochs_extrapolated`` is ``uncertainty_epochs * 32 / probes`` (an
extrapolation, labelled as such). The machine is shared: the JSON records the load average
before and after; timings are indicative only.

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


def measure(args, write):
    """Time the pieces ``args.repeats`` times; ``write(row, times)`` after every repeat (the
    file always holds the repeats done so far)."""
    from adptycho.uncertainty import object_uncertainty
    from adptycho.uncertainty.api import pixel_fisher
    from adptycho.uncertainty.fisher import fisher_c

    truth, scan = problem(args.size, args.window, args.step, args.dose)
    times = {"epoch_s": [], "uncertainty_s": [], "bound_s": []}
    info = {}
    for repeat in range(args.repeats):
        rec, epochs = _fit(scan, truth.shape, args.epochs)
        times["epoch_s"].append(float(np.median(epochs)))
        result = []
        times["uncertainty_s"].append(_timed(lambda: result.append(object_uncertainty(
            scan, rec, settings={"probes": args.probes}))))
        info = result[0].info
        times["bound_s"].append(_timed(
            lambda: pixel_fisher(scan, rec, fisher_c("poisson")).diagonal_blocks()))
        print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()),
              flush=True)
        write(_row(args, scan, times, info), times)


def _row(args, scan, times, info):
    median = {k: float(np.median(v)) for k, v in times.items()}
    return {"object_px": args.size, "detector_px": args.window, "patterns": scan.num_patterns,
            "dose": args.dose, "repeats": len(times["epoch_s"]), **median,
            "probes": args.probes, "cg_iterations": info.get("cg_iterations"),
            "uncertainty_epochs": median["uncertainty_s"] / median["epoch_s"],
            "bound_epochs": median["bound_s"] / median["epoch_s"],
            "default_probes_epochs_extrapolated":
                median["uncertainty_s"] / median["epoch_s"] * 32 / args.probes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--step", type=int, default=16)
    parser.add_argument("--dose", type=float, default=1e5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs in the timed difference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()

    def write(row, times):
        from adptycho.io.atomic import atomic_path

        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "note": "shared, loaded machine: timings are indicative only",
                "command": "python experiments/uncertainty/cost.py"}
        with atomic_path(args.out, suffix=".json.tmp") as tmp, open(tmp, "w") as f:
            json.dump({"meta": meta, "rows": [row], "repeats_s": times}, f, indent=1)
        print(f"wrote {args.out}", flush=True)

    measure(args, write)


if __name__ == "__main__":
    main()

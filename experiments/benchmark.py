"""Speed benchmark on the standard problem (issue: foundation, item 10).

Standard problem: a 512x512 complex object (scikit-image camera amplitude, astronaut phase), a
128x128 probe (smoothed circular aperture, 64 px diameter) and 400 Fermat-spiral positions with
spacing c = 9.6 px (nearest-neighbour distance about 16 px: about 70% area overlap, 75% linear
overlap), rounded to whole pixels (so the comparison with cdtools, which rounds, is like for like),
1e6 photons per exposure, noise-free.

It prints, measured in one run on this machine:

* seconds per epoch (median of ``--epochs`` epochs after ``--warmup``) of adptycho's Adam fit
  with object + probe refinement, for each ``--batch-sizes``, and patterns per second;
* the FFT floor: the time of the 400 forward + 400 inverse 128x128 complex FFTs that an epoch
  must do (forward propagation, and its adjoint in the gradient), measured with the same batch
  size in a compiled tf.function; ``fraction of floor = floor / epoch``;
* the same for an epoch with position refinement (object + probe + positions, Fourier sub-pixel
  shifts) and for a calibration epoch (object + probe + positions + far-field distance), and the
  ratio of the calibration epoch to the object + probe epoch;
* cdtools ``SimplePtycho`` with Adam on the same data (``experiments/peer_cdtools.py`` in a
  subprocess; skipped with a note if torch/cdtools are not installed).

Results go to ``--out-dir`` (default ``experiments/benchmark``) as ``benchmark.json`` and
``benchmark.csv``.

Run::

    python experiments/benchmark.py                     # full run, about 3 minutes
    python experiments/benchmark.py --no-peer --epochs 3 --batch-sizes 64
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def standard_problem(round_positions: bool = True):
    from adptycho.geometry import circular_aperture, fermat_spiral_scan
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    obj = complex_test_object((512, 512), "camera", "astronaut")
    probe = circular_aperture((128, 128), 64.0, edge_px=3.0)
    centre = (512 - 128) / 2.0
    positions = fermat_spiral_scan(400, 9.6, center_px=(centre, centre))
    if round_positions:
        positions = np.round(positions)
    positions = np.clip(positions, 0, 512 - 128)
    scan = simulate(obj, probe, positions, photons_per_pattern=1e6)
    return scan, obj, probe


class EpochTimer:
    def __init__(self):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []
                self.page_faults = []

            def on_epoch_begin(self, epoch, logs=None):
                self._faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._start)
                self.page_faults.append(
                    resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self._faults)

        self.callback = _Timer()


def time_fit(scan, refine, batch_size, epochs, warmup, jit_compile="auto", plan_changes=None):
    """``plan_changes``: fields of the automatic ``adptycho.accel.ExecutionPlan`` to change
    (A/B timing, e.g. ``{"fused": False}``)."""
    import dataclasses

    import keras

    from adptycho.geometry import gaussian_probe
    from adptycho.reconstruction import build_model
    from adptycho.training.data import steps_per_execution_for, training_dataset

    keras.utils.set_random_seed(0)
    if "distance" in refine:  # far field: the distance is a trainable scale of the positions
        scan = dataclasses.replace(scan, detector_distance_m=1.0)
    guess = gaussian_probe(scan.detector_shape, 60.0)
    model, _ = build_model(scan, probe=guess, normalise_probe=True, object_shape=(512, 512))
    # the input pipeline and compiled multi-step calls of ``adptycho.reconstruct``
    steps = int(np.ceil(scan.num_patterns / batch_size))
    plan = None
    if plan_changes:
        from adptycho.accel import choose_plan

        plan, jit_compile = choose_plan(model.near_field is None, model.detector_shape,
                                        jit_compile, fused=plan_changes.get("fused", True))
        plan = dataclasses.replace(plan, **plan_changes)
    model.compile(refine=refine, jit_compile=jit_compile, execution_plan=plan,
                  steps_per_execution=steps_per_execution_for(steps))
    timer = EpochTimer().callback
    data = training_dataset(scan, np.arange(scan.num_patterns), batch_size, seed=0,
                            first_epoch=0, epochs=warmup + epochs)
    history = model.fit(data, epochs=warmup + epochs, steps_per_epoch=steps, verbose=0,
                        callbacks=[timer])
    times = timer.times[warmup:]
    execution = ("XLA pieces + TensorFlow FFTs" if model.execution_plan.pieces
                 else "one XLA program" if model.jit_compile else "TensorFlow graph")
    return {"median_s": statistics.median(times), "times_s": times, "execution": execution,
            "page_faults_per_epoch": statistics.median(timer.page_faults[warmup:]),
            "first_loss": history.history["loss"][0], "last_loss": history.history["loss"][-1]}


def interleaved_epochs(models, scan, batch_size, rounds):
    """In-process A/B: alternate single fit epochs between the warmed-up ``models`` (name ->
    compiled model) ``rounds`` times, so that drifts of the machine hit all alike. Returns
    ``(times, summary)``: per name the epoch seconds, and their median, minimum and first
    quartile (also printed)."""
    from adptycho.training.data import training_dataset

    indices = np.arange(scan.num_patterns)
    steps = int(np.ceil(scan.num_patterns / batch_size))
    times = {name: [] for name in models}
    for round_ in range(rounds):
        for name, model in models.items():
            timer = EpochTimer().callback
            model.fit(training_dataset(scan, indices, batch_size, seed=round_ + 1,
                                       first_epoch=0, epochs=1),
                      epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
            times[name].append(timer.times[0])
    summary = {}
    width = max(len(name) for name in models)
    for name, values in times.items():
        ordered = sorted(values)
        summary[name] = {"median_s": statistics.median(values), "min_s": ordered[0],
                         "q25_s": ordered[len(ordered) // 4]}
        print(f"{name:{width}s} median {summary[name]['median_s']:.3f} s  min "
              f"{summary[name]['min_s']:.3f} s  q25 {summary[name]['q25_s']:.3f} s")
    return times, summary


def time_fft_floor(num_patterns, shape, batch_size, repeats=7):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    data = tf.constant((rng.normal(size=(batch_size,) + shape)
                        + 1j * rng.normal(size=(batch_size,) + shape)).astype(np.complex64))

    @tf.function(jit_compile=True)
    def forward_inverse(x):
        return tf.signal.ifft2d(tf.signal.fft2d(x))

    steps = int(np.ceil(num_patterns / batch_size))
    forward_inverse(data).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = forward_inverse(data)
        out.numpy()
        times.append(time.perf_counter() - start)
    # scale to exactly num_patterns transforms
    return statistics.median(times) * num_patterns / (steps * batch_size)


def run_peer(scan, probe, epochs, warmup, out_dir, python=sys.executable):
    path = os.path.join(out_dir, "standard_problem.npz")
    np.savez(path, patterns=scan.patterns, positions_px=scan.positions_px,
             probe=np.asarray(probe * np.sqrt(scan.mean_counts() / np.sum(np.abs(probe) ** 2)),
                              np.complex64),
             object_shape=np.array([512, 512]))
    json_path = os.path.join(out_dir, "peer_cdtools.json")
    cmd = [python, os.path.join(HERE, "peer_cdtools.py"), "--data", path,
           "--epochs", str(epochs), "--warmup", str(warmup), "--json-out", json_path]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        tail = getattr(exc, "stderr", "") or ""
        return {"error": f"cdtools run failed: {tail.strip().splitlines()[-1] if tail else exc}"}
    finally:
        if os.path.exists(path):
            os.remove(path)
    with open(json_path) as f:
        return json.load(f)


def main(argv=None):
    import adptycho.runtime

    adptycho.runtime.configure()  # as the adptycho command does (import no longer tunes malloc)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up epochs")
    parser.add_argument("--batch-sizes", default="16,64,400", help="comma-separated batch sizes")
    parser.add_argument("--no-peer", action="store_true", help="skip the cdtools comparison")
    parser.add_argument("--cdtools-python", default=(
        "/tmp/venv-cdtools/bin/python" if os.path.exists("/tmp/venv-cdtools/bin/python")
        else sys.executable), help="interpreter with torch and cdtools (default: "
        "/tmp/venv-cdtools/bin/python when it exists, else this one)")
    parser.add_argument("--fractional-positions", action="store_true",
                        help="keep the Fermat-spiral positions as drawn (sub-pixel, as in real "
                             "scans) instead of rounding them: every epoch then needs the "
                             "Fourier sub-pixel shift of the probe (implies --no-peer; results "
                             "go to benchmark_fractional.*)")
    parser.add_argument("--whole-xla", action="store_true",
                        help="compile each step as one XLA program (jit_compile=True) instead of "
                             "the library default (on CPU: XLA pieces joined by TensorFlow FFT "
                             "ops, adptycho.accel.xla_pieces)")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "benchmark"))
    args = parser.parse_args(argv)
    suffix = "_fractional" if args.fractional_positions else ""
    args.no_peer = args.no_peer or args.fractional_positions
    os.makedirs(args.out_dir, exist_ok=True)

    import tensorflow as tf

    load_at_start = [round(v, 2) for v in os.getloadavg()]
    scan, obj, probe = standard_problem(round_positions=not args.fractional_positions)
    n = scan.num_patterns
    print(f"standard problem: {scan.describe()}, object 512x512, TF {tf.__version__}, "
          f"{os.cpu_count()} CPU cores")
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        floor = time_fft_floor(n, scan.detector_shape, batch_size)
        for label, refine in (("object+probe", ("object", "probe")),
                              ("object+probe+positions", ("object", "probe", "positions")),
                              ("calibration: +positions+distance",
                               ("object", "probe", "positions", "distance"))):
            fit = time_fit(scan, refine, batch_size, args.epochs, args.warmup,
                           jit_compile=True if args.whole_xla else "auto")
            row = {"engine": "adptycho adam", "refine": label, "batch_size": batch_size,
                   "execution": fit["execution"],
                   "s_per_epoch": fit["median_s"], "patterns_per_s": n / fit["median_s"],
                   "fft_floor_s": floor, "fraction_of_floor": floor / fit["median_s"],
                   "epoch_times_s": fit["times_s"]}
            rows.append(row)
            print(f"adptycho {label:34s} batch {batch_size:4d}: {fit['median_s']:.4f} s/epoch, "
                  f"{n / fit['median_s']:.0f} patterns/s, FFT floor {floor:.4f} s "
                  f"({100 * floor / fit['median_s']:.0f}% of floor; {fit['execution']})")
    by_label = {}
    for r in rows:
        by_label.setdefault(r["batch_size"], {})[r["refine"]] = r["s_per_epoch"]
    for batch_size, times in by_label.items():
        ratio = times["calibration: +positions+distance"] / times["object+probe"]
        print(f"calibration epoch / object+probe epoch at batch {batch_size}: {ratio:.2f}")
        for r in rows:
            if r["batch_size"] == batch_size:
                r["ratio_to_object_probe"] = r["s_per_epoch"] / times["object+probe"]
    peer = None
    if not args.no_peer:
        peer = run_peer(scan, probe, args.epochs, args.warmup, args.out_dir, args.cdtools_python)
        if "error" in peer:
            print(f"cdtools: {peer['error']}")
        else:
            rows.append({"engine": "cdtools SimplePtycho adam", "refine": "object+probe",
                         "batch_size": peer.get("batch_size"),
                         "s_per_epoch": peer["median_s_per_epoch"],
                         "patterns_per_s": peer["patterns_per_s"], "fft_floor_s": None,
                         "fraction_of_floor": None, "epoch_times_s": peer.get("epoch_seconds")})
            print(f"cdtools SimplePtycho Adam batch {peer.get('batch_size')}: "
                  f"{peer['median_s_per_epoch']:.4f} s/epoch, {peer['patterns_per_s']:.0f} patterns/s")
            best = min(r["s_per_epoch"] for r in rows
                       if r["engine"] == "adptycho adam" and r["refine"] == "object+probe")
            print(f"speed-up of the fastest adptycho object+probe epoch over cdtools: "
                  f"{peer['median_s_per_epoch'] / best:.2f}x")
    with open(os.path.join(args.out_dir, f"benchmark{suffix}.json"), "w") as f:
        json.dump({"command": " ".join(["python", "experiments/benchmark.py"] + sys.argv[1:]),
                   "rows": rows, "peer": peer, "tensorflow": tf.__version__,
                   "cpu_count": os.cpu_count(), "load_average_at_start": load_at_start,
                   "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}, f, indent=1)
    with open(os.path.join(args.out_dir, f"benchmark{suffix}.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["engine", "refine", "batch_size", "s_per_epoch", "patterns_per_s",
                         "fft_floor_s", "fraction_of_floor"])
        for r in rows:
            writer.writerow([r["engine"], r["refine"], r["batch_size"], r["s_per_epoch"],
                             r["patterns_per_s"], r["fft_floor_s"], r["fraction_of_floor"]])
    return rows


if __name__ == "__main__":
    main()

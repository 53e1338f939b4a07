"""ePIE epoch time on the standard problem, adptycho vs PtyLab (CPU, side by side in one run).

Standard problem (``experiments/benchmark.py``'s ``standard_problem``): 512x512 object, 128x128
probe, 400 Fermat-spiral positions (about 70% area overlap) rounded to whole pixels,
noise-free, 1e6 photons per exposure.

Measured here, median of ``--epochs`` epochs after ``--warmup``:

* adptycho ``PIETrainer`` ePIE, object + probe updated, for each ``--batch-sizes`` (1 =
  sequential, the classical algorithm; larger = vectorised mini-batches);
* PtyLab ``Engines.ePIE`` (object + probe, sequential, numpy on CPU) run by
  ``experiments/peer_ptylab.py`` in a separate virtual environment (``--peer-python``, default
  ``/tmp/peervenv/bin/python``; create it with ``python -m venv /tmp/peervenv &&
  /tmp/peervenv/bin/pip install ptylab``), skipped with the reason recorded if absent;
* Pty-chi ``EPIEOptions`` (torch on CPU, batch sizes 16 and its default 100; batch 1 costs
  about 0.2 s per 64x64 pattern in its per-pattern Python path, so it is left out) run by
  ``experiments/peer_ptychi.py`` in ``--ptychi-python`` (default ``/tmp/peervenv2/bin/python``:
  ``python -m venv /tmp/peervenv2 && /tmp/peervenv2/bin/pip install ptychi``, about 6 GB with
  torch).

Writes ``experiments/benchmark_epie.json``.

Run::

    python experiments/benchmark_epie.py
    python experiments/benchmark_epie.py --epochs 3 --batch-sizes 1 --no-peer
    python experiments/benchmark_epie.py --batch-sizes 1 --no-peer --fourier-relaxation 1 \
        --out experiments/benchmark_epie_poisson_bound.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def time_adptycho(scan, probe, batch_size, epochs, warmup, fourier_relaxation=0.0):
    from adptycho.model import PtychoModel
    from adptycho.objects import PixelObject
    from adptycho.training.epie import PIETrainer, pie_settings

    model = PtychoModel(PixelObject((512, 512)), probe, scan.positions_px)
    trainer = PIETrainer(model, pie_settings("epie", batch_size=batch_size,
                                             fourier_relaxation=fourier_relaxation))
    times, residuals = [], []

    def stamp(epoch, logs):
        times.append(time.perf_counter())
        residuals.append(logs["residual"])

    start = time.perf_counter()
    trainer.fit(scan.patterns, warmup + epochs, callback=stamp)
    durations = np.diff([start] + times)[warmup:].tolist()
    return {"median_s": statistics.median(durations), "times_s": durations,
            "residual_first_last": [residuals[0], residuals[-1]],
            "patterns_per_s": scan.num_patterns / statistics.median(durations)}


def _run_peer(label, script, package, venv, scan, probe, epochs, warmup, python, extra=()):
    """Run a peer package's ePIE (``script``) in its own venv on the standard problem."""
    if not os.path.exists(python):
        return {"error": f"{python} not found (create the venv: python -m venv {venv} && "
                         f"{venv}/bin/pip install {package})"}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "problem.npz")
        np.savez(data, patterns=scan.patterns, corners=np.round(scan.positions_px).astype(np.int64),
                 probe=probe, object_shape=np.array([512, 512]))
        out = os.path.join(tmp, "peer.json")
        cmd = [python, os.path.join(HERE, script), "--data", data, "--json", out,
               "--epochs", str(epochs), "--warmup", str(warmup), *extra]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3000)
        except subprocess.CalledProcessError as exc:
            return {"error": f"{label} run failed: {exc.stderr.strip().splitlines()[-1:]}"}
        except subprocess.TimeoutExpired:
            return {"error": f"{label} run timed out"}
        with open(out) as f:
            return json.load(f)


def run_ptylab(scan, probe, epochs, warmup, python):
    return _run_peer("PtyLab", "peer_ptylab.py", "ptylab", "/tmp/peervenv", scan, probe, epochs,
                     warmup, python)


def run_ptychi(scan, probe, epochs, warmup, python, batch_sizes="16,100"):
    return _run_peer("Pty-chi", "peer_ptychi.py", "ptychi", "/tmp/peervenv2", scan, probe, epochs,
                     warmup, python, ("--batch-sizes", batch_sizes))


def main(argv=None):
    import adptycho.runtime

    adptycho.runtime.configure()  # as the adptycho command does (import no longer tunes malloc)
    from benchmark import standard_problem

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--peer-python", default="/tmp/peervenv/bin/python")
    parser.add_argument("--ptychi-python", default="/tmp/peervenv2/bin/python")
    parser.add_argument("--fourier-relaxation", type=float, default=0.0,
                        help="also time adptycho's ePIE with this Poisson noise bound")
    parser.add_argument("--out", default=os.path.join(HERE, "benchmark_epie.json"))
    args = parser.parse_args(argv)

    scan, obj, probe = standard_problem()
    probe = np.asarray(scan.probe[0] if scan.probe is not None else probe, np.complex64)
    results = {"problem": "512x512 object, 128x128 probe, 400 Fermat positions (~70% area "
                          "overlap), integer positions, noise-free, 1e6 photons",
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average_at_start": list(os.getloadavg())},
               "adptycho": {}}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        entry = time_adptycho(scan, probe, batch_size, args.epochs, args.warmup)
        results["adptycho"][f"batch_{batch_size}"] = entry
        print(f"adptycho ePIE batch {batch_size}: {entry['median_s']:.3f} s/epoch "
              f"({entry['patterns_per_s']:.0f} patterns/s)", flush=True)
        if args.fourier_relaxation > 0:
            relaxed = time_adptycho(scan, probe, batch_size, args.epochs, args.warmup,
                                    args.fourier_relaxation)
            results.setdefault("adptycho_poisson_bound", {})[f"batch_{batch_size}"] = relaxed
            print(f"adptycho ePIE batch {batch_size}, fourier_relaxation "
                  f"{args.fourier_relaxation:g}: {relaxed['median_s']:.3f} s/epoch", flush=True)
    if not args.no_peer:
        peer = run_ptylab(scan, probe, args.epochs, args.warmup, args.peer_python)
        results["ptylab"] = peer
        if "median_s" in peer:
            print(f"PtyLab ePIE: {peer['median_s']:.3f} s/epoch (positions match: "
                  f"{peer['positions_match']})", flush=True)
            fastest = min(v["median_s"] for v in results["adptycho"].values())
            sequential = results["adptycho"].get("batch_1", {}).get("median_s")
            results["speedup_fastest_vs_ptylab"] = peer["median_s"] / fastest
            if sequential:
                results["speedup_sequential_vs_ptylab"] = peer["median_s"] / sequential
        else:
            print(f"PtyLab: {peer['error']}", flush=True)
    if not args.no_peer:
        peer = run_ptychi(scan, probe, args.epochs, args.warmup, args.ptychi_python)
        results["ptychi"] = peer
        if "median_s" in peer:
            print(f"Pty-chi ePIE: fastest {peer['median_s']:.3f} s/epoch "
                  f"({ {k: round(v['median_s'], 3) for k, v in peer['batches'].items()} })", flush=True)
        else:
            print(f"Pty-chi: {peer['error']}", flush=True)
        peers = [results[k]["median_s"] for k in ("ptylab", "ptychi") if "median_s" in results[k]]
        if peers:
            fastest = min(v["median_s"] for v in results["adptycho"].values())
            results["fastest_peer_s"] = min(peers)
            results["speedup_fastest_vs_fastest_peer"] = min(peers) / fastest
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

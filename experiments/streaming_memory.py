"""Peak memory and epoch time of a streamed fit on a scan larger than the memory budget.

Issue "scale and resilience": one epoch of a 20000-pattern, 128x128 float32 CXI (1.31 GB of
patterns) must keep the peak resident memory under 1 GB when the patterns are streamed.

The script
1. writes the scan (once; ``--data``, default ``experiments/streaming_memory/big.cxi``, git-ignored):
   a 141 x 142 raster (20022 positions, step 8 px, jittered) over a 1272 x 1280 complex object,
   a 128 x 128 window with a 64-px-diameter aperture probe, 1e5 photons per exposure, Poisson
   noise; simulated and written 500 patterns at a time, uncompressed, one HDF5 chunk per pattern;
2. runs, each in a fresh process, ``reconstruct`` (Adam, object + probe, batch 32; default
   schedule: with one epoch object and probe from the start, with three the probe from epoch 2,
   which recompiles the step) for each of ``--epochs`` (default 1 and 3) with the patterns
   streamed from disk and with them loaded into memory, and records the peak resident set size of
   that process (``ru_maxrss``) and the time of every epoch;
3. writes ``streaming_memory.csv`` and ``streaming_memory.png`` to ``--out-dir``.

Run::

    python experiments/streaming_memory.py                 # about 10 minutes on 2 cores
    python experiments/streaming_memory.py --patterns 2000 # quick check
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def write_scan(path: str, patterns: int, seed: int = 0) -> None:
    import h5py

    from adptycho.geometry import circular_aperture, normalize_probe_power, raster_scan
    from adptycho.io.cxi import PLANCK_JOULE_METRE
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    columns = 142
    rows = int(np.ceil(patterns / columns))
    step, window = 8.0, 128
    positions = raster_scan((rows, columns), step, start_px=(4, 4), jitter_px=1.0, seed=seed)
    positions = positions[:patterns]
    shape = (int(np.ceil(positions[:, 0].max())) + window + 8,
             int(np.ceil(positions[:, 1].max())) + window + 8)
    obj = complex_test_object(shape, "camera", "astronaut")
    probe = normalize_probe_power(circular_aperture((window, window), 64.0, 2.0), 1e5)
    wavelength, distance, det_pixel = 1e-9, 1.0, 75e-6
    pixel = wavelength * distance / (window * det_pixel)
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with h5py.File(tmp, "w") as f:
        det = f.create_group("entry_1/instrument_1/detector_1")
        data = det.create_dataset("data", shape=(len(positions), window, window),
                                  dtype=np.float32, chunks=(1, window, window))
        det["distance"] = distance
        det["x_pixel_size"] = det_pixel
        det["y_pixel_size"] = det_pixel
        src = f.create_group("entry_1/instrument_1/source_1")
        src["wavelength"] = wavelength
        src["energy"] = PLANCK_JOULE_METRE / wavelength
        src["illumination"] = probe.astype(np.complex64)[None]
        translation = np.zeros((len(positions), 3))
        translation[:, 1] = positions[:, 0] * pixel
        translation[:, 0] = positions[:, 1] * pixel
        f["entry_1/sample_1/geometry_1/translation"] = translation
        for start in range(0, len(positions), 500):
            part = simulate(obj, probe, positions[start:start + 500], poisson=True,
                            seed=seed + start)
            data[start:start + len(part.patterns)] = part.patterns
            print(f"\rwriting patterns {start + len(part.patterns)}/{len(positions)}", end="",
                  flush=True)
    os.replace(tmp, path)
    print()


def run_fit(path: str, stream: bool, epochs: int, batch_size: int) -> dict:
    """In this (fresh) process: load, fit, report epoch times and the peak RSS."""
    import resource

    import keras

    from adptycho.io import load_cxi
    from adptycho.reconstruction import reconstruct

    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    started = time.perf_counter()
    scan = load_cxi(path, stream=stream)
    loaded = time.perf_counter() - started
    result = reconstruct(scan, engine="adam", epochs=epochs, batch_size=batch_size, refine=("object", "probe"),
                         verbose=0, callbacks=[Timer()], padding_px=4)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"mode": "streamed" if stream else "in memory", "patterns": scan.num_patterns,
            "pattern_gb": scan.num_patterns * 128 * 128 * 4 / 1e9, "load_s": loaded,
            "epoch_s": times, "peak_rss_mb": peak_mb,
            "object_shape": list(result.object.shape),
            "final_loss": float(result.loss_history[-1])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patterns", type=int, default=20000)
    parser.add_argument("--epochs", default="1,3",
                        help="comma-separated epoch counts: each runs in both modes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default=os.path.join(HERE, "streaming_memory", "big.cxi"))
    parser.add_argument("--out-dir", default=os.path.join(HERE, "streaming_memory"))
    parser.add_argument("--modes", default="streamed,in memory")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw streaming_memory.png from streaming_memory.csv")
    parser.add_argument("--child", choices=("streamed", "in memory"), help=argparse.SUPPRESS)
    parser.add_argument("--child-epochs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plot_only:
        print(plot(args.out_dir))
        return
    if args.child:
        print("RESULT " + json.dumps(run_fit(args.data, args.child == "streamed",
                                             args.child_epochs, args.batch_size)))
        return
    os.makedirs(args.out_dir, exist_ok=True)
    if not os.path.exists(args.data):
        write_scan(args.data, args.patterns)
    rows = []
    for epochs in [int(e) for e in args.epochs.split(",")]:
        for mode in args.modes.split(","):
            command = [sys.executable, os.path.abspath(__file__), "--child", mode, "--data",
                       args.data, "--child-epochs", str(epochs), "--batch-size",
                       str(args.batch_size)]
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
            row = json.loads(line[len("RESULT "):])
            row["epochs"] = epochs
            rows.append(row)
            print(f"{mode}, {epochs} epoch(s): peak RSS {row['peak_rss_mb']:.0f} MB, epochs "
                  + ", ".join(f"{t:.1f} s" for t in row["epoch_s"])
                  + f", load {row['load_s']:.1f} s", flush=True)
    csv_path = os.path.join(args.out_dir, "streaming_memory.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["mode", "epochs", "patterns", "pattern_gb", "peak_rss_mb", "load_s",
                         "epoch_s", "object_shape"])
        for row in rows:
            writer.writerow([row["mode"], row["epochs"], row["patterns"],
                             f"{row['pattern_gb']:.3f}", f"{row['peak_rss_mb']:.0f}",
                             f"{row['load_s']:.2f}", " ".join(f"{t:.2f}" for t in row["epoch_s"]),
                             "x".join(map(str, row["object_shape"]))])
    png = plot(args.out_dir)
    print(f"wrote {csv_path} and {png}")


def plot(out_dir):
    """Redraw ``streaming_memory.png`` from ``streaming_memory.csv``."""
    sys.path.insert(0, HERE)
    from figstyle import figure, save

    with open(os.path.join(out_dir, "streaming_memory.csv")) as f:
        rows = [dict(r, epochs=int(r["epochs"]), peak_rss_mb=float(r["peak_rss_mb"]),
                     epoch_s=[float(t) for t in r["epoch_s"].split()]) for r in csv.DictReader(f)]
    fig, axes = figure(1, 2, panel=(4.4, 3.6),
                       title=f"{rows[0]['patterns']} patterns of 128x128 "
                             f"({float(rows[0]['pattern_gb']):.2f} GB), Adam, object + probe, "
                             "batch 32")
    labels = [f"{r['mode']}\n{r['epochs']} ep." for r in rows]
    colours = ["tab:blue" if r["mode"] == "streamed" else "tab:gray" for r in rows]
    axes[0].bar(labels, [r["peak_rss_mb"] for r in rows], color=colours)
    axes[0].axhline(1000, color="tab:red", ls="--", label="1 GB")
    axes[0].set(ylabel="peak resident memory (MB)", title="memory")
    axes[0].legend()
    longest = max(r["epochs"] for r in rows)
    steady = [r for r in rows if r["epochs"] == longest]
    axes[1].bar([r["mode"] for r in steady],
                [float(np.median(r["epoch_s"][1:] or r["epoch_s"])) for r in steady],
                color=["tab:blue" if r["mode"] == "streamed" else "tab:gray" for r in steady])
    axes[1].set(ylabel=f"median epoch time (s), epochs 2-{longest}",
                title="time per epoch (shared 2-core machine)")
    return save(fig, os.path.join(out_dir, "streaming_memory.png"))


if __name__ == "__main__":
    main()

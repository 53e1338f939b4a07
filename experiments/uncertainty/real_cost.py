"""Cost of uncertainty maps on measured data, run with the default commands (issue 22).

The tike Siemens star of ``../shared/data`` (516 far-field patterns of 128x128, measured
non-integer scan positions, unknown probe). Each repeat runs, in one process (TensorFlow imported
and warmed up first, so that no row pays for the import):

* ``adptycho reconstruct STAR --out rec.h5``, the default command: its seconds and epochs
  (the length of the saved loss history) give the mean seconds per epoch of the reconstruction the
  map belongs to (``epoch_s``; ePIE and Adam stages, probe refined);
* ``adptycho uncertainty STAR rec.h5 --out U.h5`` with the default settings and with
  ``--preset fast``: seconds, CG iterations of the object map and of the probe's (the default
  reconstruction refines the probe, so the map also writes ``probe_std``), the operator used,
  and the cost in epochs of that reconstruction (``seconds / epoch_s``).

Every timed call includes reading the compressed scan (about a second) and writing its files, as a
user's run does. The machine is shared (2 CPUs); the JSON records the load average before and
after each repeat; medians over ``--repeats``.

Run::

    python experiments/uncertainty/real_cost.py   # writes experiments/uncertainty/real_cost.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile
import time

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "real_cost.json")
MAPS = {"default": [], "fast": ["--preset", "fast"]}


def _run(argv):
    """Seconds of ``adptycho ARGV`` in this process (its output kept quiet)."""
    from adptycho.cli import main

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = main(argv)
    seconds = time.perf_counter() - started
    if status not in (0, None):
        raise SystemExit(f"adptycho {' '.join(argv)} exited with {status}")
    return seconds


def repeat_once(star, folder):
    """One repeat: the default reconstruction, then each map of it."""
    rec = os.path.join(folder, "rec.h5")
    load = os.getloadavg()[0]
    seconds = _run(["reconstruct", star, "--out", rec])
    with h5py.File(rec, "r") as f:
        epochs = int(len(f["loss_history"]))
    out = {"reconstruct_s": seconds, "epochs": epochs, "epoch_s": seconds / epochs, "maps": {}}
    for label, extra in MAPS.items():
        path = os.path.join(folder, f"U_{label}.h5")
        seconds = _run(["uncertainty", star, rec, "--out", path] + extra)
        with h5py.File(path, "r") as f:
            info = json.loads(f.attrs["info"])
            settings = json.loads(f.attrs["settings"])
            phase = f["object_phase_std"][()]
        out["maps"][label] = {"seconds": seconds, "cg_iterations": info["cg_iterations"],
                              "probe_cg_iterations": info.get("probe_cg_iterations"),
                              "operator": info["operator"], "probes": settings["probes"],
                              "tolerance": settings["tolerance"],
                              "median_phase_std_rad": float(np.nanmedian(phase)),
                              "determined_pixels": info["determined_pixels"]}
    out["load_before_after"] = [load, os.getloadavg()[0]]
    return out


def rows_of(repeats):
    """Median figures per map over the repeats."""
    epoch = float(np.median([r["epoch_s"] for r in repeats]))
    rows = []
    for label in MAPS:
        maps = [r["maps"][label] for r in repeats]
        seconds = float(np.median([m["seconds"] for m in maps]))
        rows.append({"map": label, "dataset": "tike Siemens star", "patterns": 516,
                     "operator": maps[0]["operator"], "probes": maps[0]["probes"],
                     "tolerance": maps[0]["tolerance"],
                     "cg_iterations": int(np.median([m["cg_iterations"] for m in maps])),
                     "probe_cg_iterations": maps[0]["probe_cg_iterations"],
                     "seconds": seconds,
                     "reconstruct_s": float(np.median([r["reconstruct_s"] for r in repeats])),
                     "reconstruct_epochs": repeats[0]["epochs"], "epoch_s": epoch,
                     "epochs": seconds / epoch, "repeats": len(repeats)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    from adptycho.io import data_dir

    root = data_dir()
    star = None if root is None else os.path.join(root, "tike_siemens_star",
                                                   "siemens-star-small.npz.bz2")
    if star is None or not os.path.exists(star):
        print("real_cost: ../shared/data not found (set ADPTYCHO_DATA_DIR); nothing to do")
        return
    import tensorflow as tf  # imported before any timing

    tf.constant(0.0)
    from adptycho.io.atomic import atomic_path

    repeats = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.repeats):
            repeats.append(repeat_once(star, folder))
            print(f"repeat {index}: " + json.dumps(repeats[-1]), flush=True)
            meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                    "command": "python experiments/uncertainty/real_cost.py"}
            with atomic_path(args.out, suffix=".json.tmp") as tmp, open(tmp, "w") as f:
                json.dump({"meta": meta, "rows": rows_of(repeats), "repeats": repeats}, f,
                          indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

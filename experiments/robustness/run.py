"""One runner for the blind-reconstruction robustness suite (issue 18, part 6).

For every case of ``cases.py`` (and the two real scans) and every method it runs the method once,
scores it, caches the result in ``runs/<case>/<method>/result.json`` (plus the gauge-removed
object for the montage) and rewrites ``results.csv`` from the whole cache. A rerun skips what is
cached unless the method is named in ``--force``.

Methods (see README.md):

* ``blind-default``: ``adptycho reconstruct scan.cxi --refine probe --out rec.h5`` exactly as a
  user types it (``--refine probe,positions`` for the cases whose file positions are wrong;
  ``--nearfield`` for the near-field cases and ``--focus-distance 3.65e-3`` for PETRA: geometry
  flags, since a CXI file does not say near / far field or z1).
* ``adptycho-epie``: the same with ``--engine epie`` (that engine's defaults).
* ``known-probe``: the ceiling of the issue: textbook sequential ePIE (``numpy_epie.py``) with the
  TRUE probe and the TRUE positions, object only, alpha 1, 60 epochs.
* ``known-probe-300``: the same for 300 epochs (60 epochs is not converged for some cases).
* ``numpy-epie-meanprobe``: textbook ePIE, object + probe (alpha = beta = 1), 100 epochs, nominal
  positions, probe from the mean pattern.
* ``cdtools-fancy``: cdtools ``FancyPtycho`` blind, its example schedule (``peer_cdtools_fancy.py``
  in ``/tmp/venv-cdtools``).
* ``ptylab``: PtyLab CPM tutorial settings, ePIE 10 + mPIE 100 (``peer_ptylab_blind.py`` in
  ``/tmp/peervenv``).

Run::

    python experiments/robustness/cases.py            # write the cases (seeded; ~10 s)
    python experiments/robustness/run.py              # everything not cached yet
    python experiments/robustness/run.py --methods blind-default --force blind-default
    python experiments/robustness/run.py --cases ff_lowdose_1e4 --methods known-probe,ptylab
    python experiments/robustness/report.py           # README table + montage.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases as C  # noqa: E402
import metric  # noqa: E402

RUNS_DIR = os.path.join(HERE, "runs")
RESULTS_CSV = os.path.join(HERE, "results.csv")
CDTOOLS_PYTHON = os.environ.get("ROBUSTNESS_CDTOOLS_PYTHON", "/tmp/venv-cdtools/bin/python")
PTYLAB_PYTHON = os.environ.get("ROBUSTNESS_PTYLAB_PYTHON", "/tmp/peervenv/bin/python")
METHODS = ["blind-default", "known-probe", "known-probe-300", "adptycho-epie",
           "numpy-epie-meanprobe", "cdtools-fancy", "ptylab"]
REAL_METHODS = {"blind-default", "adptycho-epie"}
MARGIN = 8  # numpy ePIE object grid = truth grid + this margin on every side
FIELDS = ["case", "kind", "method", "nrmse", "residual", "seconds", "status", "command", "notes"]


# ---------------------------------------------------------------------------------------------
def _workdir(case, method):
    path = os.path.join(RUNS_DIR, case, method)
    os.makedirs(path, exist_ok=True)
    return path


def _score(estimate, truth, offset, workdir, save=True):
    """NRMSE with the gauges removed (and the twin, in far field); saves the raw estimate (for
    ``--rescore``) and the aligned object on the mask (for the montage)."""
    if save:
        np.savez_compressed(os.path.join(workdir, "estimate.npz"),
                            object=np.asarray(estimate, np.complex64),
                            offset=np.asarray(offset, np.float64))
    err, aligned, gauges = metric.score(estimate, truth["object"], truth["mask"], offset,
                                        allow_twin=str(truth["geometry"]) == "farfield")
    np.savez_compressed(os.path.join(workdir, "aligned.npz"),
                        aligned=(aligned * truth["mask"]).astype(np.complex64))
    return err, gauges


def _twin_note(gauges):
    return " [twin solution conj(O(c - x))]" if gauges.get("twin") else ""


def _subprocess(cmd, workdir, timeout):
    """Run ``cmd``; returns (status, seconds, tail of the log)."""
    log = os.path.join(workdir, "log.txt")
    started = time.perf_counter()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, cwd=workdir, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout)
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            status = f"timeout ({timeout} s)"
    seconds = time.perf_counter() - started
    with open(log, errors="replace") as f:
        tail = f.read()[-2000:]
    return status, seconds, tail


def _last_line(text, needle=""):
    lines = [line.strip() for line in text.splitlines() if line.strip() and needle in line]
    return lines[-1][:300] if lines else ""


def _library_state():
    """adptycho's git commit and whether adptycho/ had uncommitted changes (read-only git)."""
    repo = os.path.dirname(os.path.dirname(HERE))
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "adptycho"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return f"{head}{' + uncommitted adptycho/ changes' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _summary_line(text):
    """adptycho's closing line ("N epochs ... in S s; loss ..., amplitude residual a -> b"),
    without the output path."""
    lines = [l.strip() for l in text.splitlines() if l.startswith("adptycho:") and "residual" in l]
    return lines[-1].split("; wrote")[0][:300] if lines else _last_line(text, "adptycho:")


def _input_npz(case, workdir):
    truth = C.load_truth(case)
    counts, positions = C.load_scan(case)
    path = os.path.join(workdir, "in.npz")
    np.savez(path, patterns=counts, positions_px=positions, geometry=str(truth["geometry"]),
             wavelength_m=truth["wavelength_m"], distance_m=truth["distance_m"],
             detector_pixel_m=truth["detector_pixel_m"], object_pixel_m=truth["object_pixel_m"])
    return path


# ---------------------------------------------------------------------------------------------
def _adptycho(case, workdir, timeout, engine=None):
    if case in C.REAL_CASES:
        spec = C.REAL_CASES[case]
        data = C.shared_data_dir()
        if data is None:
            return dict(status="n/a", notes="../shared/data not found")
        source = os.path.join(data, spec["path"])
        flags = list(spec["flags"])
        refine = "probe"
    else:
        c = C.CASES_BY_NAME[case]
        source = os.path.join(C.case_dir(case), "scan.cxi")
        flags = ["--nearfield"] if c.geometry == "nearfield" else []
        # the only per-case flag (the PIE engines refine positions too)
        refine = c.refine
    out = os.path.join(workdir, "rec.h5")
    if os.path.exists(out):
        os.remove(out)
    cmd = ["adptycho", "reconstruct", source] + (["--engine", engine] if engine else []) + \
        ["--refine", refine, "--out", out] + flags
    shown = " ".join(["adptycho", "reconstruct", os.path.basename(source)] +
                     (["--engine", engine] if engine else []) + ["--refine", refine,
                                                                 "--out", "rec.h5"] + flags)
    status, seconds, tail = _subprocess(cmd, workdir, timeout)
    row = dict(status=status, seconds=seconds, command=shown,
               notes=_summary_line(tail) if status == "ok" else _last_line(tail))
    if not os.path.exists(out):
        return row
    import h5py

    with h5py.File(out, "r") as f:
        obj = f["object"][()]
        origin = np.asarray(f.attrs.get("object_origin_px", (0.0, 0.0)), np.float64)
        residual = f["residual_history"][()] if "residual_history" in f else np.array([])
        version = str(f.attrs.get("adptycho_version", ""))
    row["library_state"] = _library_state()
    row["residual"] = float(residual[-1]) if len(residual) else None
    row["epochs"] = int(len(residual))
    row["adptycho_version"] = version
    if case in C.REAL_CASES:
        row["notes"] = (f"{row['notes']} | {C.REAL_CASES[case]['note']}").strip(" |")
        return row
    truth = C.load_truth(case)
    err, gauges = _score(obj, truth, origin - truth["corner_offset"], workdir)
    row.update(nrmse=err, gauges=gauges, notes=row["notes"] + _twin_note(gauges))
    return row


def m_blind_default(case, workdir, timeout):
    return _adptycho(case, workdir, timeout)


def m_adptycho_epie(case, workdir, timeout):
    return _adptycho(case, workdir, timeout, engine="epie")


def _numpy_epie(case, workdir, known, epochs):
    from numpy_epie import epie, mean_pattern_probe

    truth = C.load_truth(case)
    counts, positions = C.load_scan(case)
    geometry = str(truth["geometry"])
    shape = tuple(np.asarray(truth["object"].shape) + 2 * MARGIN)
    if known:
        corners = truth["true_corners"] + MARGIN
        probe = truth["probe"]
        kwargs = dict(alpha=1.0, beta=0.0)
    else:
        corners = positions + truth["corner_offset"] + MARGIN
        probe = mean_pattern_probe(counts, geometry)
        kwargs = dict(alpha=1.0, beta=1.0)
    started = time.perf_counter()
    obj, probe, history = epie(counts, corners, probe, shape, geometry, epochs=epochs, **kwargs)
    seconds = time.perf_counter() - started
    err, gauges = _score(obj, truth, (MARGIN, MARGIN), workdir)
    what = ("true probe, true positions, object only, alpha 1" if known else
            "mean-pattern probe, nominal positions, alpha = beta = 1")
    return dict(status="ok", seconds=seconds, nrmse=err, residual=float(history[-1]),
                epochs=epochs, gauges=gauges,
                command=f"numpy_epie.epie ({what}, {epochs} epochs)",
                notes=f"residual {history[0]:.4f} -> {history[-1]:.4f}" + _twin_note(gauges))


def m_known_probe(case, workdir, timeout):
    return _numpy_epie(case, workdir, True, 60)


def m_known_probe_300(case, workdir, timeout):
    return _numpy_epie(case, workdir, True, 300)


def m_numpy_epie_meanprobe(case, workdir, timeout):
    return _numpy_epie(case, workdir, False, 100)


def _peer(case, workdir, timeout, python, script, label):
    if not os.path.exists(python):
        return dict(status="n/a", notes=f"{python} not found (see README: peer venvs)")
    data = _input_npz(case, workdir)
    out = os.path.join(workdir, "out.npz")
    if os.path.exists(out):
        os.remove(out)
    truth_path = os.path.join(C.case_dir(case), "truth.npz")
    cmd = [python, os.path.join(HERE, script), "--data", data, "--out", out,
           "--check-truth", truth_path]
    status, seconds, tail = _subprocess(cmd, workdir, timeout)
    row = dict(status=status, seconds=seconds, command=f"{label} ({script})",
               notes=_last_line(tail))
    if not os.path.exists(out):
        return row
    with np.load(out) as z:
        obj, origin, info = z["object"], z["origin"], json.loads(str(z["info"]))
    truth = C.load_truth(case)
    err, gauges = _score(obj, truth, np.asarray(origin) - truth["corner_offset"], workdir)
    check = info.get("truth_check") or {}
    notes = f"fit {info.get('seconds_fit', 0):.0f} s"
    if check.get("mean_rel_err", 0) > 1e-3:
        notes += (f"; forward model differs from the simulator by {check['mean_rel_err']:.1%} "
                  "(mean relative intensity error, true object and probe)")
    if check.get("positions_as_expected") is False:
        notes += "; PtyLab positions differ from the expected rounding"
    row.update(nrmse=err, gauges=gauges, notes=notes + _twin_note(gauges), peer_info=info)
    return row


def m_cdtools(case, workdir, timeout):
    return _peer(case, workdir, timeout, CDTOOLS_PYTHON, "peer_cdtools_fancy.py",
                 "cdtools FancyPtycho, example schedule")


def m_ptylab(case, workdir, timeout):
    row = _peer(case, workdir, timeout, PTYLAB_PYTHON, "peer_ptylab_blind.py",
                "PtyLab CPM tutorial: ePIE 10 + mPIE 100")
    return row


RUNNERS = {"blind-default": m_blind_default, "adptycho-epie": m_adptycho_epie,
           "known-probe": m_known_probe, "known-probe-300": m_known_probe_300,
           "numpy-epie-meanprobe": m_numpy_epie_meanprobe, "cdtools-fancy": m_cdtools,
           "ptylab": m_ptylab}


# ---------------------------------------------------------------------------------------------
def all_cases():
    return [c.name for c in C.CASES] + list(C.REAL_CASES)


def run_one(case, method, timeout, force):
    workdir = _workdir(case, method)
    cache = os.path.join(workdir, "result.json")
    if os.path.exists(cache) and not force:
        return None
    if case in C.REAL_CASES and method not in REAL_METHODS:
        row = dict(status="n/a", notes="real scan: no truth; only the adptycho CLI rows are run")
    elif case not in C.REAL_CASES and not os.path.exists(
            os.path.join(C.case_dir(case), "scan.cxi")):
        raise SystemExit(f"{case}: no data; run experiments/robustness/cases.py first")
    else:
        try:
            row = RUNNERS[method](case, workdir, timeout)
        except Exception as exc:  # record, never stop the suite
            row = dict(status="error", notes=f"{type(exc).__name__}: {exc}"[:300])
    row.update(case=case, method=method, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
               load_average=list(os.getloadavg()))
    with open(cache, "w") as f:
        json.dump(row, f, indent=1, default=float)
    return row


def rescore(names, methods):
    """Recompute the NRMSE of cached runs from their saved estimate (metric changes only)."""
    for case in names:
        if case in C.REAL_CASES:
            continue
        truth = C.load_truth(case)
        for method in methods:
            workdir = os.path.join(RUNS_DIR, case, method)
            cache = os.path.join(workdir, "result.json")
            est = os.path.join(workdir, "estimate.npz")
            if not (os.path.exists(cache) and os.path.exists(est)):
                continue
            with open(cache) as f:
                row = json.load(f)
            with np.load(est) as z:
                err, gauges = _score(z["object"], truth, z["offset"], workdir, save=False)
            notes = row.get("notes", "").replace(_twin_note({"twin": True}), "")
            row.update(nrmse=err, gauges=gauges, notes=notes + _twin_note(gauges))
            with open(cache, "w") as f:
                json.dump(row, f, indent=1, default=float)
            print(f"{case:36s} {method:22s} rescored nrmse {err:.4f}{_twin_note(gauges)}")


def _previous_rows(path=RESULTS_CSV):
    """Rows of the existing CSV, so that runs whose cache (git-ignored ``runs/``) is absent on
    this machine keep their published numbers when the CSV is rewritten."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        return {(r["case"], r["method"]): r for r in csv.DictReader(f)}


def load_rows():
    previous = _previous_rows()
    rows = []
    for case in all_cases():
        kind = "real" if case in C.REAL_CASES else C.CASES_BY_NAME[case].geometry
        for method in METHODS:
            path = os.path.join(RUNS_DIR, case, method, "result.json")
            if os.path.exists(path):
                with open(path) as f:
                    r = json.load(f)
            elif (case, method) in previous:
                rows.append(dict(previous[(case, method)], kind=kind))
                continue
            else:
                r = dict(status="not run")
            rows.append(dict(case=case, kind=kind, method=method,
                             nrmse="" if r.get("nrmse") is None else f"{r['nrmse']:.4f}",
                             residual="" if r.get("residual") is None else f"{r['residual']:.5f}",
                             seconds="" if r.get("seconds") is None else f"{r['seconds']:.1f}",
                             status=r.get("status", ""), command=r.get("command", ""),
                             notes=r.get("notes", "")))
    return rows


def write_csv(path=RESULTS_CSV):
    rows = load_rows()
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="run the robustness suite")
    parser.add_argument("--cases", default="", help="comma-separated (default: all)")
    parser.add_argument("--methods", default="", help=f"comma-separated of {','.join(METHODS)}")
    parser.add_argument("--force", default="", help="methods to rerun even if cached ('all')")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per run (default 1200)")
    parser.add_argument("--rescore", action="store_true",
                        help="only recompute the NRMSE of cached runs (after a metric change)")
    args = parser.parse_args(argv)
    names = args.cases.split(",") if args.cases else all_cases()
    methods = args.methods.split(",") if args.methods else METHODS
    force = set(METHODS) if args.force == "all" else set(filter(None, args.force.split(",")))
    for m in list(methods) + list(force):
        if m not in METHODS:
            parser.error(f"unknown method {m}")
    for n in names:
        if n not in all_cases():
            parser.error(f"unknown case {n}")
    if args.rescore:
        rescore(names, methods)
        write_csv()
        return 0
    for method in methods:
        for case in names:
            row = run_one(case, method, args.timeout, method in force)
            if row is None:
                print(f"{case:36s} {method:22s} cached", flush=True)
                continue
            nrmse = row.get("nrmse")
            print(f"{case:36s} {method:22s} {row.get('status', ''):10s} "
                  f"nrmse {'' if nrmse is None else f'{nrmse:.4f}':8s} "
                  f"{row.get('seconds', 0) or 0:7.1f} s  {row.get('notes', '')[:100]}", flush=True)
            write_csv()
    write_csv()
    print(f"wrote {RESULTS_CSV}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

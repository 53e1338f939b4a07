"""Render ``results.csv`` into README.md (its report:robustness-* blocks) and ``montage.png``.

Run::

    python experiments/robustness/report.py

Tables: object NRMSE per case and method (gauges removed, see metric.py), the acceptance
ratios of issue 18 (blind default / known-probe <= 1.5; blind default at least matching
adptycho's ePIE and cdtools' FancyPtycho, "matching" = within 5%), the wall time per run, and the
real scans' data residual. The montage shows, per simulated case, the true phase and every
method's gauge-removed phase on the well-illuminated region (NRMSE in the panel title): wrapped
phase (-pi..pi) for most cases, the phase on the truth's range for the weak-phase cases and the
amplitude for the amplitude-dominant cases.
"""

from __future__ import annotations

import csv
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases as C  # noqa: E402
from run import METHODS, RESULTS_CSV, RUNS_DIR  # noqa: E402

README = os.path.join(HERE, "README.md")
ROOT = os.path.dirname(os.path.dirname(HERE))
# what the git-ignored data/ and runs/ say, kept in committed files so that a clone renders the
# same tables (refreshed by main() whenever data/ or runs/ are present)
CASES_SUMMARY = os.path.join(HERE, "cases_summary.json")
PROVENANCE = os.path.join(HERE, "provenance.json")
MONTAGE = os.path.join(HERE, "montage.png")
PANELS = os.path.join(HERE, "montage_panels.npz")  # uint8 panels, so a fresh clone can redraw
SHOWN = ["known-probe", "known-probe-300", "blind-default", "adptycho-epie",
         "numpy-epie-meanprobe", "cdtools-fancy", "ptylab"]
MATCH_TOLERANCE = 1.05
CEILING_RATIO = 1.5


def read_rows(path=RESULTS_CSV):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    table = {}
    for r in rows:
        table.setdefault(r["case"], {})[r["method"]] = r
    return table


def _num(r, key):
    try:
        return float(r[key])
    except (KeyError, TypeError, ValueError):
        return None


def _cell(r):
    if r is None or r["status"] == "not run":
        return "not run"
    value = _num(r, "nrmse")
    if value is None:
        return r["status"]
    return f"{value:.3f}" + ("" if r["status"] == "ok" else f" ({r['status']})")


def nrmse_table(table):
    head = "| case | " + " | ".join(SHOWN) + " | blind / known | blind / adptycho-epie | " \
           "blind / cdtools | accept | blind / known-300 (info) |"
    lines = [head, "|" + "---|" * (len(SHOWN) + 6)]
    passed = 0
    simulated = [c.name for c in C.CASES]
    for case in simulated:
        row = table.get(case, {})
        cells = [_cell(row.get(m)) for m in SHOWN]
        blind = _num(row.get("blind-default", {}), "nrmse")
        ratios, ok = [], blind is not None
        for ref, limit in (("known-probe", CEILING_RATIO), ("adptycho-epie", MATCH_TOLERANCE),
                           ("cdtools-fancy", MATCH_TOLERANCE)):
            other = _num(row.get(ref, {}), "nrmse")
            if blind is None or other is None or other == 0:
                ratios.append("")
                ok = False if ref == "known-probe" else ok
                continue
            ratio = blind / other
            ratios.append(f"{ratio:.2f}")
            ok = ok and ratio <= limit
        passed += ok
        long = _num(row.get("known-probe-300", {}), "nrmse")
        info = f"{blind / long:.2f}" if blind is not None and long else ""
        lines.append(f"| {case} | " + " | ".join(cells) + " | " + " | ".join(ratios) +
                     f" | {'yes' if ok else '**no**'} | {info} |")
    lines.append("")
    lines.append(f"Accepted (blind / known <= {CEILING_RATIO}, blind <= {MATCH_TOLERANCE} x "
                 f"adptycho-epie and <= {MATCH_TOLERANCE} x cdtools-fancy): "
                 f"**{passed} of {len(simulated)}** simulated cases.")
    return lines


def seconds_table(table):
    lines = ["| case | " + " | ".join(SHOWN) + " |", "|" + "---|" * (len(SHOWN) + 1)]
    for case in [c.name for c in C.CASES] + list(C.REAL_CASES):
        row = table.get(case, {})
        cells = []
        for m in SHOWN:
            s = _num(row.get(m, {}), "seconds")
            cells.append("" if s is None else f"{s:.0f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines


def real_table(table):
    lines = ["| scan | method | status | final residual | seconds | command | notes |",
             "|---|---|---|---|---|---|---|"]
    for case in C.REAL_CASES:
        for m in ("blind-default", "adptycho-epie"):
            r = table.get(case, {}).get(m)
            if r is None:
                continue
            lines.append(f"| {case} | {m} | {r['status']} | {r['residual']} | {r['seconds']} | "
                         f"`{r['command']}` | {r['notes'][:160]} |")
    return lines


def notes_table(table):
    lines = []
    for case in [c.name for c in C.CASES]:
        for m in SHOWN:
            r = table.get(case, {}).get(m)
            if r and r["status"] not in ("ok", "not run"):
                lines.append(f"* {case} / {m}: {r['status']} -- {r['notes'][:200]}")
            elif r and "differs" in r.get("notes", "") and "by 0.1%" not in r["notes"]:
                lines.append(f"* {case} / {m}: {r['notes'][:220]}")
    return lines or ["* none"]


def montage(path=MONTAGE):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = read_rows()
    names = [c.name for c in C.CASES]
    # panels of runs whose cache (git-ignored runs/) is absent are kept from PANELS
    stored = {}
    if os.path.exists(PANELS):
        with np.load(PANELS) as z:
            stored = {k: z[k] for k in z.files}
    cols = 1 + len(SHOWN)
    fig, axes = plt.subplots(len(names), cols, figsize=(1.25 * cols, 1.35 * len(names)))
    for i, name in enumerate(names):
        truth = C.load_truth(name)
        mask = truth["mask"]
        ys, xs = np.nonzero(mask)
        crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        kind = C.CASES_BY_NAME[name].obj
        if kind == "amplitude":  # amplitude-dominant: show |O| (its phase is 0.2 rad)
            show, label = np.abs, "|O|"
            vmin, vmax, cmap = 0.0, float(np.abs(truth["object"])[mask].max()), "gray"
        elif kind == "weak_phase":  # 0.3 rad: show the phase on the truth's range
            show, label = np.angle, "phase"
            lo, hi = np.percentile(np.angle(truth["object"])[mask], [1, 99])
            vmin, vmax, cmap = lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), "gray"
        else:
            show, label = np.angle, "phase"
            vmin, vmax, cmap = -np.pi, np.pi, "twilight"
        def to_panel(field):  # uint8 on [vmin, vmax], 255 = outside the mask
            image = np.clip((show(field) - vmin) / (vmax - vmin), 0, 1)
            return np.where(mask, np.round(image * 254), 255).astype(np.uint8)[crop]

        panels = [(f"truth ({label})", to_panel(truth["object"]))]
        for m in SHOWN:
            p = os.path.join(RUNS_DIR, name, m, "aligned.npz")
            key = f"{name}/{m}"
            if os.path.exists(p):
                with np.load(p) as z:
                    stored[key] = to_panel(z["aligned"])
            title = f"{m}\n{_cell(table.get(name, {}).get(m))}"
            panels.append((title, stored.get(key)))
        for j, (title, panel) in enumerate(panels):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is not None:
                image = np.where(panel == 255, np.nan, vmin + panel / 254.0 * (vmax - vmin))
                ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(title, fontsize=5, pad=1.5)
            if j == 0:
                ax.set_ylabel(name, fontsize=4.5)
    np.savez_compressed(PANELS, **stored)
    fig.subplots_adjust(left=0.04, right=0.995, top=0.985, bottom=0.005, wspace=0.05, hspace=0.35)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    try:  # palette PNG: a fraction of the size
        from PIL import Image

        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=128)
        small.save(path, optimize=True)
    except ImportError:
        pass
    return path


def refresh_cases_summary():
    """cases_summary.json from data/<case>/case.json (when data/ exists)."""
    import json

    summaries = {}
    for c in C.CASES:
        path = os.path.join(C.case_dir(c.name), "case.json")
        if os.path.exists(path):
            with open(path) as f:
                summaries[c.name] = json.load(f)["summary"]
    if summaries:
        with open(CASES_SUMMARY, "w") as f:
            json.dump(summaries, f, indent=1, sort_keys=True)
            f.write("\n")


def _cases_summary():
    import json

    if not os.path.exists(CASES_SUMMARY):
        return {}
    with open(CASES_SUMMARY) as f:
        return json.load(f)


def case_table():
    summaries = _cases_summary()
    lines = ["| case | geometry | probe | object (pictures) | photons / pattern | scan | overlap | "
             "pos. error | patterns | probe diameter / step (px) | issue example / note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in C.CASES:
        summary = summaries.get(c.name, {})
        probe = c.probe + " (" + ", ".join(f"{k} {v:g}" for k, v in c.probe_params) + ")"
        pics = "/".join(i for i in c.images if i) or "random discs"
        scan = c.scan + (f" + {c.jitter_px:g} px jitter" if c.jitter_px else "")
        err = f"{c.pos_error_px:g} px std" if c.pos_error_px else "0"
        size = (f"{summary.get('diameter_px', '')} / {summary.get('step_px', '')}"
                if summary else "")
        note = "; ".join(x for x in (f"**issue: {c.issue_example}**" if c.issue_example else "",
                                     c.note) if x)
        lines.append(f"| {c.name} | {c.geometry} | {probe} | {c.obj} ({pics}) | {c.photons:.0e} | "
                     f"{scan} | {c.overlap:.0%} | {err} | {summary.get('patterns', '')} | {size} | "
                     f"{note} |")
    for name, spec in C.REAL_CASES.items():
        lines.append(f"| {name} | real | unknown | unknown | measured | measured | | | | | "
                     f"{spec['note']} |")
    return "\n".join(lines)


def refresh_provenance():
    """provenance.json from runs/<case>/<method>/result.json (when runs/ exists)."""
    import json

    states, versions, loads = {}, {}, {}
    for case in [c.name for c in C.CASES] + list(C.REAL_CASES):
        for m in ("blind-default", "adptycho-epie"):
            path = os.path.join(RUNS_DIR, case, m, "result.json")
            if os.path.exists(path):
                with open(path) as f:
                    r = json.load(f)
                states.setdefault(m, set()).add(r.get("library_state", "not recorded"))
                finished = r.get("finished", "")
                versions.setdefault(m, []).append(finished)
                if r.get("load_average"):
                    loads.setdefault(m, []).append(float(r["load_average"][0]))
    if not states:
        return
    out = {}
    for m, s in states.items():
        times = sorted(t for t in versions[m] if t)
        out[m] = {"library_state": sorted(s), "first": times[0] if times else None,
                  "last": times[-1] if times else None}
        if loads.get(m):  # the 1-minute load average at the end of each run
            out[m]["load_average"] = [round(min(loads[m]), 1), round(max(loads[m]), 1)]
    with open(PROVENANCE, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


def provenance():
    import json

    if not os.path.exists(PROVENANCE):
        return ["* provenance: not recorded (`provenance.json` absent)"]
    with open(PROVENANCE) as f:
        data = json.load(f)
    return [f"* `{m}` rows: adptycho commit {', '.join(r['library_state'])}; run "
            f"{r['first'] or '?'} .. {r['last'] or '?'}"
            + (f"; 1-minute load average {r['load_average'][0]:g}-{r['load_average'][1]:g} at "
               "the end of the runs" if r.get("load_average") else "")
            + " (`provenance.json`)" for m, r in data.items()]


def results_block():
    """The tables of this folder's README (between its report:robustness-results markers)."""
    table = read_rows()
    parts = ["Rendered by `python experiments/report.py` from `experiments/robustness/results.csv` "
             "(written by `python experiments/robustness/run.py`; see How to run) and "
             "`experiments/robustness/provenance.json`.", ""]
    parts += provenance()
    parts += ["", "### Object NRMSE (gauges removed; well-illuminated region)", ""]
    parts += nrmse_table(table)
    parts += ["", "### Wall time per run (seconds, whole subprocess or call: start-up, fit, "
                  "output; 2 CPU cores shared with other workers, at the load averages above, "
                  "so only large differences mean something)", ""]
    parts += seconds_table(table)
    parts += ["", "### Real scans (no truth: final relative amplitude residual "
                  "sum (sqrt I - sqrt X)^2 / sum X of the last epoch)", ""]
    parts += real_table(table)
    parts += ["", "### Runs that failed, timed out, or whose forward model differs from the "
                  "simulator", ""]
    parts += notes_table(table)
    return "\n".join(parts)


def summary_block():
    """Two lines for the project's README: the acceptance count and where the tables are."""
    lines = nrmse_table(read_rows())
    return "\n".join(["Rendered by `python experiments/report.py` from "
                      "`experiments/robustness/results.csv` (written by "
                      "`python experiments/robustness/run.py`):", "", lines[-1]])


def main():
    import subprocess

    refresh_cases_summary()
    refresh_provenance()
    # every rendered table (this README's among them) comes from the one report script
    subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "report.py")], check=True)
    print(f"wrote {montage()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

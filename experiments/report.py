"""Render every results table in README.md, docs/ and experiments/*/README.md from its file.

Run::

    python experiments/report.py            # rewrite every rendered block in place
    python experiments/report.py --check    # exit 1, naming each block that differs from what
                                            # its file renders and each cited file that is absent

A rendered block is a pair of marker comments in a Markdown file::

    <!-- report:KIND ARG ... -->
    ...text written by this script...
    <!-- report:end -->

KIND names a renderer below (``csv``, ``json``, ``time-to-quality``, ``robustness-results`` ...);
ARG are its file paths (relative to the repository root) and ``key=value`` options. Every block
starts with the line that says which files it was rendered from, so every number in it points to
the file an experiment wrote. The experiments write the results files; this script only reads
them (it imports no TensorFlow and runs in a second or two).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import re
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "docs/*.md", "experiments/*/README.md"]
BLOCK = re.compile(r"<!-- report:(?P<kind>[\w-]+)(?P<args>[^>]*?) -->\n(?P<body>.*?)"
                   r"<!-- report:end -->", re.S)
RENDERERS = {}


def renderer(kind):
    def register(fn):
        RENDERERS[kind] = fn
        return fn
    return register


def path_of(relpath):
    return os.path.join(ROOT, relpath)


def fmt(value, digits=4, nan="not recorded (NaN in the file)"):
    """A number as the tables show it: ``digits`` significant digits; NaN said in words."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return nan
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def _number(text):
    try:
        return float(text) if any(c in text for c in ".eEn") else int(text)
    except ValueError:
        return text


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def source_line(*paths, command=None):
    files = ", ".join(f"`{p}`" for p in paths)
    written = f" (written by `{command}`)" if command else ""
    return f"Rendered by `python experiments/report.py` from {files}{written}:"


def _load_json(relpath):
    with open(path_of(relpath)) as f:
        # the files may hold NaN (json.dump writes it); Python's reader accepts it
        return json.load(f)


def _options(args):
    files, opts = [], {}
    for a in args:
        if "=" in a:
            k, v = a.split("=", 1)
            opts[k] = v
        else:
            files.append(a)
    return files, opts


# --- generic renderers -------------------------------------------------------------------------

@renderer("csv")
def render_csv(args):
    """A CSV file as a table. Options: ``columns=a,b``, ``where=col:value``, ``digits=N``,
    ``command=...`` (the command that wrote the file; quote it with double quotes)."""
    (relpath,), opts = _options(args)
    digits = int(opts.get("digits", 4))
    with open(path_of(relpath)) as f:
        rows = list(csv.DictReader(f))
    columns = opts["columns"].split(",") if "columns" in opts else list(rows[0])
    if "where" in opts:
        col, value = opts["where"].split(":", 1)
        rows = [r for r in rows if r[col] == value]
    body = [[fmt(_number(r[c]), digits, nan="-") for c in columns] for r in rows]  # nan: n/a
    return [source_line(relpath, command=opts.get("command")), ""] + table(columns, body)


def _flatten(data, prefix=""):
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        elif isinstance(value, list):
            if value and len(value) <= 4 and all(isinstance(v, (int, float)) for v in value):
                yield name, ", ".join(fmt(v) for v in value)
        else:
            yield name, fmt(value)


@renderer("json")
def render_json(args):
    """Scalar entries of a JSON file (or of ``key=a.b``) as a quantity / value table; lists longer
    than 4 (histories) are left out. Option ``command=...`` as for csv."""
    (relpath,), opts = _options(args)
    data = _load_json(relpath)
    for key in opts.get("key", "").split(".") if opts.get("key") else []:
        data = data[key]
    if not isinstance(data, dict):  # one scalar
        data = {opts["key"]: data}
    rows = [[f"`{k}`", v] for k, v in _flatten(data)]
    return [source_line(relpath, command=opts.get("command")), ""] + table(["quantity", "value"],
                                                                           rows)


@renderer("json-rows")
def render_json_rows(args):
    """A list of flat records in a JSON file (``key=runs``) as a table, one row per record."""
    (relpath,), opts = _options(args)
    records = _load_json(relpath)
    for key in opts["key"].split("."):
        records = records[key]
    columns = list(dict.fromkeys(k for r in records for k in r))
    body = [[fmt(r.get(c), int(opts.get("digits", 4))) for c in columns] for r in records]
    return [source_line(relpath, command=opts.get("command")), ""] + table(columns, body)


# --- experiment-specific renderers ----------------------------------------------------------------

def _module(name, relpath):
    """An experiment's script as a module (by path: experiments/robustness/report.py and this
    file share a name)."""
    import importlib.util

    if name not in sys.modules:
        folder = os.path.dirname(path_of(relpath))
        if folder not in sys.path:
            sys.path.insert(0, folder)  # the script's own imports (cases.py, run.py ...)
        spec = importlib.util.spec_from_file_location(name, path_of(relpath))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@renderer("time-to-quality")
def render_time_to_quality(args):
    module = _module("_report_time_to_quality", "experiments/time_to_quality.py")
    return module.readme_table([path_of(a) for a in args]).split("\n")


def _robustness():
    return _module("_report_robustness", "experiments/robustness/report.py")


@renderer("robustness-results")
def render_robustness_results(args):
    return _robustness().results_block().split("\n")


@renderer("robustness-cases")
def render_robustness_cases(args):
    return _robustness().case_table().split("\n")


@renderer("robustness-summary")
def render_robustness_summary(args):
    return _robustness().summary_block().split("\n")


@renderer("real-data")
def render_real_data(args):
    relpath = "experiments/real_data/figures.json"
    data = _load_json(relpath)
    rows = []
    for name, r in data.items():
        s = r["settings"]
        rows.append([name, str(r["epochs"]), str(s["batch_size"]), "+".join(s["refine"]),
                     s["loss"], fmt(r.get("focus_distance_m")), fmt(r["first_residual"]),
                     fmt(r["last_residual"]), f"{r['residual_drop']:.1f}x",
                     fmt(r["poisson_floor_residual"]), fmt(r["seconds"]), f"`{r['png']}`"])
    head = ["scan", "epochs", "batch", "refine", "loss", "z1 (m)", "first residual",
            "last residual", "drop", "Poisson floor", "seconds", "figure"]
    return [source_line(relpath, command="python experiments/real_data.py"), ""] + table(head, rows)


@renderer("noise-robustness")
def render_noise_robustness(args):
    """PSNR per dose and method; ARG: the summary file (default the study's summary.json) and
    ``command=...``."""
    files, opts = _options(args)
    relpath = files[0] if files else "experiments/noise_robustness/summary.json"
    command = opts.get("command", "python experiments/noise_robustness.py")
    data = _load_json(relpath)
    methods = list(data)
    baselines = [m for m in methods if m.startswith("pixels")]
    doses = sorted(data[methods[0]], key=float)
    rows = []
    for dose in doses:
        cells = []
        for m in methods:
            s = data[m].get(dose)
            cells.append("-" if s is None else
                         f"{s['mean']:.1f} ({s['min']:.1f}..{s['max']:.1f}, n={s['n']})")
        latent = [data[m][dose]["mean"] for m in methods
                  if not m.startswith("pixels") and dose in data[m]]
        gaps = []
        for baseline in baselines:
            best = max(latent) - data[baseline][dose]["mean"] \
                if latent and dose in data[baseline] else None
            gaps.append("-" if best is None else f"{best:+.1f}")
        rows.append([dose] + cells + gaps)
    head = ["photons per exposure"] + [f"{m} PSNR dB, mean (min..max)" for m in methods] + \
        [f"best latent - {b} (dB)" for b in baselines]
    return [source_line(relpath, command=command), ""] + table(head, rows)


@renderer("effective-rank")
def render_effective_rank(args):
    relpath = "experiments/effective_rank/effective_rank.json"
    data = _load_json(relpath)
    rows = [[name, f"`{r['model']}`", str(r["epochs"]), str(r["validation_digits"]),
             str(r["effective_rank"]), str(r["effective_rank_1e-3"]),
             fmt(r["linear_product_rank"])] for name, r in data["results"].items()]
    head = ["model", "weights", "epochs", "validation digits",
            f"effective rank (> {data['threshold']:g} of largest)", "(> 1e-3)",
            "rank of the linear layers' product"]
    return [source_line(relpath, command="python experiments/effective_rank.py"), ""] + \
        table(head, rows)


@renderer("latent-landscapes")
def render_latent_landscapes(args):
    relpath = "experiments/latent_landscapes/timings.json"
    data = _load_json(relpath)
    rows = [[case, r["title"], fmt(r["photons"]), f"`{r['model']}`", r["loss"], r["grid"],
             fmt(r["loss_at_h_opt"]), fmt(r["grid_min"]),
             "(" + ", ".join(fmt(v) for v in r["grid_min_at_ab"]) + ")", f"{r['seconds']:.0f}"]
            for case, r in data.items()]
    head = ["case", "what", "photons", "model", "loss", "grid", "loss at the L-BFGS optimum",
            "grid minimum", "at (a, b)", "seconds"]
    return [source_line(relpath, command="python experiments/latent_landscapes.py"), ""] + \
        table(head, rows)


@renderer("calibration-petra")
def render_calibration_petra(args):
    relpath = "experiments/calibration_petra/results.json"
    data = _load_json(relpath)
    rows = []
    for start, r in data["starts"].items():
        best = min(r["search"], key=lambda p: p[1])
        rows.append([start, fmt(best[0]), fmt(r["found_z1_mm"], 5),
                     fmt(r["loss_history"][-1]), str(len(r["loss_history"])), fmt(r["seconds"])])
    head = ["start z1 (mm)", "best z1 of the profile search (mm)", "z1 found (mm)",
            "final loss", "epochs", "seconds"]
    lines = [source_line(relpath, command="python experiments/calibration_petra.py"), ""]
    lines += table(head, rows)
    fixed = data.get("fixed_z1") or data.get("fixed")
    if isinstance(fixed, dict):
        lines += ["", "Object + probe fits at fixed z1:", ""]
        lines += table(["z1 (mm)", "final loss", "final residual"],
                       [[k, fmt(v.get("final_loss")), fmt(v.get("final_residual"))]
                        for k, v in fixed.items()])
    return lines


@renderer("benchmark-epie")
def render_benchmark_epie(args):
    lines = []
    for relpath in args:
        data = _load_json(relpath)
        load = data.get("machine", {}).get("load_average_at_start")
        rows = []
        for engine, results in data.items():
            if engine in ("problem", "machine") or not isinstance(results, dict):
                continue
            if "median_s" in results:
                label = f"{results.get('package', engine)} {results.get('version', '')}".strip()
                for key, r in results.get("batches", {"": results}).items():
                    setting = results.get("engine", "") + (f", {key}" if key else "")
                    rows.append([label, setting, fmt(r["median_s"], 3)])
                continue
            for key, r in results.items():
                if isinstance(r, dict) and "median_s" in r:
                    rows.append([engine, key, fmt(r["median_s"], 3)])
        lines += [source_line(relpath, command="python experiments/benchmark_epie.py"),
                  f"({data.get('problem', '')}; load average at start "
                  f"{', '.join(f'{x:.1f}' for x in load) if load else 'not recorded'})", ""]
        lines += table(["engine", "setting", "s/epoch (median)"], rows) + [""]
    return lines[:-1]


@renderer("ab")
def render_ab(args):
    """Interleaved A/B timing files (``times_s``: variant -> list of epoch times): median and
    minimum per variant."""
    files, opts = _options(args)
    lines = []
    for relpath in files:
        data = _load_json(relpath)
        rows = []
        for variant, times in data["times_s"].items():
            ordered = sorted(times)
            median = ordered[len(ordered) // 2] if len(ordered) % 2 else \
                0.5 * (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2])
            rows.append([variant, str(len(times)), fmt(median, 3), fmt(ordered[0], 3)])
        extra = ", ".join(f"{k} {v}" for k, v in data.items() if not isinstance(v, (dict, list)))
        lines += [source_line(relpath, command=opts.get("command")), f"({extra})", ""]
        lines += table(["variant", "epochs", "median s/epoch", "min s/epoch"], rows) + [""]
    return lines[:-1]


@renderer("streaming-memory")
def render_streaming_memory(args):
    return render_csv(["experiments/streaming_memory/streaming_memory.csv",
                       "command=python experiments/streaming_memory.py"])


# --- the driver ------------------------------------------------------------------------------------

def pages():
    found = []
    for pattern in PAGES:
        found += sorted(glob.glob(path_of(pattern)))
    return found


def render_page(text):
    """The page with every block re-rendered, and the list of (kind, args) blocks in it."""
    blocks = []

    def one(match):
        args = shlex.split(match.group("args"))
        kind = match.group("kind")
        if kind not in RENDERERS:
            raise SystemExit(f"report: unknown block kind {kind!r}")
        blocks.append((kind, args))
        body = "\n".join(RENDERERS[kind](args))
        return f"<!-- report:{kind}{match.group('args')} -->\n{body}\n<!-- report:end -->"

    return BLOCK.sub(one, text), blocks


# files cited in backquotes or links: paths under these folders, or files with these endings
CITED = re.compile(r"(?:`|\]\()(?P<path>(?:\.\./)*(?:experiments|adptycho|tests|models|docs|\.ci)"
                   r"/[\w./*-]+|[\w-]+\.(?:py|json|csv|png|npz|md|log|txt|sh))(?:`|\))")


def missing_citations(page, text):
    """Cited repository files that do not exist (relative to the root or to the page)."""
    missing = []
    here = os.path.dirname(page)
    for match in CITED.finditer(text):
        cited = match.group("path").rstrip(".")
        if cited.startswith("../shared"):
            continue
        if "/" in cited:
            candidates = [os.path.join(ROOT, cited), os.path.join(here, cited)]
        else:  # a bare file name: somewhere in the page's folder
            candidates = [os.path.join(here, "**", cited)]
        if not any(glob.glob(c, recursive=True) for c in candidates):
            missing.append(cited)
    return sorted(set(missing))


NUMERIC_CELL = re.compile(r"^\**[-+]?\d[\d.,eE+%x-]*\**$")


def typed_tables(text):
    """Table rows outside the rendered blocks with two or more numeric cells: results typed by
    hand (descriptive tables, such as option lists, have at most one number per row)."""
    outside = BLOCK.sub("", text)
    rows = []
    for line in outside.split("\n"):
        if line.startswith("|") and not set(line) <= set("|-: "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if sum(bool(NUMERIC_CELL.match(c)) for c in cells) >= 2:
                rows.append(line)
    return rows


def check():
    """Problems as lines: blocks that differ from their rendering, cited files that are absent."""
    problems = []
    for page in pages():
        with open(page) as f:
            text = f.read()
        rendered, _ = render_page(text)
        rel = os.path.relpath(page, ROOT)
        if rendered != text:
            for old, new in zip(BLOCK.finditer(text), BLOCK.finditer(rendered)):
                if old.group(0) != new.group(0):
                    problems.append(f"{rel}: block report:{old.group('kind')}"
                                    f"{old.group('args')} differs from its rendering")
        for row in typed_tables(text):
            problems.append(f"{rel}: a results row typed by hand, outside a rendered block: "
                            f"{row[:70]}")
        for cited in missing_citations(page, text):
            problems.append(f"{rel}: cites {cited}, which does not exist")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a block is stale or a cited file missing")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p)
        print(f"report: {len(problems)} problem(s) in {len(pages())} pages")
        return 1 if problems else 0
    for page in pages():
        with open(page) as f:
            text = f.read()
        rendered, blocks = render_page(text)
        if rendered != text:
            with open(page, "w") as f:
                f.write(rendered)
            print(f"report: rewrote {len(blocks)} block(s) in {os.path.relpath(page, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

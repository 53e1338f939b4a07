"""Loss landscapes of latent reconstructions (Seifert, Shao & Mosk 2024, Sec. 3.3, Fig. 6).

Setup and hand-drawn '3' of ``experiments/noise_robustness.py``. For each case a latent
reconstruction gives h_opt (full-batch L-BFGS, 50 iterations, from the mean training latent,
as in the noise-robustness study); the loss is then
mapped on h_opt + a v1 + b v2 (Eq. 4), v1, v2 the two leading PCA directions of the model's
MNIST validation latents, a, b in [-10, 10] on a 41 x 41 grid evaluated in batches:

A. high SNR (1e6 photons), full model (irmae-mnist), mixed Poisson-Gaussian loss (Eq. 1);
B. low SNR (1e2 photons), full model, mixed loss;
C. high SNR, digit-3 model (irmae-mnist-3), mixed loss;
D. high SNR, full model, Poisson-only loss sum (sqrt X - sqrt I)^2 (the amplitude loss).

Writes ``experiments/latent_landscapes/{case_*.csv, case_*.npy, case_*.png, landscapes.png,
timings.json}``; all figures share one colour scale, log10(L - min L + 1), with colour bars.

Run::

    python experiments/latent_landscapes.py [--points 41]
    python experiments/latent_landscapes.py --plot-only   # redraw the figures from the CSVs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
DATA = os.path.join(HERE, "..", "..", "shared", "data", "mnist")
CASES = {
    "A": ("high SNR, full model, mixed loss", 1e6, "irmae-mnist", "poisson-gaussian"),
    "B": ("low SNR (1e2 photons), full model", 1e2, "irmae-mnist", "poisson-gaussian"),
    "C": ("high SNR, digit-3 model", 1e6, "irmae-mnist-3", "poisson-gaussian"),
    "D": ("high SNR, full model, Poisson-only (sqrt) loss", 1e6, "irmae-mnist", "amplitude"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=41)
    parser.add_argument("--range", type=float, default=10.0)
    parser.add_argument("--cases", default="ABCD")
    parser.add_argument("--iterations", type=int, default=50, help="L-BFGS iterations for h_opt")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw the figures from case_*.csv and timings.json")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "latent_landscapes"))
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(args.out_dir)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, HERE)
    import keras

    from adptycho.analysis.landscape import (latent_landscape, pca_directions,
                                             validation_latents, write_landscape_csv)
    from adptycho.model import PtychoModel
    from adptycho.objects import LatentObject
    from adptycho.simulate import simulate
    from adptycho.training.lbfgs import lbfgs_fit
    from noise_robustness import READOUT_NOISE, REGION, GRID, setup

    out_dir = args.out_dir
    os.makedirs(out_dir, exist_ok=True)
    truth, probe, positions, near = setup()
    axis = np.linspace(-args.range, args.range, args.points)
    directions = {}
    timings = {}
    results = {}
    for case in args.cases:
        title, photons, model_name, loss = CASES[case]
        keras.utils.set_random_seed(0)
        scan = simulate(truth, probe, positions, photons_per_pattern=photons, poisson=True,
                        readout_noise=READOUT_NOISE, near_field=near, seed=0)
        obj = LatentObject.from_pretrained((GRID, GRID), model_name, region_px=REGION)
        model = PtychoModel(obj, probe * np.sqrt(photons), positions, near_field=near, loss=loss,
                            readout_noise=READOUT_NOISE)
        lbfgs_fit(model, scan.patterns, max_iterations=args.iterations,
                  chunk_iterations=args.iterations, batch_size=len(positions))
        h_opt = obj.latent_numpy()
        if model_name not in directions:
            latents = validation_latents(model_name, DATA)
            directions[model_name] = pca_directions(latents)[:2]
        (v1, v2), variance = directions[model_name]
        start = time.perf_counter()
        losses = latent_landscape(model, scan.patterns, h_opt, v1, v2, axis, axis)
        seconds = time.perf_counter() - start
        timings[case] = seconds
        write_landscape_csv(os.path.join(out_dir, f"case_{case}.csv"), axis, axis, losses)
        i, j = np.unravel_index(np.argmin(losses), losses.shape)
        results[case] = {"title": title, "photons": photons, "model": model_name, "loss": loss,
                         "grid": f"{args.points}x{args.points}", "seconds": seconds,
                         "pca_std_v1_v2": np.sqrt(variance).tolist(),
                         "loss_at_h_opt": float(losses[args.points // 2, args.points // 2]),
                         "grid_min": float(losses.min()),
                         "grid_min_at_ab": [float(axis[i]), float(axis[j])]}
        print(case, results[case], flush=True)
        np.save(os.path.join(out_dir, f"case_{case}.npy"), losses)
    path = os.path.join(out_dir, "timings.json")
    if os.path.exists(path):  # keep the cases of earlier runs
        with open(path) as f:
            results = {**json.load(f), **results}
    with open(path, "w") as f:
        json.dump(dict(sorted(results.items())), f, indent=1)
    plot(out_dir)


def _grid(out_dir, case):
    """(a axis, b axis, losses (len(a), len(b))) of a saved case."""
    import csv

    with open(os.path.join(out_dir, f"case_{case}.csv")) as f:
        rows = [(float(r["a"]), float(r["b"]), float(r["loss"])) for r in csv.DictReader(f)]
    a_axis = np.array(sorted({r[0] for r in rows}))
    b_axis = np.array(sorted({r[1] for r in rows}))
    losses = np.full((len(a_axis), len(b_axis)), np.nan)
    for a, b, value in rows:
        losses[np.searchsorted(a_axis, a), np.searchsorted(b_axis, b)] = value
    return a_axis, b_axis, losses


def plot(out_dir=os.path.join(HERE, "latent_landscapes")):
    """Redraw ``case_*.png`` and ``landscapes.png`` from ``case_*.csv`` and ``timings.json``.

    Every panel shows log10(L - min L + 1) (the loss of Eq. 1 can be negative) on ONE colour
    scale shared by the four cases, with a colour bar; thin white lines: 8 contours at the
    case's own levels; white x: the L-BFGS optimum h_opt (a = b = 0), red +: the grid
    minimum."""
    from figstyle import colour_bar, figure, save

    with open(os.path.join(out_dir, "timings.json")) as f:
        info = json.load(f)
    cases = [c for c in "ABCD" if os.path.exists(os.path.join(out_dir, f"case_{c}.csv"))]
    grids = {c: _grid(out_dir, c) for c in cases}
    shown = {c: np.log10(g[2] - np.nanmin(g[2]) + 1.0) for c, g in grids.items()}
    top = max(float(np.nanmax(v)) for v in shown.values())
    levels = np.linspace(0.0, top, 31)
    label = "log10(L \u2212 min L + 1), L in loss units"

    def panel(ax, case):
        a_axis, b_axis, losses = grids[case]
        a, b = np.meshgrid(a_axis, b_axis, indexing="ij")
        contour = ax.contourf(a, b, shown[case], levels=levels, cmap="viridis", vmin=0, vmax=top)
        # thin lines at the case's own levels: the shape of a landscape that is flat on the
        # common scale (B) stays visible
        ax.contour(a, b, shown[case], levels=8, colors="w", linewidths=0.4, alpha=0.7)
        i, j = np.unravel_index(np.nanargmin(losses), losses.shape)
        ax.plot(0, 0, "wx", ms=8, mew=2, label="L-BFGS optimum")
        ax.plot(a_axis[i], b_axis[j], "r+", ms=10, mew=2, label="grid minimum")
        r = info.get(case, {})
        ax.set(aspect="equal", xlabel="a (latent units along PCA v1)",
               ylabel="b (latent units along PCA v2)",
               title=f"{case}: {r.get('title', '')}\n{r.get('loss', '')} loss, "
                     f"{r.get('photons', float('nan')):.0e} photons\n"
                     f"max L \u2212 min L = {np.nanmax(losses) - np.nanmin(losses):.3g}")
        ax.title.set_fontsize(8)
        return contour

    fig, axes = figure(2, 2, panel=(4.0, 3.9),
                       title="Latent loss landscapes L(h_opt + a v1 + b v2), one colour scale")
    contour = None
    for ax, case in zip(np.ravel(axes), cases):
        contour = panel(ax, case)
    np.ravel(axes)[0].legend(loc="lower left")
    for ax in np.ravel(axes)[len(cases):]:
        ax.axis("off")
    ticks = np.arange(0.0, top + 1e-9, 0.5)
    colour_bar(axes, contour, label, ticks=ticks)
    save(fig, os.path.join(out_dir, "landscapes.png"))
    for case in cases:
        fig, ax = figure(1, 1, panel=(5.0, 4.2))
        contour = panel(ax, case)
        ax.legend(loc="lower left")
        colour_bar(ax, contour, label, ticks=ticks)
        save(fig, os.path.join(out_dir, f"case_{case}.png"))


if __name__ == "__main__":
    main()

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

Writes ``experiments/latent_landscapes/{case_*.csv, case_*.png, landscapes.png, timings.json}``.

Run::

    python experiments/latent_landscapes.py [--points 41]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
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
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, HERE)
    import keras

    from adptycho.analysis.landscape import (latent_landscape, pca_directions, plot_landscape,
                                             validation_latents, write_landscape_csv)
    from adptycho.analysis.plots import _pyplot
    from adptycho.model import PtychoModel
    from adptycho.objects import LatentObject
    from adptycho.simulate import simulate
    from adptycho.training.lbfgs import lbfgs_fit
    from noise_robustness import READOUT_NOISE, REGION, GRID, setup

    out_dir = os.path.join(HERE, "latent_landscapes")
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
        plot_landscape(os.path.join(out_dir, f"case_{case}.png"), axis, axis, losses,
                       title=f"{case}: {title}", labels=("a (PCA v1)", "b (PCA v2)"))
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
    shown_cases = [c for c in "ABCD" if os.path.exists(os.path.join(out_dir, f"case_{c}.npy"))]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown_cases), figsize=(4.2 * len(shown_cases), 4))
    for ax, case in zip(np.atleast_1d(axes), shown_cases):
        losses = np.load(os.path.join(out_dir, f"case_{case}.npy"))
        shown = np.log10(losses - losses.min() + 1.0)
        a, b = np.meshgrid(axis, axis, indexing="ij")
        ax.contourf(a, b, shown, levels=30, cmap="viridis")
        ax.plot(0, 0, "wx")
        ax.set(title=f"{case}: {CASES[case][0]}", xlabel="a (v1)", ylabel="b (v2)",
               aspect="equal")
        ax.title.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "landscapes.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()

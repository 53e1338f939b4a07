"""Noise-robustness study (Seifert, Shao & Mosk, Opt. Express 32, 1020 (2024), Sec. 3.2, Fig. 5).

PSNR (their Eq. 3, amplitude in [0, 1]) of pixel reconstructions vs latent-vector reconstructions
through the shipped IRMAE decoders (``irmae-mnist``: all digits; ``irmae-mnist-3``: trained on '3'
only) as a function of the total number of photons in the illumination (per exposure), with
Poisson noise and a Gaussian camera readout noise of sigma = 0.3 photons, 3 noise seeds each.

Setup: a scaled-down version of the Seifert-like near-field setup of
``experiments/calibration_seifert.py`` (561 nm, 4 x 4 binned 3.45 um camera pixels = 13.8 um,
flat-phase circular illumination, Fermat spiral), reduced to a 64 x 64 detector and a 2 cm
propagation distance (N dx^2 / lambda = 2.2 cm keeps the full band-limited angular-spectrum
bandwidth at this sampling), 40 positions at 70 % overlap of a 32-px (0.44 mm) illumination,
a 144 x 144 object grid. The object is a hand-drawn '3' (strokes drawn with scikit-image, not an
MNIST digit) as the amplitude transmission (1 in the strokes, 0 elsewhere), in the central
96 x 96 pixels, where the latent objects place their decoder output (Mitchell resize 32 -> 96).
Probe and positions are known (calibrated); only the object is fitted, with the mixed
Poisson-Gaussian loss (Eq. 1): pixels (complex, from 0.5 everywhere) in two Adam stages, batches
of 8, learning rates decaying 0.97 per epoch: ``--pixel-epochs`` (100) epochs of the amplitude
loss at ``--lr-pixels`` (0.1, the paper's range 0.1-1), then ``--pixel-refine-epochs`` (50)
epochs of Eq. 1 at ``--pixel-refine-lr`` (0.01). Why: with Eq. 1 alone Adam does not converge
at high counts (seed 0, 100 epochs at lr 0.1: 18.5 dB at 1e5 and 13.3 dB at 1e6 photons, the
fit at 1e6 stalling with visible fringes), while the amplitude loss, the variance-stabilised
Poisson likelihood, converges (33.0 dB at 1e6) and Eq. 1 then refines it (35.8 dB); at 1e3 and
1e4 the two-stage fit equals Eq. 1 alone within 0.3 dB. Latents (from the mean training latent) with full-batch
L-BFGS (50 iterations; Adam at lr 0.1 stalled at about 12 dB in the latent space, L-BFGS
reaches about 20 dB at 1e4 photons on the same data). PSNR is taken over the illuminated part (>= 30 % of the peak
illumination) of the digit's 96 x 96 square, which holds the whole digit (the PSNR over the
whole square is in the CSV too).

Writes ``experiments/noise_robustness/{results.csv, psnr_vs_photons.png, examples.png,
summary.json, summary_square.json, scan.json}`` (``summary_square.json``: PSNR over the whole
square; ``scan.json``: the scan and the PSNR mask's share of the square). ``--cover-digit``
writes the same files into ``noise_robustness/cover_digit/`` for a 120-point scan on a 184 px
grid that illuminates 99 % of the square (the default 40-point scan: 49 %). The CSV is
appended run by run: an interrupted study restarted with the same command continues with the
missing runs.

Run::

    python experiments/noise_robustness.py            # 7 photon levels x 3 seeds x 3 methods
    python experiments/noise_robustness.py --quick    # 4 levels x 1 seed (a few minutes)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
WAVELENGTH_M = 561e-9
PIXEL_M = 13.8e-6
DISTANCE_M = 0.02
DETECTOR = 64
PROBE_DIAMETER_PX = 32.0
GRID = 144
REGION = (24, 24, 96, 96)
POSITIONS = 40
# --cover-digit (issue 23, Seifert (a)): a larger object grid and a 120-point spiral whose
# illumination (>= 30 % of the peak) covers 99 % of the digit's 96 x 96 square (the default
# 40-point scan covers 49 %)
COVER = {"grid": 184, "region": (44, 44, 96, 96), "positions": 120}
READOUT_NOISE = 0.3
PHOTONS = (1e1, 1e2, 1e3, 3e3, 1e4, 1e5, 1e6)
METHODS = ("pixels", "pixels-tv", "irmae-mnist", "irmae-mnist-3")
# pixels-tv (issue 23, Seifert item 3: the paper regularises its pixel reconstructions): the
# pixel fit with a total-variation prior of weight c * sqrt(photons) (the prior's best weight
# grows like the data term's curvature times the noise level); c chosen per dose from this grid
# by the PSNR on a validation digit (an MNIST '3', never the test object), ``tv_tuning.csv``
TV_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
VALIDATION_SEED = 100
FIELDS = ["photons", "seed", "method", "psnr_db", "psnr_region_db", "final_loss", "seconds"]


def hand_drawn_three(size: int = 96) -> np.ndarray:
    """(size, size) float32 amplitude in [0, 1]: a '3' of two open bowls and a middle stroke,
    drawn with anti-aliased thick arcs (scikit-image), as a pen would on a photomask."""
    from skimage.draw import disk
    from skimage.filters import gaussian

    image = np.zeros((size, size), np.float64)
    s = size / 96.0
    pen = 4.2 * s

    def stroke(points):
        for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
            n = int(np.ceil(np.hypot(y1 - y0, x1 - x0))) + 1
            for t in np.linspace(0, 1, n):
                rr, cc = disk((y0 + t * (y1 - y0), x0 + t * (x1 - x0)), pen, shape=image.shape)
                image[rr, cc] = 1.0

    def arc(cy, cx, ry, rx, start_deg, stop_deg, wobble=0.0):
        t = np.radians(np.linspace(start_deg, stop_deg, 40))
        r = 1.0 + wobble * np.sin(3 * t)
        return list(zip(cy + ry * r * np.sin(t), cx + rx * r * np.cos(t)))

    # upper bowl (open to the left), a short middle bar, lower (larger) bowl
    stroke(arc(33 * s, 47 * s, 14 * s, 16 * s, -160, 95, 0.03))
    stroke([(47 * s, 44 * s), (47 * s, 52 * s)])
    stroke(arc(62 * s, 47 * s, 16 * s, 19 * s, -95, 165, 0.04))
    return np.clip(gaussian(image, 0.8 * s), 0.0, 1.0).astype(np.float32)


def setup(grid=GRID, region=REGION, num_positions=POSITIONS):
    """Truth object (grid, grid) complex64, unit-power probe (64, 64), positions
    (num_positions, 2), near field geometry; the digit fills ``region`` (y0, x0, h, w)."""
    from adptycho.geometry import circular_aperture, fermat_spacing_for_overlap, fermat_spiral_scan
    from adptycho.model import NearFieldGeometry

    probe = circular_aperture((DETECTOR, DETECTOR), PROBE_DIAMETER_PX, edge_px=1.5)
    probe = (probe / np.sqrt(np.sum(np.abs(probe) ** 2))).astype(np.complex64)
    positions = fermat_spiral_scan(num_positions,
                                   fermat_spacing_for_overlap(0.7, PROBE_DIAMETER_PX))
    positions -= positions.min(axis=0)
    positions += (grid - DETECTOR - positions.max(axis=0)) / 2.0
    if positions.min() < 0:
        raise ValueError(f"{num_positions} positions do not fit a {grid} px grid")
    truth = np.zeros((grid, grid), np.float32)
    y0, x0, h, w = region
    truth[y0:y0 + h, x0:x0 + w] = hand_drawn_three(h)
    near = NearFieldGeometry(WAVELENGTH_M, (PIXEL_M, PIXEL_M), DISTANCE_M)
    return truth.astype(np.complex64), probe, positions, near


def reconstruct_one(method, scan, probe, positions, near, epochs, batch_size, lr_pixels,
                    lr_latent, latent_optimizer="lbfgs", lbfgs_iterations=50,
                    pixel_stages=None, grid=GRID, region=REGION, initial_latent=None,
                    tv_weight=0.0):
    """Fit the object only; returns (Y, X) complex object, final loss.

    ``pixel_stages``: for ``method == "pixels"``, a list of ``(loss, epochs, learning_rate)``
    Adam stages, each started from the previous object (default: one Eq. 1 stage of
    ``epochs`` at ``lr_pixels``). ``initial_latent``: the latent start (default: the model's
    mean training latent). ``tv_weight``: total-variation prior of the pixel object in the
    amplitude-loss stages (4x in Eq. 1 stages, which weigh the data 4x near the fit)."""
    from adptycho.model import PtychoModel
    from adptycho.objects import LatentObject, PixelObject

    def adam_fit(obj, loss, stage_epochs, lr):
        model = PtychoModel(obj, probe, positions, near_field=near, loss=loss,
                            readout_noise=READOUT_NOISE)
        model.compile(refine=("object",), learning_rates={"object": lr},
                      steps_per_execution=int(np.ceil(len(positions) / batch_size)))
        history = model.fit(np.arange(len(positions)), scan.patterns, batch_size=batch_size,
                            epochs=stage_epochs, shuffle=True, verbose=0)
        return model, float(history.history["loss"][-1])

    if method == "pixels":
        current = np.full((grid, grid), 0.5, np.complex64)
        for loss, stage_epochs, lr in pixel_stages or [("poisson-gaussian", epochs, lr_pixels)]:
            weight = tv_weight * (4.0 if loss == "poisson-gaussian" else 1.0)
            model, final_loss = adam_fit(PixelObject((grid, grid), "complex", initial=current,
                                                     tv_weight=weight),
                                         loss, stage_epochs, lr)
            current = model.get_object()
        return current, final_loss
    obj = LatentObject.from_pretrained((grid, grid), method, region_px=region,
                                       initial_latent=initial_latent)
    if latent_optimizer == "lbfgs":
        from adptycho.training.lbfgs import lbfgs_fit

        model = PtychoModel(obj, probe, positions, near_field=near, loss="poisson-gaussian",
                            readout_noise=READOUT_NOISE)
        result = lbfgs_fit(model, scan.patterns, max_iterations=lbfgs_iterations,
                           chunk_iterations=lbfgs_iterations, batch_size=len(positions))
        return model.get_object(), float(result.loss_history[-1])
    model, final_loss = adam_fit(obj, "poisson-gaussian", epochs, lr_latent)
    return model.get_object(), final_loss


def validation_digit(size: int = 96) -> np.ndarray:
    """(size, size) float32 amplitude: the first '3' of the MNIST test split
    (``../shared/data/mnist``), resized (cubic) and clipped to [0, 1]: the object the TV weight
    is tuned on."""
    from skimage.transform import resize

    from adptycho.nn.mnist import load_mnist

    path = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "mnist")
    images, _ = load_mnist(path, "test", digit=3)
    return np.clip(resize(images[0] / 255.0, (size, size), order=3), 0, 1).astype(np.float32)


def tuned_tv_weight(n_photons, fit, truth_shape, region_px, simulate_scan, mask, out_dir):
    """The TV weight for one dose: ``c * sqrt(photons)`` with the ``TV_GRID`` value of c whose
    fit of the validation digit (noise seed ``VALIDATION_SEED``) has the best PSNR on ``mask``;
    every tried value is a row of ``out_dir/tv_tuning.csv`` (read back on a rerun)."""
    from adptycho.analysis import psnr

    path = os.path.join(out_dir, "tv_tuning.csv")
    rows = list(csv.DictReader(open(path))) if os.path.exists(path) else []
    tried = {float(r["c"]): float(r["validation_psnr_db"]) for r in rows
             if float(r["photons"]) == float(n_photons)}
    missing = [c for c in TV_GRID if c not in tried]
    if missing:  # (the validation scan is simulated only when a fit is still to be done)
        truth = np.zeros(truth_shape, np.float32)
        y0, x0, h, w = region_px
        truth[y0:y0 + h, x0:x0 + w] = validation_digit(h)
        scan = simulate_scan(truth.astype(np.complex64), VALIDATION_SEED)
    for c in missing:
        obj = fit(scan, c * np.sqrt(n_photons))
        tried[c] = float(psnr(truth, np.abs(obj), data_range=1.0, mask=mask))
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["photons", "c", "tv_weight", "validation_psnr_db"])
            writer.writerow([n_photons, c, c * np.sqrt(n_photons), f"{tried[c]:.4f}"])
        print(f"  TV tuning: photons {n_photons:.0e} c {c:g}: validation PSNR "
              f"{tried[c]:.2f} dB", flush=True)
    best = max(tried, key=tried.get)
    return best * np.sqrt(n_photons)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 photon levels, 1 seed")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr-pixels", type=float, default=0.1,
                        help="Adam step of the pixels' amplitude-loss stage")
    parser.add_argument("--pixel-epochs", type=int, default=100,
                        help="epochs of the pixels' amplitude-loss stage")
    parser.add_argument("--pixel-refine-epochs", type=int, default=50,
                        help="epochs of the pixels' Eq. 1 stage (0: amplitude loss only)")
    parser.add_argument("--pixel-refine-lr", type=float, default=0.01)
    parser.add_argument("--lr-latent", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--latent-optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    parser.add_argument("--lbfgs-iterations", type=int, default=50)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--cover-digit", action="store_true",
                        help="a 120-point scan on a 184 px grid that illuminates 99%% of the "
                             "digit's square (default out-dir noise_robustness/cover_digit)")
    parser.add_argument("--out-dir")
    parser.add_argument("--photons", help="comma-separated photon levels, run in this order "
                                          "(default: the 7 levels of the study)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="only redo the summary and figures from the CSV")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from adptycho.analysis import illuminated_region, psnr
    from adptycho.simulate import simulate

    geometry = dict(grid=GRID, region=REGION, num_positions=POSITIONS)
    if args.cover_digit:
        geometry = dict(grid=COVER["grid"], region=COVER["region"],
                        num_positions=COVER["positions"])
    if args.out_dir is None:
        args.out_dir = os.path.join(HERE, "noise_robustness",
                                    *(["cover_digit"] if args.cover_digit else []))
    photons = (1e1, 1e3, 1e4, 1e6) if args.quick else PHOTONS
    if args.photons:
        photons = [float(p) for p in args.photons.split(",")]
    seeds = range(1 if args.quick else args.seeds)
    methods = args.methods.split(",")
    os.makedirs(args.out_dir, exist_ok=True)
    csv_path = os.path.join(args.out_dir, "results_quick.csv" if args.quick else "results.csv")
    done = set()
    if os.path.exists(csv_path):
        with open(csv_path) as f:
            for row in csv.DictReader(f):
                done.add((float(row["photons"]), int(row["seed"]), row["method"]))
    else:
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(FIELDS)
    truth, probe, positions, near = setup(**geometry)
    grid, region_px = geometry["grid"], geometry["region"]
    y0, x0, h, w = region_px
    region = (slice(y0, y0 + h), slice(x0, x0 + w))
    # PSNR over the digit's 96 x 96 square where it is illuminated (>= 30 % of the peak
    # illumination): the unilluminated corners of the square hold no information for pixels
    in_region = np.zeros(truth.shape, bool)
    in_region[region] = True
    mask = illuminated_region(positions, probe, truth.shape, 0.3) & in_region
    print(f"PSNR mask: {mask.sum()} px ({mask.sum() / in_region.sum():.0%} of the 96 x 96 square)")
    with open(os.path.join(args.out_dir, "scan.json"), "w") as f:
        json.dump({"positions": len(positions), "object_grid_px": grid, "digit_region_px":
                   list(region_px), "psnr_mask_px": int(mask.sum()),
                   "psnr_mask_fraction_of_square": float(mask.sum() / in_region.sum())}, f,
                  indent=1)
    if args.summarise_only:
        summarise(csv_path, args.out_dir, np.abs(truth[region]), methods, quick=args.quick)
        return
    for seed in seeds:
        for n_photons in photons:
            scan = simulate(truth, probe, positions, photons_per_pattern=n_photons, poisson=True,
                            readout_noise=READOUT_NOISE, near_field=near, seed=seed)
            scaled = probe * np.sqrt(n_photons)
            stages = [("amplitude", args.pixel_epochs, args.lr_pixels)]
            if args.pixel_refine_epochs > 0:
                stages.append(("poisson-gaussian", args.pixel_refine_epochs,
                               args.pixel_refine_lr))

            def pixel_fit(data, tv_weight, seed=seed):
                keras.utils.set_random_seed(seed)
                return reconstruct_one("pixels", data, scaled, positions, near, args.epochs,
                                       args.batch_size, args.lr_pixels, args.lr_latent,
                                       pixel_stages=stages, grid=grid, region=region_px,
                                       tv_weight=tv_weight)[0]

            def simulate_scan(obj, noise_seed, n_photons=n_photons):
                return simulate(obj, probe, positions, photons_per_pattern=n_photons,
                                poisson=True, readout_noise=READOUT_NOISE, near_field=near,
                                seed=noise_seed)

            for method in methods:
                key = (float(n_photons), seed, method)
                if key in done:
                    continue
                tv_weight = 0.0
                if method == "pixels-tv":
                    tv_weight = tuned_tv_weight(n_photons, pixel_fit, truth.shape, region_px,
                                                simulate_scan, mask, args.out_dir)
                keras.utils.set_random_seed(seed)
                start = time.perf_counter()
                obj, final_loss = reconstruct_one(
                    "pixels" if method == "pixels-tv" else method, scan, scaled, positions,
                    near, args.epochs, args.batch_size, args.lr_pixels, args.lr_latent,
                    args.latent_optimizer, args.lbfgs_iterations, pixel_stages=stages,
                    grid=grid, region=region_px, tv_weight=tv_weight)
                seconds = time.perf_counter() - start
                value = psnr(np.abs(truth), np.abs(obj), data_range=1.0, mask=mask)
                whole = psnr(np.abs(truth[region]), np.abs(obj[region]), data_range=1.0)
                with open(csv_path, "a", newline="") as f:
                    csv.writer(f).writerow([n_photons, seed, method, f"{value:.4f}",
                                            f"{whole:.4f}", f"{final_loss:.6g}",
                                            f"{seconds:.2f}"])
                print(f"photons {n_photons:8.0e} seed {seed} {method:14s} PSNR {value:6.2f} dB "
                      f"({seconds:.1f} s)", flush=True)
                if seed == 0:
                    np.save(os.path.join(args.out_dir, f"object_{method}_{n_photons:.0e}.npy"),
                            np.abs(obj[region]).astype(np.float32))
    summarise(csv_path, args.out_dir, np.abs(truth[region]), methods, quick=args.quick)


def summarise(csv_path, out_dir, truth_region, methods, quick=False):
    """Median/min/max PSNR per method and photon level -> summary JSON and the Fig. 5 plot."""
    rows = list(csv.DictReader(open(csv_path)))
    present = {row["method"] for row in rows}  # every method the CSV holds, in METHODS order
    methods = [m for m in METHODS if m in present] + sorted(present - set(METHODS))
    suffix = "_quick" if quick else ""
    # summary.json: PSNR over the illuminated part of the square; summary_square.json: over
    # the whole 96 x 96 square
    for column, name in (("psnr_region_db", "summary_square"), ("psnr_db", "summary")):
        table = {}
        for row in rows:
            table.setdefault(row["method"], {}).setdefault(float(row["photons"]), []).append(
                float(row[column]))
        summary = {m: {f"{p:.0e}": {"mean": float(np.mean(v)), "min": float(np.min(v)),
                                    "max": float(np.max(v)), "n": len(v)}
                       for p, v in sorted(table.get(m, {}).items())} for m in methods}
        with open(os.path.join(out_dir, f"{name}{suffix}.json"), "w") as f:
            json.dump(summary, f, indent=1)
    plot(out_dir, table, truth_region, methods, suffix)
    print(json.dumps(summary, indent=1))


LABELS = {"pixels": "conventional (pixels)",
          "pixels-tv": "conventional (pixels) + TV prior, tuned on a validation digit",
          "irmae-mnist": "latent, IRMAE all digits",
          "irmae-mnist-3": "latent, IRMAE digit 3 only"}


def plot(out_dir, table, truth_region, methods, suffix=""):
    """``psnr_vs_photons{suffix}.png`` from ``table`` (method -> photons -> PSNR list) and
    ``examples{suffix}.png`` from the saved seed-0 objects ``object_{method}_{photons}.npy``."""
    from figstyle import colour_bar, figure, save

    fig, ax = figure(1, 1, panel=(6.2, 4.4))
    for method, marker in zip(methods, "osd^v"):
        points = sorted(table.get(method, {}).items())
        if not points:
            continue
        p = np.array([q for q, _ in points])
        mean = np.array([np.mean(v) for _, v in points])
        low = np.array([np.min(v) for _, v in points])
        high = np.array([np.max(v) for _, v in points])
        ax.errorbar(p, mean, yerr=[mean - low, high - mean], marker=marker, capsize=3,
                    label=LABELS.get(method, method))
    ax.set_xscale("log")
    all_values = [v for m in table.values() for vs in m.values() for v in vs]
    if min(all_values) > 0:  # the paper's log-log axes; PSNR <= 0 dB needs a linear axis
        ax.set_yscale("log")
    ax.set(xlabel="total photons in the illumination per exposure", ylabel="PSNR (dB)",
           title="PSNR vs photons: mean and min..max of the noise seeds\n"
                 "(Poisson noise + readout sigma 0.3 photons)")
    ax.grid(True, which="both")
    ax.legend()
    save(fig, os.path.join(out_dir, f"psnr_vs_photons{suffix}.png"))
    levels = sorted({p for m in table.values() for p in m})
    fig, axes = figure(len(methods), len(levels) + 1, panel=(1.45, 1.55), squeeze=False,
                       title="Amplitude of the seed-0 reconstructions (96 x 96 px of 13.8 "
                             "\u00b5m; columns: photons per exposure)")
    image = None
    for r, method in enumerate(methods):
        row = [("truth", truth_region)]
        for level in levels:
            path = os.path.join(out_dir, f"object_{method}_{level:.0e}.npy")
            row.append((f"{level:.0e}", np.load(path) if os.path.exists(path) else None))
        for c, (title, amplitude) in enumerate(row):
            ax = axes[r, c]
            if amplitude is not None:
                image = ax.imshow(amplitude, cmap="gray", vmin=0, vmax=1)
            if r == 0:
                ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(LABELS.get(method, method).replace(", ", "\n"))
    axes[-1, 0].set_xticks([0, 48, 95])
    axes[-1, 0].set_yticks([0, 48, 95])
    axes[-1, 0].set_xlabel("x (px)")
    if image is not None:
        colour_bar(axes, image, "amplitude transmission", shrink=0.6)
    save(fig, os.path.join(out_dir, f"examples{suffix}.png"))


if __name__ == "__main__":
    main()

"""Position calibration on the real far-field tike Siemens star (calibration issue).

Known random offsets (2 px RMS, zero mean, seeded) are added to the scan positions of the tike
Siemens star; ``calibrate`` (object + probe, then positions from a quarter of the epochs) must
bring them back to the original positions to < 0.5 px RMS (global shift removed). For reference
the same calibration is run from the original positions: how far the refined positions move
from the file's own positions measures the stage's own errors (the true positions of a real
scan are unknown).

Writes into ``--out-dir`` (default ``experiments/calibration_tike``): ``results.json``,
``results.csv`` and ``positions.png``.

Run::

    python experiments/calibration_tike.py      # about 4 minutes on 2 cores
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


def rms_px(a) -> float:
    """RMS length of (N, 2) vectors after removing their mean (the global-shift null space)."""
    a = np.asarray(a, np.float64)
    a = a - a.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(a ** 2, axis=1))))


def affine_residual_rms_px(a, b) -> float:
    """RMS of ``a - b`` after removing the best global affine map (shift, scale, rotation,
    shear) from ``a`` to ``b``: the part of the difference a stage model cannot explain."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    design = np.hstack([a, np.ones((len(a), 1))])
    coefficients, *_ = np.linalg.lstsq(design, b, rcond=None)
    return rms_px(design @ coefficients - b)


def perturb(positions_px, rms: float = 2.0, seed: int = 0):
    """Zero-mean Gaussian offsets of the given RMS length (px) added to (N, 2) positions."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(scale=rms / np.sqrt(2), size=np.shape(positions_px))
    offsets -= offsets.mean(axis=0)
    return np.asarray(positions_px, np.float64) + offsets, offsets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--position-model", choices=("offsets", "affine"), default="offsets")
    parser.add_argument("--loss", choices=("amplitude", "poisson"), default="amplitude")
    parser.add_argument("--probe-modes", type=int, default=1)
    parser.add_argument("--out-dir", default=os.path.join(HERE, "calibration_tike"))
    args = parser.parse_args(argv)

    import dataclasses

    from adptycho.analysis.plots import _pyplot
    from adptycho.calibration import calibrate
    from adptycho.io import data_dir, load_tike_siemens_star

    if data_dir() is None:
        print("calibration_tike: ../shared/data not found; nothing to do")
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    scan = load_tike_siemens_star()
    original = np.asarray(scan.positions_px, np.float64)
    started, offsets = perturb(original, 2.0, args.seed)
    results = {"num_patterns": scan.num_patterns, "epochs": args.epochs,
               "batch_size": args.batch_size, "start_rms_px": rms_px(started - original)}
    runs = {}
    for label, positions in (("perturbed", started), ("original", original)):
        began = time.perf_counter()
        calibration = calibrate(dataclasses.replace(scan, positions_px=positions),
                                epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                position_model=args.position_model, loss=args.loss,
                                probe_modes=args.probe_modes)
        runs[label] = calibration
        results[label] = {
            "rms_to_original_px": rms_px(calibration.positions_px - original),
            "rms_to_original_after_affine_px": affine_residual_rms_px(calibration.positions_px,
                                                                      original),
            "final_residual": float(calibration.residual_history[-1]),
            "seconds": round(time.perf_counter() - began, 1)}
        print(f"{label}: positions {results[label]['rms_to_original_px']:.3f} px RMS from the "
              f"original ({results[label]['seconds']:.0f} s)", flush=True)
    results["rms_between_runs_px"] = rms_px(runs["perturbed"].positions_px
                                            - runs["original"].positions_px)
    results["rms_between_runs_after_affine_px"] = affine_residual_rms_px(
        runs["perturbed"].positions_px, runs["original"].positions_px)
    results["target_rms_px"] = 0.5
    results["position_model"] = args.position_model
    results["loss"] = args.loss
    results["probe_modes"] = args.probe_modes
    np.savez(os.path.join(args.out_dir, "positions.npz"), original=original, start=started,
             calibrated_from_start=runs["perturbed"].positions_px,
             calibrated_from_original=runs["original"].positions_px)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "rms_to_original_px", "final_residual", "seconds"])
        for label in ("perturbed", "original"):
            writer.writerow([label, results[label]["rms_to_original_px"],
                             results[label]["final_residual"], results[label]["seconds"]])

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    refined = runs["perturbed"].positions_px
    shift = np.mean(refined - original, axis=0)
    ax = axes[0]
    ax.plot(original[:, 1], original[:, 0], "k.", ms=3, label="file positions")
    ax.plot(started[:, 1], started[:, 0], "r+", ms=4, label="start (+2 px RMS)")
    ax.plot(refined[:, 1] - shift[1], refined[:, 0] - shift[0], "bx", ms=3, label="calibrated")
    ax.invert_yaxis()
    ax.set(aspect="equal", title="tike Siemens star: scan positions (px)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for label, colour in (("perturbed", "b"), ("original", "g")):
        ax.semilogy(runs[label].residual_history, colour, label=f"start: {label}")
    ax.set(xlabel="epoch", ylabel="relative amplitude residual",
           title=f"error to file positions: {results['perturbed']['rms_to_original_px']:.3f} px "
                 f"RMS (start {results['start_rms_px']:.2f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out_dir, "positions.png"), dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())

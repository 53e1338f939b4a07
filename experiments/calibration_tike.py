"""Position calibration on the real far-field tike Siemens star (calibration issue).

Three calibrations (object + probe, then positions from a quarter of the epochs), all RMS
figures after removing the global shift:

1. ``perturbed``: known random offsets (2 px RMS, zero mean, seeded) are added to the file's
   scan positions; the issue's figure is the RMS distance of the calibrated positions to the
   file's positions (target < 0.5 px).
2. ``original``: the same calibration started from the file's positions. The true positions of
   a real scan are unknown; if the file's positions were exact they would be a fixed point.
   They are not: the calibration moves them by about 0.6 px RMS, to the same place (within
   0.2 px) from different schedules, by a displacement that is spatially smooth (nearest
   neighbours correlated), as stage errors are. We call its result the data's self-consistent
   positions ``P*``.
3. ``self-consistent``: the same offsets added to ``P*``; the RMS distance of the calibrated
   positions to ``P*`` measures the recovery of known offsets against a reference the data
   agree with.

Writes into ``--out-dir`` (default ``experiments/calibration_tike``): ``results.json``,
``results.csv``, ``positions.npz`` (positions and residual histories) and ``positions.png``
(``--plot-only`` redraws it from the two files).

Run::

    python experiments/calibration_tike.py      # about 5 minutes on 2 cores
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
    parser.add_argument("--position-learning-rate", type=float, default=None,
                        help="Adam step of the positions (px; default: calibrate's default)")
    parser.add_argument("--loss", choices=("amplitude", "poisson"), default="amplitude")
    parser.add_argument("--probe-modes", type=int, default=1)
    parser.add_argument("--out-dir", default=os.path.join(HERE, "calibration_tike"))
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw positions.png from positions.npz and results.json")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(args.out_dir)
        return 0

    import dataclasses

    from adptycho.calibration import calibrate
    from adptycho.io import data_dir, load_tike_siemens_star

    if data_dir() is None:
        print("calibration_tike: ../shared/data not found; nothing to do")
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    scan = load_tike_siemens_star()
    original = np.asarray(scan.positions_px, np.float64)
    started, offsets = perturb(original, 2.0, args.seed)
    learning_rates = (None if args.position_learning_rate is None
                      else {"positions": args.position_learning_rate})
    results = {"num_patterns": scan.num_patterns, "epochs": args.epochs,
               "batch_size": args.batch_size, "start_rms_px": rms_px(started - original),
               "position_learning_rate": args.position_learning_rate}
    runs = {}

    def run(label, positions, reference, reference_name):
        began = time.perf_counter()
        calibration = calibrate(dataclasses.replace(scan, positions_px=positions),
                                epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                position_model=args.position_model, loss=args.loss,
                                probe_modes=args.probe_modes, learning_rates=learning_rates)
        runs[label] = calibration
        results[label] = {
            "rms_to_original_px": rms_px(calibration.positions_px - original),
            "rms_to_original_after_affine_px": affine_residual_rms_px(calibration.positions_px,
                                                                      original),
            "reference": reference_name,
            "start_rms_to_reference_px": rms_px(positions - reference),
            "rms_to_reference_px": rms_px(calibration.positions_px - reference),
            "final_residual": float(calibration.residual_history[-1]),
            "seconds": round(time.perf_counter() - began, 1)}
        print(f"{label}: positions {results[label]['rms_to_reference_px']:.3f} px RMS from "
              f"{reference_name} (start {results[label]['start_rms_to_reference_px']:.2f}; "
              f"{results[label]['seconds']:.0f} s)", flush=True)

    run("perturbed", started, original, "file positions")
    run("original", original, original, "file positions")
    self_consistent = np.asarray(runs["original"].positions_px, np.float64)
    self_consistent -= np.mean(self_consistent - original, axis=0)
    run("self-consistent", self_consistent + offsets, self_consistent, "P*")
    drift = self_consistent - original
    drift -= drift.mean(axis=0)
    from scipy.spatial import cKDTree

    _, neighbours = cKDTree(original).query(original, k=4)
    results["file_to_self_consistent"] = {
        "rms_px": rms_px(drift),
        "rms_after_affine_px": affine_residual_rms_px(self_consistent, original),
        "nearest_neighbour_correlation": float(
            np.mean(np.sum(drift[:, None, :] * drift[neighbours[:, 1:]], axis=2))
            / np.mean(np.sum(drift ** 2, axis=1)))}
    results["rms_between_runs_px"] = rms_px(runs["perturbed"].positions_px - self_consistent)
    results["target_rms_px"] = 0.5
    results["position_model"] = args.position_model
    results["loss"] = args.loss
    results["probe_modes"] = args.probe_modes
    np.savez(os.path.join(args.out_dir, "positions.npz"), original=original, start=started,
             offsets=offsets, calibrated_from_start=runs["perturbed"].positions_px,
             calibrated_from_original=runs["original"].positions_px,
             calibrated_from_self_consistent=runs["self-consistent"].positions_px,
             **{f"residual_history_{label}": np.asarray(runs[label].residual_history)
                for label in ("perturbed", "original", "self-consistent")})
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    labels = ("perturbed", "original", "self-consistent")
    with open(os.path.join(args.out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "reference", "start_rms_px", "final_rms_px",
                         "rms_to_file_positions_px", "final_residual", "seconds"])
        for label in labels:
            r = results[label]
            writer.writerow([label, r["reference"], r["start_rms_to_reference_px"],
                             r["rms_to_reference_px"], r["rms_to_original_px"],
                             r["final_residual"], r["seconds"]])

    plot(args.out_dir)
    return 0


def plot(out_dir):
    """Redraw ``positions.png`` from ``positions.npz`` and ``results.json``. Runs saved before
    the residual histories were kept show the final residuals instead of the curves."""
    sys.path.insert(0, HERE)
    from figstyle import figure, positions_panel, save

    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    saved = np.load(os.path.join(out_dir, "positions.npz"))
    original, started = saved["original"], saved["start"]
    refined = saved["calibrated_from_start"]
    self_consistent = np.asarray(saved["calibrated_from_original"], np.float64)
    self_consistent = self_consistent - np.mean(self_consistent - original, axis=0)
    drift = self_consistent - original
    drift -= drift.mean(axis=0)
    shift = np.mean(refined - original, axis=0)
    fig, axes = figure(1, 3, panel=(4.6, 4.3),
                       title=f"tike Siemens star: position calibration, {results['epochs']} "
                             f"epochs, start {results['start_rms_px']:.2f} px RMS")
    positions_panel(axes[0], [(original, "file positions", "k."),
                              (started, "start (+2 px RMS)", "r+"),
                              (refined - shift, "calibrated", "bx")],
                    title="scan positions (calibrated: global shift removed)")
    scale = 20.0
    ax = axes[1]
    ax.quiver(original[:, 1], original[:, 0], scale * drift[:, 1], -scale * drift[:, 0],
              angles="xy", scale_units="xy", scale=1, width=0.003)
    ax.invert_yaxis()
    ax.set(aspect="equal", xlabel="x (px)", ylabel="y (px)",
           title=f"file \u2192 self-consistent P*, arrows x{scale:g}:\n"
                 f"{results['file_to_self_consistent']['rms_px']:.2f} px RMS")
    ax = axes[2]
    labels = ("perturbed", "original", "self-consistent")
    if all(f"residual_history_{label}" in saved for label in labels):
        for label, colour in zip(labels, ("b", "g", "m")):
            history = saved[f"residual_history_{label}"]
            ax.semilogy(np.arange(1, len(history) + 1), history, colour,
                        label=f"{label}: {results[label]['rms_to_reference_px']:.2f} px to "
                              f"{results[label]['reference']}")
        ax.set(xlabel="epoch", ylabel="relative amplitude residual",
               title="residual during calibration")
        ax.grid(True, which="both")
    else:
        values = [results[label]["final_residual"] for label in labels]
        ax.bar(range(len(labels)), values, color=("b", "g", "m"))
        ax.set_xticks(range(len(labels)),
                      [f"{label}\n{results[label]['rms_to_reference_px']:.2f} px to\n"
                       f"{results[label]['reference']}" for label in labels])
        ax.set(ylabel="final relative amplitude residual",
               title="final residual (this run kept no histories)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    save(fig, os.path.join(out_dir, "positions.png"))


if __name__ == "__main__":
    sys.exit(main())

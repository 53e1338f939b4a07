"""Cone-beam focus distance z1 calibrated on the real PETRA III P25 near-field scan.

For each start value (3.0 mm and 4.3 mm, as in the calibration issue) ``calibrate`` first runs
the profile search ``search_focus_distance`` (short object + probe fits on a geometric grid of
z1 from start/1.5 to 1.5 x start, parabola through the minimum), then refines object, probe and
z1 jointly (distance group from epoch 10). Then object + probe are reconstructed with z1 fixed at
3.0 mm, 4.3 mm and the found value, same epochs, to compare final losses.

Writes into ``--out-dir`` (default ``experiments/calibration_petra``): ``results.json``,
``z1_search.png`` (loss versus z1 for both starts; loss versus epoch of the final joint
refinement for both starts), ``reconstruction_found_z1.png`` and the arrays it is drawn from,
``reconstruction_found_z1.npz``.

Run::

    python experiments/calibration_petra.py      # about 5 minutes on 2 cores
    python experiments/calibration_petra.py --only-found-z1   # only the fit at the z1 found
    python experiments/calibration_petra.py --plot-only       # redraw the figures
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts-mm", default="3.0,4.3")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out-dir", default=os.path.join(HERE, "calibration_petra"))
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw the PNGs from results.json and the saved .npz")
    parser.add_argument("--only-found-z1", action="store_true",
                        help="keep the calibrations of results.json; redo only the fit at the "
                             "z1 found (saves reconstruction_found_z1.npz, about a minute)")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(args.out_dir)
        return 0

    from adptycho.calibration import calibrate
    from adptycho.io import data_dir, load_petra_p25

    if data_dir() is None:
        print("calibration_petra: ../shared/data not found; nothing to do")
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    if args.only_found_z1:
        with open(os.path.join(args.out_dir, "results.json")) as f:
            results = json.load(f)
        found = float(np.mean([r["found_z1_mm"] for r in results["starts"].values()]))
        results["fixed"][f"{round(found, 4)}"] = fixed_fit(round(found, 4), args.epochs,
                                                          args.out_dir, True)
        with open(os.path.join(args.out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        plot(args.out_dir)
        return 0
    results = {"starts": {}, "fixed": {}}
    for start in [float(v) for v in args.starts_mm.split(",")]:
        began = time.perf_counter()
        calibration = calibrate(load_petra_p25(focus_distance_m=start * 1e-3), epochs=args.epochs,
                                refine_positions=False, start_epochs={"distance": 10})
        results["starts"][f"{start}"] = {
            "found_z1_mm": calibration.focus_distance_m * 1e3,
            "search": [[z * 1e3, v] for z, v in calibration.settings["focus_search"]],
            "loss_history": calibration.loss_history.tolist(),
            "seconds": round(time.perf_counter() - began, 1)}
        print(f"start z1 {start} mm -> {calibration.focus_distance_m * 1e3:.4f} mm "
              f"({time.perf_counter() - began:.0f} s)", flush=True)
    found = float(np.mean([r["found_z1_mm"] for r in results["starts"].values()]))
    for z1 in sorted(set([float(v) for v in args.starts_mm.split(",")] + [round(found, 4)])):
        results["fixed"][f"{z1}"] = fixed_fit(z1, args.epochs, args.out_dir,
                                              z1 == round(found, 4))
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(args.out_dir)
    return 0


def fixed_fit(z1_mm, epochs, out_dir, save_arrays):
    """Object + probe at fixed z1; with ``save_arrays`` the result is saved (.npz) for the
    figure. Returns the results entry."""
    from adptycho.io import load_petra_p25
    from adptycho.reconstruction import reconstruct
    from figrecon import save_result

    result = reconstruct(load_petra_p25(focus_distance_m=z1_mm * 1e-3), engine="adam",
                         epochs=epochs, batch_size=16, refine=("object", "probe"), verbose=0)
    print(f"fixed z1 {z1_mm} mm: final loss {result.loss_history[-1]:.5g}", flush=True)
    if save_arrays:
        save_result(result, os.path.join(out_dir, "reconstruction_found_z1.npz"))
    return {"final_loss": float(result.loss_history[-1]),
            "final_residual": float(result.residual_history[-1])}


def plot(out_dir):
    """Redraw ``z1_search.png`` from ``results.json`` and ``reconstruction_found_z1.png`` from
    ``reconstruction_found_z1.npz`` (when saved)."""
    from figrecon import plot_result
    from figstyle import figure, save

    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    fig, axes = figure(1, 2, panel=(4.6, 3.6))
    for i, (start, r) in enumerate(results["starts"].items()):
        search = np.array(r["search"])
        colour = f"C{i}"
        axes[0].plot(search[:, 0], search[:, 1], "o-", color=colour, label=f"start {start} mm")
        axes[0].axvline(r["found_z1_mm"], ls="--", color=colour,
                        label=f"found {r['found_z1_mm']:.3f} mm")
        axes[1].semilogy(np.arange(1, len(r["loss_history"]) + 1), r["loss_history"],
                         color=colour, label=f"start {start} mm \u2192 {r['found_z1_mm']:.3f} mm")
    axes[0].set(xlabel="z1 (mm)", ylabel="final loss of a short fit (amplitude loss)",
                title="profile search over z1")
    axes[1].set(xlabel="epoch", ylabel="loss (amplitude loss)",
                title="joint object, probe, z1 refinement\n(z1 trainable from epoch 10)")
    for ax in axes:
        ax.legend()
        ax.grid(True, which="both")
    save(fig, os.path.join(out_dir, "z1_search.png"))
    npz = os.path.join(out_dir, "reconstruction_found_z1.npz")
    if os.path.exists(npz):
        found = float(np.mean([r["found_z1_mm"] for r in results["starts"].values()]))
        plot_result(npz, os.path.join(out_dir, "reconstruction_found_z1.png"),
                    title=f"PETRA P25 at the calibrated z1 = {round(found, 4):.4f} mm")
    else:
        print("calibration_petra: reconstruction_found_z1.npz not saved; run "
              "--only-found-z1 to redraw reconstruction_found_z1.png")


if __name__ == "__main__":
    sys.exit(main())

"""Cone-beam focus distance z1 calibrated on the real PETRA III P25 near-field scan.

For each start value (3.0 mm and 4.3 mm, as in the calibration issue) ``calibrate`` first runs
the profile search ``search_focus_distance`` (short object + probe fits on a geometric grid of
z1 from start/1.5 to 1.5 x start, parabola through the minimum), then refines object, probe and
z1 jointly (distance group from epoch 10). Then object + probe are reconstructed with z1 fixed at
3.0 mm, 4.3 mm and the found value, same epochs, to compare final losses.

Writes into ``--out-dir`` (default ``experiments/calibration_petra``): ``results.json``,
``z1_search.png`` (loss versus z1 for both starts; loss versus epoch of the final joint
refinement for both starts) and ``reconstruction_found_z1.png``.

Run::

    python experiments/calibration_petra.py      # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts-mm", default="3.0,4.3")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out-dir", default=os.path.join(HERE, "calibration_petra"))
    args = parser.parse_args(argv)

    from adptycho.analysis.plots import _pyplot, plot_reconstruction
    from adptycho.calibration import calibrate
    from adptycho.io import data_dir, load_petra_p25
    from adptycho.reconstruction import reconstruct

    if data_dir() is None:
        print("calibration_petra: ../shared/data not found; nothing to do")
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
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
        result = reconstruct(load_petra_p25(focus_distance_m=z1 * 1e-3), engine="adam", epochs=args.epochs,
                             batch_size=16, refine=("object", "probe"), verbose=0)
        results["fixed"][f"{z1}"] = {"final_loss": float(result.loss_history[-1]),
                                      "final_residual": float(result.residual_history[-1])}
        print(f"fixed z1 {z1} mm: final loss {result.loss_history[-1]:.5g}", flush=True)
        if z1 == round(found, 4):
            plot_reconstruction(result, os.path.join(args.out_dir, "reconstruction_found_z1.png"),
                                title=f"PETRA P25 at the calibrated z1 = {z1:.3f} mm")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for start, r in results["starts"].items():
        search = np.array(r["search"])
        axes[0].plot(search[:, 0], search[:, 1], "o-", label=f"start {start} mm")
        axes[0].axvline(r["found_z1_mm"], ls="--", c=axes[0].lines[-1].get_color())
        axes[1].plot(np.arange(1, len(r["loss_history"]) + 1), r["loss_history"],
                     label=f"start {start} mm -> {r['found_z1_mm']:.3f} mm")
    axes[0].set_xlabel("z1 (mm)")
    axes[0].set_ylabel("final loss of a 20-epoch fit")
    axes[0].set_title("profile search")
    axes[0].legend()
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("loss")
    axes[1].set_yscale("log")
    axes[1].set_title("joint refinement at the found z1 (z1 trainable from epoch 10)")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out_dir, "z1_search.png"), dpi=90)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

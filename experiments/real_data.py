"""Reconstructions of the two real datasets in ``../shared/data`` (foundation issue figures).

* tike Siemens star (far field, APS Velociprobe, 516 patterns of 128x128): object + probe with
  Adam, amplitude loss, 30 epochs; the relative amplitude residual sum (sqrt I - sqrt X)^2 / sum X
  per epoch is recorded (the quantity the shared data README quotes for a numpy ePIE,
  0.17 -> 0.02).
* PETRA III P25 near field (cone beam, 200 patterns of 100x100) at z1 = 3.65 mm: object + probe,
  probe started from the back-propagated sqrt of the mean pattern.

Writes ``tike_siemens_star.png``, ``petra_p25_nearfield.png`` and ``figures.json`` into
``--out-dir`` (default ``experiments/real_data``). Exits 0 with a message when the data are absent.

Run::

    python experiments/real_data.py              # both, about a minute on 2 cores
    python experiments/real_data.py --dataset petra --epochs 80
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

TIKE_SETTINGS = dict(epochs=30, batch_size=32, refine=("object", "probe"), loss="amplitude")
PETRA_SETTINGS = dict(epochs=60, batch_size=16, refine=("object", "probe"), loss="amplitude")


def run(name, loader, settings, out_dir, epochs=None):
    from adptycho.analysis.plots import plot_reconstruction
    from adptycho.reconstruction import reconstruct

    settings = dict(settings)
    if epochs:
        settings["epochs"] = epochs
    scan = loader()
    started = time.perf_counter()
    result = reconstruct(scan, verbose=0, **settings)
    elapsed = time.perf_counter() - started
    residual = result.residual_history
    png = plot_reconstruction(result, os.path.join(out_dir, f"{name}.png"),
                              title=f"{name}: {scan.num_patterns} patterns, {settings['epochs']} epochs")
    figures = {"epochs": settings["epochs"], "seconds": round(elapsed, 1),
               "first_residual": float(residual[0]), "last_residual": float(residual[-1]),
               "residual_drop": float(residual[0] / residual[-1]),
               "residual_history": [round(float(r), 5) for r in residual],
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
               "png": os.path.relpath(png, out_dir)}
    print(f"{name}: residual {residual[0]:.4f} -> {residual[-1]:.4f} "
          f"({residual[0] / residual[-1]:.1f}x) in {settings['epochs']} epochs, {elapsed:.0f} s; wrote {png}")
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description="Reconstruct the real datasets of ../shared/data")
    parser.add_argument("--dataset", choices=("tike", "petra", "both"), default="both")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "real_data"))
    args = parser.parse_args(argv)

    from adptycho.io import data_dir, load_petra_p25, load_tike_siemens_star

    if data_dir() is None:
        print("real_data: ../shared/data not found (set ADPTYCHO_DATA_DIR); nothing to do")
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    figures = {}
    if args.dataset in ("tike", "both"):
        figures["tike_siemens_star"] = run("tike_siemens_star", load_tike_siemens_star,
                                           TIKE_SETTINGS, args.out_dir, args.epochs)
    if args.dataset in ("petra", "both"):
        figures["petra_p25_nearfield"] = run(
            "petra_p25_nearfield", lambda: load_petra_p25(focus_distance_m=3.65e-3),
            PETRA_SETTINGS, args.out_dir, args.epochs)
        figures["petra_p25_nearfield"]["focus_distance_m"] = 3.65e-3
    with open(os.path.join(args.out_dir, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

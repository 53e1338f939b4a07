"""Reconstructions of the two real datasets in ``../shared/data`` (foundation issue figures).

* tike Siemens star (far field, APS Velociprobe, 516 patterns of 128x128): object + probe with
  Adam, amplitude loss, 30 epochs (the ``reconstruct`` defaults otherwise); the relative amplitude
  residual sum (sqrt I - sqrt X)^2 / sum X per epoch is recorded (the quantity the shared data
  README quotes for a numpy ePIE, 0.17 -> 0.02; its square root is 0.42 -> 0.14).
* PETRA III P25 near field (cone beam, 200 patterns of 100x100) at z1 = 3.65 mm: object + probe,
  probe started from the back-propagated sqrt of the mean pattern, 60 epochs, batch 16.

For each dataset ``figures.json`` records the first / last residual, the drop, epochs, wall time,
the Poisson noise floor of the residual for the final model (the residual the model would have if
it were exact: E (sqrt Poisson(I) - sqrt I)^2 summed, over sum I, estimated by one Poisson draw)
and the Siemens-star "spoke contrast" (peak / median of the angular power spectrum of the phase on
a circle around the scan centre; about 20 for noise, see ``tests/test_real_data.py``).

Writes ``tike_siemens_star.{png,npz}``, ``petra_p25_nearfield.{png,npz}`` (the arrays the
figure is drawn from; ``--plot-only`` redraws the PNGs from them) and ``figures.json`` into
``--out-dir`` (default ``experiments/real_data``; a run of one dataset keeps the other's entry).
The PNGs are re-saved with a 256-colour palette to keep them small. Exits 0 with a message when
the data are absent.

Run::

    python experiments/real_data.py              # both, about 45 s on 2 CPU cores
    python experiments/real_data.py --dataset petra --epochs 80
    python experiments/real_data.py --plot-only  # redraw the figures from the .npz files
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

TIKE_SETTINGS = dict(engine="adam", epochs=30, batch_size=32, refine=("object", "probe"), loss="amplitude")
PETRA_SETTINGS = dict(engine="adam", epochs=60, batch_size=16, refine=("object", "probe"), loss="amplitude")
# radii (object pixels) of the circle on which the spoke contrast is measured
SPOKE_RADIUS_PX = {"tike_siemens_star": 100, "petra_p25_nearfield": 35}


def noise_floor(scan, result, seed=0):
    """Residual of the final model against a Poisson draw of its own prediction (see module doc)."""
    from adptycho.reconstruction import build_model

    probe = np.asarray(result.probe)
    model, _ = build_model(scan, probe=probe, probe_modes=probe.shape[0],
                           initial_object=result.object, normalise_probe=False)
    predicted = np.maximum(model.predict(np.arange(scan.num_patterns), batch_size=32, verbose=0), 0)
    counts = np.random.default_rng(seed).poisson(predicted)
    valid = scan.valid_mask
    return float(np.sum((np.sqrt(counts) - np.sqrt(predicted)) ** 2 * valid) /
                 np.sum(counts * valid))


def _shrink_png(path):
    try:
        from PIL import Image
    except ImportError:  # matplotlib ships with Pillow; keep the full PNG otherwise
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256)
    small.save(path, optimize=True)


def run(name, loader, settings, out_dir, epochs=None):
    from adptycho.analysis.metrics import spoke_contrast
    from adptycho.reconstruction import reconstruct
    from figrecon import save_result

    settings = dict(settings)
    if epochs:
        settings["epochs"] = epochs
    scan = loader()
    started = time.perf_counter()
    result = reconstruct(scan, verbose=0, **settings)
    elapsed = time.perf_counter() - started
    residual = result.residual_history
    floor = noise_floor(scan, result)
    contrast, frequency = spoke_contrast(result.object, result.positions_px, scan.detector_shape,
                                         SPOKE_RADIUS_PX[name])
    save_result(result, os.path.join(out_dir, f"{name}.npz"))
    figures = {"patterns": scan.num_patterns, "epochs": settings["epochs"], "seconds": round(elapsed, 1),
               "first_residual": float(residual[0]), "last_residual": float(residual[-1]),
               "residual_drop": float(residual[0] / residual[-1]),
               "poisson_floor_residual": floor,
               "spoke_contrast": round(contrast, 1), "spoke_frequency": frequency,
               "spoke_radius_px": SPOKE_RADIUS_PX[name],
               "residual_history": [round(float(r), 6) for r in residual],
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
               "png": f"{name}.png", "arrays": f"{name}.npz"}
    png = plot(name, figures, out_dir)
    print(f"{name}: residual {residual[0]:.4f} -> {residual[-1]:.4f} "
          f"({residual[0] / residual[-1]:.1f}x; Poisson floor {floor:.4f}) in "
          f"{settings['epochs']} epochs, {elapsed:.0f} s; spoke contrast {contrast:.0f} at "
          f"{frequency} periods/turn; wrote {png}")
    return figures


def plot(name, figures, out_dir):
    """Redraw ``{name}.png`` from ``{name}.npz`` and its ``figures.json`` entry."""
    from figrecon import plot_result

    png = plot_result(os.path.join(out_dir, f"{name}.npz"), os.path.join(out_dir, f"{name}.png"),
                      title=f"{name}: {figures.get('patterns', '?')} patterns, "
                            f"{figures['epochs']} epochs")
    _shrink_png(png)
    return png


def main(argv=None):
    parser = argparse.ArgumentParser(description="Reconstruct the real datasets of ../shared/data")
    parser.add_argument("--dataset", choices=("tike", "petra", "both"), default="both")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "real_data"))
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw the PNGs from the saved .npz files and figures.json")
    args = parser.parse_args(argv)
    if args.plot_only:
        with open(os.path.join(args.out_dir, "figures.json")) as f:
            saved = json.load(f)
        for name, figures in saved.items():
            if os.path.exists(os.path.join(args.out_dir, f"{name}.npz")):
                print(plot(name, figures, args.out_dir))
            else:
                print(f"real_data: {name}.npz not saved; rerun the dataset to redraw {name}.png")
        return 0

    from adptycho.io import data_dir, load_petra_p25, load_tike_siemens_star

    if data_dir() is None:
        print("real_data: ../shared/data not found (set ADPTYCHO_DATA_DIR); nothing to do")
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = os.path.join(args.out_dir, "figures.json")
    figures = {}
    if os.path.exists(json_path):  # keep the other dataset's entry when only one is run
        try:
            with open(json_path) as f:
                figures = json.load(f)
        except (OSError, ValueError):
            figures = {}
    if args.dataset in ("tike", "both"):
        figures["tike_siemens_star"] = run("tike_siemens_star", load_tike_siemens_star,
                                           TIKE_SETTINGS, args.out_dir, args.epochs)
    if args.dataset in ("petra", "both"):
        figures["petra_p25_nearfield"] = run(
            "petra_p25_nearfield", lambda: load_petra_p25(focus_distance_m=3.65e-3),
            PETRA_SETTINGS, args.out_dir, args.epochs)
        figures["petra_p25_nearfield"]["focus_distance_m"] = 3.65e-3
    with open(json_path, "w") as f:
        json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

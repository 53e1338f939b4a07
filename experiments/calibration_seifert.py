"""Simulated calibration case mirroring Seifert et al.'s optical setup (calibration issue, item 5).

Setup (Seifert et al. 2024, Sec. 2.1): 561 nm laser, a 500 um pinhole imaged onto the object with
magnification 3 (a 1.5 mm circular, flat-phase illumination), the camera 6.5 cm downstream with
3.45 um pixels and 1024 x 1024 pixels, a Fermat spiral of 96 positions with 80 % overlap.
To stay fast on CPU the camera is binned 4 x 4 to 256 x 256 pixels of 13.8 um (the same 3.5 mm
field of view, so the propagation is sampled as in the experiment: the band-limited angular
spectrum keeps the full bandwidth). Near field: object pixel = camera pixel.

The calibration scan is bright (1e7 photons per exposure, Poisson noise). Calibration starts from
positions with 2 px RMS random error and a distance 5 % off; the probe starts as a flat disc of
the nominal pinhole-image size, with a 15 % wider support and the probe power held at the
brightest pattern's count. The distance is refined with object and probe co-propagated
(``PtychoModel(copropagate=True)``, the default).
Then a dimmer scan (``--low-dose``, default 1e6 photons per exposure) of another object at the
same programmed positions is reconstructed with the saved calibration (probe, positions and
distance frozen) and with the uncalibrated geometry (reported positions, 5 % wrong distance,
probe refined from the same start with the same constraints), Poisson loss, 40 epochs.

Writes ``experiments/calibration_seifert/{results.json, results.csv, calibration.h5,
low_dose.npz, calibration.png}`` (``low_dose.npz``: the low-dose objects and the positions the
figure is drawn from).

Run::

    python experiments/calibration_seifert.py            # about 10 minutes on 2 cores
    python experiments/calibration_seifert.py --reuse    # the low-dose part only
    python experiments/calibration_seifert.py --plot-only
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
CAMERA_PIXEL_M = 3.45e-6
BINNING = 4
DETECTOR = 256
DISTANCE_M = 0.065
PROBE_DIAMETER_M = 1.5e-3


def setup(seed: int = 0):
    from adptycho.geometry import circular_aperture, fermat_spacing_for_overlap, fermat_spiral_scan
    from adptycho.model import NearFieldGeometry
    from adptycho.samples import complex_test_object

    pixel = CAMERA_PIXEL_M * BINNING
    diameter_px = PROBE_DIAMETER_M / pixel
    probe = circular_aperture((DETECTOR, DETECTOR), diameter_px, edge_px=1.5)
    spacing = fermat_spacing_for_overlap(0.8, diameter_px)
    positions = fermat_spiral_scan(96, spacing)
    positions -= positions.min(axis=0)
    extent = positions.max(axis=0)
    shape = tuple(int(np.ceil(e)) + DETECTOR + 16 for e in extent)
    positions += 8.0
    obj = complex_test_object(shape, "camera", "astronaut")
    near = NearFieldGeometry(WAVELENGTH_M, (pixel, pixel), DISTANCE_M)
    return obj, probe, positions, near, diameter_px


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--low-dose", type=float, default=1e6,
                        help="photons per exposure of the low-dose scan (calibration: 1e7)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse calibration.h5 from an earlier run (low-dose part only)")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "calibration_seifert"))
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw calibration.png from the saved files")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(args.out_dir)
        return None
    os.makedirs(args.out_dir, exist_ok=True)

    from adptycho.analysis import illuminated_region, nrmse
    from adptycho.calibration import Calibration, apply_calibration, calibrate
    from adptycho.geometry import circular_aperture
    from adptycho.io import ScanData
    from adptycho.reconstruction import reconstruct
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    obj, probe, true, near, diameter_px = setup()
    bright = simulate(obj, probe, true, photons_per_pattern=1e7, poisson=True, seed=1,
                      near_field=near)
    rng = np.random.default_rng(0)
    error = rng.normal(scale=2 / np.sqrt(2), size=true.shape)
    error -= error.mean(axis=0)
    start_distance = DISTANCE_M * 1.05
    scan = ScanData(bright.patterns, true + error, geometry="nearfield", wavelength_m=WAVELENGTH_M,
                    pixel_size_m=near.pixel_size_m, propagation_distance_m=start_distance,
                    detector_pixel_size_m=near.pixel_size_m, detector_distance_m=start_distance)
    print(f"scan: {scan.describe()}; probe {diameter_px:.1f} px, position error "
          f"{_rms(error):.2f} px RMS, start distance {start_distance * 100:.3f} cm")
    # The pinhole image's nominal size is known: a flat disc of that diameter starts the probe,
    # a disc 15 % wider is its support, and the probe power is held at the brightest pattern's
    # count (without the support the near-field fit stalls at 10x the noise floor).
    guess = circular_aperture(scan.detector_shape, diameter_px, edge_px=3.0)
    support = np.abs(circular_aperture(scan.detector_shape, 1.15 * diameter_px, edge_px=2.0))
    start = time.perf_counter()
    calibration_path = os.path.join(args.out_dir, "calibration.h5")
    if args.reuse and os.path.exists(calibration_path):
        calibration = Calibration.load(calibration_path)
        seconds = float(calibration.settings.get("seconds", float("nan")))
    else:
        calibration = calibrate(scan, epochs=args.epochs, batch_size=args.batch_size,
                                probe=guess, probe_support=support, probe_power="auto", verbose=0)
        seconds = time.perf_counter() - start
        calibration.settings["seconds"] = seconds
        calibration.save(calibration_path)

    true_probe = probe * np.sqrt(1e7 / np.sum(np.abs(probe) ** 2))
    position_rms = _rms(calibration.positions_px - true)
    distance_error = calibration.distance_m / DISTANCE_M - 1.0
    probe_error = nrmse(true_probe, calibration.probe[0], registration=True)
    print(f"calibration: {seconds:.0f} s; positions {position_rms:.3f} px RMS (was "
          f"{_rms(error):.2f}); distance {calibration.distance_m * 100:.4f} cm "
          f"({100 * distance_error:+.3f} %); probe NRMSE {probe_error:.4f}")

    # low-dose scan of another object at the same programmed positions
    other = complex_test_object(obj.shape, "coins", "camera")
    dim = simulate(other, probe, true, photons_per_pattern=args.low_dose, poisson=True, seed=5,
                   near_field=near)
    reported = ScanData(dim.patterns, true + error, geometry="nearfield", wavelength_m=WAVELENGTH_M,
                        pixel_size_m=near.pixel_size_m, propagation_distance_m=start_distance)
    kwargs = dict(epochs=40, batch_size=args.batch_size, loss="poisson", object_shape=obj.shape,
                  verbose=0)
    # the uncalibrated baseline gets the same probe start and constraints
    plain = reconstruct(reported, engine="adam", refine=("object", "probe"), probe=guess, probe_support=support,
                        probe_power=float(np.max(dim.patterns.sum(axis=(1, 2)))), **kwargs)
    applied = apply_calibration(reported, calibration)
    calibrated = reconstruct(applied, engine="adam", probe=applied.probe, refine=("object",),
                             **kwargs)
    region = illuminated_region(true, probe, obj.shape, 0.3)
    error_plain = nrmse(other, plain.object, region, registration=True, ramp=True)
    error_cal = nrmse(other, calibrated.object, region, registration=True, ramp=True)
    print(f"low dose ({args.low_dose:.0e} photons/exposure): object NRMSE uncalibrated {error_plain:.4f}, "
          f"with calibration {error_cal:.4f}")

    results = {
        "position_rms_start_px": _rms(error), "position_rms_px": position_rms,
        "distance_start_m": start_distance, "distance_true_m": DISTANCE_M,
        "distance_m": calibration.distance_m, "distance_relative_error": distance_error,
        "probe_nrmse": probe_error, "calibration_seconds": seconds, "epochs": args.epochs,
        "low_dose_photons_per_exposure": args.low_dose,
        "low_dose_nrmse_uncalibrated": error_plain, "low_dose_nrmse_calibrated": error_cal,
        "targets": {"position_rms_px": 0.2, "distance_relative_error": 0.005, "probe_nrmse": 0.1},
    }
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["quantity", "value"])
        for key, value in results.items():
            if key != "targets":
                writer.writerow([key, value])

    np.savez_compressed(os.path.join(args.out_dir, "low_dose.npz"),
                        true_positions_px=true, start_positions_px=true + error,
                        pixel_size_m=np.asarray(near.pixel_size_m, np.float64),
                        **aligned_phases(other, {"uncalibrated": plain.object,
                                                 "calibrated": calibrated.object}, region))
    plot(args.out_dir)
    return results


def aligned_phases(truth, objects, region):
    """{"phase_truth": ..., "phase_NAME": ...}: (Y, X) float16 phases in rad, NaN outside the
    boolean ``region``; each object is given the global phase offset that best matches the
    truth over the region (the global phase is not determined)."""
    reference = truth[region]
    phases = {"phase_truth": np.where(region, np.angle(truth), np.nan).astype(np.float16)}
    for name, obj in objects.items():
        obj = np.asarray(obj)
        offset = np.angle(np.vdot(obj[region], reference))
        phases[f"phase_{name}"] = np.where(region, np.angle(obj * np.exp(1j * offset)),
                                           np.nan).astype(np.float16)
    return phases


def plot(out_dir):
    """Redraw ``calibration.png`` from ``calibration.h5``, ``low_dose.npz`` and
    ``results.json`` (no recomputation)."""
    import h5py

    from figstyle import figure, image_panel, positions_panel, robust_limits, save

    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    with h5py.File(os.path.join(out_dir, "calibration.h5"), "r") as f:
        loss = f["loss_history"][()]
        probe = f["probe"][0]
        calibrated_positions = f["positions_px"][()]
    saved = np.load(os.path.join(out_dir, "low_dose.npz"))
    true, start = saved["true_positions_px"], saved["start_positions_px"]
    pixel = tuple(saved["pixel_size_m"])
    fig, axes = figure(2, 3, panel=(4.0, 3.5),
                       title="Simulated Seifert setup: calibration at 1e7 photons, then a "
                             f"{results['low_dose_photons_per_exposure']:.0e}-photon scan")
    ax = axes[0, 0]
    ax.semilogy(np.arange(1, len(loss) + 1), loss)
    ax.set(xlabel="epoch", ylabel="loss (amplitude loss)", title="calibration loss")
    ax.grid(True, which="both")
    shift = np.mean(calibrated_positions - true, axis=0)
    positions_panel(axes[0, 1], [(true, "true", "k."), (start, "start", "r+"),
                                 (calibrated_positions - shift, "calibrated", "bx")],
                    title=f"positions: {results['position_rms_px']:.3f} px RMS "
                          f"(start {results['position_rms_start_px']:.2f})")
    image_panel(axes[0, 2], np.abs(probe), "amplitude (sqrt photons)",
                f"calibrated probe |P| (NRMSE {results['probe_nrmse']:.3f})", pixel_size_m=pixel,
                unit="mm")
    panels = [("truth", "low-dose object, truth"),
              ("uncalibrated", "uncalibrated: NRMSE "
                               f"{results['low_dose_nrmse_uncalibrated']:.3f}"),
              ("calibrated", f"with calibration: NRMSE {results['low_dose_nrmse_calibrated']:.3f}")]
    truth = saved["phase_truth"].astype(np.float32)
    rows, cols = np.nonzero(np.isfinite(truth))  # the illuminated region's bounding box
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    low, high = robust_limits(truth)  # one colour scale: the truth's
    for ax, (name, title) in zip(axes[1], panels):
        image_panel(ax, saved[f"phase_{name}"].astype(np.float32)[box], "phase (rad)", title,
                    vmin=low, vmax=high, pixel_size_m=pixel, unit="mm",
                    origin_px=(rows.min(), cols.min()))
    save(fig, os.path.join(out_dir, "calibration.png"))


def _rms(a):
    a = np.asarray(a) - np.mean(a, axis=0)
    return float(np.sqrt(np.mean(np.sum(a ** 2, axis=1))))


if __name__ == "__main__":
    main()

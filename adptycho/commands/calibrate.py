"""``adptycho calibrate``: probe, positions and distance from a bright scan
(``adptycho.calibration``), saved for ``reconstruct --calibration``."""

from __future__ import annotations

import time

import numpy as np

from adptycho.commands.options import (APPLIES, add_geometry_options, add_length_options,
                                       add_loss_option, add_probe_constraints, add_seed_option,
                                       is_nearfield, load_scan, positive_int,
                                       probe_constraint_kwargs)

NAME = "calibrate"


def _position_model(args):
    if args.no_positions:
        return "--position-model does not apply with --no-positions (positions are not refined)"
    return None


def _no_distance(args):
    if not is_nearfield(args):
        return ("--no-distance applies to near-field scans (in far field the distance is "
                "refined only with --farfield-distance)")
    return None


def _farfield_distance(args):
    if is_nearfield(args):
        return ("--farfield-distance applies to far-field scans (in near field the distance is "
                "refined unless --no-distance)")
    return None


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="calibrate probe, positions and distance on a bright scan")
    p.add_argument("input", help="high-SNR scan (.cxi, or tike .npz.bz2)")
    p.add_argument("--out", required=True, help="output calibration .h5")
    rules = add_length_options(p, epochs=60, batch_size=16)
    rules.update(add_loss_option(p))
    p.add_argument("--position-model", choices=("offsets", "affine"), default="offsets")
    p.add_argument("--no-positions", action="store_true", help="do not refine positions")
    p.add_argument("--no-distance", action="store_true", help="do not refine the distance")
    p.add_argument("--farfield-distance", action="store_true",
                   help="far field: also refine the sample-detector distance (a global scale of "
                        "the positions; needs the detector distance in the file)")
    rules.update(add_probe_constraints(p))
    p.add_argument("--probe-modes", type=positive_int, default=1)
    rules.update(add_geometry_options(p))
    rules.update(add_seed_option(p))
    rules.update({"input": APPLIES, "out": APPLIES, "position_model": _position_model,
                  "no_positions": APPLIES, "no_distance": _no_distance,
                  "farfield_distance": _farfield_distance, "probe_modes": APPLIES})
    return rules


def run(args):
    from adptycho.calibration import calibrate
    from adptycho.commands.tensorboard import tensorboard_callbacks

    scan = load_scan(args)
    print(f"adptycho: {scan.describe()}")
    near = scan.geometry == "nearfield"
    started = time.perf_counter()
    calibration = calibrate(scan, epochs=args.epochs, batch_size=args.batch_size,
                            refine_positions=not args.no_positions,
                            refine_distance=(near and not args.no_distance)
                            or (not near and args.farfield_distance),
                            position_model=args.position_model, loss=args.loss,
                            probe_modes=args.probe_modes, seed=args.seed, verbose=1,
                            callbacks=tensorboard_callbacks(args),
                            **probe_constraint_kwargs(args, scan))
    calibration.save(args.out)
    shift = calibration.positions_px - calibration.nominal_positions_px
    shift -= shift.mean(axis=0)
    rms = float(np.sqrt(np.mean(np.sum(shift ** 2, axis=1))))
    distance = f", distance {calibration.distance_m * 1e3:.4f} mm" if calibration.distance_m else ""
    print(f"adptycho: calibrated in {time.perf_counter() - started:.0f} s: position corrections "
          f"{rms:.3f} px RMS{distance}; wrote {args.out}")

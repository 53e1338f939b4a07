"""``adptycho simulate``: a far-field scan of a test picture, written as CXI."""

from __future__ import annotations

import argparse

import numpy as np

from adptycho.commands.options import APPLIES, add_seed_option, positive_float, positive_int
from adptycho.errors import AdptychoError

NAME = "simulate"


def _jitter(args):
    if args.scan != "raster":
        return "--jitter applies to --scan raster (a Fermat spiral has no jitter)"
    return None


def _seed(args):
    random = args.poisson or args.readout_noise > 0 or (args.scan == "raster" and args.jitter)
    if not random:
        return ("--seed has no effect: nothing in this simulation is random (no --poisson, "
                "--readout-noise or raster --jitter)")
    return None


def add_options(p) -> dict:
    """The simulation options (also used by ``demo``); returns their rules."""
    p.add_argument("--object-size", type=positive_int, default=256, help="object side in pixels")
    p.add_argument("--amplitude", default="camera", help="scikit-image picture for the amplitude")
    p.add_argument("--phase", default="astronaut", help="scikit-image picture for the phase")
    p.add_argument("--probe-size", type=positive_int, default=64, help="probe/detector side (px)")
    p.add_argument("--probe-diameter", type=positive_float, default=32.0,
                   help="aperture diameter in object pixels")
    p.add_argument("--scan", choices=("raster", "fermat"), default="raster")
    p.add_argument("--overlap", type=float, default=0.7, help="linear overlap 1 - step/diameter")
    p.add_argument("--jitter", type=float, default=1.0, help="raster jitter (px, std)")
    p.add_argument("--photons", type=positive_float, default=1e6, help="photons per exposure")
    p.add_argument("--poisson", action="store_true", help="add Poisson noise")
    p.add_argument("--readout-noise", type=float, default=0.0, help="Gaussian readout std (photons)")
    p.add_argument("--wavelength-m", type=positive_float, default=561e-9)
    p.add_argument("--detector-distance-m", type=positive_float, default=0.065)
    p.add_argument("--detector-pixel-m", type=positive_float, default=3.45e-6)
    rules = {dest: APPLIES for dest in (
        "object_size", "amplitude", "phase", "probe_size", "probe_diameter", "scan", "overlap",
        "photons", "poisson", "readout_noise", "wavelength_m", "detector_distance_m",
        "detector_pixel_m")}
    rules.update(add_seed_option(p, help="seed of the jitter and the noise"))
    rules.update({"jitter": _jitter, "seed": _seed})
    return rules


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="simulate a far-field scan of a test picture and write CXI")
    p.add_argument("--out", required=True, help="output .cxi file")
    p.add_argument("--truth-out", help="also write the true object and probe (HDF5)")
    return {"out": APPLIES, "truth_out": APPLIES, **add_options(p)}


def simulation_args(argv) -> argparse.Namespace:
    """The simulation options of ``argv`` (their defaults for the rest)."""
    p = argparse.ArgumentParser(prog="adptycho simulate")
    add_options(p)
    return p.parse_args(argv)


def _positions(args, limit):
    from adptycho.geometry import (fermat_spacing_for_overlap, fermat_spiral_scan,
                                   overlap_to_step, raster_scan)

    if args.scan == "raster":
        step = overlap_to_step(args.overlap, args.probe_diameter)
        n = int(limit // step) + 1
        positions = raster_scan((n, n), step, start_px=(0.0, 0.0), jitter_px=args.jitter,
                                seed=args.seed)
        positions += (limit - positions.max(axis=0) + positions.min(axis=0)) / 2 - positions.min(axis=0)
    else:
        spacing = fermat_spacing_for_overlap(args.overlap, args.probe_diameter)
        radius = limit / 2.0
        count = int(np.floor((radius / spacing) ** 2)) + 1
        positions = fermat_spiral_scan(count, spacing, center_px=(radius, radius))
    return np.clip(positions, 0, limit)


def simulated_scan(args):
    """``(scan, true object, true probe in photon units)`` of the simulation options."""
    from adptycho.geometry import circular_aperture, farfield_pixel_size_m
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    size, h = args.object_size, args.probe_size
    if h > size:
        raise AdptychoError(f"probe size {h} is larger than the object size {size}")
    if args.probe_diameter > h:
        raise AdptychoError(f"probe diameter {args.probe_diameter} exceeds the probe window {h}")
    obj = complex_test_object((size, size), args.amplitude, args.phase)
    probe = circular_aperture((h, h), args.probe_diameter, edge_px=2.0)
    positions = _positions(args, size - h)
    pixel = farfield_pixel_size_m(args.wavelength_m, args.detector_distance_m, (h, h),
                                  args.detector_pixel_m)
    scan = simulate(obj, probe, positions, photons_per_pattern=args.photons, poisson=args.poisson,
                    readout_noise=args.readout_noise, seed=args.seed,
                    wavelength_m=args.wavelength_m, pixel_size_m=pixel)
    scan = scan.replace(detector_distance_m=args.detector_distance_m,
                        detector_pixel_size_m=(args.detector_pixel_m, args.detector_pixel_m))
    true_probe = probe * np.sqrt(args.photons / np.sum(np.abs(probe) ** 2))
    return scan, obj, true_probe


def _write_truth(path, obj, probe, positions):
    import h5py

    from adptycho.io.atomic import atomic_path

    with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("object", data=obj.astype(np.complex64))
        f.create_dataset("probe", data=np.asarray(probe, np.complex64)[None])
        f.create_dataset("positions_px", data=positions)


def run(args):
    from adptycho.io import save_cxi

    scan, obj, probe = simulated_scan(args)
    save_cxi(args.out, scan)
    if args.truth_out:
        _write_truth(args.truth_out, obj, probe, scan.positions_px)
    print(f"adptycho: {scan.describe()}; wrote {args.out}")

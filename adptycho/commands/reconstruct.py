"""``adptycho reconstruct``: load the scan -> a ``ReconstructConfig`` -> ``reconstruct`` -> save.

The options map one to one onto ``ReconstructConfig`` fields (``config_from_args``); the rules
of ``adptycho.commands.rules`` refuse an option the chosen mode would ignore.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

from adptycho.commands import ptychogan
from adptycho.commands.options import (add_geometry_options, add_length_options,
                                       add_loss_option, add_seed_option, fraction, groups,
                                       load_scan, positive_float, positive_int)
from adptycho.commands.rules import (effective_refine, has_adam_stage, is_stylegan2,
                                     reconstruct_rules)
from adptycho.errors import AdptychoError

NAME = "reconstruct"
PIE_OPTIONS = {"alpha": "object_step", "beta": "probe_step", "rpie_alpha": "regularisation",
               "momentum": "momentum", "fourier_relaxation": "fourier_relaxation",
               "probe_power_cap": "probe_power_cap"}


def _add_model_options(p):
    p.add_argument("--refine", type=groups, default=None,
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
    p.add_argument("--train-decoder", action="store_true",
                   help="latent objects: also train the decoder weights")
    p.add_argument("--parametrisation", default="complex",
                   choices=("complex", "amplitude-phase", "amplitude", "phase"))
    p.add_argument("--probe-modes", type=positive_int, default=1)


def _add_engine_options(p):
    p.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam",
                   help="adam (default) or full-batch L-BFGS with --epochs iterations (object "
                        "only: use --refine '')")
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
    p.add_argument("--probe-power-cap", type=float,
                   help="PIE engines: largest probe power sum |P|^2 in units of the largest "
                        "pattern's total counts (default 16; 0 = none; off with a detector mask)")
    for group in ("object", "probe", "positions", "distance"):
        p.add_argument(f"--lr-{group}", type=positive_float, help=f"adam step of the {group}")
    p.add_argument("--decay", type=positive_float,
                   help="adam learning-rate decay per epoch (default 0.97; 1 for the default "
                        "engine, which halves the steps on a loss plateau)")


def _add_run_options(p):
    p.add_argument("--checkpoint-dir",
                   help="resumable fit: state saved after every epoch (default OUT.checkpoint, "
                        "removed once OUT is written); rerun the same command to continue")
    p.add_argument("--no-checkpoint", action="store_true", help="do not write checkpoints")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint directory after OUT is written")
    p.add_argument("--validation-fraction", type=fraction, default=0.0,
                   help="hold out this fraction of the patterns (seeded) and report their loss "
                        "every epoch")
    p.add_argument("--early-stopping", type=positive_int, metavar="EPOCHS",
                   help="stop when the validation loss has not improved for EPOCHS epochs")
    p.add_argument("--strategy", choices=("none", "mirrored", "multiworker"), default="none",
                   help="data-parallel fit with tf.distribute: mirrored (all local GPUs) or "
                        "multiworker (several processes/hosts, configured by TF_CONFIG)")
    p.add_argument("--cpu-replicas", type=positive_int,
                   help="with --strategy mirrored on a CPU-only machine: split the CPU into "
                        "this many logical devices")
    p.add_argument("--stream", choices=("auto", "yes", "no"), default="auto",
                   help="read the patterns from disk in batches instead of loading them "
                        "(auto: when they exceed 2 GiB)")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="reconstruct a CXI scan (or a tike .npz.bz2)")
    p.add_argument("input", help="input .cxi file (or tike siemens-star .npz.bz2)")
    p.add_argument("--out", required=True, help="output .h5 reconstruction file")
    p.add_argument("--png", help="also write a figure (default: next to --out)")
    p.add_argument("--no-png", action="store_true", help="do not write a figure")
    add_length_options(
        p, epochs_help="epochs of the last (adam) stage (default: until the loss reaches a "
                       "plateau, at most 300, for the default engine; 50 for a named engine)",
        batch_help="patterns per adam step (default 32) or per PIE update (default 1: "
                   "sequential)")
    add_loss_option(p, help="noise model of the adam stage (default amplitude)")
    p.add_argument("--readout-noise", type=positive_float, default=1.0,
                   help="camera readout std in photons (poisson-gaussian loss)")
    _add_model_options(p)
    gan_rules = ptychogan.add_options(p)
    _add_engine_options(p)
    geometry_rules = add_geometry_options(p)
    _add_run_options(p)
    add_seed_option(p)
    return {**reconstruct_rules(gan_rules), **geometry_rules}


def config_from_args(args, checkpoint_dir, object_shape=None):
    """The ``ReconstructConfig`` of the command line."""
    from adptycho.config import ReconstructConfig

    rates = {g: getattr(args, f"lr_{g}") for g in ("object", "probe", "positions", "distance")
             if getattr(args, f"lr_{g}") is not None}
    pie = {name: getattr(args, dest) for dest, name in PIE_OPTIONS.items()
           if getattr(args, dest) is not None}
    latent = None
    if args.object != "pixels":
        latent = {"mode": args.latent_mode}
        if not is_stylegan2(args.object):  # a generator has no decoder to train
            latent["train_decoder"] = args.train_decoder
    return ReconstructConfig(
        engine=args.engine, epochs=args.epochs, batch_size=args.batch_size,
        refine=tuple(effective_refine(args)), loss=args.loss, readout_noise=args.readout_noise,
        object_shape=object_shape,
        learning_rates=rates or None, decay_rate=args.decay, object=args.object,
        parametrisation=args.parametrisation, tv_weight=args.tv_weight or 0.0,
        probe_modes=args.probe_modes, seed=args.seed,
        verbose=2 if args.quiet else 1, checkpoint_dir=checkpoint_dir,
        position_model=args.position_model, optimizer=args.optimizer, latent_options=latent,
        pie_options=pie or None, validation_fraction=args.validation_fraction,
        early_stopping_patience=args.early_stopping, strategy=args.strategy)


def _strategy(args):
    """The tf.distribute strategy the arguments ask for (None for one device)."""
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


def _load(args):
    """The scan, with the calibration applied (its probe then starts the fit)."""
    scan = load_scan(args)
    print(f"adptycho: {scan.describe()}")
    if not args.calibration:
        return scan, None
    from adptycho.calibration import Calibration, apply_calibration

    scan = apply_calibration(scan, Calibration.load(args.calibration))
    print(f"adptycho: calibration {args.calibration} applied (probe, positions, distance frozen)")
    return scan, scan.probe


def _report(args, result, elapsed):
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


def run(args):
    from adptycho.commands import convert
    from adptycho.commands.tensorboard import tensorboard_callbacks

    callbacks = tensorboard_callbacks(args)  # refuses --tensorboard where it would log nothing
    if args.ptychogan:
        return ptychogan.run(args)
    from adptycho.analysis.plots import plot_reconstruction
    from adptycho.io import save_reconstruction
    from adptycho.reconstruction import reconstruct
    from adptycho.training.distribute import is_chief

    strategy = _strategy(args)  # first: multi-worker collectives must start before other ops
    scan, probe = _load(args)
    scan, probe, initial_object = convert.apply_init(args, scan, probe)
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None and not args.no_checkpoint and has_adam_stage(args):
        checkpoint_dir = args.out + ".checkpoint"
    config = config_from_args(args, checkpoint_dir, None if initial_object is None
                              else initial_object.shape)
    started = time.perf_counter()
    runtime = {} if strategy is None else {"strategy": strategy}  # the config names it
    result = reconstruct(scan, config, probe=probe, initial_object=initial_object,
                         callbacks=callbacks, **runtime)
    elapsed = time.perf_counter() - started
    result.settings["input"] = os.path.abspath(args.input)
    if args.calibration:
        result.settings["calibration"] = os.path.abspath(args.calibration)
    if args.focus_distance:
        result.settings["focus_distance_m"] = args.focus_distance
    if not is_chief(strategy):
        print(f"adptycho: worker done in {elapsed:.1f} s; the chief writes {args.out}")
        return
    save_reconstruction(args.out, result)
    _report(args, result, elapsed)
    if checkpoint_dir is not None and args.checkpoint_dir is None and not args.keep_checkpoint:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if not args.no_png:
        png = args.png or os.path.splitext(args.out)[0] + ".png"
        plot_reconstruction(result, png, title=os.path.basename(args.input))
        print(f"adptycho: wrote {png}")

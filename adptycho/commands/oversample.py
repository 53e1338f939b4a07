"""``adptycho oversample``: the oversampling reconstruction (Barutcu et al.,
``adptycho.training.oversampling``) from a sparse scan and an initial reconstruction."""

from __future__ import annotations

import os
import time

import numpy as np

from adptycho.commands.options import (APPLIES, add_geometry_options, add_length_options,
                                       add_seed_option, load_scan, positive_float,
                                       positive_int)
from adptycho.errors import AdptychoError

NAME = "oversample"


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="oversampling reconstruction (Barutcu et al.) from a "
                       "sparse scan and an initial reconstruction")
    p.add_argument("input", help="measured (sparse) scan .cxi")
    p.add_argument("--init", required=True, help="initial reconstruction .h5 (object, probe)")
    p.add_argument("--out", required=True, help="output reconstruction .h5")
    p.add_argument("--factor", type=positive_int, default=3, help="scan density factor Y")
    p.add_argument("--weight", type=positive_float, default=20.0,
                   help="w: measured patterns step 1, simulated 1/w")
    p.add_argument("--weight-schedule", help="comma-separated w per repeat (overrides --weight)")
    p.add_argument("--repeats", type=positive_int, default=1)
    rules = add_length_options(p, epochs=100, epochs_help="ePIE epochs per repeat",
                               batch_size=1)
    p.add_argument("--engine", choices=("epie", "rpie", "mpie"), default="epie")
    p.add_argument("--fourier-relaxation", type=float, default=0.0,
                   help="Poisson noise bound for the measured patterns (0 = the paper's exact "
                        "projection; 1 = do not fit them below their expected counting noise)")
    p.add_argument("--step", type=positive_float,
                   help="measured scan step in object pixels (default: nearest-neighbour median)")
    p.add_argument("--cold-start", action="store_true",
                   help="ePIE from an empty object each repeat (Algorithm 1) instead of the "
                        "object the simulation used")
    p.add_argument("--truth", help="HDF5 with the true 'object' on the same grid: records "
                                  "the NRMSE after every repeat")
    rules.update(add_geometry_options(p))
    rules.update(add_seed_option(p, help="pattern order"))
    p.set_defaults(loss="amplitude")
    rules.update({dest: APPLIES for dest in (
        "input", "init", "out", "factor", "weight", "weight_schedule", "repeats", "engine",
        "fourier_relaxation", "step", "cold_start", "truth")})
    return rules


def _weight_schedule(text):
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AdptychoError(f"--weight-schedule must be comma-separated numbers, got "
                            f"{text!r}") from None


def _error_function(path, shape):
    """``f(object) -> NRMSE`` against the ``object`` of ``path`` (None without ``--truth``)."""
    if not path:
        return None
    import h5py

    from adptycho.analysis import nrmse

    if not os.path.exists(path):
        raise AdptychoError(f"no such file: {path}")
    with h5py.File(path, "r") as f:
        if "object" not in f:
            raise AdptychoError(f"{path} has no 'object' dataset")
        truth = f["object"][()]
    if truth.shape != shape:
        raise AdptychoError(f"--truth object {truth.shape} and --init object {shape} differ in "
                            "shape")
    return lambda obj: nrmse(truth, obj)


def _save(args, scan, initial, result, with_errors):
    import h5py

    from adptycho.io import ReconstructionResult, save_reconstruction
    from adptycho.io.atomic import atomic_path

    corners = result.positions_px[result.measured]
    extra = {"measured_residual_history": result.measured_residual,
             "mixed_residual_history": result.residual_history,
             "weight_history": result.weights,
             "oversampled_positions_px": result.positions_px,
             "oversampled_measured": result.measured.astype(np.float64)}
    if with_errors:
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


def run(args):
    from adptycho.commands.tensorboard import tensorboard_callbacks
    from adptycho.io import load_reconstruction
    from adptycho.training.oversampling import oversample

    callbacks = tensorboard_callbacks(args)
    scan = load_scan(args)
    print(f"adptycho: {scan.describe()}")
    if not os.path.exists(args.init):
        raise AdptychoError(f"no such file: {args.init}")
    initial = load_reconstruction(args.init)
    schedule = _weight_schedule(args.weight_schedule)
    error_fn = _error_function(args.truth, initial.object.shape)
    started = time.perf_counter()
    result = oversample(scan, initial, factor=args.factor, weight=args.weight,
                        repeats=args.repeats, weight_schedule=schedule, epochs=args.epochs,
                        engine=args.engine, batch_size=args.batch_size, step_px=args.step,
                        warm_start=not args.cold_start, seed=args.seed, error_fn=error_fn,
                        fourier_relaxation=args.fourier_relaxation, callbacks=callbacks,
                        verbose=1)
    _save(args, scan, initial, result, error_fn is not None)
    errors = (f", NRMSE {result.error_history[0]:.4g} -> {result.error_history[-1]:.4g}"
              if error_fn is not None else "")
    print(f"adptycho: {args.repeats} repeat(s) of {result.settings['num_patterns']} patterns "
          f"({scan.num_patterns} measured) in {time.perf_counter() - started:.1f} s; measured "
          f"residual {result.measured_residual[0]:.4g} -> {result.measured_residual[-1]:.4g}"
          f"{errors}; wrote {args.out}")

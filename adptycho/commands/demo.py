"""``adptycho demo``: simulate, reconstruct blind with the defaults, report the object error."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from adptycho.commands.options import APPLIES, add_length_options, add_loss_option
from adptycho.commands.simulate import simulated_scan, simulation_args

NAME = "demo"


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="simulate, reconstruct and report the error (about a minute)")
    p.add_argument("--out", default="adptycho-demo", help="output directory")
    rules = add_length_options(p, batch=False, epochs_help="adam epochs after the ePIE stage "
                               "(default: until the loss reaches a plateau)")
    rules.update(add_loss_option(p))
    return {"out": APPLIES, **rules}


def _figures(args, scan, obj, probe, result):
    """The reconstruction figure and the truth-vs-reconstruction figure; the object NRMSE."""
    from adptycho.analysis import illuminated_region, nrmse
    from adptycho.analysis.metrics import align, register, remove_phase_ramp
    from adptycho.analysis.plots import plot_object, plot_reconstruction

    region = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    error = nrmse(obj, result.object, region, registration=True, ramp=True)
    png = plot_reconstruction(result, os.path.join(args.out, "demo_reconstruction.png"),
                              title=f"adptycho demo: object NRMSE {error:.3f}")
    shown = align(remove_phase_ramp(register(result.object, obj)[0], obj, region), obj, region)
    plot_object([np.abs(obj), np.abs(shown) * region, np.angle(obj), np.angle(shown) * region],
                ["true amplitude", "reconstructed amplitude", "true phase", "reconstructed phase"],
                os.path.join(args.out, "demo_truth_vs_reconstruction.png"))
    return error, png


def run(args):
    from adptycho.config import ReconstructConfig
    from adptycho.io import save_cxi, save_reconstruction
    from adptycho.reconstruction import reconstruct

    started = time.perf_counter()
    scan, obj, probe = simulated_scan(
        simulation_args(["--object-size", "160", "--seed", "0", "--poisson"]))
    os.makedirs(args.out, exist_ok=True)
    save_cxi(os.path.join(args.out, "demo_scan.cxi"), scan)
    print(f"adptycho demo: simulated {scan.describe()} "
          f"(camera amplitude, astronaut phase, Poisson noise)")
    # the default command on a scan without a probe: the probe is found from the data
    config = ReconstructConfig(epochs=args.epochs, refine=("object", "probe"), loss=args.loss,
                               object_shape=obj.shape, verbose=2)
    result = reconstruct(dataclasses.replace(scan, probe=None), config)
    save_reconstruction(os.path.join(args.out, "demo_reconstruction.h5"), result)
    error, png = _figures(args, scan, obj, probe, result)
    print(f"adptycho demo: object NRMSE {error:.4f} (global phase/scale, shift and phase ramp "
          f"removed, illuminated region) after {len(result.loss_history)} epochs "
          f"({result.settings['engine']}); "
          f"total {time.perf_counter() - started:.0f} s")
    print(f"adptycho demo: wrote {png} and {args.out}/demo_truth_vs_reconstruction.png")
    return error

"""``adptycho uncertainty SCAN RECONSTRUCTION --out U.h5 [--method fisher|laplace|hmc]``.

Writes the per-pixel std maps of a reconstruction (``adptycho.uncertainty``; file layout in
``adptycho/uncertainty/result.py``) and a PNG (object phase, std maps, and |error| / std with
``--truth``). Refuses, with one line and exit status 2 and before anything is written, a
reconstruction that is not of the scan, a method that does not fit the object representation,
an output that is an input, an unwritable output.
"""

from __future__ import annotations

import os

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``uncertainty`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("uncertainty", help="per-pixel error bars (std maps) of a "
                              "reconstruction from the likelihood")
    p.add_argument("input", help="the scan that was reconstructed (.cxi, or a tike .npz.bz2)")
    p.add_argument("reconstruction", help="reconstruction .h5 (adptycho reconstruct)")
    p.add_argument("--out", required=True, help="output HDF5 (object_amplitude_std, "
                                                 "object_phase_std, ...)")
    p.add_argument("--method", choices=("fisher", "laplace", "hmc"), default=None,
                   help="fisher (pixel objects, default) or laplace / hmc (latent objects; "
                        "default laplace)")
    p.add_argument("--covariance", choices=("estimator", "fisher"), default="estimator",
                   help="fisher method: covariance of the fitted loss's minimiser (default) or "
                        "the inverse Fisher information of the noise model")
    p.add_argument("--noise-model", choices=("poisson", "amplitude", "poisson-gaussian"),
                   help="default: the loss of the reconstruction")
    p.add_argument("--readout-noise", type=float, help="poisson-gaussian readout std (photons)")
    p.add_argument("--preset", choices=("default", "fast"), default="default",
                   help="fisher: default (8 random vectors, solves to 1e-3) or fast (1 vector, "
                        "solves to 1e-2, smoothed over 4 px: for large objects; see "
                        "docs/uncertainty.md)")
    p.add_argument("--estimator", choices=("sampling", "hutchinson"), default=None,
                   help="fisher: draws of the estimator's error (default; one solve each) or "
                        "Hutchinson +-1 probes (two solves each for the sandwich)")
    p.add_argument("--probes", type=int, default=None,
                   help="fisher: random vectors, draws or probes (default: the preset's, 8 / 1)")
    p.add_argument("--samples", type=int, default=500, help="hmc: posterior samples")
    p.add_argument("--truth", help="HDF5 with the true 'object' on the same grid "
                                   "(adptycho simulate --truth-out): adds |error| / std")
    p.add_argument("--png", help="figure (default: --out with .png)")
    p.add_argument("--no-png", action="store_true", help="write no figure")
    p.add_argument("--seed", type=int, default=0)
    return p


def _truth(path, shape):
    import h5py
    import numpy as np

    from adptycho.errors import DataError

    try:
        with h5py.File(path, "r") as f:
            if "object" not in f:
                raise DataError(f"--truth {path} has no 'object' dataset")
            truth = np.asarray(f["object"][()])
    except OSError as exc:
        raise DataError(f"cannot read --truth {path} as HDF5: {exc}") from None
    if truth.shape != tuple(shape):
        raise DataError(f"--truth object is {truth.shape[0]}x{truth.shape[1]} but the "
                        f"reconstruction's grid is {shape[0]}x{shape[1]}")
    return truth


def run(args) -> None:
    """Run the command (``AdptychoError`` for bad input: the CLI prints one line, exit 2)."""
    from adptycho.errors import AdptychoError
    from adptycho.io.validation import check_no_overwrite, check_output_path

    png = None if args.no_png else (args.png or os.path.splitext(args.out)[0] + ".png")
    inputs = {"input": args.input, "reconstruction": args.reconstruction, "--truth": args.truth}
    for flag, path in inputs.items():
        if path is not None and not os.path.exists(path):
            raise AdptychoError(f"no such file: {path}")
    check_output_path(args.out, "--out")
    if png is not None:
        check_output_path(png, "--png")
    check_no_overwrite({"--out": args.out, "--png": png}, inputs)
    if (args.probes is not None and args.probes < 1) or args.samples < 1:
        raise AdptychoError("--probes and --samples must be at least 1")

    from adptycho.commands.options import is_tike
    from adptycho.io import load_cxi, load_reconstruction, load_tike_siemens_star
    from adptycho.uncertainty import object_uncertainty

    rec = load_reconstruction(args.reconstruction)
    loss = args.noise_model or rec.settings.get("loss", "poisson")
    if is_tike(args):  # the inputs `adptycho reconstruct` reads, read the same way
        scan = load_tike_siemens_star(args.input)
    else:
        scan = load_cxi(args.input, geometry=rec.geometry, focus_distance_m=rec.focus_distance_m,
                        allow_negative=loss == "poisson-gaussian")
    truth = _truth(args.truth, rec.object.shape) if args.truth else None
    latent = "latent" in rec.extra_histories
    method = args.method or ("laplace" if latent else "fisher")
    if method == "fisher":
        settings = {"preset": args.preset, "seed": args.seed}
        if args.probes is not None:
            settings["probes"] = args.probes
        if args.estimator is not None:
            settings["estimator"] = args.estimator
    else:
        settings = {"samples": args.samples, "seed": args.seed}
    result = object_uncertainty(scan, rec, method, noise_model=args.noise_model,
                                readout_noise=args.readout_noise, covariance=args.covariance,
                                settings=settings)
    if truth is not None:
        from adptycho.uncertainty.figure import phase_error_over_std

        result.extras["phase_error_over_std"] = phase_error_over_std(rec.object, result, truth)
    result.save(args.out)
    written = [args.out]
    if png is not None:
        from adptycho.uncertainty.figure import plot_uncertainty

        plot_uncertainty(rec.object, result, png,
                         title=f"{os.path.basename(args.reconstruction)}: {method}")
        written.append(png)
    import numpy as np

    phase = result.object_phase_std[result.reference]
    print(f"adptycho: {method} uncertainty: median phase std {np.nanmedian(phase):.4g} rad on "
          f"{int(result.reference.sum())} well-illuminated pixels, "
          f"{int(result.determined.sum())} determined of {result.determined.size}; wrote "
          f"{' and '.join(written)}")
    shift = result.info.get("mode_shift_std")
    if shift is not None and shift > 0.5:
        print(f"adptycho: note: the fitted latent was {shift:.3g} posterior std from the posterior "
              f"mode ({result.info['newton_steps']} Newton steps); the maps are centred on the "
              "mode, whose decoded object is stored as 'object' in the file")

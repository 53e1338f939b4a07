"""``adptycho landscape``: the loss landscape around a reconstruction (PNG and CSV,
``adptycho.analysis.landscape``)."""

from __future__ import annotations

import os
import time

import numpy as np

from adptycho.commands.options import (APPLIES, add_geometry_options, add_seed_option, LOSSES,
                                       load_scan, positive_float, positive_int)
from adptycho.errors import AdptychoError

NAME = "landscape"


def _saved(args):
    """``(is a latent reconstruction, its settings)`` read from ``--reconstruction`` with h5py
    (``(None, {})`` when it cannot be read: the command reports that)."""
    import json

    import h5py

    try:
        with h5py.File(args.reconstruction, "r") as f:
            return "latent" in f, json.loads(f.attrs.get("settings", "{}"))
    except (OSError, ValueError, TypeError):
        return None, {}


def _data(args):
    latent, _ = _saved(args)
    if latent is False:
        return ("--data applies to latent reconstructions (the directions of a pixel object are "
                "random, from --seed)")
    return None


def _seed(args):
    latent, _ = _saved(args)
    if latent:
        return ("--seed applies to pixel reconstructions (the directions of a latent are the "
                "PCA of the --data latents)")
    return None


def _readout_noise(args):
    loss = args.loss or _saved(args)[1].get("loss", "amplitude")
    if loss != "poisson-gaussian":
        return (f"--readout-noise applies to the poisson-gaussian loss only (the {loss} loss "
                "ignores it)")
    return None


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="loss landscape around a reconstruction (PNG + CSV)")
    p.add_argument("input", help="the scan that was reconstructed (.cxi)")
    p.add_argument("--reconstruction", required=True, help="reconstruction .h5 (adptycho reconstruct)")
    p.add_argument("--out", required=True, help="output PNG (the CSV goes next to it)")
    p.add_argument("--csv", help="output CSV (default: --out with .csv)")
    p.add_argument("--data", help="latent objects: MNIST IDX directory for the validation "
                                  "latents whose PCA gives the directions v1, v2")
    p.add_argument("--range", type=positive_float, default=None,
                   help="a, b in [-range, range] (default 10 for latents, 1 for pixels)")
    p.add_argument("--points", type=positive_int, default=41, help="grid points per axis")
    p.add_argument("--loss", choices=LOSSES, help="loss to map (default: the reconstruction's)")
    p.add_argument("--readout-noise", type=positive_float, help="default: the reconstruction's")
    rules = add_geometry_options(p)
    rules.update(add_seed_option(p, help="random directions (pixel objects)"))
    rules.update({dest: APPLIES for dest in ("input", "reconstruction", "out", "csv", "range",
                                             "points", "loss")})
    rules.update({"data": _data, "seed": _seed, "readout_noise": _readout_noise})
    return rules


def _model(args, rec, scan):
    """The model at the reconstruction: ``(model, latent name or None)``."""
    from adptycho.reconstruction import build_model

    settings = rec.settings
    saved_noise = settings.get("readout_noise")
    readout = args.readout_noise or (1.0 if isinstance(saved_noise, str) or saved_noise is None
                                     else float(saved_noise))
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
                              parametrisation="complex",
                              initial_object=None if latent else rec.object,
                              object=name if latent else "pixels", latent_options=options)
    nominal = grid.corners(scan.positions_px)
    if np.shape(rec.positions_px) == np.shape(nominal):
        model.position_corrections.assign((rec.positions_px - nominal).astype(np.float32))
    return model, name if latent else None


def _losses(args, model, latent_name, rec, scan, axis):
    from adptycho.analysis import landscape as ls

    if latent_name is not None:
        if args.data is None:
            raise AdptychoError("latent landscapes need --data (MNIST IDX directory) for the PCA "
                                "directions of the validation latents")
        directions, variance, _ = ls.pca_directions(ls.validation_latents(latent_name, args.data))
        losses = ls.latent_landscape(model, scan.patterns, rec.extra_histories["latent"],
                                     directions[0], directions[1], axis, axis)
        return losses, ("a (PCA v1)", "b (PCA v2)")
    weights = [w.numpy() for w in model.object_representation.trainable_weights]
    d1, d2 = ls.filter_normalised_directions(weights, seed=args.seed)
    losses = ls.pixel_landscape(model, scan.patterns, d1, d2, axis, axis)
    return losses, ("a (random d1)", "b (random d2)")


def run(args):
    from adptycho.analysis import landscape as ls
    from adptycho.io import load_reconstruction

    rec = load_reconstruction(args.reconstruction)
    args.loss = args.loss or rec.settings.get("loss", "amplitude")
    scan = load_scan(args)
    model, latent_name = _model(args, rec, scan)
    span = args.range or (10.0 if latent_name is not None else 1.0)
    axis = np.linspace(-span, span, args.points)
    started = time.perf_counter()
    losses, labels = _losses(args, model, latent_name, rec, scan, axis)
    seconds = time.perf_counter() - started
    csv_path = args.csv or os.path.splitext(args.out)[0] + ".csv"
    ls.write_landscape_csv(csv_path, axis, axis, losses)
    ls.plot_landscape(args.out, axis, axis, losses, labels=labels,
                      title=f"{os.path.basename(args.reconstruction)}: {args.loss} loss, "
                            f"{args.points}x{args.points} grid")
    print(f"adptycho: {args.points}x{args.points} landscape in {seconds:.1f} s; loss at the "
          f"optimum {losses[args.points // 2, args.points // 2]:.6g}, grid min "
          f"{losses.min():.6g}, max {losses.max():.6g}; wrote {args.out} and {csv_path}")

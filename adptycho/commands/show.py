"""``adptycho show``: a PNG of a reconstruction file or of an uncertainty file."""

from __future__ import annotations

import os

from adptycho.commands.options import APPLIES

NAME = "show"


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="write a PNG of a reconstruction or uncertainty file")
    p.add_argument("input", help="reconstruction .h5 (adptycho reconstruct) or uncertainty .h5 "
                                 "(adptycho uncertainty)")
    p.add_argument("--out", help="output PNG (default: input with .png)")
    return {"input": APPLIES, "out": APPLIES}


def _is_uncertainty(path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "object_phase_std" in f
    except OSError:
        return False  # load_reconstruction names the problem


def run(args):
    png = args.out or os.path.splitext(args.input)[0] + ".png"
    if os.path.exists(args.input) and _is_uncertainty(args.input):
        from adptycho.uncertainty import load_uncertainty
        from adptycho.uncertainty.figure import plot_uncertainty

        result = load_uncertainty(args.input)
        plot_uncertainty(None, result, png,
                         title=f"{os.path.basename(args.input)}: {result.method}")
    else:
        from adptycho.analysis.plots import plot_reconstruction
        from adptycho.io import load_reconstruction

        result = load_reconstruction(args.input)
        plot_reconstruction(result, png, title=os.path.basename(args.input))
    print(f"adptycho: wrote {png}")

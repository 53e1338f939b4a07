"""``adptycho show``: a PNG of a reconstruction file."""

from __future__ import annotations

import os

from adptycho.commands.options import APPLIES

NAME = "show"


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="write a PNG of a reconstruction file")
    p.add_argument("input", help="reconstruction .h5")
    p.add_argument("--out", help="output PNG (default: input with .png)")
    return {"input": APPLIES, "out": APPLIES}


def run(args):
    from adptycho.analysis.plots import plot_reconstruction
    from adptycho.io import load_reconstruction

    result = load_reconstruction(args.input)
    png = args.out or os.path.splitext(args.input)[0] + ".png"
    plot_reconstruction(result, png, title=os.path.basename(args.input))
    print(f"adptycho: wrote {png}")

"""``adptycho orient``: rank the 8 flips/transposes of the scan positions by short fits."""

from __future__ import annotations

import json
import os

from adptycho.commands.options import APPLIES, add_geometry_options, load_scan, positive_int
from adptycho.errors import AdptychoError

NAME = "orient"


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="which of the 8 flips/transposes of the scan positions "
                                  "fits the patterns best (short fits, ranked by residual)")
    p.add_argument("input", help="input .cxi file (or tike siemens-star .npz.bz2)")
    p.add_argument("--epochs", type=positive_int, default=6,
                   help="ePIE epochs per orientation (default 6)")
    p.add_argument("--patterns", type=positive_int, default=100,
                   help="patterns nearest the scan centre used per fit (default 100)")
    p.add_argument("--json", help="also write the residuals to this JSON file")
    rules = add_geometry_options(p)
    p.set_defaults(loss="amplitude")
    return {"input": APPLIES, "epochs": APPLIES, "patterns": APPLIES, "json": APPLIES, **rules}


def run(args):
    from adptycho.io.atomic import atomic_path
    from adptycho.orientation import check_orientation
    from adptycho.reconstruction import build_model

    if args.json and os.path.abspath(args.json) == os.path.abspath(args.input):
        raise AdptychoError("--json must not be the input file")
    scan = load_scan(args)
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

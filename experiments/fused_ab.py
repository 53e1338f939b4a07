"""Interleaved A/B of the fused far-field path (``adptycho/accel/fused.py``, the plan's ``fused``) at the fit level.

Each configuration runs in its own process (XLA traces once per process), alternating fused
and composed ``--rounds`` times: object+probe and calibration (object + probe + positions +
far-field distance) fit epochs on the standard problem of ``experiments/benchmark.py``, timed
with ``benchmark.time_fit`` (the library's input pipeline; median of ``--epochs`` epochs after
one warm-up). Writes ``--out`` (JSON) and prints one line per run.

Run::

    python experiments/fused_ab.py --batch-size 64 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def one_run(batch_size: int, epochs: int, fused: bool) -> dict:
    sys.path.insert(0, HERE)
    import benchmark

    scan, _, _ = benchmark.standard_problem()
    out = {"fused": fused, "batch_size": batch_size}
    for name, refine in (("object+probe", ("object", "probe")),
                         ("calibration", ("object", "probe", "positions", "distance"))):
        out[name] = benchmark.time_fit(scan, refine, batch_size, epochs=epochs, warmup=1,
                                       plan_changes={"fused": fused})["median_s"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(HERE, "fused_ab.json"))
    parser.add_argument("--child", choices=("fused", "composed"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_run(args.batch_size, args.epochs, args.child == "fused")))
        return 0
    runs = []
    for _ in range(args.rounds):
        for mode in ("fused", "composed"):
            result = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--batch-size", str(args.batch_size),
                 "--epochs", str(args.epochs)], check=True, capture_output=True, text=True)
            run = json.loads(result.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(f"{mode:9s} object+probe {run['object+probe']:.3f} s  calibration "
                  f"{run['calibration']:.3f} s  ratio {run['calibration'] / run['object+probe']:.2f}",
                  flush=True)
    with open(args.out, "w") as f:
        json.dump({"batch_size": args.batch_size, "epochs": args.epochs, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

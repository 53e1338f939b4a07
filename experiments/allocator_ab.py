"""Interleaved A/B of the allocator setting (``adptycho/runtime.py``) at the fit level.

Each configuration runs in its own process, alternating tuned (the default on import) and
``ADPTYCHO_MALLOC=default`` (glibc's own behaviour) ``--rounds`` times: object+probe and
calibration (object + probe + positions + far-field distance) fit epochs on the standard problem
of ``experiments/benchmark.py``, timed with ``benchmark.time_fit`` (the library's input pipeline;
median of ``--epochs`` epochs after two warm-up epochs), with the minor page faults per epoch.
Writes ``--out`` (JSON) and prints one line per run.

Run::

    python experiments/allocator_ab.py --batch-size 400 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def one_run(batch_size: int, epochs: int) -> dict:
    sys.path.insert(0, HERE)
    import benchmark

    from adptycho.runtime import allocator_configured, configure

    configure()  # import no longer tunes malloc; ADPTYCHO_MALLOC=default still opts out

    scan, _, _ = benchmark.standard_problem()
    out = {"tuned": allocator_configured(), "batch_size": batch_size}
    for name, refine in (("object+probe", ("object", "probe")),
                         ("calibration", ("object", "probe", "positions", "distance"))):
        result = benchmark.time_fit(scan, refine, batch_size, epochs=epochs, warmup=2)
        out[name] = result["median_s"]
        out[name + " faults/epoch"] = result["page_faults_per_epoch"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(HERE, "allocator_ab.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_run(args.batch_size, args.epochs)))
        return 0
    runs = []
    for _ in range(args.rounds):
        for mode in ("tuned", "default"):
            env = dict(os.environ)
            env.pop("ADPTYCHO_MALLOC", None)
            if mode == "default":
                env["ADPTYCHO_MALLOC"] = "default"
            result = subprocess.run(
                [sys.executable, __file__, "--child", "--batch-size", str(args.batch_size),
                 "--epochs", str(args.epochs)], check=True, capture_output=True, text=True,
                env=env)
            run = json.loads(result.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(f"{mode:8s} object+probe {run['object+probe']:.3f} s "
                  f"({run['object+probe faults/epoch']:.0f} faults/epoch)  calibration "
                  f"{run['calibration']:.3f} s ({run['calibration faults/epoch']:.0f})", flush=True)
    summary = {}
    for mode, tuned in (("tuned", True), ("default", False)):
        for name in ("object+probe", "calibration"):
            summary[f"{mode} {name} median_s"] = statistics.median(
                r[name] for r in runs if r["tuned"] == tuned)
    with open(args.out, "w") as handle:
        json.dump({"batch_size": args.batch_size, "epochs": args.epochs, "runs": runs,
                   "summary": summary}, handle, indent=1)
    for key, value in summary.items():
        print(f"{key}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

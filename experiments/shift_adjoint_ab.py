"""In-process interleaved A/B of the sub-pixel shift's hand-written adjoint
(``adptycho.accel.ExecutionPlan.shift_adjoint``) on calibration fit epochs.

Builds two models of the standard problem of ``experiments/benchmark.py`` (object + probe +
positions + far-field distance refined, so every epoch shifts the probe by each pattern's
sub-pixel fraction), one traced with the adjoint and one with autodiff of the composed ramp
ops, warms both up for two epochs, then alternates single epochs between them ``--rounds``
times. Interleaving in one process keeps the machine's drifts out of the comparison. Writes
``--out`` (JSON) and prints the median, minimum and first quartile of each.

Run::

    python experiments/shift_adjoint_ab.py --batch-size 400 --rounds 12
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", default=os.path.join(HERE, "shift_adjoint_ab.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, HERE)
    import benchmark
    import keras

    from adptycho.accel import ExecutionPlan
    from adptycho.geometry import gaussian_probe
    from adptycho.reconstruction import build_model
    from adptycho.training.data import steps_per_execution_for, training_dataset

    scan, _, _ = benchmark.standard_problem()
    scan = dataclasses.replace(scan, detector_distance_m=1.0)
    steps = int(np.ceil(scan.num_patterns / args.batch_size))
    indices = np.arange(scan.num_patterns)
    models = {}
    for name, flag in (("adjoint", True), ("autodiff", False)):
        keras.utils.set_random_seed(0)
        model, _ = build_model(scan, probe=gaussian_probe(scan.detector_shape, 60.0),
                               normalise_probe=True, object_shape=(512, 512))
        model.compile(refine=("object", "probe", "positions", "distance"), jit_compile=True,
                      execution_plan=ExecutionPlan(xla=True, shift_adjoint=flag),
                      steps_per_execution=steps_per_execution_for(steps))
        model.fit(training_dataset(scan, indices, args.batch_size, seed=0, first_epoch=0,
                                   epochs=2), epochs=2, steps_per_epoch=steps, verbose=0)
        models[name] = model
    times, summary = benchmark.interleaved_epochs(models, scan, args.batch_size, args.rounds)
    with open(args.out, "w") as handle:
        json.dump({"batch_size": args.batch_size, "rounds": args.rounds, "times_s": times,
                   "summary": summary}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

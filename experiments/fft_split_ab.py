"""In-process interleaved A/B of the CPU execution of the training step
(``adptycho.accel.xla_pieces``): one XLA program against XLA pieces joined by TensorFlow FFTs.

Variants, each a model of the standard problem of ``experiments/benchmark.py``:

* ``xla``: ``compile(jit_compile=True)``, the whole step one XLA program;
* ``pieces``: ``compile(jit_compile="auto")`` with the plan's ``chains`` forced to 1: XLA-compiled
  loops and loss passes, FFTs as TensorFlow ops;
* ``chains``: the library default, ``jit_compile="auto"``: the same, with the batch cut into
  ``xla_pieces.chains()`` independent chains that TensorFlow's executor runs concurrently.

For ``--refine object,probe`` (rounded positions) and for a calibration epoch
(``object,probe,positions,distance``). All models are warmed up for two epochs, then single
epochs alternate between them ``--rounds`` times, so drifts of the machine hit all variants
alike. Writes ``--out`` (JSON) and prints the median, minimum and first quartile.

Run::

    python experiments/fft_split_ab.py --batch-size 400 --rounds 12
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REFINES = {"object+probe": ("object", "probe"),
           "calibration": ("object", "probe", "positions", "distance")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--refines", default="object+probe,calibration",
                        help=f"comma-separated, from {', '.join(REFINES)}")
    parser.add_argument("--out", default=os.path.join(HERE, "fft_split_ab.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, HERE)
    import benchmark
    import keras

    from adptycho.geometry import gaussian_probe
    from adptycho.reconstruction import build_model
    from adptycho.training.data import steps_per_execution_for, training_dataset

    scan, _, _ = benchmark.standard_problem()
    scan = dataclasses.replace(scan, detector_distance_m=1.0)
    steps = int(np.ceil(scan.num_patterns / args.batch_size))
    indices = np.arange(scan.num_patterns)
    models = {}
    for label in args.refines.split(","):
        for variant in ("xla", "pieces", "chains"):
            keras.utils.set_random_seed(0)
            model, _ = build_model(scan, probe=gaussian_probe(scan.detector_shape, 60.0),
                                   normalise_probe=True, object_shape=(512, 512))
            model.compile(refine=REFINES[label], jit_compile=True if variant == "xla" else "auto",
                          steps_per_execution=steps_per_execution_for(steps))
            if variant == "pieces":  # one chain: read when the step is traced (first fit)
                model.execution_plan = dataclasses.replace(model.execution_plan, chains=1)
            model.fit(training_dataset(scan, indices, args.batch_size, seed=0, first_epoch=0,
                                       epochs=2), epochs=2, steps_per_epoch=steps, verbose=0)
            models[f"{label} {variant}"] = model
    times, summary = benchmark.interleaved_epochs(models, scan, args.batch_size, args.rounds)
    with open(args.out, "w") as handle:
        json.dump({"batch_size": args.batch_size, "rounds": args.rounds, "times_s": times,
                   "summary": summary}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

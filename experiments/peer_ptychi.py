"""Pty-chi ePIE epoch time on the standard problem (run in a separate venv with ptychi + torch).

Called by ``experiments/benchmark_epie.py`` as::

    /tmp/peervenv2/bin/python experiments/peer_ptychi.py --data problem.npz --json out.json

``problem.npz`` as for ``peer_ptylab.py``. Pty-chi ``EPIEOptions`` on the CPU: object and probe
optimisable (SGD, step 1, alpha 1), positions fixed (probe centres relative to the object
centre, from our integer corners), centred patterns (``fft_shift=True``), for each
``--batch-sizes`` (Pty-chi's default is 100). Every epoch is one ``task.run(1)`` call, timed.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-sizes", default="1,100")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    import torch
    import ptychi.api as api
    from importlib.metadata import version
    from ptychi.api.task import PtychographyTask

    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = np.load(args.data)
    patterns, corners, probe = data["patterns"], data["corners"], data["probe"]
    object_shape = tuple(int(v) for v in data["object_shape"])
    n, h, w = patterns.shape
    centres = corners + np.array([h / 2.0, w / 2.0]) - np.array(object_shape) / 2.0
    result = {"package": "pty-chi", "version": version("ptychi"), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "engine": "EPIEOptions (object + probe, SGD "
              "step 1, alpha 1, positions fixed)", "batches": {}}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        options = api.EPIEOptions()
        options.data_options.data = torch.tensor(patterns)
        options.data_options.fft_shift = True
        options.reconstructor_options.default_device = api.Devices.CPU
        options.reconstructor_options.batch_size = batch_size
        options.reconstructor_options.num_epochs = 1
        options.object_options.initial_guess = torch.ones((1,) + object_shape, dtype=torch.complex64)
        options.object_options.pixel_size_m = 1.0
        options.object_options.optimizable = True
        options.object_options.optimizer = api.Optimizers.SGD
        options.object_options.step_size = 1.0
        options.object_options.alpha = 1.0
        options.probe_options.initial_guess = torch.tensor(np.asarray(probe, np.complex64)[None, None])
        options.probe_options.optimizable = True
        options.probe_options.optimizer = api.Optimizers.SGD
        options.probe_options.step_size = 1.0
        options.probe_options.alpha = 1.0
        options.probe_position_options.position_y_px = torch.tensor(centres[:, 0], dtype=torch.float32)
        options.probe_position_options.position_x_px = torch.tensor(centres[:, 1], dtype=torch.float32)
        options.probe_position_options.optimizable = False
        task = PtychographyTask(options)
        times = []
        for _ in range(args.warmup + args.epochs):
            start = time.perf_counter()
            task.run(1)
            times.append(time.perf_counter() - start)
        times = times[args.warmup:]
        start = time.perf_counter()
        task.run(args.epochs)  # one call for several epochs: no per-call overhead
        mean_in_one_call = (time.perf_counter() - start) / args.epochs
        result["batches"][f"batch_{batch_size}"] = {
            "median_s": statistics.median(times), "times_s": times,
            "mean_s_one_call": mean_in_one_call}
        print(f"pty-chi batch {batch_size}: {statistics.median(times):.3f} s/epoch "
              f"(run(1) calls), {mean_in_one_call:.3f} s/epoch in one run({args.epochs})", flush=True)
    result["median_s"] = min(min(v["median_s"], v["mean_s_one_call"])
                             for v in result["batches"].values())
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

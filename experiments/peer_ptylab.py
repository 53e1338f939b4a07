"""PtyLab ePIE epoch time on the standard problem (run in a separate venv with PtyLab installed).

Called by ``experiments/benchmark_epie.py`` as::

    /tmp/peervenv/bin/python experiments/peer_ptylab.py --data problem.npz --json out.json

``problem.npz`` holds ``patterns`` (N, H, W) centred far-field intensities, ``corners`` (N, 2)
integer (y, x) top-left corners on a ``object_shape`` grid and ``probe`` (H, W) complex. The
script writes a PtyLab CPM HDF5 file (ptychogram, wavelength, encoder in metres, dxd, zo),
initialises PtyLab with the known probe, checks that PtyLab's integer positions equal our
corners, runs ``Engines.ePIE`` (object and probe updated, betaObject = betaProbe = 1, random
order, no GPU, dummy monitor) and times every iteration (one pass over all positions, including
PtyLab's per-iteration error metric) with the stepwise generator.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    import h5py
    import PtyLab
    from PtyLab import Engines

    data = np.load(args.data)
    patterns, corners, probe = data["patterns"], data["corners"], data["probe"]
    object_shape = tuple(int(v) for v in data["object_shape"])
    n, h, w = patterns.shape
    wavelength, zo, dxd = 632.8e-9, 0.05, 20e-6
    dxo = wavelength * zo / (h * dxd)
    no = object_shape[0]
    # PtyLab: positions = round(encoder / dxo) + No // 2 - Np // 2 (row, col)
    encoder = (corners - (no // 2 - h // 2)) * dxo
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "standard.hdf5")
        with h5py.File(path, "w") as f:
            f["ptychogram"] = patterns.astype(np.float32)
            f["wavelength"] = wavelength
            f["encoder"] = encoder
            f["dxd"] = dxd
            f["zo"] = zo
        experimental, reconstruction, params, monitor, engine = PtyLab.easyInitialize(
            path, operationMode="CPM", dummyMonitor=True)
        reconstruction.No = no
        params.gpuSwitch = False
        params.positionOrder = "random"
        params.propagatorType = "Fraunhofer"
        params.probePowerCorrectionSwitch = False
        params.comStabilizationSwitch = False
        params.intensityConstraint = "standard"
        reconstruction.initialProbe = "circ"
        reconstruction.initialObject = "ones"
        reconstruction.initializeObjectProbe()
        reconstruction.probe = np.asarray(probe, np.complex64).reshape(reconstruction.probe.shape)
        positions = np.asarray(reconstruction.positions)
        same = bool(np.array_equal(positions, corners.astype(positions.dtype)))
        engine = Engines.ePIE(reconstruction, experimental, params, monitor)
        engine.numIterations = args.warmup + args.epochs
        engine.betaObject = 1.0
        engine.betaProbe = 1.0
        stamps = []
        last = None
        for iteration, _ in engine.reconstruct_stepwise():
            if iteration != last:
                stamps.append(time.perf_counter())
                last = iteration
        stamps.append(time.perf_counter())
        times = np.diff(stamps)[args.warmup:].tolist()
        errors = [float(e) for e in getattr(reconstruction, "error", [])] if hasattr(
            reconstruction, "error") else []
    import numpy
    from importlib.metadata import version
    result = {"package": "PtyLab", "version": version("ptylab"),
              "numpy": numpy.__version__, "engine": "ePIE (object + probe, beta 1, sequential)",
              "median_s": statistics.median(times), "times_s": times,
              "positions_match": same, "num_patterns": int(n), "probe_shape": [h, w],
              "object_shape": list(object_shape), "error_first_last": errors[:1] + errors[-1:]}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

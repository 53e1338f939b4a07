"""PtyLab (CPM), blind, with the settings of its own CPM tutorial (run in its own venv).

Run by ``run.py`` as::

    /tmp/peervenv/bin/python experiments/robustness/peer_ptylab_blind.py \
        --data in.npz --out out.npz [--check-truth truth.npz]

``in.npz`` as for ``peer_cdtools_fancy.py``. What is run (facts from PtyLab.py's
``jupyter_tutorials/jupyter_tutorials_tutorial_CPM.ipynb``, ptylab 0.3.7):

* a PtyLab HDF5 file with the required fields (``ptychogram``, ``wavelength``, ``encoder``
  (N, 2) metres as (row, col), ``dxd``, ``zo``), then ``PtyLab.easyInitialize(file,
  operationMode="CPM", dummyMonitor=True)``;
* the tutorial's ``Params``: positionOrder "random", intensityConstraint "standard",
  probePowerCorrectionSwitch True, comStabilizationSwitch True, orthogonalizationSwitch False,
  fftshiftSwitch False, the other switches at their defaults (position correction off), no
  GPU; propagator "Fraunhofer" (far field; PtyLab's default) or "ASP" (near field; the
  tutorial's own choice "Fresnel" is for its geometry);
* ``initialProbe = "circ"`` (diameter: PtyLab's default, a third of the probe window, as no
  ``entrancePupilDiameter`` is given) and ``initialObject = "ones"``, ``initializeObjectProbe()``;
  the tutorial's optional quadratic phase on the initial probe (a 6 mm curvature for its data)
  is not applied;
* the tutorial's schedule: ``Engines.ePIE`` 10 iterations (betaObject = betaProbe = 0.25), then
  ``Engines.mPIE`` 100 iterations (betaObject = betaProbe = 0.25).

Geometry: PtyLab's CPM sample pixel is ``lambda zo / (N dxd)`` for every propagator, which is
the object pixel in far field, and the detector pixel in near field by the choice of distance in
``cases.py``. PtyLab rounds positions to whole pixels:
``round(encoder / dxo) + No // 2 - Np // 2``, so the file position (0, 0) is the object corner
``No // 2 - Np // 2``.

Writes ``out.npz``: ``object`` (No, No), ``origin`` (2,), ``probe``, ``errors`` (PtyLab's
per-iteration error), ``seconds``, versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from peer_output import save_result


def check_truth(reconstruction, params, truth_path, positions_px):
    """PtyLab's own propagator applied to the true probe x true object at PtyLab's (rounded)
    corners, vs the numpy simulator at the same corners."""
    from PtyLab.Operators import Operators

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cases import intensities

    with np.load(truth_path) as z:
        obj, probe, corner_offset = z["object"], z["probe"], z["corner_offset"]
    no, np_ = int(reconstruction.No), int(reconstruction.Np)
    big = np.ones((no, no), np.complex128)
    d = int(no // 2 - np_ // 2) - np.round(corner_offset).astype(int)
    lo = np.maximum(0, -d)                                   # first truth index used
    hi = np.minimum(obj.shape, np.array([no, no]) - d)       # one past the last
    big[lo[0] + d[0]:hi[0] + d[0], lo[1] + d[1]:hi[1] + d[1]] = obj[lo[0]:hi[0], lo[1]:hi[1]]
    corners = np.asarray(reconstruction.positions)
    idx = np.unique(np.linspace(0, len(corners) - 1, 8).astype(int))
    errors = []
    for j in idx:
        r, c = corners[j]
        esw = probe * big[r:r + np_, c:c + np_]
        shaped = esw.reshape((1,) * (len(reconstruction.probe.shape) - 2) + esw.shape)
        reconstruction.esw = shaped.astype(np.complex64)  # PtyLab's propagators return it too
        _, det = Operators.object2detector(shaped.astype(np.complex64), params, reconstruction)
        sim = np.abs(np.squeeze(det)) ** 2
        ref = intensities(big, probe, corners[j:j + 1].astype(float),
                          "nearfield" if params.propagatorType == "ASP" else "farfield")[0]
        errors.append(float(np.sum(np.abs(sim - ref)) / np.sum(ref)))
    match = bool(np.array_equal(corners, np.round(positions_px).astype(int) + no // 2 - np_ // 2))
    return {"mean_rel_err": float(np.max(errors)), "positions_as_expected": match}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--check-truth", default=None)
    p.add_argument("--check-only", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    np.random.seed(args.seed)

    import h5py
    import PtyLab
    from PtyLab import Engines

    with np.load(args.data) as z:
        data = {k: z[k] for k in z.files}
    near = str(data["geometry"]) == "nearfield"
    patterns = np.asarray(data["patterns"], np.float32)
    n, h, w = patterns.shape
    lam, zo, dxd = (float(data["wavelength_m"]), float(data["distance_m"]),
                    float(data["detector_pixel_m"]))
    dxo = lam * zo / (h * dxd)
    if abs(dxo - float(data["object_pixel_m"])) > 1e-6 * dxo:
        raise RuntimeError(f"PtyLab's sample pixel {dxo} differs from the data's "
                           f"{float(data['object_pixel_m'])}")
    info = {"ptylab": importlib.metadata.version("ptylab"), "numpy": np.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scan.hdf5")
        with h5py.File(path, "w") as f:
            f["ptychogram"] = patterns
            f["wavelength"] = lam
            f["encoder"] = np.asarray(data["positions_px"], np.float64) * dxo
            f["dxd"] = dxd
            f["zo"] = zo
        experimental, reconstruction, params, monitor, _ = PtyLab.easyInitialize(
            path, operationMode="CPM", dummyMonitor=True)
    params.positionOrder = "random"
    params.propagatorType = "ASP" if near else "Fraunhofer"
    params.intensityConstraint = "standard"
    params.gpuSwitch = False
    params.probePowerCorrectionSwitch = True
    params.modulusEnforcedProbeSwitch = False
    params.comStabilizationSwitch = True
    params.orthogonalizationSwitch = False
    params.orthogonalizationFrequency = 10
    params.fftshiftSwitch = False
    params.positionCorrectionSwitch = False
    reconstruction.npsm = 1
    reconstruction.nosm = 1
    reconstruction.nlambda = 1
    reconstruction.nslice = 1
    reconstruction.initialProbe = "circ"
    reconstruction.initialObject = "ones"
    reconstruction.initializeObjectProbe()
    info.update({"No": int(reconstruction.No), "Np": int(reconstruction.Np),
                 "entrancePupilDiameter_px": float(experimental.entrancePupilDiameter / dxo),
                 "propagator": params.propagatorType})
    if args.check_truth:
        info["truth_check"] = check_truth(reconstruction, params, args.check_truth,
                                          data["positions_px"])
        print(json.dumps(info), flush=True)
        if args.check_only:
            return 0
    started = time.perf_counter()
    engine = Engines.ePIE(reconstruction, experimental, params, monitor)
    engine.numIterations = 10
    engine.betaObject = 0.25
    engine.betaProbe = 0.25
    engine.reconstruct()
    engine = Engines.mPIE(reconstruction, experimental, params, monitor)
    engine.numIterations = 100
    engine.betaObject = 0.25
    engine.betaProbe = 0.25
    engine.reconstruct()
    seconds = time.perf_counter() - started
    obj = np.squeeze(np.asarray(reconstruction.object))
    probe = np.squeeze(np.asarray(reconstruction.probe))
    origin = np.array([reconstruction.No // 2 - reconstruction.Np // 2] * 2, np.float64)
    errors = [float(e) for e in getattr(reconstruction, "error", [])]
    info.update({"seconds_fit": seconds, "schedule": "ePIE 10 (beta 0.25) + mPIE 100 (beta 0.25)",
                 "error_first_last": errors[:1] + errors[-1:]})
    save_result(args.out, obj, probe, origin, info, errors=np.asarray(errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""cdtools ``FancyPtycho``, blind, with its documented example schedule (run in its own venv).

Run by ``run.py`` as::

    /tmp/venv-cdtools/bin/python experiments/robustness/peer_cdtools_fancy.py \
        --data in.npz --out out.npz [--check-truth truth.npz]

``in.npz`` (written by ``run.py`` from the case's CXI file): ``patterns`` (N, H, W) counts,
``positions_px`` (N, 2) the file's (row, col) positions in object pixels, ``geometry``
("farfield" / "nearfield"), ``wavelength_m``, ``distance_m``, ``detector_pixel_m``,
``object_pixel_m``.

What is run (facts from cdtools' repository, ``examples/fancy_ptycho.py`` and
``examples/near_field_ptycho.py``, cdtools-py 0.3.2 API):

* far field: ``FancyPtycho.from_dataset(dataset)`` with its defaults (1 probe mode, SHARP-style
  probe from the mean pattern, translation offsets / per-frame weights / background refined,
  amplitude MSE); ``AdamReconstructor``; ``optimize(50, lr=0.02, batch_size=10)`` then
  ``optimize(50, lr=0.005, batch_size=50)``; ``tidy_probes()``. The example's dataset-specific
  options (3 modes, oversampling 2, probe_support_radius 120, propagation_distance 5 mm) are
  NOT used: they describe that lab dataset.
* near field: ``from_dataset(dataset, near_field=True, loss="poisson_nll")`` (the example's
  ``propagation_distance=3.65e-3`` is its cone-beam focus distance; here the beam is parallel,
  which cdtools selects by leaving it unset), ``optimize(100, lr=0.04, batch_size=10)`` then
  ``optimize(50, lr=0.005, batch_size=50)``, ``tidy_probes()``.

The dataset is built in memory (as ``experiments/peer_cdtools.py`` does): detector basis
``[[0, -p], [-p, 0], [0, 0]]`` (p the detector pixel), the object-plane basis computed the way
``from_dataset`` computes it (``exit_wave_geometry`` in far field, the detector basis in near
field), and lab translations from cdtools' own ``pixel_to_translations`` of that basis, so that
``translations_to_pixel`` returns the file positions. ``--check-truth`` compares cdtools'
forward model (true probe and object placed in the model) with the numpy simulator's expected
intensities before fitting (the run fails if they disagree by more than 1e-3 relative).

Writes ``out.npz``: ``object`` (the model's object array), ``origin`` (2,) = where the file
position (0, 0) lands on that array (``-min_translation``; per-position offsets are refined but
the metric removes a global shift), ``probe``, ``losses``, ``seconds``, versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time

import numpy as np

from peer_output import save_result


def build(data, near):
    import torch as t
    from cdtools import tools
    from cdtools.datasets import Ptycho2DDataset

    patterns = np.ascontiguousarray(data["patterns"], np.float32)
    positions = np.asarray(data["positions_px"], np.float64)
    _, h, w = patterns.shape
    lam, dist, pix = (float(data["wavelength_m"]), float(data["distance_m"]),
                      float(data["detector_pixel_m"]))
    det_basis = t.tensor([[0.0, -pix], [-pix, 0.0], [0.0, 0.0]], dtype=t.float32)
    if near:
        obj_basis = det_basis.clone()
    else:
        obj_basis = tools.initializers.exit_wave_geometry(det_basis, (h, w), lam, dist)
    translations = tools.interactions.pixel_to_translations(
        obj_basis.to(t.float64), t.as_tensor(positions, dtype=t.float64)).numpy().astype(np.float32)
    dataset = Ptycho2DDataset(translations, t.as_tensor(patterns), wavelength=lam,
                              detector_geometry={"basis": det_basis, "distance": dist})
    back = tools.interactions.translations_to_pixel(obj_basis, dataset.translations).numpy()
    err = float(np.max(np.abs(back - positions)))
    if err > 1e-2:
        raise RuntimeError(f"translation round trip is off by {err} px")
    return dataset, err


def check_truth(model, dataset, truth_path, positions):
    """cdtools' forward intensities vs the numpy simulator's, for the true probe and the true
    object placed on the model's grid, at the model's own window corners (``p - min_translation``;
    file positions, so the check is exact only where they are the true ones)."""
    import os

    import torch as t

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cases import intensities

    with np.load(truth_path) as z:
        obj, probe = z["object"], z["probe"]
        corner_offset = z["corner_offset"]
    min_tr = model.min_translation.detach().numpy().astype(np.float64)
    big = np.ones(tuple(model.obj.shape), np.complex128)
    d = np.floor(-min_tr - corner_offset).astype(int)  # truth pixel 0 near model pixel d
    big[d[0]:d[0] + obj.shape[0], d[1]:d[1] + obj.shape[1]] = obj
    idx = np.unique(np.linspace(0, len(positions) - 1, 8).astype(int))
    corners = np.asarray(positions, np.float64)[idx] - min_tr
    saved = (model.obj.detach().clone(), model.probe.detach().clone())
    with t.no_grad():
        model.obj.copy_(t.as_tensor(big.astype(np.complex64)))
        model.probe[...] = 0
        model.probe[0] = t.as_tensor(probe / model.probe_norm.item(), dtype=t.complex64)
        bg = model.background.detach().clone()
        model.background.zero_()
        (index, trans), _ = dataset[idx]
        sim = model.forward(index, trans).numpy().astype(np.float64)
        model.background.copy_(bg)
        model.obj.copy_(saved[0])
        model.probe.copy_(saved[1])
    ref = intensities(big, probe, corners, "nearfield" if model.near_field else "farfield")
    return {"max_rel_err": float(np.max(np.abs(sim - ref)) / np.max(ref)),
            "mean_rel_err": float(np.sum(np.abs(sim - ref)) / np.sum(ref))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--check-truth", default=None)
    p.add_argument("--check-only", action="store_true", help="stop after the forward check")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the step is small and Python-bound)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch as t
    import cdtools

    t.set_num_threads(args.threads)
    t.manual_seed(args.seed)
    np.random.seed(args.seed)
    with np.load(args.data) as z:
        data = {k: z[k] for k in z.files}
    near = str(data["geometry"]) == "nearfield"
    dataset, roundtrip = build(data, near)
    if near:
        model = cdtools.models.FancyPtycho.from_dataset(dataset, near_field=True,
                                                        loss="poisson_nll")
        schedule = [(100, 0.04, 10), (50, 0.005, 50)]
    else:
        model = cdtools.models.FancyPtycho.from_dataset(dataset)
        schedule = [(50, 0.02, 10), (50, 0.005, 50)]
    info = {"roundtrip_err_px": roundtrip, "schedule": schedule,
            "cdtools": importlib.metadata.version("cdtools-py"), "torch": t.__version__,
            "threads": args.threads}
    if args.check_truth:
        check = check_truth(model, dataset, args.check_truth, data["positions_px"])
        info["truth_check"] = check
        print(json.dumps(info), flush=True)
        if args.check_only:
            return 0
        if check and check.get("mean_rel_err", 0) > 1e-3:
            raise RuntimeError(f"cdtools forward model disagrees with the simulator: {check}")
    started = time.perf_counter()
    recon = cdtools.reconstructors.AdamReconstructor(model, dataset)
    losses = []
    for iterations, lr, batch in schedule:
        for loss in recon.optimize(iterations, lr=lr, batch_size=batch, thread=False):
            losses.append(float(loss))
    model.tidy_probes()
    seconds = time.perf_counter() - started
    obj = model.obj.detach().numpy()
    probe = (model.probe.detach() * model.probe_norm.detach()).numpy()
    origin = -model.min_translation.detach().numpy().astype(np.float64)
    info.update({"seconds_fit": seconds, "first_loss": losses[0], "last_loss": losses[-1]})
    save_result(args.out, obj, probe, origin, info, losses=np.asarray(losses))
    return 0


if __name__ == "__main__":
    sys.exit(main())

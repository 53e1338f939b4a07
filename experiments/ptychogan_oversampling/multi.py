"""Barutcu et al. Tables 3 and 4 over 6 test faces and 3 noise draws, mean and spread (issue 23 (d)).

The protocol of ``run.py``'s main (zone-plate) set: held-out Olivetti faces as phase objects,
the zone-plate probe (known), 1e6 photons noise-free (table 3) and 1e5 photons with Poisson noise
(table 4, noise draws with seeds 7, 8, 9), PtychoGAN (TV and discriminator weights as chosen on
the validation face 370 by ``run.py --tune-image 370``: ``results_zoneplate_tuning/tuning.csv``),
PtychoGAN + oversampling (Y = 3, w = 20, 150 ePIE epochs from the PtychoGAN object; in table 4
also with the Poisson bound, ``fourier_relaxation = 1``), plain ePIE (150 epochs).

Test faces: 360, 365 (subject 36), 380, 385 (subject 38), 390, 395 (subject 39); the validation
face 370 (subject 37) is not among them. Error: phase MSE in units of pi on the 240 x 240 field
after the global phase (x 1e-3), as in ``run.py``.

Outputs (``--out-dir``, default ``results_multi``): ``runs.csv`` (one row per face, overlap and
draw), ``summary.csv`` (per table and overlap: mean, min and max over faces and draws of each
method and of the PtychoGAN / proposed ratio; ``n`` runs). Finished runs are cached in
``<out-dir>/cache``; an interrupted run resumes.

Run (two processes side by side sharing the cache, then one call that reassembles)::

    python experiments/ptychogan_oversampling/multi.py --tables 3 --out-dir /tmp/m3 \
        --cache-dir experiments/ptychogan_oversampling/results_multi/cache &
    python experiments/ptychogan_oversampling/multi.py --tables 4 --out-dir /tmp/m4 \
        --cache-dir experiments/ptychogan_oversampling/results_multi/cache
    python experiments/ptychogan_oversampling/multi.py
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("ptychogan_run", os.path.join(HERE, "run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)
base = run.base

IMAGES = (360, 365, 380, 385, 390, 395)
DRAWS = (7, 8, 9)
METHODS = ("epie", "ptychogan", "proposed", "proposed_rho1")


def tuned_weights(path):
    """(tv_weight, discriminator_weight) with the lowest PtychoGAN error in ``tuning.csv``."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    best = min(rows, key=lambda r: float(r["ptychogan_mse_1e-3"]))
    return float(best["tv_weight"]), float(best["discriminator_weight"]), int(best["image"])


def one_case(p, generator, discriminator, settings, epochs, noisy, cache, key):
    def compute():
        gan = run.run_ptychogan(p, generator, discriminator, settings)["object"]
        out = {"epie": base.plain_epie(p, epochs), "ptychogan": gan,
               "proposed": base.run_oversample(p, gan, 3, 20.0, 1, epochs).objects[0]}
        if noisy:
            out["proposed_rho1"] = base.run_oversample(p, gan, 3, 20.0, 1, epochs,
                                                       fourier_relaxation=1.0).objects[0]
        return out
    objects = cache.get(key, compute)
    return {m: p.mse(objects[m]) for m in METHODS if m in objects}


def summarise(rows):
    out = []
    keys = sorted({(r["table"], r["overlap"]) for r in rows}, key=lambda k: (k[0], -k[1]))
    for table, overlap in keys:
        group = [r for r in rows if r["table"] == table and r["overlap"] == overlap]
        line = {"table": table, "overlap": f"{overlap * 100:g}%", "n": len(group)}
        for m in METHODS:
            values = [r[m] for r in group if m in r]
            if values:
                line[f"{m}_mean_1e-3"] = 1e3 * float(np.mean(values))
                line[f"{m}_min_1e-3"] = 1e3 * float(np.min(values))
                line[f"{m}_max_1e-3"] = 1e3 * float(np.max(values))
        gains = [r["ptychogan"] / r["proposed"] for r in group]
        line.update(gain_mean=float(np.mean(gains)), gain_min=float(np.min(gains)),
                    gain_max=float(np.max(gains)))
        out.append(line)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(HERE, "results_multi"))
    parser.add_argument("--tuning", default=os.path.join(HERE, "results_zoneplate_tuning",
                                                         "tuning.csv"))
    parser.add_argument("--tables", default="3,4")
    parser.add_argument("--overlaps3", default="0.25,0,-0.25,-0.5")
    parser.add_argument("--overlaps4", default="0.25,0")
    parser.add_argument("--images", default=",".join(map(str, IMAGES)))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None,
                        help="run cache (default <out-dir>/cache; processes started side by "
                             "side with different --tables can share one, and a last call with "
                             "all tables reassembles them)")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from adptycho.nn.stylegan2 import load_stylegan2
    from adptycho.nn.stylegan2_training import load_faces
    from adptycho.training.ptychogan import PtychoGANSettings

    tv_weight, d_weight, tune_image = tuned_weights(args.tuning)
    images = [int(i) for i in args.images.split(",")]
    if tune_image in images:
        raise SystemExit(f"the validation face {tune_image} is among the test faces")
    generator, discriminator, config = load_stylegan2("stylegan2-faces")
    _, held_out = load_faces(None)
    settings = PtychoGANSettings(latent_steps=300, block_steps=100, tv_weight=tv_weight,
                                 discriminator_weight=d_weight)
    os.makedirs(args.out_dir, exist_ok=True)
    cache = base.Cache(args.cache_dir or os.path.join(args.out_dir, "cache"))
    tag = f"s{config.get('steps', 0)}_ep{args.epochs}_zoneplate_TV{tv_weight:g}_D{d_weight:g}"
    started = time.perf_counter()
    plan = []
    if "3" in args.tables.split(","):
        plan += [("3", float(o), None) for o in args.overlaps3.split(",")]
    if "4" in args.tables.split(","):
        plan += [("4", float(o), seed) for o in args.overlaps4.split(",") for seed in DRAWS]
    rows = []
    for table, overlap, seed in plan:
        for image in images:
            face = (held_out[image - 360, :, :, 0] + 1.0) / 2.0
            noisy = seed is not None
            p = run.FaceProblem(face, overlap, noisy, 128, 1e5, "zoneplate",
                                noise_seed=7 if seed is None else seed)
            key = base._key(tag, image, overlap, "poisson" if noisy else "free", seed or 0)
            errors = one_case(p, generator, discriminator, settings, args.epochs, noisy, cache,
                              key)
            rows.append({"table": table, "overlap": overlap, "image": image,
                         "draw": "" if seed is None else seed, **errors})
            print(f"table {table} overlap {overlap:+.2f} image {image} draw {seed}: "
                  f"{ {k: round(1e3 * v, 3) for k, v in errors.items()} } (x1e-3)", flush=True)
            with open(os.path.join(args.out_dir, "runs.csv"), "w", newline="") as f:
                writer = csv.DictWriter(f, ["table", "overlap", "image", "draw"]
                                        + [f"{m}_1e-3" for m in METHODS])
                writer.writeheader()
                for r in rows:
                    writer.writerow({"table": r["table"], "overlap": f"{r['overlap'] * 100:g}%",
                                     "image": r["image"], "draw": r["draw"],
                                     **{f"{m}_1e-3": 1e3 * r[m] for m in METHODS if m in r}})
    summary = summarise(rows)
    with open(os.path.join(args.out_dir, "summary.csv"), "w", newline="") as f:
        fields = list(dict.fromkeys(k for line in summary for k in line))
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(summary)
    with open(os.path.join(args.out_dir, "multi.json"), "w") as f:
        json.dump({"tv_weight": tv_weight, "discriminator_weight": d_weight,
                   "tune_image": tune_image, "images": images, "draws": list(DRAWS),
                   "seconds": time.perf_counter() - started,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "command": "python experiments/ptychogan_oversampling/multi.py"}, f, indent=1)
    print(f"done in {time.perf_counter() - started:.0f} s; wrote {args.out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

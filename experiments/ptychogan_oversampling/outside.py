"""Barutcu et al. in the generator-limited regime: content the face generator cannot produce.

Issue 23, question (a): on the held-out faces PtychoGAN alone is already close to the truth
(``README.md``, table 3), so the paper's point - that oversampling recovers content outside the
generator's range - is untested there. This script inserts non-face content into the held-out
faces before the simulation and measures every method on the inserted region separately:

* image 360 + text: the letters ``PTY`` (white, bold, rendered by matplotlib on the 64 x 64
  face, before the same Mitchell resize to 240 x 240 as ``run.py``);
* image 380 + star: a 16-spoke Siemens star of radius 14 px (64-px face units) replacing the
  face's right cheek;
* image 360 + object: a dark square with a bright disc and bars (a test-chart patch).

Everything else is ``run.py``'s main set: the zone-plate probe (``--probe zoneplate``), 1e6
photons noise-free, overlaps 25%, 0%, -25%; PtychoGAN with TV 0.003, 300 latent steps,
5 x 100 block steps, discriminator weight 1e-4 (the weight ``run.py`` chose on the unmodified
image 360, not retuned here); PtychoGAN + oversampling with Y = 3, w = 20, 150 ePIE epochs from
the PtychoGAN object; plain ePIE (150 epochs, empty start).

Reported (``outside.csv``, ``outside.json``, ``outside.png``): phase MSE in units of pi (x 1e-3)
on the whole 240 x 240 field and on the inserted region (the pixels the insertion changed by
more than 0.02 of the phase range, dilated by 4 px), for ePIE, PtychoGAN and
PtychoGAN + oversampling; ``region_gain`` = PtychoGAN region MSE / oversampled region MSE.

Run (about 10 min per image and overlap on one core; finished runs are cached in
``results_outside/cache``)::

    python experiments/ptychogan_oversampling/outside.py
"""

from __future__ import annotations

import argparse
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

INSERTS = {"text": 360, "star": 380, "object": 360}


def _text(face):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=64)
    canvas = FigureCanvasAgg(fig)
    fig.text(0.5, 0.2, "PTY", ha="center", va="center", fontsize=17, fontweight="bold",
             color="white", family="DejaVu Sans")
    fig.patch.set_facecolor("black")
    canvas.draw()
    ink = np.asarray(canvas.buffer_rgba(), np.float32)[..., 0] / 255.0
    return np.maximum(face, ink[:64, :64])


def _star(face, centre=(36, 46), radius=14.0, spokes=16):
    yy, xx = np.mgrid[:64, :64].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    inside = np.hypot(dy, dx) <= radius
    pattern = 0.5 + 0.5 * np.sign(np.sin(spokes / 2 * np.arctan2(dy, dx)))
    return np.where(inside, pattern, face)


def _object(face):
    out = face.copy()
    out[8:28, 38:58] = 0.0
    yy, xx = np.mgrid[:64, :64]
    out[np.hypot(yy - 14, xx - 44) <= 4] = 1.0
    out[20:26, 48:57] = np.tile([1.0, 1.0, 0.0], 3)[None, :9]
    return out


MODIFY = {"text": _text, "star": _star, "object": _object}


def region_mask(face64, modified64):
    """(FIELD, FIELD) bool: where the insertion changed the resized face, dilated by 4 px."""
    from scipy import ndimage

    changed = np.abs(run.resized_face(face64) - run.resized_face(modified64)) > 0.02
    return ndimage.binary_dilation(changed, iterations=4)


def region_mse(problem, obj, mask):
    """Phase MSE (units of pi) on ``mask`` of the field, after the field's global phase."""
    from adptycho.analysis import align

    truth = problem.truth[problem.field]
    aligned = align(np.asarray(obj)[problem.field], truth, scale=False)
    difference = np.angle(aligned * np.conj(truth))
    return float(np.mean((difference[mask] / np.pi) ** 2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(HERE, "results_outside"))
    parser.add_argument("--inserts", default="text,star,object")
    parser.add_argument("--overlaps", default="0.25,0,-0.25")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--threads", type=int, default=0, help="TF threads (0: TF's default)")
    args = parser.parse_args(argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from adptycho.nn.stylegan2 import load_stylegan2
    from adptycho.nn.stylegan2_training import load_faces
    from adptycho.training.ptychogan import PtychoGANSettings

    generator, discriminator, config = load_stylegan2("stylegan2-faces")
    _, held_out = load_faces(None)
    settings = PtychoGANSettings(latent_steps=300, block_steps=100, tv_weight=0.003,
                                 discriminator_weight=1e-4)
    out = args.out_dir
    os.makedirs(out, exist_ok=True)
    cache = base.Cache(os.path.join(out, "cache"))
    tag = f"s{config.get('steps', 0)}_ep{args.epochs}_zoneplate"
    started = time.perf_counter()
    rows, entries, panels = [], {}, []
    for insert in args.inserts.split(","):
        image = INSERTS[insert]
        face = (held_out[image - 360, :, :, 0] + 1.0) / 2.0
        modified = MODIFY[insert](face)
        for overlap in [float(v) for v in args.overlaps.split(",")]:
            p = run.FaceProblem(modified, overlap, False, 128, 1e5, "zoneplate")
            mask = region_mask(face, modified)
            key = base._key(tag, insert, image, overlap)
            epie = cache.get("epie_" + key,
                             lambda: {"object": base.plain_epie(p, args.epochs)})["object"]
            gan = cache.get("gan_" + key, lambda: run.run_ptychogan(p, generator, discriminator,
                                                                    settings))["object"]
            over = cache.get("over_" + key, lambda: {"object": base.run_oversample(
                p, gan, 3, 20.0, 1, args.epochs).objects[0]})["object"]
            entry = {}
            for name, obj in (("epie", epie), ("ptychogan", gan), ("proposed", over)):
                entry[f"{name}_field"] = p.mse(obj)
                entry[f"{name}_region"] = region_mse(p, obj, mask)
            entry["region_gain"] = entry["ptychogan_region"] / entry["proposed_region"]
            entry["region_pixels"] = int(mask.sum())
            entries[f"{insert}_{image}_{overlap * 100:g}"] = entry
            rows.append([insert, image, f"{overlap * 100:g}%", entry["region_pixels"]]
                        + [1e3 * entry[f"{m}_{w}"] for w in ("field", "region")
                           for m in ("epie", "ptychogan", "proposed")]
                        + [entry["region_gain"]])
            panels += [(p, p.truth, f"{insert} {overlap * 100:g}% truth"),
                       (p, epie, f"ePIE {1e3 * entry['epie_region']:.2f}"),
                       (p, gan, f"PtychoGAN {1e3 * entry['ptychogan_region']:.2f}"),
                       (p, over, f"+oversampl. {1e3 * entry['proposed_region']:.2f}")]
            print(f"{insert} {image} overlap {overlap:+.2f}: "
                  f"{ {k: round(v, 5) for k, v in entry.items()} }", flush=True)
            base._save_csv(os.path.join(out, "outside.csv"),
                           ["insert", "image", "overlap", "region_pixels",
                            "field_epie_1e-3", "field_ptychogan_1e-3", "field_proposed_1e-3",
                            "region_epie_1e-3", "region_ptychogan_1e-3",
                            "region_proposed_1e-3", "region_gain"], rows)
    base._figure(os.path.join(out, "outside.png"), panels, 4,
                 note="numbers: phase MSE in (phase/\u03c0)\u00b2, x1e-3, on the inserted region")
    with open(os.path.join(out, "outside.json"), "w") as f:
        json.dump({"rows": entries, "settings": vars(args), "model_config": config,
                   "seconds": time.perf_counter() - started,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "command": "python experiments/ptychogan_oversampling/outside.py"}, f,
                  indent=1)
    print(f"done in {time.perf_counter() - started:.0f} s; wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

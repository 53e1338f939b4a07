"""Figure of an uncertainty map: object, std maps and, with a truth, |error| / std."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_uncertainty", "phase_error_over_std"]


def phase_error_over_std(object_, uncertainty, truth):
    """(Y, X) float32 |phase error| / phase std of ``object_`` against ``truth``, after the
    global phase is fitted on ``uncertainty.reference`` (NaN where undetermined)."""
    from adptycho.analysis.metrics import global_factor

    obj = np.asarray(object_)
    aligned = obj * global_factor(obj, truth, mask=uncertainty.reference, scale=False)
    error = np.abs(np.angle(aligned * np.conj(truth)))
    return (error / uncertainty.object_phase_std).astype(np.float32)


def plot_uncertainty(object_, uncertainty, path, truth=None, title=None) -> str:
    """Write a PNG: phase of the object, its std map, the amplitude std map and |phase error| /
    std (from ``truth``, or the file's stored ``phase_error_over_std``).

    Args:
        object_: (Y, X) complex reconstruction, or None to use the one stored in the result
            (``extras["object"]``; without either, the std maps only).
        uncertainty: ``UncertaintyResult`` of that reconstruction.
        path: output PNG.
        truth: optional (Y, X) complex true object on the same grid.
        title: figure title.

    Returns:
        the path written.
    """
    from adptycho.analysis.plots import _pyplot, save_figure

    plt = _pyplot()
    if object_ is None:
        object_ = uncertainty.extras.get("object")
    determined = np.asarray(uncertainty.determined, bool)
    panels = []
    if object_ is not None:
        panels.append(("phase (rad)", np.where(determined, np.angle(object_), np.nan),
                       "twilight", None))
    panels += [("phase std (rad)", uncertainty.object_phase_std, "viridis", None),
               ("amplitude std", uncertainty.object_amplitude_std, "viridis", None)]
    ratio = uncertainty.extras.get("phase_error_over_std")
    if truth is not None and object_ is not None:
        ratio = phase_error_over_std(object_, uncertainty, truth)
    if ratio is not None:
        inside = np.mean(ratio[uncertainty.reference] <= 1.96)
        panels.append((f"|phase error| / std ({100 * inside:.0f}% <= 1.96 on the reference)",
                       ratio, "magma", (0, 3)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4))
    for ax, (label, image, cmap, limits) in zip(axes, panels):
        shown = ax.imshow(image, cmap=cmap, vmin=None if limits is None else limits[0],
                          vmax=None if limits is None else limits[1])
        ax.contour(uncertainty.reference, levels=[0.5], colors="w", linewidths=0.6)
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.046)
    return save_figure(fig, path, title=title or f"uncertainty ({uncertainty.method})")

"""Reconstruction figures of real scans, drawn from a saved ``.npz`` (issue 23, item 4).

``save_result(result, path)`` writes the arrays a figure needs next to the PNG;
``plot_result(npz_path, png_path, title)`` draws object amplitude and phase (in micrometres when
the pixel size is known), probe amplitude and phase, scan positions and the residual curve, each
image with a labelled colour bar. ``python experiments/figrecon.py X.npz X.png --title ...``
redraws one figure without recomputation.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from figstyle import figure, image_panel, robust_limits, save  # noqa: E402


def save_result(result, path: str) -> str:
    """``ReconstructionResult`` -> ``path`` (.npz): object (Y, X) complex64, probe (M, H, W)
    complex64, positions_px / nominal_positions_px (N, 2) float64, loss_history,
    residual_history (epochs,) float64, pixel_size_m (2,) float64 (NaN when unknown)."""
    pixel = result.pixel_size_m if result.pixel_size_m is not None else (np.nan, np.nan)
    probe = np.asarray(result.probe)
    np.savez_compressed(path, object=np.asarray(result.object, np.complex64),
                        probe=(probe[None] if probe.ndim == 2 else probe).astype(np.complex64),
                        positions_px=np.asarray(result.positions_px, np.float64),
                        nominal_positions_px=np.asarray(result.nominal_positions_px, np.float64),
                        loss_history=np.asarray(result.loss_history, np.float64),
                        residual_history=np.asarray(result.residual_history, np.float64),
                        pixel_size_m=np.asarray(pixel, np.float64))
    return path


def _scanned_view(obj, positions, window):
    """The part of the object the scan covers, and its corner (y, x) in object pixels."""
    h, w = window
    y0, x0 = np.maximum(np.floor(positions.min(axis=0)).astype(int), 0)
    y1 = min(int(np.ceil(positions[:, 0].max())) + h, obj.shape[0])
    x1 = min(int(np.ceil(positions[:, 1].max())) + w, obj.shape[1])
    return obj[y0:y1, x0:x1], (y0, x0)


def plot_result(npz_path: str, png_path: str, title: str = None) -> str:
    """Draw the saved reconstruction ``npz_path`` into ``png_path``."""
    data = np.load(npz_path)
    obj, probe = data["object"], data["probe"]
    positions, nominal = data["positions_px"], data["nominal_positions_px"]
    pixel = data["pixel_size_m"]
    pixel = None if not np.all(np.isfinite(pixel)) else tuple(pixel)
    view, origin = _scanned_view(obj, positions, probe.shape[-2:])
    cy, cx = view.shape[0] // 4, view.shape[1] // 4
    centre = view[cy:view.shape[0] - cy or None, cx:view.shape[1] - cx or None]
    phase_ref = np.exp(-1j * np.angle(np.mean(centre)))
    fig, axes = figure(2, 3, panel=(3.9, 3.4), title=title)
    lo, hi = robust_limits(np.abs(centre))
    image_panel(axes[0, 0], np.abs(view), "amplitude", "object amplitude", vmin=lo, vmax=hi,
                pixel_size_m=pixel, origin_px=origin)
    lo, hi = robust_limits(np.angle(centre * phase_ref))
    image_panel(axes[0, 1], np.angle(view * phase_ref), "phase (rad)",
                "object phase (global phase removed)", vmin=lo, vmax=hi, pixel_size_m=pixel,
                origin_px=origin)
    power = np.sum(np.abs(probe) ** 2, axis=(1, 2))
    image_panel(axes[0, 2], np.abs(probe[0]), "amplitude (sqrt counts)",
                f"probe amplitude, mode 1 of {len(probe)} ({100 * power[0] / power.sum():.0f}% "
                "power)", cmap="magma", pixel_size_m=pixel)
    support = np.abs(probe[0]) > 0.05 * np.abs(probe[0]).max()
    image_panel(axes[1, 0], np.where(support, np.angle(probe[0]), np.nan), "phase (rad)",
                "probe phase (where |P| > 5% of max)", cmap="twilight", vmin=-np.pi,
                vmax=np.pi, pixel_size_m=pixel)
    ax = axes[1, 1]
    half = np.array(probe.shape[-2:]) / 2.0
    ax.scatter(nominal[:, 1] + half[1], nominal[:, 0] + half[0], s=5, c="0.6", label="nominal")
    ax.scatter(positions[:, 1] + half[1], positions[:, 0] + half[0], s=5, c="C3",
               label="refined")
    ax.set(aspect="equal", xlabel="x (object px)", ylabel="y (object px)",
           title="probe centres")
    ax.invert_yaxis()
    ax.legend(loc="upper right")
    ax = axes[1, 2]
    residual = data["residual_history"]
    ax.semilogy(np.arange(1, residual.size + 1), residual, "-o", ms=2)
    ax.set(xlabel="epoch", ylabel="relative amplitude residual",
           title=f"residual {residual[0]:.4f} \u2192 {residual[-1]:.4f}")
    ax.grid(True, which="both")
    return save(fig, png_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Redraw a reconstruction figure from its .npz")
    parser.add_argument("npz")
    parser.add_argument("png")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    print(plot_result(args.npz, args.png, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

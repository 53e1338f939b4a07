"""Scan patterns and the overlap <-> step conversion.

Positions are returned as (N, 2) float64 arrays in (y, x) order, in pixels.
"""

from __future__ import annotations

import numpy as np

from adptycho.errors import GeometryError

__all__ = [
    "raster_scan", "fermat_spiral_scan", "overlap_to_step", "step_to_overlap",
    "area_overlap", "fermat_spacing_for_overlap",
]

GOLDEN_ANGLE_RAD = np.deg2rad(137.508)


def overlap_to_step(overlap: float, probe_diameter_px: float) -> float:
    """Raster step for a linear overlap: ``step = D (1 - overlap)``.

    Linear overlap is ``1 - step / D`` (Barutcu et al. 2023, Sec. 3; negative values mean gaps):
    25%, 0%, -25%, -50% overlap are steps of 45, 60, 75, 90 px for a 60-px probe.
    """
    if probe_diameter_px <= 0:
        raise GeometryError(f"probe_diameter_px must be positive, got {probe_diameter_px}")
    if overlap >= 1:
        raise GeometryError(f"overlap must be below 1 (100%), got {overlap}")
    return float(probe_diameter_px) * (1.0 - float(overlap))


def step_to_overlap(step_px: float, probe_diameter_px: float) -> float:
    """Linear overlap ``1 - step / D`` for a raster step (inverse of ``overlap_to_step``)."""
    if probe_diameter_px <= 0:
        raise GeometryError(f"probe_diameter_px must be positive, got {probe_diameter_px}")
    return 1.0 - float(step_px) / float(probe_diameter_px)


def area_overlap(distance_px: float, probe_diameter_px: float) -> float:
    """Area overlap of two discs of diameter D whose centres are ``distance_px`` apart."""
    d = float(distance_px) / float(probe_diameter_px)
    if d >= 1:
        return 0.0
    return float(2.0 / np.pi * (np.arccos(d) - d * np.sqrt(1.0 - d * d)))


def raster_scan(shape, step_px, start_px=(0.0, 0.0), jitter_px: float = 0.0, seed=None):
    """Rectangular raster grid of ``shape = (rows, cols)`` points.

    Args:
        shape: (rows, cols) number of points.
        step_px: scalar or (step_y, step_x) spacing in pixels.
        start_px: (y, x) position of the first point.
        jitter_px: standard deviation of Gaussian jitter added to every point (breaks the raster
            grid pathology of periodic scans; Thibault et al. 2009).
        seed: seed for the jitter.

    Returns:
        (rows * cols, 2) float64 positions (y, x), row-major (snake-free) order.
    """
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise GeometryError(f"raster shape must be positive, got {shape}")
    sy, sx = np.broadcast_to(np.asarray(step_px, dtype=np.float64), (2,))
    yy, xx = np.meshgrid(np.arange(rows) * sy, np.arange(cols) * sx, indexing="ij")
    positions = np.stack([yy.ravel(), xx.ravel()], axis=1) + np.asarray(start_px, dtype=np.float64)
    if jitter_px:
        rng = np.random.default_rng(seed)
        positions = positions + rng.normal(scale=jitter_px, size=positions.shape)
    return positions


def fermat_spacing_for_overlap(overlap: float, probe_diameter_px: float) -> float:
    """Fermat-spiral constant c giving a mean nearest-neighbour distance ``D (1 - overlap)``.

    The median nearest-neighbour distance of a Fermat spiral is about 1.68 c
    (``../shared/notes/methods.md`` section 7), so c = D (1 - overlap) / 1.68.
    """
    return overlap_to_step(overlap, probe_diameter_px) / 1.68


def fermat_spiral_scan(num_points: int, spacing_px: float, center_px=(0.0, 0.0)):
    """Fermat spiral (Huang et al., Opt. Express 22, 12634 (2014)).

    ``r_n = c sqrt(n)``, ``theta_n = n * 137.508 deg`` for n = 0 .. N-1.

    Returns:
        (N, 2) float64 positions (y, x) around ``center_px``.
    """
    if num_points < 1:
        raise GeometryError(f"num_points must be positive, got {num_points}")
    n = np.arange(int(num_points), dtype=np.float64)
    r = float(spacing_px) * np.sqrt(n)
    theta = n * GOLDEN_ANGLE_RAD
    return np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1) + np.asarray(center_px, np.float64)

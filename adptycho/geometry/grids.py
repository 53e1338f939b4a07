"""Object grids, pixel sizes and unit conversions."""

from __future__ import annotations

import dataclasses

import numpy as np

from adptycho.errors import GeometryError

__all__ = ["ObjectGrid", "object_grid", "farfield_pixel_size_m", "cone_beam_geometry",
           "illumination_map"]

PLANCK_EV_M = 1.2398419843320026e-6  # h c in eV * m
# Largest object grid (pixels) ``object_grid`` builds: 2^31 complex64 pixels are 16 GiB (plus two
# Adam moments); a larger grid means positions in the wrong unit, not a real scan.
MAX_OBJECT_PIXELS = 1 << 31


def farfield_pixel_size_m(wavelength_m, distance_m, detector_shape, detector_pixel_size_m):
    """Object-plane pixel size ``lambda z / (N dx_det)`` per axis, (dy, dx) in metres."""
    h, w = detector_shape
    dpy, dpx = np.broadcast_to(np.asarray(detector_pixel_size_m, dtype=np.float64), (2,))
    return (wavelength_m * distance_m / (h * dpy), wavelength_m * distance_m / (w * dpx))


def cone_beam_geometry(focus_distance_m, detector_distance_m, detector_pixel_size_m):
    """Fresnel-scaling theorem for a point-source (cone-beam) illumination.

    Args:
        focus_distance_m: z1, focus to sample.
        detector_distance_m: z2, sample to detector.
        detector_pixel_size_m: (dy, dx) detector pitch.

    Returns:
        ``(magnification, pixel_size_m, propagation_distance_m)``: M = (z1 + z2) / z1, the effective
        sample-plane pixel (dy/M, dx/M) and the effective parallel-beam distance z2 / M.
    """
    if focus_distance_m <= 0:
        raise GeometryError(f"focus distance must be positive, got {focus_distance_m}")
    m = (focus_distance_m + detector_distance_m) / focus_distance_m
    dpy, dpx = np.broadcast_to(np.asarray(detector_pixel_size_m, dtype=np.float64), (2,))
    return m, (dpy / m, dpx / m), detector_distance_m / m


@dataclasses.dataclass(frozen=True)
class ObjectGrid:
    """Where scan positions land in the object array.

    Attributes:
        shape: (Y, X) object array shape.
        origin_px: (2,) offset added to ``ScanData.positions_px`` to get top-left corners in the
            object array.
    """

    shape: tuple
    origin_px: tuple

    def corners(self, positions_px):
        return np.asarray(positions_px, np.float64) + np.asarray(self.origin_px, np.float64)


def object_grid(positions_px, probe_shape, padding_px: int = 4, object_shape=None):
    """Choose an object grid that holds every probe window.

    Without ``object_shape``, positions already inside ``[0, ...)`` keep their values (origin 0,
    so simulated data stays aligned with its ground truth); otherwise they are shifted so the
    smallest lands at ``padding_px``. The shape covers the largest window plus ``padding_px``
    (room for position refinement).

    With ``object_shape``, positions are used as they are and must fit inside it.

    Raises:
        GeometryError: non-finite positions, a window outside ``object_shape``, or a grid of
            more than ``MAX_OBJECT_PIXELS`` pixels (positions in the wrong unit).
    """
    positions = np.asarray(positions_px, np.float64)
    if not np.isfinite(positions).all():
        raise GeometryError("scan positions contain non-finite values (NaN or inf)")
    h, w = int(probe_shape[0]), int(probe_shape[1])
    if object_shape is not None:
        shape = (int(object_shape[0]), int(object_shape[1]))
        origin = (0.0, 0.0)
    else:
        low = positions.min(axis=0)
        origin = tuple(float(padding_px - np.floor(v)) if v < 0 else 0.0 for v in low)
        far = positions.max(axis=0) + np.asarray(origin)
        shape = (int(np.ceil(far[0])) + h + padding_px, int(np.ceil(far[1])) + w + padding_px)
    if shape[0] * shape[1] > MAX_OBJECT_PIXELS:
        span = np.ptp(positions, axis=0)
        raise GeometryError(
            f"the scan positions span {span[0]:.4g} x {span[1]:.4g} object pixels: the object "
            f"grid would be {shape[0]}x{shape[1]} pixels, more than {MAX_OBJECT_PIXELS:.3g} "
            "(are the translations in metres and the pixel size right?)")
    grid = ObjectGrid(shape=shape, origin_px=origin)
    check_positions_inside(grid.corners(positions), (h, w), shape)
    return grid


def check_positions_inside(corners_px, probe_shape, object_shape):
    """Raise ``GeometryError`` if a probe window at ``corners_px`` leaves the object array."""
    corners = np.asarray(corners_px, np.float64)
    h, w = probe_shape
    limit = np.array([object_shape[0] - h, object_shape[1] - w], np.float64)
    bad = np.flatnonzero(np.any(~np.isfinite(corners) | (corners < 0) | (np.floor(corners) > limit),
                                axis=1))
    if bad.size:
        j = int(bad[0])
        raise GeometryError(
            f"{bad.size} scan positions put the {h}x{w} probe window outside the "
            f"{object_shape[0]}x{object_shape[1]} object (first: position {j} at "
            f"(y, x) = ({corners[j, 0]:.2f}, {corners[j, 1]:.2f}); allowed 0..{limit[0]:.0f}, "
            f"0..{limit[1]:.0f})")


def illumination_map(corners_px, probe, object_shape):
    """Sum of |P|^2 over all scan positions on the object grid (integer corners), (Y, X) float64."""
    probe = np.asarray(probe)
    if probe.ndim == 3:
        intensity = np.sum(np.abs(probe) ** 2, axis=0)
    else:
        intensity = np.abs(probe) ** 2
    h, w = intensity.shape
    out = np.zeros(object_shape, np.float64)
    for cy, cx in np.round(np.asarray(corners_px)).astype(int):
        out[cy:cy + h, cx:cx + w] += intensity
    return out

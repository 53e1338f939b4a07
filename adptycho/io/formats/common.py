"""Shared pieces of the format readers and writers (``adptycho.io.formats``).

Internal convention, the one every reader converts to and every writer from (``docs/formats.md``):
object (Y, X) complex64 and probe (M, H, W) complex64, rows first (y, x); positions (N, 2) are the
top-left corners (y, x) of the probe window on the object grid, in object pixels; the probe
window over corner c covers pixels [c, c + H) so its centre is at c + H / 2; pixel sizes (dy, dx)
in metres.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from adptycho.errors import DataError
from adptycho.io.results import ReconstructionResult

__all__ = ["make_result", "as_probe_stack", "first_layer", "check_positive_pixel"]


def as_probe_stack(probe, where: str) -> np.ndarray:
    """(H, W) or (M, H, W) -> (M, H, W) complex64."""
    probe = np.asarray(probe)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3 or min(probe.shape) < 1:
        raise DataError(f"{where}: the probe must be (H, W) or (modes, H, W), got {probe.shape}")
    return probe.astype(np.complex64)


def first_layer(obj, where: str) -> np.ndarray:
    """(Y, X) or (layers, Y, X) with one layer -> (Y, X) complex64 (multislice is refused)."""
    obj = np.asarray(obj)
    if obj.ndim == 3 and obj.shape[0] == 1:
        obj = obj[0]
    if obj.ndim != 2:
        raise DataError(f"{where}: the object must be one (Y, X) slice, got shape {obj.shape} "
                        "(multislice objects are not supported)")
    return obj.astype(np.complex64)


def check_positive_pixel(pixel_size_m, where: str) -> Optional[tuple]:
    if pixel_size_m is None:
        return None
    pixel = tuple(float(v) for v in np.ravel(pixel_size_m)[:2])
    if len(pixel) == 1:
        pixel = pixel * 2
    if not all(np.isfinite(v) and v > 0 for v in pixel):
        raise DataError(f"{where}: pixel size must be positive, got {pixel}")
    return pixel


def make_result(path, obj, probe, positions_px, pixel_size_m=None, loss=None,
                source: str = "") -> ReconstructionResult:
    """A ``ReconstructionResult`` from a foreign file's object, probe and corner positions."""
    where = os.fspath(path)
    obj = first_layer(obj, where)
    probe = as_probe_stack(probe, where)
    if positions_px is None:
        positions_px = np.zeros((0, 2))
    positions_px = np.asarray(positions_px, np.float64).reshape(-1, 2)
    if not np.isfinite(positions_px).all():
        raise DataError(f"{where}: non-finite scan positions")
    if not np.isfinite(obj).all() or not np.isfinite(probe).all():
        raise DataError(f"{where}: the object or probe holds NaN or inf")
    loss = np.asarray([] if loss is None else loss, np.float64).ravel()
    return ReconstructionResult(
        object=obj, probe=probe, positions_px=positions_px, nominal_positions_px=positions_px,
        loss_history=loss, residual_history=np.array([]),
        pixel_size_m=check_positive_pixel(pixel_size_m, where),
        settings={"imported_from": source, "source_file": os.path.abspath(where)})

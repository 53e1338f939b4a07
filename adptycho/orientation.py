"""Which way round are the scan positions? A data-driven check of the 8 flips and transposes.

Beamlines write positions in their own stage frame; a sign or an axis swap between the stage and
the detector is the most common reason a first reconstruction of real data fails. This module
tries the 8 flips/transposes of the positions about their centroid with short fits and ranks them
by the data residual.

Blind ptychography cannot tell an orientation from its 180-degree rotation: with positions -r_j,
the object conj(O(-r)) and the probe conj(P(-r)) give exit waves conj(psi_j(-r)) and exactly the
same intensities (the twin image). So the 8 orientations fall into 4 classes of two, and the check
ranks the classes; within a class either member reconstructs (the result is the twin).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from adptycho.io.scan_data import NEARFIELD, ScanData

__all__ = ["ORIENTATIONS", "transform_positions", "OrientationResult", "check_orientation"]

# name -> (transpose, flip_y, flip_x), applied in that order about the centroid
ORIENTATIONS = {
    "as-is": (False, False, False),
    "rotate-180": (False, True, True),
    "flip-y": (False, True, False),
    "flip-x": (False, False, True),
    "transpose": (True, False, False),
    "anti-transpose": (True, True, True),
    "transpose+flip-y": (True, True, False),
    "transpose+flip-x": (True, False, True),
}
# the twin (180-degree rotation) of each orientation, indistinguishable without a known probe
TWINS = {"as-is": "rotate-180", "flip-y": "flip-x", "transpose": "anti-transpose",
         "transpose+flip-y": "transpose+flip-x"}


def transform_positions(positions_px, name: str) -> np.ndarray:
    """(N, 2) (y, x) positions flipped/transposed about their centroid (``ORIENTATIONS``)."""
    transpose, flip_y, flip_x = ORIENTATIONS[name]
    positions = np.asarray(positions_px, np.float64)
    centroid = positions.mean(axis=0)
    centred = positions - centroid
    if transpose:
        centred = centred[:, ::-1]
    centred = centred * np.array([-1.0 if flip_y else 1.0, -1.0 if flip_x else 1.0])
    return centred + centroid


@dataclasses.dataclass
class OrientationResult:
    """Residual per orientation class.

    Attributes:
        residuals: orientation name -> relative amplitude residual after the short fit (both
            members of a twin class carry the class's value).
        best: the best class's first member (``as-is`` when the file's own class is best).
        margin: residual of the second-best class over the best, minus 1 (0.1 = 10% worse).
        file_excess: the file's own class over the best, minus 1 (0 when it is the best).
    """

    residuals: dict
    best: str
    margin: float
    file_excess: float

    @property
    def file_is_best(self) -> bool:
        return self.best == "as-is"

    def table(self) -> str:
        lines = [f"{'orientation':<34}{'residual':>10}"]
        for name, twin in TWINS.items():
            mark = "  <- best" if name == self.best else ""
            lines.append(f"{name + ' / ' + twin:<34}{self.residuals[name]:>10.4g}{mark}")
        return "\n".join(lines)

    def summary(self) -> str:
        if self.file_is_best:
            return (f"the file's orientation fits best (next class {100 * self.margin:.1f}% "
                    "higher residual)")
        return (f"the positions fit better as {self.best!r} (or its twin {TWINS[self.best]!r}): "
                f"the file's orientation has a {100 * self.file_excess:.1f}% higher residual")


def _residual(scan: ScanData, build_model: Callable, probe, epochs: int, max_patterns: int,
              seed: int) -> float:
    """Residual of a short object+probe ePIE fit on the patterns nearest the centre."""
    from adptycho.probe_search import central_trainer

    model, trainer, prepared, subset = central_trainer(scan, build_model(scan, probe),
                                                       max_patterns)
    obj = tf.ones(model.object_shape, tf.complex64)
    obj, probe_t, history = trainer.run_epochs(obj, model.probe_tensor(), prepared, 1,
                                               subset=subset, seed=seed)
    _, _, more = trainer.run_epochs(obj, probe_t, prepared, max(epochs - 1, 1), subset=subset,
                                    seed=seed + 1, update_probe=True)
    value = more[-1]
    return float(value) if np.isfinite(value) else np.inf


def check_orientation(scan: ScanData, build_model: Callable, probe=None, epochs: int = 6,
                      max_patterns: int = 100, search: bool = True, seed: int = 0,
                      progress: Optional[Callable[[str], None]] = None,
                      starts: Optional[dict] = None) -> OrientationResult:
    """Rank the 4 twin classes of the 8 position orientations by the residual of short fits.

    Args:
        scan: the scan as read from the file.
        build_model: ``(scan, probe) -> PtychoModel`` with a ``PixelObject``.
        probe: (M, H, W) probe to start from; None: far field, searched per orientation
            (``probe_search``) when ``search``, else the mean-pattern guess.
        epochs: ePIE epochs per orientation (the first object-only, then object and probe).
        max_patterns: patterns nearest the scan centre used for the fits.
        search: far field without a probe: search the probe's defocus for each orientation
            (a probe searched in one orientation is a poor start for another: a fixed probe
            can make the file's own orientation look best when it is not).
        progress: called with a line per orientation class.
        starts: optional orientation name -> starting probe already known (e.g. the search
            result for ``as-is``), used instead of searching again.

    Returns:
        ``OrientationResult``.
    """
    from adptycho.initial import probe_guess

    residuals = {}
    for name, twin in TWINS.items():
        moved = dataclasses.replace(scan, positions_px=transform_positions(scan.positions_px,
                                                                           name))
        start = probe if probe is not None else (starts or {}).get(name)
        if start is None:
            if search and scan.geometry != NEARFIELD:
                from adptycho.probe_search import search_probe

                start = search_probe(moved, lambda guess: build_model(moved, guess),
                                     max_patterns=max_patterns, seed=seed).probe
            else:
                start = probe_guess(moved)
        value = _residual(moved, build_model, start, epochs, max_patterns, seed)
        residuals[name] = residuals[twin] = value
        if progress is not None:
            progress(f"{name} / {twin}: residual {value:.4g}")
    classes = sorted(TWINS, key=lambda n: residuals[n])
    best = classes[0]
    margin = residuals[classes[1]] / max(residuals[best], 1e-30) - 1.0
    excess = residuals["as-is"] / max(residuals[best], 1e-30) - 1.0
    return OrientationResult(residuals=residuals, best=best, margin=float(margin),
                             file_excess=float(excess))

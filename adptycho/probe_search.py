"""Blind far-field probe estimate: the pupil from the mean pattern, the defocus from the data.

A far-field pattern's mean over the scan is close to the probe's own far-field intensity
(``|F{P}|^2`` blurred by the object's scattering), so ``sqrt(mean I)`` gives the modulus of the
probe in the detector plane. What the intensities cannot give directly is the phase there; for
every focused optic (zone plate, KB mirrors, lens) defocused from the sample it is a quadratic
(defocus) term of either sign, and for other probes it is the leading term of that phase. So the
search tries a fixed set of defocus values (``initial.defocused_pupil_probe``: both signs, from in
focus to a probe of 1.5 window widths) and of astigmatic pupils (``ASTIGMATIC_GRID``: the
diameters along two perpendicular axes, at 0 and 45 degrees, chosen independently, so that a line
focus is among them), runs two object-only sequential ePIE epochs from a flat object for each on
the patterns nearest the scan centre, takes one step of ``LOCAL_STEP`` in each parameter around the
best, follows the ``FINALISTS`` best for ``FINAL_EPOCHS`` more epochs with the probe refined too
(a multi-start scored by the data residual), and keeps the one with the lowest residual -- the
profile-search idea of the cone-beam z1 search (``calibration``), applied to the probe. The
remaining details of the probe (a diffuser's speckle, aberrations, the object's scattering in the
estimate) are left to the probe refinement of the reconstruction.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from adptycho.initial import (add_probe_modes, defocused_pupil_probe, probe_diameter_px,
                              pupil_radius_px, scale_probe_to_counts)
from adptycho.io.scan_data import NEARFIELD, ScanData

__all__ = ["ProbeSearchResult", "search_probe", "central_trainer", "DEFOCUS_GRID"]

# candidate geometric probe diameters, in window widths; the sign is the side of the focus (a
# strongly defocused probe's geometric diameter can exceed the window: its edge is dim)
DEFOCUS_GRID = (0.0,) + tuple(s * round(0.1 * k, 1) for k in range(1, 16) for s in (1.0, -1.0))
# astigmatic candidates: the diameters along two perpendicular axes (0 and 45 degrees) taken
# independently from this set (window widths, both signs), the pairs of unequal diameters. A line
# focus (one axis near focus, the other strongly defocused) lies far from every pure defocus and
# from small astigmatism around the best one: on the astigmatic weak-phase robustness case the
# residual rises on the way there from the in-focus probe, so the search must jump, not walk
AXIS_DIAMETERS = (0.0, 0.25, -0.25, 0.5, -0.5)
ASTIGMATIC_GRID = tuple(
    ((dy + dx) / 2, (dy - dx) / 2, 0.0) for dy in AXIS_DIAMETERS for dx in AXIS_DIAMETERS
    if dy != dx) + tuple(
    ((d1 + d2) / 2, 0.0, (d1 - d2) / 2) for d1 in AXIS_DIAMETERS for d2 in AXIS_DIAMETERS
    if d1 != d2)
# then one step of this size (window widths) in each of defocus, a0, a45 around the best
LOCAL_STEP = 0.125
FINALISTS = 3  # candidates followed further (object and probe refined) before the choice
FINAL_EPOCHS = 8


@dataclasses.dataclass
class ProbeSearchResult:
    """What ``search_probe`` chose and why.

    Attributes:
        probe: (M, H, W) complex64 probe, scaled to the mean counts.
        defocus_diameter_px: signed geometric diameter of the chosen probe in object pixels
            (0 = in focus; the sign is the side of the focus).
        astigmatism_px: (a0, a45) astigmatism of the chosen probe (``initial``).
        candidates: (K, 4) float64: each candidate's signed diameter, astigmatism (a0, a45)
            and data residual after the object-only epochs.
        finalists: (F, 5) float64: the finalists' diameter, astigmatism, first and final
            residual.
        pupil_radius_px: radius of the pupil in the detector plane (detector pixels).
        autocorrelation_diameter_px: the probe diameter read from the exit-wave
            autocorrelation (``initial.probe_diameter_px``), for the report.
    """

    probe: np.ndarray
    defocus_diameter_px: float
    astigmatism_px: tuple
    candidates: np.ndarray
    finalists: np.ndarray
    pupil_radius_px: float
    autocorrelation_diameter_px: float

    def summary(self) -> str:
        ranked = self.finalists[np.argsort(self.finalists[:, 4])]
        margin = (ranked[1, 4] / ranked[0, 4] - 1.0) if len(ranked) > 1 else 0.0
        return (f"probe from the data: pupil radius {self.pupil_radius_px:.1f} detector px, "
                f"defocus diameter {self.defocus_diameter_px:+.1f} px, astigmatism "
                f"({self.astigmatism_px[0]:+.1f}, {self.astigmatism_px[1]:+.1f}) px (residual "
                f"{ranked[0, 4]:.4g} after {FINAL_EPOCHS} more epochs; next finalist "
                f"{100 * margin:.1f}% higher)")

    def attributes(self) -> dict:
        """Flat values for a result file's ``settings``."""
        return {"probe_search_defocus_diameter_px": float(self.defocus_diameter_px),
                "probe_search_astigmatism_px": [float(v) for v in self.astigmatism_px],
                "probe_search_pupil_radius_px": float(self.pupil_radius_px),
                "probe_search_autocorrelation_diameter_px": float(self.autocorrelation_diameter_px),
                "probe_search_candidates": self.candidates.tolist(),
                "probe_search_finalists": self.finalists.tolist()}


def central_trainer(scan: ScanData, model, max_patterns: int):
    """An ePIE trainer on ``model`` for short fits on the ``max_patterns`` patterns nearest the
    scan centre (they overlap most). Returns ``(model, trainer, prepared, subset)``."""
    from adptycho.training.epie import PIETrainer, pie_settings

    trainer = PIETrainer(model, pie_settings("epie"))
    prepared = trainer.prepare(np.asarray(scan.patterns))
    corners = model.get_positions()
    distance = np.sum((corners - corners.mean(axis=0)) ** 2, axis=1)
    subset = np.sort(np.argsort(distance, kind="stable")[:max_patterns])
    return model, trainer, prepared, subset


def search_probe(scan: ScanData, build_model: Callable, modes: int = 1, epochs: int = 2,
                 max_patterns: int = 100, seed: int = 0) -> ProbeSearchResult:
    """Choose a far-field probe from the data by a defocus profile search.

    Args:
        scan: far-field ``ScanData``.
        build_model: ``probe -> PtychoModel`` with a ``PixelObject`` (the scan's model; only
            its positions, mask and propagator are used).
        modes: probe modes of the result (extra modes are weak perturbed copies).
        epochs: object-only ePIE epochs per candidate.
        max_patterns: the candidates are scored on the patterns nearest the scan centre.
        seed: pattern order.

    Returns:
        ``ProbeSearchResult``; its probe is the best finalist's after its short refinement.
    """
    if scan.geometry == NEARFIELD:
        raise ValueError("search_probe is for far-field scans")
    width = float(np.sqrt(np.prod(scan.detector_shape)))
    diameters = [f * width for f in DEFOCUS_GRID]
    model, trainer, prepared, subset = central_trainer(
        scan, build_model(defocused_pupil_probe(scan, 0.0)), max_patterns)
    flat = tf.ones(model.object_shape, tf.complex64)
    residuals, states, settings = [], [], []

    def score(diameter, astigmatism=(0.0, 0.0)):
        candidate = defocused_pupil_probe(scan, diameter, astigmatism_px=astigmatism)
        obj, probe, history = trainer.run_epochs(flat, tf.constant(candidate), prepared, epochs,
                                                 subset=subset, seed=seed)
        residuals.append(history[-1] if np.isfinite(history[-1]) else np.inf)
        states.append((obj, probe))
        settings.append((float(diameter), float(astigmatism[0]), float(astigmatism[1])))

    for diameter in diameters:
        score(diameter)
    for d, a0, a45 in ASTIGMATIC_GRID:
        score(d * width, (a0 * width, a45 * width))
    best = settings[int(np.argmin(residuals))]
    for axis in range(3):
        for sign in (1.0, -1.0):
            moved = list(best)
            moved[axis] += sign * LOCAL_STEP * width
            score(moved[0], tuple(moved[1:]))
    finalists = [int(i) for i in np.argsort(residuals, kind="stable")[:FINALISTS]
                 if np.isfinite(residuals[i])]
    final, probes = {}, {}
    for index in finalists:
        _, probe, history = trainer.run_epochs(*states[index], prepared, FINAL_EPOCHS,
                                               subset=subset, seed=seed + 1, update_probe=True)
        final[index] = history[-1] if np.isfinite(history[-1]) else np.inf
        probes[index] = probe.numpy()
    best = min(final, key=final.get) if final else 0
    if best in probes and np.isfinite(probes[best]).all():
        # the finalist's probe after its short refinement, scaled to the mean counts
        chosen = scale_probe_to_counts(add_probe_modes(probes[best][:1], modes), scan)
    else:
        chosen = defocused_pupil_probe(scan, settings[best][0], modes, settings[best][1:])
    return ProbeSearchResult(
        probe=chosen,
        defocus_diameter_px=settings[best][0],
        astigmatism_px=settings[best][1:],
        candidates=np.column_stack([np.asarray(settings), residuals]).astype(np.float64),
        finalists=np.asarray([[*settings[i], residuals[i], final[i]] for i in final],
                             np.float64).reshape(-1, 5),
        pupil_radius_px=pupil_radius_px(scan),
        autocorrelation_diameter_px=probe_diameter_px(scan))

"""Calibrate once on a bright scan, reuse for low-dose scans.

``calibrate(scan)`` fits object, probe, scan positions (optionally a global affine stage model)
and, in near field, the propagation distance with a staged schedule: object and probe first,
then positions, then distance (each group with its own Adam and the 0.97-per-epoch decay).
The result is a ``Calibration`` saved to HDF5 (a public contract):

* ``probe``: (M, H, W) complex64, photon units of the calibration scan
* ``positions_px``: (N, 2) float64 refined positions (y, x) in the calibration scan's frame
  (the same frame as its ``ScanData.positions_px``)
* ``nominal_positions_px``: (N, 2) float64 the positions the calibration started from
* ``affine``: (2, 2) float64 fitted affine map of positions about their centroid
* ``loss_history``, ``residual_history``
* attributes ``mean_counts`` (photons per pattern of the calibration scan), ``distance_m`` (refined propagation distance in near field; the sample-detector
  distance in far field), ``focus_distance_m`` (cone beam, if known), ``geometry``,
  ``wavelength_m``, ``pixel_size_m``, ``settings`` (JSON)

``apply_calibration(scan, calibration)`` returns a copy of another scan of the same instrument
with the calibrated positions (where it shares the calibration's positions) or the affine map
applied to its own positions, the calibrated distance, and the calibrated probe.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import h5py
import numpy as np

from adptycho.config import config_keywords
from adptycho.errors import AdptychoError, DataError
from adptycho.io.atomic import atomic_path, open_hdf5
from adptycho.io.scan_data import NEARFIELD, ScanData
from adptycho.reconstruction import reconstruct
from adptycho.workflow_config import CalibrationConfig

__all__ = ["Calibration", "calibrate", "apply_calibration", "rescale_focus_distance",
           "search_focus_distance", "search_distance", "with_distance", "remove_probe_phase_ramp", "centre_probe"]


@dataclasses.dataclass
class Calibration:
    """Instrument calibration from a high-SNR scan (see the module docstring for the file)."""

    probe: np.ndarray
    positions_px: np.ndarray
    nominal_positions_px: np.ndarray
    affine: np.ndarray
    distance_m: Optional[float]
    geometry: str
    wavelength_m: Optional[float] = None
    pixel_size_m: Optional[tuple] = None
    focus_distance_m: Optional[float] = None
    mean_counts: Optional[float] = None
    loss_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    residual_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    settings: dict = dataclasses.field(default_factory=dict)

    def save(self, path) -> None:
        """Write the calibration file atomically."""
        with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
            probe = np.asarray(self.probe, np.complex64)
            f.create_dataset("probe", data=probe[None] if probe.ndim == 2 else probe)
            f.create_dataset("positions_px", data=np.asarray(self.positions_px, np.float64))
            f.create_dataset("nominal_positions_px",
                             data=np.asarray(self.nominal_positions_px, np.float64))
            f.create_dataset("affine", data=np.asarray(self.affine, np.float64))
            f.create_dataset("loss_history", data=np.asarray(self.loss_history, np.float64))
            f.create_dataset("residual_history", data=np.asarray(self.residual_history, np.float64))
            if self.distance_m is not None:
                f.attrs["distance_m"] = float(self.distance_m)
            if self.focus_distance_m is not None:
                f.attrs["focus_distance_m"] = float(self.focus_distance_m)
            if self.wavelength_m is not None:
                f.attrs["wavelength_m"] = float(self.wavelength_m)
            if self.mean_counts is not None:
                f.attrs["mean_counts"] = float(self.mean_counts)
            if self.pixel_size_m is not None:
                f.attrs["pixel_size_m"] = np.asarray(self.pixel_size_m, np.float64)
            f.attrs["geometry"] = self.geometry
            f.attrs["settings"] = json.dumps(self.settings, sort_keys=True, default=str)
            f.attrs["kind"] = "adptycho calibration"

    @classmethod
    def load(cls, path) -> "Calibration":
        """Read a file written by ``save``."""
        path, f = open_hdf5(path)
        with f:
            if "entry_1" in f:
                raise DataError(f"{path} is a CXI scan, not a calibration file: give a file "
                                "written by 'adptycho calibrate'")
            if "object" in f:
                raise DataError(f"{path} is an adptycho reconstruction, not a calibration file: "
                                "give a file written by 'adptycho calibrate'")
            for name in ("probe", "positions_px"):
                if name not in f:
                    raise DataError(f"{path} is not a calibration file: no '{name}' dataset")
            positions = f["positions_px"][()]
            return cls(
                probe=f["probe"][()], positions_px=positions,
                nominal_positions_px=f["nominal_positions_px"][()] if "nominal_positions_px" in f else positions,
                affine=f["affine"][()] if "affine" in f else np.eye(2),
                distance_m=float(f.attrs["distance_m"]) if "distance_m" in f.attrs else None,
                geometry=str(f.attrs.get("geometry", "farfield")),
                wavelength_m=float(f.attrs["wavelength_m"]) if "wavelength_m" in f.attrs else None,
                pixel_size_m=tuple(f.attrs["pixel_size_m"]) if "pixel_size_m" in f.attrs else None,
                focus_distance_m=(float(f.attrs["focus_distance_m"])
                                  if "focus_distance_m" in f.attrs else None),
                mean_counts=float(f.attrs["mean_counts"]) if "mean_counts" in f.attrs else None,
                loss_history=f["loss_history"][()] if "loss_history" in f else np.zeros(0),
                residual_history=f["residual_history"][()] if "residual_history" in f else np.zeros(0),
                settings=json.loads(f.attrs.get("settings", "{}")))


def remove_probe_phase_ramp(probe):
    """Remove the probe's linear phase ramp (the probe-object ramp ambiguity).

    ``P exp(i k.r)`` with ``O exp(-i k.r)`` predicts the same data, and a reconstruction started
    from a flat object cannot easily build the compensating ramp, so a calibrated probe should
    carry none. The ramp is found from the |P|^2-weighted mean phase difference between
    neighbouring pixels along y and x of the dominant mode (wrap-free, unlike fitting the phase
    itself), and removed from all modes.

    Args:
        probe: (M, H, W) complex.

    Returns:
        (M, H, W) complex64.
    """
    probe = np.asarray(probe, np.complex64)
    _, h, w = probe.shape
    main = probe[int(np.argmax(np.sum(np.abs(probe) ** 2, axis=(1, 2))))].astype(np.complex128)
    ky = np.angle(np.sum(main[1:, :] * np.conj(main[:-1, :])))
    kx = np.angle(np.sum(main[:, 1:] * np.conj(main[:, :-1])))
    yy, xx = np.mgrid[:h, :w]
    return (probe * np.exp(-1j * (ky * yy + kx * xx))).astype(np.complex64)


def centre_probe(probe):
    """Move the probe's intensity centroid to the window centre.

    Shifting probe and object together by ``d`` (positions unchanged) shifts every exit wave by
    ``d`` and leaves the measured intensities unchanged, so a calibration may return a probe
    drifted by a pixel or two together with an equally drifted object. Centring the calibrated
    probe undoes that drift, so a later scan reconstructed with the calibration (its object
    started flat) lands its object where the positions put it.

    Args:
        probe: (M, H, W) complex.

    Returns:
        ``(centred_probe, d)``, the shift removed (pixels, (y, x)).
    """
    from scipy import ndimage

    probe = np.asarray(probe, np.complex64)
    _, h, w = probe.shape
    power = np.sum(np.abs(probe) ** 2, axis=0)
    yy, xx = np.mgrid[:h, :w]
    centroid = np.array([np.sum(yy * power), np.sum(xx * power)]) / max(power.sum(), 1e-30)
    offset = centroid - np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    centred = np.stack([np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(mode), -offset))
                        for mode in probe]).astype(np.complex64)
    return centred, offset


def rescale_focus_distance(scan: ScanData, focus_distance_m: float) -> ScanData:
    """The same cone-beam scan described with another focus-to-sample distance z1.

    Positions in metres are fixed; in pixels they scale with the magnification
    M = (z1 + z2) / z1, and so do the effective pixel dx_det / M and distance z2 / M.
    """
    from adptycho.geometry.grids import cone_beam_geometry

    if scan.geometry != NEARFIELD or None in (scan.focus_distance_m, scan.detector_distance_m,
                                              scan.detector_pixel_size_m):
        raise AdptychoError("rescale_focus_distance needs a cone-beam near-field scan "
                            "(focus, detector distance and detector pixel size)")
    old, _, _ = cone_beam_geometry(scan.focus_distance_m, scan.detector_distance_m,
                                   scan.detector_pixel_size_m)
    new, pixel, distance = cone_beam_geometry(focus_distance_m, scan.detector_distance_m,
                                              scan.detector_pixel_size_m)
    metadata = {**scan.metadata, "magnification": new}
    return dataclasses.replace(scan, positions_px=scan.positions_px * (new / old),
                               pixel_size_m=pixel, propagation_distance_m=distance,
                               focus_distance_m=float(focus_distance_m), metadata=metadata)


def with_distance(scan: ScanData, distance_m: float) -> ScanData:
    """The same near-field scan described with another distance.

    Cone beam (focus distance known): ``distance_m`` is the focus-to-sample distance z1 (see
    ``rescale_focus_distance``). Parallel beam: the propagation distance.
    """
    if scan.geometry != NEARFIELD:
        raise AdptychoError("with_distance needs a near-field scan")
    if _is_cone_beam(scan):
        return rescale_focus_distance(scan, distance_m)
    return dataclasses.replace(scan, propagation_distance_m=float(distance_m))


def _is_cone_beam(scan: ScanData) -> bool:
    return scan.geometry == NEARFIELD and None not in (
        scan.focus_distance_m, scan.detector_distance_m, scan.detector_pixel_size_m)


def search_distance(scan: ScanData, factors=None, epochs: int = 20, batch_size: int = 16,
                    loss: str = "amplitude", seed: int = 0, probe=None):
    """Profile search of the near-field distance: short object + probe fits on a grid.

    The distance searched is the cone-beam focus-to-sample distance z1 where the scan has one,
    else the propagation distance. Joint gradient descent on the distance alone barely moves it
    from a start a few per cent off: object and probe adapt to the wrong distance first (a
    defocused object and probe explain most of the data) and the valley towards the right one
    is shallow, while the final loss of a short reconstruction at each distance (the profile
    likelihood) has a clear minimum. The grid is ``start * factors`` (default 9 values from
    1/1.5 to 1.5 times the start, geometric); a parabola through the best point and its
    neighbours (in log distance) gives the estimate.

    Returns:
        ``(distance_best_m, table)`` with ``table`` a list of ``(distance_m, final_loss)``.
    """
    if scan.geometry != NEARFIELD:
        raise AdptychoError("the distance search is for near-field scans")
    if factors is None:
        factors = np.geomspace(1 / 1.5, 1.5, 9)
    start = scan.focus_distance_m if _is_cone_beam(scan) else scan.propagation_distance_m
    table = []
    for factor in factors:
        z = start * float(factor)
        result = reconstruct(with_distance(scan, z), engine="adam", epochs=epochs,
                             batch_size=batch_size,
                             refine=("object", "probe"), loss=loss, seed=seed, verbose=0,
                             probe=probe)
        table.append((z, float(result.loss_history[-1])))
    table.sort()
    z = np.log([t[0] for t in table])
    values = np.array([t[1] for t in table])
    best = int(np.argmin(values))
    if 0 < best < len(values) - 1:
        a, b, _ = np.polyfit(z[best - 1:best + 2], values[best - 1:best + 2], 2)
        estimate = -b / (2 * a) if a > 0 else z[best]
        estimate = float(np.clip(estimate, z[best - 1], z[best + 1]))
    else:
        estimate = float(z[best])
    return float(np.exp(estimate)), table


def search_focus_distance(scan: ScanData, factors=None, epochs: int = 20, batch_size: int = 16,
                          loss: str = "amplitude", seed: int = 0):
    """Cone-beam z1 profile search (``search_distance`` on a scan with a focus distance)."""
    if not _is_cone_beam(scan):
        raise AdptychoError("search_focus_distance needs a cone-beam scan (give the focus distance)")
    return search_distance(scan, factors, epochs, batch_size, loss, seed)


@config_keywords(CalibrationConfig)  # the signature lists the config fields
def calibrate(scan: ScanData, config: Optional[CalibrationConfig] = None, *, probe=None,
              probe_support=None, callbacks=None, **options) -> Calibration:
    """Staged joint refinement of probe, positions and distance on a bright scan.

    Schedule (epochs from 0): object from 0, probe from 1, positions from ``epochs // 4``,
    distance from ``epochs // 2``; each group decays its learning rate by 0.97 per epoch from its
    start. ``start_epochs`` / ``learning_rates`` override it. In near field the distance is first
    located by a profile search (``search_distance``), then refined by gradient descent with the
    rest.

    The options form a ``workflow_config.CalibrationConfig`` (``calibrate(scan, config)``,
    ``calibrate(scan, epochs=30)`` and ``calibrate(scan, config, seed=3)`` are the same call),
    saved verbatim as ``settings["config"]``. Options not listed below are those of
    ``reconstruct``; ``probe``, ``probe_support`` and ``callbacks`` are run-time arguments.

    Args:
        scan: the high-SNR calibration scan.
        refine_positions: refine the scan positions.
        refine_distance: refine the distance (default: in near field). In far field the
            sample-detector distance only sets the object pixel size lambda z / (N dx), i.e. a
            global scale of the positions in pixels; it needs ``scan.detector_distance_m`` and a
            scan whose positions came from translations in metres.
        position_model: ``offsets`` or ``affine`` (global scale/rotation/shear plus offsets).
        distance_search: near field: first locate the distance (z1 for cone beam, else the
            propagation distance) by a profile search (default: for cone-beam scans when the
            distance is refined).
        distance_search_epochs, distance_search_factors: epochs per grid point and the grid of
            factors of the starting distance (see ``search_distance``).
        focus_search, focus_search_epochs: older names of ``distance_search`` and
            ``distance_search_epochs``.
        probe_support: optional (H, W) mask multiplying the probe.
        probe_power: total probe power to hold the probe at (photons per exposure), or
            ``"auto"``: the largest total count of a pattern (a transmission of at most 1 cannot
            raise a pattern above the probe power).

    Returns:
        ``Calibration``.
    """
    config = CalibrationConfig.build(config, **options)  # TypeError: unknown, AdptychoError: bad
    c = config
    distance_search = c.focus_search if c.distance_search is None else c.distance_search
    search_epochs = (c.distance_search_epochs if c.focus_search_epochs is None
                     else c.focus_search_epochs)
    refine_distance, distance_search, probe_power = _checked_options(
        scan, c.refine_distance, distance_search, c.probe_power)
    search_table = None
    if distance_search:
        z, search_table = search_distance(scan, c.distance_search_factors, epochs=search_epochs,
                                          batch_size=c.batch_size, loss=c.loss, seed=c.seed,
                                          probe=probe)
        scan = with_distance(scan, z)
    refine = ["object", "probe"] + (["positions"] if c.refine_positions else []) + \
        (["distance"] if refine_distance else [])
    starts = {"object": 0, "probe": 1, "positions": max(1, c.epochs // 4),
              "distance": max(1, c.epochs // 2)}
    starts.update(c.start_epochs or {})
    result = reconstruct(scan, engine="adam", epochs=c.epochs, batch_size=c.batch_size,
                         refine=tuple(refine), loss=c.loss, probe=probe,
                         probe_modes=c.probe_modes, learning_rates=c.learning_rates,
                         start_epochs=starts, seed=c.seed, verbose=c.verbose,
                         checkpoint_dir=c.checkpoint_dir, position_model=c.position_model,
                         probe_support=probe_support, probe_power=probe_power,
                         callbacks=callbacks)
    settings = dict(result.settings)
    settings["reconstruct_config"] = settings.pop("config")
    settings.update({"calibration_refine": refine, "position_model": c.position_model,
                     "config": config.to_dict()})
    if search_table is not None:
        settings["distance_search"] = [[z, v] for z, v in search_table]
        if _is_cone_beam(scan):
            settings["focus_search"] = settings["distance_search"]
    return _calibration_of(result, scan, settings)


def _checked_options(scan: ScanData, refine_distance, distance_search, probe_power):
    """``(refine_distance, distance_search, probe_power)`` of ``calibrate`` resolved for
    ``scan`` (defaults, ``probe_power="auto"``); one-line errors for what cannot run."""
    if refine_distance is None:
        refine_distance = scan.geometry == NEARFIELD
    if refine_distance and scan.geometry != NEARFIELD and scan.detector_distance_m is None:
        raise AdptychoError("far-field distance calibration needs the scan's detector distance "
                            "(detector_distance_m)")
    if isinstance(probe_power, str):
        if probe_power != "auto":
            raise AdptychoError(f"probe_power must be a number or 'auto', got {probe_power!r}")
        probe_power = float(np.max(scan.pattern_counts()))
    if distance_search is None:
        # cone beam: z1 changes the magnification, a strong signal a profile search finds; for
        # parallel-beam near field the profile is nearly flat and gradient descent does better
        distance_search = bool(refine_distance and _is_cone_beam(scan))
    if distance_search and scan.geometry != NEARFIELD:
        raise AdptychoError("the distance search is for near-field scans; in far field the "
                            "distance is refined by gradient descent")
    return refine_distance, distance_search, probe_power


def _calibration_of(result, scan: ScanData, settings: dict) -> Calibration:
    """The ``Calibration`` of the reconstruction ``result`` of ``scan``: positions on the
    scan's frame (the object grid's origin removed), the probe centred (far field: its phase
    ramp removed first), the refined distances."""
    origin = np.asarray(result.object_origin_px, np.float64)
    distance = result.distance_m if result.distance_m is not None else scan.detector_distance_m
    probe = result.probe
    if scan.geometry != NEARFIELD:
        probe = remove_probe_phase_ramp(probe)
        settings["probe_ramp_removed"] = True
    probe, offset = centre_probe(probe)
    settings["probe_centring_shift_px"] = offset.tolist()
    return Calibration(
        probe=probe, positions_px=np.asarray(result.positions_px) - origin,
        nominal_positions_px=np.asarray(scan.positions_px, np.float64),
        affine=np.asarray(result.settings.get("affine", np.eye(2))), distance_m=distance,
        geometry=scan.geometry, wavelength_m=scan.wavelength_m, pixel_size_m=result.pixel_size_m,
        focus_distance_m=result.focus_distance_m or scan.focus_distance_m,
        mean_counts=scan.mean_counts(),
        loss_history=result.loss_history,
        residual_history=result.residual_history, settings=settings)


def apply_calibration(scan: ScanData, calibration: Calibration, tolerance_px: float = 0.5) -> ScanData:
    """A copy of ``scan`` with the calibrated probe, positions and distance.

    Positions: when ``scan`` has as many positions as the calibration and they agree with the
    calibration's nominal positions within ``tolerance_px`` (the same programmed scan), the
    calibrated positions are used; otherwise the calibration's affine map is applied to the
    scan's own positions about their centroid. The probe is rescaled by
    sqrt(mean counts of ``scan`` / mean counts of the calibration scan), so a lower dose keeps
    the calibrated probe shape with the new photon budget.
    """
    if calibration.geometry != scan.geometry:
        raise AdptychoError(f"calibration is {calibration.geometry} but the scan is {scan.geometry}")
    if (calibration.focus_distance_m is not None and scan.focus_distance_m is not None
            and scan.focus_distance_m != calibration.focus_distance_m):
        scan = rescale_focus_distance(scan, calibration.focus_distance_m)
    probe = np.asarray(calibration.probe)
    if probe.shape[-2:] != scan.detector_shape:
        raise AdptychoError(f"calibrated probe {probe.shape[-2:]} does not match the detector "
                            f"{scan.detector_shape}")
    nominal = np.asarray(calibration.nominal_positions_px)
    positions = np.asarray(scan.positions_px, np.float64)
    farfield_scale = 1.0
    if (scan.geometry != NEARFIELD and calibration.distance_m is not None
            and scan.detector_distance_m is not None):
        # far field: positions in pixels scale as z_scan / z_calibrated (pixel lambda z / N dx)
        farfield_scale = scan.detector_distance_m / calibration.distance_m
    if positions.shape == nominal.shape and np.max(np.abs(positions - nominal)) <= tolerance_px:
        positions = np.asarray(calibration.positions_px, np.float64)
    else:
        centroid = positions.mean(axis=0)
        positions = centroid + farfield_scale * (positions - centroid) @ np.asarray(calibration.affine).T
    if calibration.mean_counts:
        probe = probe * np.sqrt(max(scan.mean_counts(), 0.0) / calibration.mean_counts)
    changes = {"positions_px": positions, "probe": probe.astype(np.complex64),
               "metadata": {**scan.metadata, "calibrated": True}}
    if scan.geometry == NEARFIELD and calibration.distance_m is not None:
        changes["propagation_distance_m"] = calibration.distance_m
    elif farfield_scale != 1.0:
        changes["detector_distance_m"] = calibration.distance_m
        if scan.pixel_size_m is not None:
            changes["pixel_size_m"] = tuple(p / farfield_scale for p in scan.pixel_size_m)
    return dataclasses.replace(scan, **changes)

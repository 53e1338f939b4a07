"""The oversampling algorithm of Barutcu, Katsaggelos & Gursoy ("A Deep Generative Approach to
Oversampling in Ptychography", Sec. 2.5, Algorithm 1, Eqs. 15-16).

From a sparse measured scan (low or negative overlap) and a first reconstruction ``x_low``:

1. build a denser scan: every measured position R_m gets ``Y^2 - 1`` simulated neighbours at
   ``R_m + (k_y, k_x) s / Y`` (``k`` in ``-(Y // 2) .. Y - Y // 2 - 1``, ``s`` the measured
   step), so a raster of step ``s`` becomes a raster of step ``s / Y`` with ``N = Y^2 M``
   positions (minus those whose window would leave the object grid). The measured positions
   are kept exactly (they come first, in the scan's order); simulated ones are rounded to
   whole pixels;
2. simulate noise-free patterns ``d_n = |F(P_n x_low)|^2`` at the simulated positions (Eq. 15)
   with the same forward model as the reconstruction (``PtychoModel``);
3. keep the measured patterns at the measured positions (the mixed set ``d_mixed``);
4. run ePIE (Eq. 16) on the mixed set with per-pattern step ``alpha = 1`` for measured and
   ``alpha = 1 / w`` for simulated patterns, starting from an empty (all-ones) object as in
   Algorithm 1;
5. repeat 2-4 from the new object (``repeats`` times), optionally with a new ``w`` each time
   (``weight_schedule``; the paper reports better convergence when ``w`` is lowered).

Our one deviation: for ``w < 1`` the paper's ``alpha = 1 / w > 1`` leaves ePIE's stable step
range; we use ``alpha_measured = min(1, w)``, ``alpha_simulated = min(1, 1 / w)``, the same ratio
``w`` between measured and simulated steps (identical to the paper for ``w >= 1``). Then
``w -> 0`` reproduces the initial reconstruction (only simulated data count) and
``w -> infinity`` plain ePIE on the measured data (both limits stated in the paper).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError, GeometryError
from adptycho.io.scan_data import NEARFIELD, ScanData
from adptycho.config import config_keywords
from adptycho.engines import get_engine
from adptycho.model import NearFieldGeometry, PtychoModel
from adptycho.objects.pixels import PixelObject
from adptycho.workflow_config import OversamplingConfig

__all__ = ["OversamplingResult", "dense_positions", "mixed_dataset", "oversample",
           "oversampling_weights", "as_object_array", "scan_step_px"]


@dataclasses.dataclass
class OversamplingResult:
    """What ``oversample`` returns.

    Attributes:
        object: (Y, X) complex64 object after the last repeat.
        objects: (R, Y, X) complex64 object after each repeat.
        initial_object: (Y, X) complex64 object the first simulation started from.
        positions_px: (N, 2) float64 corners of the mixed scan on the object grid (measured first).
        measured: (N,) bool, True for measured patterns.
        weights: (R,) the ``w`` used in each repeat.
        residual_history: (R, epochs) per-epoch relative amplitude residual of the ePIE runs
            on the mixed data.
        measured_residual: (R,) relative amplitude residual ``sum (sqrt I - sqrt X)^2 / sum I``
            of the MEASURED patterns after each repeat (fidelity to the data).
        error_history: (R,) ``error_fn(object)`` after each repeat, if ``error_fn`` was given.
        settings: the options used (JSON-serialisable).
    """

    object: np.ndarray
    objects: np.ndarray
    initial_object: np.ndarray
    positions_px: np.ndarray
    measured: np.ndarray
    weights: np.ndarray
    residual_history: np.ndarray
    measured_residual: np.ndarray
    error_history: np.ndarray
    settings: dict


def as_object_array(initial_object) -> np.ndarray:
    """(Y, X) complex64 array from an array, an ``ObjectRepresentation`` (pixels, latent,
    generator: anything with ``transmission()``), a ``PtychoModel`` or a ``ReconstructionResult``."""
    if hasattr(initial_object, "get_object"):
        value = initial_object.get_object()
    elif hasattr(initial_object, "transmission"):
        value = initial_object.transmission().numpy()
    elif hasattr(initial_object, "object") and not isinstance(initial_object, np.ndarray):
        value = initial_object.object
    else:
        value = initial_object
    value = np.asarray(value)
    if value.ndim != 2:
        raise AdptychoError(f"the initial object must be 2-D (Y, X), got shape {value.shape}")
    if not np.isfinite(value).all():
        raise AdptychoError("the initial object contains non-finite values")
    return value.astype(np.complex64)


def scan_step_px(positions_px) -> float:
    """Median nearest-neighbour distance of a scan in pixels (the step of a raster)."""
    positions = np.asarray(positions_px, np.float64)
    if positions.shape[0] < 2:
        raise GeometryError("cannot estimate the scan step from fewer than 2 positions; give step_px")
    distance = np.sqrt(np.sum((positions[:, None] - positions[None]) ** 2, axis=-1))
    np.fill_diagonal(distance, np.inf)
    return float(np.median(distance.min(axis=1)))


def dense_positions(corners_px, factor: int, step_px, object_shape, probe_shape):
    """The oversampled scan: measured corners first (exact), then the simulated ones.

    Args:
        corners_px: (M, 2) measured window corners (y, x) on the object grid.
        factor: Y >= 1, the scan density factor per axis.
        step_px: the measured step (scalar or (sy, sx)) in pixels.
        object_shape, probe_shape: (Y, X) and (H, W); simulated windows must fit inside.

    Returns:
        ``(positions, measured)``: (N, 2) float64 corners and (N,) bool; ``positions[:M]`` are
        ``corners_px`` unchanged. Simulated positions are whole pixels, unique, and differ from
        every measured corner by at least half a pixel.
    """
    corners = np.asarray(corners_px, np.float64)
    factor = int(factor)
    if factor < 1:
        raise AdptychoError(f"the oversampling factor Y must be >= 1, got {factor}")
    step = np.broadcast_to(np.asarray(step_px, np.float64), (2,))
    if not np.all(np.isfinite(step)) or np.any(step <= 0):
        raise GeometryError(f"step_px must be positive, got {step_px}")
    ks = np.arange(-(factor // 2), factor - factor // 2)
    offsets = np.array([(ky, kx) for ky in ks for kx in ks if (ky, kx) != (0, 0)], np.float64)
    offsets = offsets.reshape(-1, 2) * step / factor
    simulated = np.round((corners[:, None, :] + offsets[None]).reshape(-1, 2))
    limit = np.array([object_shape[0] - probe_shape[0], object_shape[1] - probe_shape[1]])
    inside = np.all((simulated >= 0) & (simulated <= limit), axis=1)
    simulated = np.unique(simulated[inside], axis=0)
    if simulated.size and corners.size:
        nearest = np.min(np.max(np.abs(simulated[:, None] - corners[None]), axis=-1), axis=1)
        simulated = simulated[nearest >= 0.5]
    positions = np.concatenate([corners, simulated.reshape(-1, 2)], axis=0)
    measured = np.zeros(len(positions), bool)
    measured[:len(corners)] = True
    return positions, measured


def oversampling_weights(measured, weight: float) -> np.ndarray:
    """(N,) float32 ePIE step per pattern: ``min(1, w)`` measured, ``min(1, 1/w)`` simulated."""
    if not (np.isfinite(weight) and weight > 0):
        raise AdptychoError(f"the weight w must be positive and finite, got {weight}")
    measured = np.asarray(measured, bool)
    return np.where(measured, min(1.0, weight), min(1.0, 1.0 / weight)).astype(np.float32)


def _near_field(scan: ScanData) -> Optional[NearFieldGeometry]:
    if scan.geometry != NEARFIELD:
        return None
    return NearFieldGeometry(scan.wavelength_m, scan.pixel_size_m, scan.propagation_distance_m)


def mixed_dataset(scan: ScanData, object_, probe, factor: int = 3, step_px=None,
                  object_origin_px=(0.0, 0.0), batch_size: int = 64):
    """Simulate the dense scan from ``object_`` and put the measured patterns in it (Eq. 15).

    Args:
        scan: the measured scan (M patterns).
        object_: (Y, X) complex object to simulate from.
        probe: (H, W) or (K, H, W) complex probe in photon units (as the scan's counts).
        factor: Y, scan density factor per axis.
        step_px: measured step (default: ``scan_step_px``).
        object_origin_px: offset from ``scan.positions_px`` to object-grid corners.

    Returns:
        ``(patterns, positions, measured)``: (N, H, W) float32, (N, 2) float64 corners, (N,)
        bool. ``patterns[:M]`` and ``positions[:M]`` are the measured ones, unchanged.
    """
    object_ = as_object_array(object_)
    probe = np.asarray(probe, np.complex64)
    probe = probe[None] if probe.ndim == 2 else probe
    if probe.shape[1:] != scan.detector_shape:
        raise GeometryError(
            f"probe shape {probe.shape[1:]} does not match the detector {scan.detector_shape}")
    corners = np.asarray(scan.positions_px, np.float64) + np.asarray(object_origin_px, np.float64)
    step = scan_step_px(corners) if step_px is None else step_px
    positions, measured = dense_positions(corners, factor, step, object_.shape, scan.detector_shape)
    model = PtychoModel(PixelObject(object_.shape, initial=object_), probe, positions,
                        near_field=_near_field(scan), mask=scan.mask, subpixel=True)
    return _simulate(model, scan, batch_size), positions, measured


def _simulate(model, scan: ScanData, batch_size: int = 64) -> np.ndarray:
    """(N, H, W) float32: the scan's M measured patterns first, then the model's noise-free
    predictions at its positions M .. N-1 (Eq. 15)."""
    n = model.num_patterns
    patterns = np.empty((n,) + scan.detector_shape, np.float32)
    m = scan.num_patterns
    patterns[:m] = scan.patterns
    simulated = np.arange(m, n)
    for start in range(0, len(simulated), batch_size):
        idx = simulated[start:start + batch_size]
        patterns[idx] = model(tf.constant(idx, tf.int32)).numpy()
    return patterns


def _measured_residual(model, scan: ScanData, batch_size: int = 64) -> float:
    """Relative amplitude residual ``sum (sqrt X - sqrt I)^2 / sum X`` of the measured patterns
    through the model (Keras ``evaluate`` of a model on the measured positions)."""
    logs = model.evaluate(np.arange(scan.num_patterns), np.asarray(scan.patterns, np.float32),
                          batch_size=batch_size, verbose=0, return_dict=True)
    return float(logs["residual"])


def _repeat_weights(weight, weight_schedule, repeats: int) -> list:
    """The ``w`` of each repeat (validated): ``weight``, or the schedule's values."""
    if weight_schedule is None:
        weights = [float(weight)] * repeats
    elif callable(weight_schedule):
        weights = [float(weight_schedule(r)) for r in range(repeats)]
    else:
        weights = [float(w) for w in weight_schedule]
        if len(weights) != repeats:
            raise AdptychoError(f"weight_schedule has {len(weights)} values for {repeats} repeats")
    for w in weights:
        oversampling_weights([True], w)  # validates
    return weights


def _probe_of(scan: ScanData, initial_object, probe) -> np.ndarray:
    """(K, H, W) complex64 probe: given, the initial reconstruction's, or the scan's."""
    if probe is None:
        if hasattr(initial_object, "get_probe"):
            probe = initial_object.get_probe()
        elif getattr(initial_object, "probe", None) is not None and hasattr(initial_object, "object"):
            probe = initial_object.probe
        elif scan.probe is not None:
            probe = scan.probe
        else:
            raise AdptychoError("oversampling needs the probe: pass probe=, a reconstruction "
                                "with a probe, or a scan that stores one")
    probe = np.asarray(probe, np.complex64)
    return probe[None] if probe.ndim == 2 else probe


def _repeat(dense, data_model, scan: ScanData, current, start, engine: str, epochs: int,
            sample_weight, pie_options: dict, callbacks=None, first_epoch: int = 0):
    """One round of Algorithm 1: simulate the dense scan from ``current`` (Eq. 15), run the PIE
    engine from ``start`` on the mixed data (Eq. 16), hand the result (and a refined probe) to
    ``data_model``. Returns ``(object, history)``."""
    dense.assign_object(current)
    patterns = _simulate(dense, scan)
    dense.assign_object(start)
    history = get_engine(engine)(**pie_options).fit(dense, patterns, epochs,
                                                    sample_weight=sample_weight,
                                                    callbacks=callbacks, first_epoch=first_epoch)
    current = dense.get_object()
    data_model.assign_object(current)
    if "probe" in pie_options["refine"]:
        data_model.assign_probe(dense.get_probe())
    return current, history.history


@config_keywords(OversamplingConfig)  # the signature lists the config fields
def oversample(scan: ScanData, initial_object, probe=None,
               config: Optional[OversamplingConfig] = None, *,
               error_fn: Optional[Callable[[np.ndarray], float]] = None, callbacks=None,
               **options) -> OversamplingResult:
    """Oversampling reconstruction (Barutcu et al., Algorithm 1, repeated).

    The options form a ``workflow_config.OversamplingConfig`` (``oversample(scan, initial,
    probe, config)`` or keywords, as ``reconstruct``), saved verbatim as
    ``settings["config"]``; a weight schedule given as a function is a run-time argument.

    Args:
        scan: the measured (sparse) scan.
        initial_object: the first reconstruction: a (Y, X) array, an ``ObjectRepresentation``
            (pixels, latent, generator), a ``PtychoModel`` or a ``ReconstructionResult``. Its
            grid is the object grid.
        probe: (H, W) or (K, H, W) probe in photon units; default: the result's probe (for a
            ``ReconstructionResult`` / ``PtychoModel``), else ``scan.probe``.
        config: an ``OversamplingConfig`` (default: all defaults); the options are its fields
            (documented there).
        weight_schedule: a sequence of ``repeats`` weights (a config field), or
            ``f(repeat) -> w``; overrides ``weight``.
        error_fn: optional ``f(object) -> float`` (e.g. MSE against a ground truth), recorded
            after each repeat.
        callbacks: Keras callbacks (e.g. ``training.tensorboard.TensorBoardLogger``); they get
            ``on_epoch_end`` after every ePIE epoch of every repeat, numbered across repeats,
            with the dense model (the oversampled object) as their model.

    Returns:
        ``OversamplingResult``.
    """
    schedule_fn = options.pop("weight_schedule") if callable(
        options.get("weight_schedule")) else None
    config = OversamplingConfig.build(config, **options)  # TypeError: unknown, AdptychoError: bad
    c = config
    weights = _repeat_weights(c.weight, schedule_fn or c.weight_schedule, c.repeats)
    probe = _probe_of(scan, initial_object, probe)
    origin = c.object_origin_px
    if origin is None:
        origin = getattr(initial_object, "object_origin_px", (0.0, 0.0))
    current = as_object_array(initial_object)
    initial = current.copy()
    corners = np.asarray(scan.positions_px, np.float64) + np.asarray(origin, np.float64)
    step = scan_step_px(corners) if c.step_px is None else c.step_px
    dense, data_model, positions, measured = _models(scan, current, probe, corners, c.factor,
                                                     step)
    pie_options = dict(batch_size=c.batch_size, object_step=c.object_step,
                       regularisation=c.regularisation,
                       fourier_relaxation=c.fourier_relaxation,
                       refine=("object", "probe") if c.refine_probe else ("object",),
                       relaxation_weight=measured.astype(np.float32))
    objects, residuals, measured_res, errors = _run_repeats(
        dense, data_model, scan, current, weights, measured, pie_options, engine=c.engine,
        epochs=c.epochs, warm_start=c.warm_start, seed=c.seed, error_fn=error_fn,
        callbacks=callbacks, verbose=c.verbose)
    settings = {"factor": c.factor, "weights": weights, "repeats": c.repeats,
                "epochs": c.epochs, "engine": c.engine, "batch_size": c.batch_size,
                "object_step": c.object_step, "regularisation": c.regularisation,
                "step_px": np.asarray(step, np.float64).tolist(), "warm_start": c.warm_start,
                "refine_probe": c.refine_probe, "fourier_relaxation": c.fourier_relaxation,
                "seed": c.seed, "num_measured": int(scan.num_patterns),
                "num_patterns": int(len(positions)), "config": config.to_dict()}
    return OversamplingResult(
        object=objects[-1], objects=np.stack(objects), initial_object=initial,
        positions_px=positions, measured=measured, weights=np.asarray(weights, np.float64),
        residual_history=np.asarray(residuals, np.float64),
        measured_residual=np.asarray(measured_res, np.float64),
        error_history=np.asarray(errors, np.float64), settings=settings)


def _run_repeats(dense, data_model, scan: ScanData, current, weights, measured, pie_options,
                 *, engine, epochs, warm_start, seed, error_fn, callbacks, verbose):
    """The repeats of Algorithm 1 (one per weight in ``weights``), each from the object of
    the one before. Returns ``(objects, residual histories, measured residuals, errors)``."""
    objects, residuals, measured_res, errors = [], [], [], []
    for r, w in enumerate(weights):
        start = current if warm_start else np.ones_like(current)
        current, history = _repeat(dense, data_model, scan, current, start, engine, epochs,
                                   oversampling_weights(measured, w),
                                   dict(pie_options, seed=seed + r), callbacks=callbacks,
                                   first_epoch=r * epochs)
        objects.append(current)
        residuals.append(history["residual"])
        measured_res.append(_measured_residual(data_model, scan))
        if error_fn is not None:
            errors.append(float(error_fn(current)))
        if verbose:
            extra = f", error {errors[-1]:.5g}" if errors else ""
            print(f"oversample repeat {r + 1}/{len(weights)}: w = {w:g}, "
                  f"{dense.num_patterns} patterns ({int(measured.sum())} measured), measured "
                  f"residual {measured_res[-1]:.5g}{extra}", flush=True)
    return objects, residuals, measured_res, errors


def _models(scan: ScanData, current, probe, corners, factor: int, step):
    """The two models every repeat reuses: ``dense`` on the dense scan (simulation and the
    engine) and ``data_model`` on the measured positions (fidelity to the data, compiled for
    ``evaluate``); the (N, 2) dense positions and their (N,) bool flags ``measured``."""
    positions, measured = dense_positions(corners, factor, step, current.shape,
                                          scan.detector_shape)
    near = _near_field(scan)
    dense = PtychoModel(PixelObject(current.shape, initial=current), probe, positions,
                        near_field=near, mask=scan.mask, subpixel=True)
    data_model = PtychoModel(PixelObject(current.shape, initial=current), probe, corners,
                             near_field=near, mask=scan.mask, subpixel=True)
    data_model.compile(refine=("object",), jit_compile=False)
    return dense, data_model, positions, measured

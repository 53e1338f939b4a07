"""One-call reconstruction: ``reconstruct(scan, ...)`` -> ``ReconstructionResult``.

``reconstruct`` is a pipeline of named steps: the schedule (``training.planning``), the initial
probe (searched from the data when none is given), the model (``build_model``), its compilation
and the fit plan, the stages through the engine registry (``_run_stages``), and the result with
its settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import keras
import numpy as np

from adptycho.config import ReconstructConfig, split_runtime_options, with_config_keywords
from adptycho.runtime import restores_global_rngs
from adptycho.errors import GeometryError
from adptycho.geometry.grids import object_grid
from adptycho.initial import add_probe_modes, probe_guess, scale_probe_to_counts
from adptycho.io.results import ReconstructionResult
from adptycho.io.scan_data import NEARFIELD, ScanData
from adptycho.model import DEFAULT_LEARNING_RATES, NearFieldGeometry, PtychoModel
from adptycho.nn.irmae import SHIPPED_MODELS
from adptycho.nn.stylegan2 import SHIPPED_STYLEGAN2
from adptycho.objects import object_representation
from adptycho.training.data import split_validation, steps_per_execution_for
from adptycho.coarse_positions import coarse_stage
from adptycho.engines import FitPlan, available_engines, get_engine
from adptycho.training.planning import (AUTO_PLATEAU, Schedule, auto_schedule,  # noqa: F401
                                        plan_schedule)
from adptycho.training.schedule import PlateauSchedule, Stage
from adptycho.training.fingerprint import fit_fingerprint

__all__ = ["reconstruct", "build_model", "auto_schedule", "ENGINES", "OBJECTS"]

ENGINES = available_engines()  # the registry: adptycho.engines.ENGINES
OBJECTS = ("pixels",) + SHIPPED_MODELS  # or a directory with IRMAE weights (LatentObject)
OBJECTS += SHIPPED_STYLEGAN2  # StyleGAN2 generator objects (GeneratorObject; PtychoGAN)


def _near_field_geometry(scan: ScanData) -> Optional[NearFieldGeometry]:
    """The scan's ``NearFieldGeometry`` (cone beam when z1, z2 and a square detector pixel are
    known), or None in far field."""
    if scan.geometry != NEARFIELD:
        return None
    cone = scan.focus_distance_m is not None and scan.detector_distance_m is not None \
        and scan.detector_pixel_size_m is not None \
        and abs(scan.detector_pixel_size_m[0] - scan.detector_pixel_size_m[1]) < 1e-15
    return NearFieldGeometry(
        scan.wavelength_m, scan.pixel_size_m, scan.propagation_distance_m,
        focus_distance_m=scan.focus_distance_m if cone else None,
        detector_distance_m=scan.detector_distance_m if cone else None,
        detector_pixel_size_m=scan.detector_pixel_size_m[0] if cone else None)


def build_model(scan: ScanData, *, probe=None, probe_modes: int = 1, loss: str = "amplitude",
                readout_noise=1.0, object_shape=None, padding_px: int = 8,
                parametrisation: str = "complex", initial_object=None, subpixel="auto",
                normalise_probe: Optional[bool] = None, position_model: str = "offsets",
                probe_support=None, probe_power: Optional[float] = None,
                object: str = "pixels", latent_options: Optional[dict] = None,
                tv_weight: float = 0.0):
    """Build a ``PtychoModel`` (pixel or latent object) and its object grid for ``scan``.

    Args:
        scan: the measured data.
        probe: (H, W) or (M, H, W) initial probe. Default: the probe stored with the scan, else a
            guess from the mean pattern (``initial.probe_guess``).
        probe_modes: number of incoherent probe modes.
        loss, readout_noise: noise model (see ``adptycho.losses``).
        object_shape: (Y, X) object grid; default: just large enough for all windows plus
            ``padding_px``.
        parametrisation: ``complex``, ``amplitude-phase``, ``amplitude`` or ``phase``.
        initial_object: optional (Y, X) complex starting object.
        normalise_probe: rescale the probe to the mean counts (default: yes for stored or guessed
            probes, no for a probe passed here).
        probe_support, probe_power: probe constraints (see ``PtychoModel``): an (H, W) mask
            that multiplies the probe, and a fixed total probe power in photons per exposure.
        object: ``pixels``, a shipped IRMAE (``irmae-mnist``, ``irmae-mnist-3``) or a directory
            with IRMAE weights: a ``LatentObject`` covering the object grid.
        latent_options: keyword arguments of ``LatentObject`` (``mode``, ``region_px``,
            ``background``, ``train_decoder``, ``initial_latent``, ...).
        tv_weight: total-variation prior of a pixel object (``PixelObject``; 0: none).

    Returns:
        ``(model, grid)``.
    """
    if probe is None:
        probe = scan.probe if scan.probe is not None else probe_guess(scan, probe_modes)
        normalise_probe = True if normalise_probe is None else normalise_probe
    probe = np.asarray(probe, np.complex64)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3 or probe.shape[1:] != scan.detector_shape:
        raise GeometryError(
            f"probe shape {probe.shape[-2:]} does not match the detector {scan.detector_shape}")
    probe = add_probe_modes(probe, probe_modes)
    if normalise_probe:
        probe = scale_probe_to_counts(probe, scan)
    grid = object_grid(scan.positions_px, scan.detector_shape, padding_px, object_shape)
    if initial_object is not None and np.shape(initial_object) != tuple(grid.shape):
        raise GeometryError(
            f"initial object shape {np.shape(initial_object)} does not match the grid {grid.shape}")
    representation = object_representation(object, grid.shape, parametrisation,
                                           initial_object, latent_options, tv_weight)
    model = PtychoModel(representation, probe,
                        grid.corners(scan.positions_px), near_field=_near_field_geometry(scan), mask=scan.mask,
                        loss=loss, readout_noise=readout_noise, subpixel=subpixel,
                        position_model=position_model,
                        probe_support=probe_support, probe_power=probe_power,
                        farfield_distance_m=(scan.detector_distance_m
                                             if scan.geometry != NEARFIELD else None))
    return model, grid


@restores_global_rngs
@with_config_keywords  # the signature lists the config fields (the call takes **options)
def reconstruct(scan: ScanData, config: Optional[ReconstructConfig] = None, *, probe=None,
                initial_object=None, probe_support=None, callbacks=None,
                **options) -> ReconstructionResult:
    """Reconstruct object (and probe, positions, distance) from a scan.

    The default (``engine="auto"``) is the schedule described in
    ``training.planning.auto_schedule``: for a pixel object, a probe found from the data when
    none is given (far field: ``adptycho.probe_search``), sequential ePIE epochs (object and
    probe), then Adam on every refined group with the noise model until the loss reaches a
    plateau (``training.schedule.PlateauSchedule``); the result's ``settings["stop_reason"]``
    says why it stopped. ``engine="epie:30,adam:200"`` runs those stages in order on the same
    model (one history, ``extra_histories["stage_history"]`` numbers the stage of each epoch).

    The options form a ``ReconstructConfig`` (``adptycho.config``: every option with its
    default, meaning and validation): ``reconstruct(scan, config)``,
    ``reconstruct(scan, epochs=20)`` (keywords build the config from the defaults) and
    ``reconstruct(scan, config, seed=3)`` (keywords override its fields) are the same call; an
    unknown keyword is a ``TypeError``, a bad value an ``AdptychoError``. The config is saved
    verbatim as ``settings["config"]`` next to the resolved values (``settings["engine"]`` is
    the schedule that ran, ...). Streamed scans (``load_cxi(..., stream=True)``) are read in
    prefetched batches by the Adam engine (PIE engines and L-BFGS load them).

    Args:
        scan: ``ScanData``.
        config: a ``ReconstructConfig`` (default: all defaults).
        probe: (H, W) or (M, H, W) initial probe (see ``build_model``).
        initial_object: optional (Y, X) complex starting object.
        probe_support: optional (H, W) mask that multiplies the probe (``PtychoModel``).
        callbacks: extra Keras callbacks (early stopping, checkpoints, ...).
        **options: ``ReconstructConfig`` fields; also a per-pixel ``readout_noise`` map and a
            ``tf.distribute.Strategy`` passed as ``strategy``.

    Returns:
        ``ReconstructionResult``.
    """
    options, readout_map, strategy_object = split_runtime_options(options)
    config = ReconstructConfig.build(config, **options)  # TypeError: unknown, AdptychoError: bad
    readout_noise = config.readout_noise if readout_map is None else readout_map
    strategy = config.strategy if strategy_object is None else strategy_object
    # options only the adam engine has; a streamed scan is never loaded whole (PIE loads it)
    adam_only = (strategy not in (None, "none") or config.validation_fraction > 0
                 or config.early_stopping_patience is not None or scan.streamed)
    schedule = plan_schedule(scan, config, probe, adam_only)
    from adptycho.training.distribute import make_strategy

    strategy = make_strategy(strategy)
    keras.utils.set_random_seed(config.seed)
    model_options = _model_options(config, readout_noise, initial_object, probe_support)
    coarse = coarse_stage(scan, probe, config, schedule, _coarse_fit(config))
    # the probe search sees the positions the coarse stage found
    search_scan = scan if coarse is None else dataclasses.replace(
        scan, positions_px=coarse.positions_px)
    probe, search_settings = _initial_probe(search_scan, probe, model_options, schedule, config)
    with _scope(strategy):
        model, grid = build_model(scan, probe=probe, **model_options)
        if coarse is not None:
            model.position_corrections.assign(coarse.corrections_px.astype(np.float32))
    plan = _compile(model, scan, config, schedule, strategy, grid, model_options)
    logs, stage_index, stop_reason = _run_stages(model, scan, schedule, plan, config, callbacks)
    settings = _settings(config, schedule, plan, scan, model, model_options, len(stage_index))
    settings.update(search_settings)
    settings.update({} if coarse is None else coarse.attributes())
    if stop_reason:
        settings["stop_reason"] = stop_reason
    return _result(model, scan, grid, logs, stage_index, schedule, plan, settings)


def _scope(strategy):
    """The distribution strategy's scope, or a null context without one."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _model_options(config: ReconstructConfig, readout_noise, initial_object,
                   probe_support) -> dict:
    """The ``build_model`` keywords of a reconstruction (everything but the probe)."""
    c = config
    return dict(probe_modes=c.probe_modes, loss=c.loss, readout_noise=readout_noise,
                object_shape=c.object_shape, padding_px=c.padding_px,
                parametrisation=c.parametrisation, initial_object=initial_object,
                subpixel=c.subpixel, position_model=c.position_model, object=c.object,
                probe_support=probe_support, probe_power=c.probe_power,
                latent_options=c.latent_options, tv_weight=c.tv_weight)


def _coarse_fit(config: ReconstructConfig):
    """``fit(small, small_probe, epochs)`` of the coarse position stage: sequential ePIE on
    object, probe and positions of the coarse scan, from ``small_probe`` or from the probe
    searched on the coarse patterns (no orientation check there: the full fit makes it)."""
    from adptycho.probe_search import search_probe

    def fit(small, small_probe, epochs):
        if small_probe is None:
            small_probe = search_probe(
                small, lambda guess: build_model(small, probe=guess,
                                                 probe_modes=config.probe_modes)[0],
                modes=config.probe_modes, seed=config.seed).probe
        return reconstruct(small, probe=small_probe, engine=f"epie:{epochs}",
                           refine=("object", "probe", "positions"),
                           probe_modes=config.probe_modes, seed=config.seed, verbose=0)
    return fit


def _initial_probe(scan: ScanData, probe, model_options: dict, schedule: Schedule,
                   config: ReconstructConfig):
    """The probe the model starts from: ``probe`` (None: ``build_model``'s default), or, when
    the schedule searches it, the probe found from the data (``probe_search``), checked for
    the scan's orientation. Returns ``(probe, settings of the search)``."""
    if not schedule.search_probe:
        return probe, {}
    from adptycho.probe_search import search_probe

    result = search_probe(
        scan, lambda guess: build_model(scan, probe=guess, **model_options)[0],
        modes=config.probe_modes, seed=config.seed)
    if config.verbose:
        print(f"adptycho: {result.summary()}", flush=True)
    orientation = _orientation_warning(scan, model_options, result.probe, config.verbose)
    return result.probe, {**result.attributes(), "orientation_check": orientation}


def _compile(model, scan: ScanData, config: ReconstructConfig, schedule: Schedule, strategy,
             grid, model_options: dict) -> FitPlan:
    """Compile ``model`` for the Adam stage (groups, step sizes, start epochs) and return the
    ``FitPlan`` every stage's engine is built from (batches, validation split, checkpoint
    fingerprint)."""
    c = config
    adam_batch = 32 if c.batch_size is None else c.batch_size
    training, validation = split_validation(scan.num_patterns, c.validation_fraction, c.seed)
    batch = min(adam_batch, len(training))
    steps = int(np.ceil(len(training) / batch))
    jit_compile = c.jit_compile
    if jit_compile == "auto" and strategy is not None:
        jit_compile = False  # all-reduce inside the step: no XLA under tf.distribute
    with _scope(strategy):
        # One compiled call per epoch (up to 64 steps) removes the per-step Python overhead; the
        # count divides the epoch so a call never spans two epochs.
        model.compile(refine=c.refine, learning_rates=schedule.learning_rates,
                      start_epochs=schedule.start_epochs, decay_rate=schedule.decay_rate,
                      jit_compile=jit_compile,
                      steps_per_execution=(steps_per_execution_for(steps) if strategy is None
                                           else 1))
    plan = FitPlan(refine=tuple(c.refine), start_epochs=schedule.start_epochs,
                   user_start_epochs=c.start_epochs, batch_size=c.batch_size,
                   adam_batch_size=batch, seed=c.seed, training=training, validation=validation,
                   steps=steps, after_pie=schedule.after_pie, adam_stage=schedule.adam_stage,
                   pie_options=c.pie_options, strategy=strategy,
                   checkpoint_dir=c.checkpoint_dir,
                   early_stopping_patience=c.early_stopping_patience)
    if c.checkpoint_dir is not None:
        plan.fingerprint = _fingerprint(model, scan, config, schedule, plan, grid,
                                        model_options, jit_compile)
    return plan


def _fingerprint(model, scan: ScanData, config: ReconstructConfig, schedule: Schedule,
                 plan: FitPlan, grid, model_options: dict, jit_compile) -> dict:
    """The checkpoint fingerprint: keyed on the model's state before any stage (a resumed fit
    redoes the deterministic probe search and PIE stages, then continues the adam stage from
    its checkpoint) and on every option that changes the fit."""
    c = config
    return fit_fingerprint(scan, model, {
        "refine": list(c.refine), "loss": c.loss, "seed": c.seed,
        "batch_size": plan.adam_batch_size, "object": str(c.object),
        "parametrisation": c.parametrisation, "probe_modes": c.probe_modes,
        "tv_weight": c.tv_weight, "validation": plan.validation, "position_model": c.position_model,
        "decay_rate": schedule.decay_rate, "start_epochs": schedule.start_epochs,
        "learning_rates": schedule.learning_rates or {}, "grid": grid,
        "readout_noise": model_options["readout_noise"], "probe_power": c.probe_power,
        "probe_support": model_options["probe_support"], "subpixel": c.subpixel,
        "jit_compile": jit_compile, "latent_options": c.latent_options,
        "early_stopping_patience": c.early_stopping_patience,
        # the adam stage's epochs may grow: a finished fit continues for more epochs
        "schedule": schedule.fingerprint_schedule(),
        "pie_options": c.pie_options or {},
        "plateau": dict(AUTO_PLATEAU) if schedule.plateau else None})


def _settings(config: ReconstructConfig, schedule: Schedule, plan: FitPlan, scan: ScanData,
              model, model_options: dict, epochs: int) -> dict:
    """The result's ``settings``: the resolved values of the fit, and the config verbatim."""
    from adptycho.training.distribute import is_chief

    c, strategy = config, plan.strategy
    readout_noise = model_options["readout_noise"]
    settings = {
        "engine": schedule.name, "object": c.object, "parametrisation": c.parametrisation,
        "tv_weight": c.tv_weight, "epochs": epochs,
        "batch_size": plan.adam_batch_size if schedule.adam_stage else (c.batch_size or 1),
        "refine": list(c.refine), "loss": c.loss,
        "learning_rates": {**DEFAULT_LEARNING_RATES, **(schedule.learning_rates or {})},
        "start_epochs": schedule.start_epochs, "decay_rate": schedule.decay_rate,
        "probe_modes": c.probe_modes,
        "readout_noise": (np.asarray(readout_noise).tolist() if np.ndim(readout_noise) == 0
                          else "per-pixel"),
        "seed": c.seed, "padding_px": c.padding_px, "geometry": scan.geometry,
        "num_patterns": scan.num_patterns, "detector_shape": list(scan.detector_shape),
        "position_model": c.position_model, "affine": model.affine_matrix().tolist(),
        "optimizer": c.optimizer,
        "probe_support": model_options["probe_support"] is not None,
        "probe_power": c.probe_power,
        "validation_fraction": c.validation_fraction,
        "validation_patterns": len(plan.validation),
        "strategy": None if strategy is None else type(strategy).__name__,
        "replicas": 1 if strategy is None else int(strategy.num_replicas_in_sync),
        "chief": is_chief(strategy),
    }
    if schedule.uses_pie:
        settings["pie_options"] = dict(c.pie_options or {})
    settings["adaptive"] = bool(schedule.adaptive)
    settings["config"] = config.to_dict()  # the options as given: ReconstructConfig.from_dict
    if c.object != "pixels":
        settings["latent_options"] = {k: v for k, v in (c.latent_options or {}).items()
                                      if k != "initial_latent"}
    return settings


def _result(model, scan: ScanData, grid, logs: dict, stage_index: list, schedule: Schedule,
            plan: FitPlan, settings: dict) -> ReconstructionResult:
    """The ``ReconstructionResult`` of the fitted ``model``: object, probe, positions, the
    refined distances and pixel size, the histories of all stages."""
    extra = {f"{k.replace('val_', 'validation_')}_history": np.asarray(v)
             for k, v in logs.items() if k not in ("loss", "residual")}
    if len(plan.validation):
        extra["validation_indices"] = plan.validation
    if len(schedule.stages) > 1:
        extra["stage_history"] = np.asarray(stage_index, np.int32)
    if settings["object"] != "pixels":
        extra["latent"] = model.object_representation.latent_numpy()
    return ReconstructionResult(
        object=model.get_object(), probe=model.get_probe(), positions_px=model.get_positions(),
        nominal_positions_px=grid.corners(scan.positions_px),
        loss_history=np.asarray(logs.get("loss", []), np.float64),
        residual_history=np.asarray(logs.get("residual", []), np.float64),
        distance_m=model.get_distance(), focus_distance_m=model.get_focus_distance(),
        pixel_size_m=_refined_pixel_size(scan, model), geometry=scan.geometry,
        object_origin_px=grid.origin_px, settings=settings, extra_histories=extra)


def _run_stages(model, scan: ScanData, schedule: Schedule, plan: FitPlan,
                config: ReconstructConfig, callbacks):
    """Run the schedule's stages in order on ``model`` through the engine registry.

    Returns ``(logs, stage_index, stop_reason)``: the merged per-epoch logs of all stages, the
    stage number of every epoch, and why the adam stage stopped (or None)."""
    logs = {}
    stage_index = []
    stop_reason = None
    for number, stage in enumerate(schedule.stages):
        # the lbfgs optimizer replaces the adam stage
        name = "lbfgs" if stage.engine == "adam" and config.optimizer == "lbfgs" else stage.engine
        stage_callbacks = list(callbacks or [])
        plateau = None
        if name == "adam":
            stage = Stage("adam", schedule.adam_epochs)
            if schedule.plateau:
                plateau = PlateauSchedule(monitor="val_loss" if len(plan.validation) else "loss",
                                          **AUTO_PLATEAU)
                stage_callbacks.append(plateau)
        engine = get_engine(name).from_plan(plan, stage)
        stage_logs = engine.fit(model, scan, stage.epochs, callbacks=stage_callbacks,
                                verbose=config.verbose, first_epoch=len(stage_index)).history
        if name == "adam":
            stop_reason = _adam_stop_reason(len(stage_logs.get("loss", [])), schedule, plateau,
                                            config)
        for key, values in stage_logs.items():
            logs.setdefault(key, []).extend(values)
        stage_index += [number] * len(stage_logs.get("loss", []))
    return logs, stage_index, stop_reason


def _adam_stop_reason(done: int, schedule: Schedule, plateau, config: ReconstructConfig):
    """Why the adam stage stopped after ``done`` epochs (None: it ran its epochs); printed
    when ``verbose``."""
    stop_reason = None
    if plateau is not None:
        stop_reason = plateau.stop_reason or (
            f"the epoch cap ({schedule.adam_epochs}) was reached"
            if done >= schedule.adam_epochs else "early stopping")
    elif config.early_stopping_patience is not None and done < schedule.adam_epochs:
        stop_reason = "early stopping (validation loss)"
    if config.verbose and stop_reason:
        print(f"adptycho: adam stopped after {done} epochs: {stop_reason}", flush=True)
    return stop_reason


def _refined_pixel_size(scan: ScanData, model):
    """(dy, dx) object pixel in metres after the fit, or None: it follows the refined distance,
    lambda z / (N dx) in far field and dx_det / M(z1) in cone-beam near field."""
    pixel_size_m = scan.pixel_size_m
    if pixel_size_m is None:
        return None
    if model.near_field is None and model.farfield_distance_m is not None:
        factor = model.get_distance() / model.farfield_distance_m
    elif model.near_field is not None and model.near_field.cone_beam:
        factor = float(model.cone_beam_geometry()[1].numpy()) / model.near_field.pixel_size_m[0]
    else:
        factor = 1.0
    return tuple(float(p) * factor for p in pixel_size_m)


ORIENTATION_WARNING_EXCESS = 0.1  # warn when another orientation fits 10% better


def _orientation_warning(scan: ScanData, model_options: dict, probe, verbose: int) -> dict:
    """The orientation check of a blind far-field fit (``orientation.check_orientation``: the
    probe searched for each of the 4 twin classes, short ePIE fits): warns when another
    flip/transpose of the positions fits the patterns clearly better than the file's. Returns
    the residuals for the settings."""
    import warnings

    from adptycho.orientation import check_orientation

    result = check_orientation(
        scan, lambda moved, guess: build_model(moved, probe=guess, **model_options)[0],
        starts={"as-is": probe}, epochs=4, max_patterns=64)
    if result.file_excess > ORIENTATION_WARNING_EXCESS:
        message = (f"{result.summary()}; check the positions' axes and signs (adptycho orient "
                   "SCAN ranks all 8)")
        warnings.warn(message, stacklevel=3)
        if verbose:
            print(f"adptycho: warning: {message}", flush=True)
    return {"best": result.best, "file_excess": result.file_excess, "margin": result.margin}

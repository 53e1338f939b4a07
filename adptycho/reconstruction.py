"""One-call reconstruction: ``reconstruct(scan, ...)`` -> ``ReconstructionResult``."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import keras
import numpy as np

from adptycho.config import ReconstructConfig, split_runtime_options, with_config_keywords
from adptycho.runtime import restores_global_rngs
from adptycho.errors import AdptychoError, GeometryError
from adptycho.geometry.grids import object_grid
from adptycho.initial import add_probe_modes, probe_guess, scale_probe_to_counts
from adptycho.io.results import ReconstructionResult
from adptycho.io.scan_data import NEARFIELD, ScanData
from adptycho.model import DEFAULT_LEARNING_RATES, NearFieldGeometry, PtychoModel
from adptycho.nn.irmae import SHIPPED_MODELS
from adptycho.nn.stylegan2 import SHIPPED_STYLEGAN2, is_stylegan2_model
from adptycho.objects.pixels import PixelObject
from adptycho.training.data import split_validation, steps_per_execution_for
from adptycho.engines import PIE_ENGINES, FitPlan, available_engines, get_engine
from adptycho.training.schedule import (MAX_ADAPTIVE_EPOCHS, PlateauSchedule, Stage,
                                        format_schedule, parse_schedule)
from adptycho.training.fingerprint import fit_fingerprint

__all__ = ["reconstruct", "build_model", "auto_schedule", "ENGINES", "OBJECTS"]

ENGINES = available_engines()  # the registry: adptycho.engines.ENGINES
OBJECTS = ("pixels",) + SHIPPED_MODELS  # or a directory with IRMAE weights (LatentObject)
OBJECTS += SHIPPED_STYLEGAN2  # StyleGAN2 generator objects (GeneratorObject; PtychoGAN)
OPTIMIZERS = ("adam", "lbfgs")
LATENT_LEARNING_RATE = 0.1
DEFAULT_EPOCHS = 50  # a named engine (or the default's adam-only fallback) without epochs
AUTO_PIE_EPOCHS = 50  # sequential ePIE epochs of the adaptive default before Adam
AUTO_LEARNING_RATE = 0.01  # object / probe Adam step after a PIE stage (it only polishes)
# PlateauSchedule of the adaptive Adam stage: halve the steps after 5 epochs without a 0.1%
# improvement of the loss, stop at the 4th plateau
AUTO_PLATEAU = {"patience": 5, "min_delta": 1e-3, "max_reductions": 4}


def auto_schedule(scan: ScanData, *, epochs, refine, object, optimizer, parametrisation, probe,
                  adam_only: bool):
    """The stages of ``engine="auto"`` and whether the probe is searched from the data.

    Pixel objects (complex parametrisation, Adam optimizer, object refined, no Adam-only option
    such as a strategy or a validation split): ``AUTO_PIE_EPOCHS`` sequential ePIE epochs form
    the object and probe quickly from any start, then Adam with the noise model refines every
    group (positions and distance too) until a loss plateau, or for ``epochs`` epochs. The probe
    is searched (``probe_search``) when none is given or stored, in far field; with refined
    positions (far field, per-pattern offsets) a coarse stage (``coarse_positions``) finds
    large position errors first at half resolution. Anything else:
    Adam alone, for ``epochs`` (default 50).

    Returns:
        ``(stages, search_probe)``.
    """
    pie_first = (object == "pixels" and optimizer == "adam" and parametrisation == "complex"
                 and "object" in refine and not adam_only)
    if not pie_first:
        return [Stage("adam", DEFAULT_EPOCHS if epochs is None else epochs)], False
    search = probe is None and scan.probe is None and scan.geometry != NEARFIELD
    return [Stage("epie", AUTO_PIE_EPOCHS), Stage("adam", epochs)], search


def _pie_probe_search(scan: ScanData, stages, *, probe, object, parametrisation) -> bool:
    """Whether a named schedule with a PIE stage (``--engine epie``, ``epie:30,adam``) searches
    the probe from the data first, as the default schedule does: a pixel object (complex
    parametrisation), no probe given or stored, far field. The PIE engines converge from the
    searched probe where they stall from the unfocused mean-pattern guess (issue 18, item 3)."""
    return (any(stage.engine in PIE_ENGINES for stage in stages) and object == "pixels"
            and parametrisation == "complex" and probe is None and scan.probe is None
            and scan.geometry != NEARFIELD)


def _coarse_positions(scan: ScanData, probe, *, probe_modes, seed, position_model, verbose):
    """The default schedule's coarse-to-fine position stage (``adptycho.coarse_positions``):
    ePIE with position correction on the central half of the far-field patterns, when the
    positions are refined as per-pattern offsets and the detector is large enough; else None."""
    from adptycho import coarse_positions as coarse

    if position_model != "offsets" or not coarse.applies(scan):
        return None
    known = probe if probe is not None else scan.probe

    def fit(small, small_probe, epochs):
        return reconstruct(small, probe=small_probe, engine=f"epie:{epochs}",
                           refine=("object", "probe", "positions"), probe_modes=probe_modes,
                           seed=seed, verbose=0)

    result = coarse.coarse_positions(scan, fit, probe=known)
    if verbose:
        print(f"adptycho: {result.summary()}", flush=True)
    return result


def build_model(scan: ScanData, *, probe=None, probe_modes: int = 1, loss: str = "amplitude",
                readout_noise=1.0, object_shape=None, padding_px: int = 8,
                parametrisation: str = "complex", initial_object=None, subpixel="auto",
                normalise_probe: Optional[bool] = None, position_model: str = "offsets",
                probe_support=None, probe_power: Optional[float] = None,
                object: str = "pixels", latent_options: Optional[dict] = None):
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
    near = None
    if scan.geometry == NEARFIELD:
        cone = scan.focus_distance_m is not None and scan.detector_distance_m is not None \
            and scan.detector_pixel_size_m is not None \
            and abs(scan.detector_pixel_size_m[0] - scan.detector_pixel_size_m[1]) < 1e-15
        near = NearFieldGeometry(
            scan.wavelength_m, scan.pixel_size_m, scan.propagation_distance_m,
            focus_distance_m=scan.focus_distance_m if cone else None,
            detector_distance_m=scan.detector_distance_m if cone else None,
            detector_pixel_size_m=scan.detector_pixel_size_m[0] if cone else None)
    if object == "pixels":
        representation = PixelObject(grid.shape, parametrisation, initial=initial_object)
    elif is_stylegan2_model(object):
        from adptycho.objects.generator import GeneratorObject

        representation = GeneratorObject.from_pretrained(grid.shape, object,
                                                         **(latent_options or {}))
    else:
        from adptycho.objects.latent import LatentObject

        representation = LatentObject.from_pretrained(grid.shape, object, **(latent_options or {}))
    model = PtychoModel(representation, probe,
                        grid.corners(scan.positions_px), near_field=near, mask=scan.mask,
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

    The default (``engine="auto"``) is the schedule described in ``auto_schedule``: for a
    pixel object, a probe found from the data when none is given (far field:
    ``adptycho.probe_search``), ``AUTO_PIE_EPOCHS`` sequential ePIE epochs (object and probe),
    then Adam on every refined group with the noise model until the loss reaches a plateau
    (``training.schedule.PlateauSchedule``, at most ``MAX_ADAPTIVE_EPOCHS``); the result's
    ``settings["stop_reason"]`` says why it stopped.

    The options form a ``ReconstructConfig`` (``adptycho.config``: defaults, validation):
    ``reconstruct(scan, config)``, ``reconstruct(scan, epochs=20)`` (keywords build the config
    from the defaults) and ``reconstruct(scan, config, seed=3)`` (keywords override its
    fields) are the same call; an unknown keyword is a ``TypeError``, a bad value an
    ``AdptychoError``. The config is saved verbatim as ``settings["config"]`` next to the
    resolved values (``settings["engine"]`` is the schedule that ran, ...).

    Args:
        scan: ``ScanData``.
        config: a ``ReconstructConfig`` (default: all defaults); the options below are its
            fields, except the run-time objects ``probe``, ``initial_object``,
            ``probe_support``, ``callbacks``, a per-pixel ``readout_noise`` map and a
            ``tf.distribute.Strategy`` passed as ``strategy``.
        epochs: passes over the data of the last (Adam) stage. None: until a loss plateau for
            the adaptive default, 50 for a single named engine.
        batch_size: patterns per Adam step (default 32, shuffled every epoch); for a PIE engine
            the patterns per vectorised update (default 1: sequential, which converges where a
            batch can diverge).
        refine: parameter groups to fit: ``object``, ``probe``, ``positions``, ``distance``.
        loss: ``amplitude`` (default), ``poisson`` or ``poisson-gaussian``: the noise model of
            the Adam stage.
        learning_rates: per-group Adam step sizes (see ``PtychoModel.compile``; after a PIE
            stage the default object and probe step is ``AUTO_LEARNING_RATE``).
        start_epochs: per-group first epoch; default: object 0, probe 1, positions and distance
            after a fifth of the epochs (the object forms first); all 0 after a PIE stage.
        decay_rate: learning-rate decay per epoch (default 0.97, Seifert et al.; 1 for the
            adaptive schedule, which halves the steps on a plateau instead).
        engine: ``auto`` (default), an engine name (``adam``, ``epie``, ``rpie``, ``mpie``;
            PIE engines: ``adptycho.training.epie``, object and probe only) or a schedule of
            stages run in order on the same model, ``"epie:30,adam:200"``
            (``training.schedule``; Keras callbacks and ``checkpoint_dir`` apply to the Adam
            stage).
        object: ``pixels``, a shipped IRMAE (``irmae-mnist``, ``irmae-mnist-3``) or a directory
            with IRMAE weights (a ``LatentObject``: only its latent vector is fitted, Adam
            learning rate ``LATENT_LEARNING_RATE`` unless given; the result's ``object`` is the
            resized decoder output on the grid and ``extra_histories["latent"]`` the latent).
        parametrisation: pixel parametrisation (``complex``, ``amplitude-phase``, ``amplitude``,
            ``phase``).
        probe, probe_modes, readout_noise, object_shape, padding_px, initial_object: see
            ``build_model``.
        seed: seeds Python, NumPy, TensorFlow and Keras (shuffling order) for this call only, so
            runs are repeatable; the caller's generator states are restored on return
            (``adptycho.runtime.restores_global_rngs``).
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch).
        callbacks: extra Keras callbacks (early stopping, checkpoints, ...).
        checkpoint_dir: if given, the fit state is saved there after every epoch
            (``adptycho.training.checkpoint.FitCheckpoint``): a fit interrupted at any moment
            (even by SIGKILL) and restarted with the same arguments continues from the last
            completed epoch and ends with the result of an uninterrupted fit. The histories of
            the result cover all epochs.
        jit_compile: XLA-compile the training step (``"auto"``: see ``PtychoModel.compile``; on
            CPU, far-field steps run as XLA pieces joined by TensorFlow FFT ops).
        position_model: ``offsets`` or ``affine`` (global affine stage model plus offsets).
        probe_support, probe_power: probe constraints (see ``build_model``).
        optimizer: ``adam`` or ``lbfgs`` (full-batch L-BFGS of ``adptycho.training.lbfgs``,
            ``epochs`` iterations; object only, meant for latent objects).
        latent_options: ``LatentObject`` keyword arguments (see ``build_model``).
        pie_options: PIE engines only: ``object_step`` (alpha), ``probe_step`` (beta),
            ``regularisation`` (rPIE a), ``momentum`` (mPIE eta), ``fourier_relaxation``
            (Poisson noise bound, ``PIESettings``); ``batch_size`` is the number
            of patterns per vectorised update (1 = sequential ePIE), ``start_epochs["probe"]``
            the first epoch of probe updates.
        validation_fraction: hold out this fraction of the patterns (random, from ``seed``):
            they never enter a training batch; their loss and residual are evaluated after every
            epoch (``extra_histories["validation_loss"]``, ``["validation_residual"]``).
        early_stopping_patience: stop when the validation loss (the training loss without
            validation patterns) has not improved for this many epochs, and keep the best
            epoch's parameters.
        strategy: ``None``, ``"mirrored"``, ``"multiworker"`` or a ``tf.distribute.Strategy``
            (``adptycho.training.distribute``): data-parallel fit, patterns sharded across the
            replicas, gradients all-reduced. Adam engine only.

    Streamed scans (``load_cxi(..., stream=True)``) are read in prefetched batches: the patterns
    are never all in memory (the Adam engine; PIE engines and L-BFGS load them).

    Returns:
        ``ReconstructionResult``.
    """
    options, readout_map, strategy_object = split_runtime_options(options)
    config = ReconstructConfig.build(config, **options)  # TypeError: unknown, AdptychoError: bad
    c = config
    engine, epochs, batch_size, refine, loss = c.engine, c.epochs, c.batch_size, c.refine, c.loss
    learning_rates, start_epochs, decay_rate = c.learning_rates, c.start_epochs, c.decay_rate
    object, parametrisation, probe_modes = c.object, c.parametrisation, c.probe_modes
    readout_noise = c.readout_noise if readout_map is None else readout_map
    object_shape, padding_px, seed, verbose = c.object_shape, c.padding_px, c.seed, c.verbose
    checkpoint_dir, jit_compile, subpixel = c.checkpoint_dir, c.jit_compile, c.subpixel
    position_model, optimizer, probe_power = c.position_model, c.optimizer, c.probe_power
    latent_options, pie_options = c.latent_options, c.pie_options
    validation_fraction, early_stopping_patience = c.validation_fraction, c.early_stopping_patience
    strategy = c.strategy if strategy_object is None else strategy_object
    # options only the adam engine has; a streamed scan is never loaded whole (PIE loads it)
    adam_only = (strategy not in (None, "none") or validation_fraction > 0
                 or early_stopping_patience is not None or scan.streamed)
    adaptive = engine == "auto"
    if adaptive:
        stages, search = auto_schedule(scan, epochs=epochs, refine=refine, object=object,
                                       optimizer=optimizer, parametrisation=parametrisation,
                                       probe=probe, adam_only=adam_only)
    else:
        stages = parse_schedule(engine, available_engines(),
                                DEFAULT_EPOCHS if epochs is None else epochs)
        if len(stages) > 1 and stages[-1].epochs is None:
            stages[-1] = Stage(stages[-1].engine, epochs)
        search = _pie_probe_search(scan, stages, probe=probe, object=object,
                                   parametrisation=parametrisation)
    names = [stage.engine for stage in stages]
    uses_pie = any(name in PIE_ENGINES for name in names)
    if pie_options and not uses_pie:
        raise AdptychoError(f"pie_options apply to the PIE engines ({', '.join(PIE_ENGINES)}); "
                            f"the schedule {format_schedule(stages)!r} has none")
    if optimizer == "lbfgs" and uses_pie:
        raise AdptychoError("the lbfgs optimizer replaces adam; it does not combine with PIE stages")
    if "adam" in names and (names.count("adam") > 1 or names[-1] != "adam"):
        raise AdptychoError(f"a schedule has at most one adam stage, and it comes last (got "
                            f"{engine!r})")
    adam_stage = "adam" in names and optimizer != "lbfgs"
    if adam_only and (any(name != "adam" for name in names) or optimizer == "lbfgs"):
        raise AdptychoError("strategy, validation_fraction and early stopping need the adam "
                            f"engine and optimizer (got engine={engine!r}, optimizer={optimizer!r})")
    if checkpoint_dir is not None and not adam_stage:
        raise AdptychoError(f"checkpoints apply to the adam engine, not {engine}")
    after_pie = uses_pie and adam_stage
    if after_pie:
        learning_rates = {"object": AUTO_LEARNING_RATE, "probe": AUTO_LEARNING_RATE,
                          **(learning_rates or {})}
    if decay_rate is None:
        decay_rate = 1.0 if adaptive and after_pie else 0.97
    from adptycho.training.distribute import is_chief, make_strategy

    strategy = make_strategy(strategy)
    keras.utils.set_random_seed(seed)

    def scope():
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    model_options = dict(probe_modes=probe_modes, loss=loss, readout_noise=readout_noise,
                         object_shape=object_shape, padding_px=padding_px,
                         parametrisation=parametrisation, initial_object=initial_object,
                         subpixel=subpixel, position_model=position_model, object=object,
                         probe_support=probe_support, probe_power=probe_power,
                         latent_options=latent_options)
    coarse = None
    if adaptive and stages[0].engine in PIE_ENGINES and "positions" in refine:
        coarse = _coarse_positions(scan, probe, probe_modes=probe_modes, seed=seed,
                                   position_model=position_model, verbose=verbose)
    # the probe search sees the positions the coarse stage found
    search_scan = scan if coarse is None else dataclasses.replace(
        scan, positions_px=coarse.positions_px)
    search_result = None
    if search:
        from adptycho.probe_search import search_probe

        search_result = search_probe(
            search_scan, lambda guess: build_model(search_scan, probe=guess, **model_options)[0],
            modes=probe_modes, seed=seed)
        probe = search_result.probe
        if verbose:
            print(f"adptycho: {search_result.summary()}", flush=True)
        orientation = _orientation_warning(scan, model_options, probe, verbose)
    with scope():
        model, grid = build_model(scan, probe=probe, **model_options)
        if coarse is not None:
            model.position_corrections.assign(coarse.corrections_px.astype(np.float32))
    latent = object != "pixels"
    if latent and "object" not in (learning_rates or {}):
        learning_rates = {**(learning_rates or {}), "object": LATENT_LEARNING_RATE}
    adam_epochs = next((st.epochs for st in stages if st.engine == "adam"), None)
    plateau = adam_stage and adam_epochs is None
    if plateau:
        adam_epochs = MAX_ADAPTIVE_EPOCHS
    span = adam_epochs or max(st.epochs or 1 for st in stages)
    later = max(1, span // 5)
    if after_pie:
        starts = {"object": 0, "probe": 0, "positions": 0, "distance": 0}
    else:
        starts = {"object": 0, "probe": 1 if span > 1 else 0, "positions": later,
                  "distance": later}
    starts.update(start_epochs or {})
    adam_batch = 32 if batch_size is None else batch_size
    training, validation = split_validation(scan.num_patterns, validation_fraction, seed)
    batch = min(adam_batch, len(training))
    steps = int(np.ceil(len(training) / batch))
    if jit_compile == "auto" and strategy is not None:
        jit_compile = False  # all-reduce inside the step: no XLA under tf.distribute
    with scope():
        # One compiled call per epoch (up to 64 steps) removes the per-step Python overhead; the
        # count divides the epoch so a call never spans two epochs.
        model.compile(refine=refine, learning_rates=learning_rates, start_epochs=starts,
                      decay_rate=decay_rate, jit_compile=jit_compile,
                      steps_per_execution=(steps_per_execution_for(steps) if strategy is None
                                           else 1))
    # keyed on the model's state before any stage (a resumed fit redoes the deterministic
    # probe search and PIE stages, then continues the adam stage from its checkpoint)
    fingerprint = None if checkpoint_dir is None else fit_fingerprint(
        scan, model, {
            "refine": list(refine), "loss": loss, "seed": seed,
            "batch_size": batch, "object": str(object),
            "parametrisation": parametrisation, "probe_modes": probe_modes,
            "validation": validation, "position_model": position_model,
            "decay_rate": decay_rate, "start_epochs": starts,
            "learning_rates": learning_rates or {}, "grid": grid,
            "readout_noise": readout_noise, "probe_power": probe_power,
            "probe_support": probe_support, "subpixel": subpixel,
            "jit_compile": jit_compile, "latent_options": latent_options,
            "early_stopping_patience": early_stopping_patience,
            # the adam stage's epochs may grow: a finished fit continues for more epochs
            "schedule": format_schedule([Stage(st.engine, None if st.engine == "adam"
                                               else st.epochs) for st in stages]),
            "pie_options": pie_options or {},
            "plateau": dict(AUTO_PLATEAU) if plateau else None})
    plan = FitPlan(refine=tuple(refine), start_epochs=starts, user_start_epochs=start_epochs,
                   batch_size=batch_size, adam_batch_size=batch, seed=seed, training=training,
                   validation=validation, steps=steps, after_pie=after_pie,
                   adam_stage=adam_stage, pie_options=pie_options, strategy=strategy,
                   checkpoint_dir=checkpoint_dir, fingerprint=fingerprint,
                   early_stopping_patience=early_stopping_patience)
    logs, stage_index, stop_reason = _run_stages(
        model, scan, stages, plan, optimizer=optimizer, callbacks=callbacks,
        adam_epochs=adam_epochs, plateau=plateau, validation=validation,
        early_stopping_patience=early_stopping_patience, verbose=verbose)
    engine = format_schedule(stages) if adaptive or len(stages) > 1 else stages[0].engine
    epochs = len(stage_index)
    settings = {
        "engine": engine, "object": object, "parametrisation": parametrisation,
        "epochs": epochs, "batch_size": adam_batch if adam_stage else (batch_size or 1),
        "refine": list(refine), "loss": loss,
        "learning_rates": {**DEFAULT_LEARNING_RATES, **(learning_rates or {})},
        "start_epochs": starts, "decay_rate": decay_rate, "probe_modes": probe_modes,
        "readout_noise": np.asarray(readout_noise).tolist() if np.ndim(readout_noise) == 0 else "per-pixel",
        "seed": seed, "padding_px": padding_px, "geometry": scan.geometry,
        "num_patterns": scan.num_patterns, "detector_shape": list(scan.detector_shape),
        "position_model": position_model, "affine": model.affine_matrix().tolist(),
        "optimizer": optimizer,
        "probe_support": probe_support is not None, "probe_power": probe_power,
        "validation_fraction": validation_fraction, "validation_patterns": len(validation),
        "strategy": None if strategy is None else type(strategy).__name__,
        "replicas": 1 if strategy is None else int(strategy.num_replicas_in_sync),
        "chief": is_chief(strategy),
    }
    if uses_pie:
        settings["pie_options"] = dict(pie_options or {})
    settings["adaptive"] = bool(adaptive)
    settings["config"] = config.to_dict()  # the options as given: ReconstructConfig.from_dict
    if stop_reason:
        settings["stop_reason"] = stop_reason
    if coarse is not None:
        settings.update(coarse.attributes())
    if search_result is not None:
        settings.update(search_result.attributes())
        settings["orientation_check"] = orientation
    pixel_size_m = _refined_pixel_size(scan, model)
    extra = {f"{k.replace('val_', 'validation_')}_history": np.asarray(v)
             for k, v in logs.items() if k not in ("loss", "residual")}
    if len(validation):
        extra["validation_indices"] = validation
    if len(stages) > 1:
        extra["stage_history"] = np.asarray(stage_index, np.int32)
    if latent:
        extra["latent"] = model.object_representation.latent_numpy()
        settings["latent_options"] = {k: v for k, v in (latent_options or {}).items()
                                      if k != "initial_latent"}
    return ReconstructionResult(
        object=model.get_object(), probe=model.get_probe(), positions_px=model.get_positions(),
        nominal_positions_px=grid.corners(scan.positions_px),
        loss_history=np.asarray(logs.get("loss", []), np.float64),
        residual_history=np.asarray(logs.get("residual", []), np.float64),
        distance_m=model.get_distance(), focus_distance_m=model.get_focus_distance(),
        pixel_size_m=pixel_size_m, geometry=scan.geometry,
        object_origin_px=grid.origin_px, settings=settings, extra_histories=extra)


def _run_stages(model, scan: ScanData, stages, plan, *, optimizer, callbacks, adam_epochs,
                plateau, validation, early_stopping_patience, verbose):
    """Run the schedule's stages in order on ``model`` through the engine registry.

    Returns ``(logs, stage_index, stop_reason)``: the merged per-epoch logs of all stages, the
    stage number of every epoch, and why the adam stage stopped (or None)."""
    logs = {}
    stage_index = []
    stop_reason = None
    for number, stage in enumerate(stages):
        # the lbfgs optimizer replaces the adam stage
        name = "lbfgs" if stage.engine == "adam" and optimizer == "lbfgs" else stage.engine
        stage_callbacks = list(callbacks or [])
        adam = name == "adam"
        if adam:
            stage = Stage("adam", adam_epochs)
            plateau_callback = PlateauSchedule(
                monitor="val_loss" if len(validation) else "loss",
                **AUTO_PLATEAU) if plateau else None
            stage_callbacks += [plateau_callback] if plateau else []
        engine_ = get_engine(name).from_plan(plan, stage)
        stage_logs = engine_.fit(model, scan, stage.epochs, callbacks=stage_callbacks,
                                 verbose=verbose, first_epoch=len(stage_index)).history
        if adam:
            done = len(stage_logs.get("loss", []))
            if plateau:
                stop_reason = plateau_callback.stop_reason or (
                    f"the epoch cap ({adam_epochs}) was reached" if done >= adam_epochs
                    else "early stopping")
            elif early_stopping_patience is not None and done < adam_epochs:
                stop_reason = "early stopping (validation loss)"
            if verbose and stop_reason:
                print(f"adptycho: adam stopped after {done} epochs: {stop_reason}", flush=True)
        for key, values in stage_logs.items():
            logs.setdefault(key, []).extend(values)
        stage_index += [number] * len(stage_logs.get("loss", []))
    return logs, stage_index, stop_reason


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

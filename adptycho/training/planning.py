"""What ``reconstruct`` decides before it fits: the schedule of stages and its step sizes.

``plan_schedule(scan, config, probe, adam_only)`` turns a ``ReconstructConfig`` into a
``Schedule``: the stages (``engine="auto"``: ``auto_schedule``; else the parsed
``"epie:20,adam:80"``), whether the probe is searched from the data, and the Adam stage's
learning rates, decay rate and per-group start epochs, which depend on the stages (after a PIE
stage the Adam stage only polishes). Combinations no engine can run are refused here with one
``AdptychoError`` line, before any model is built.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from adptycho.engines import PIE_ENGINES, available_engines
from adptycho.errors import AdptychoError
from adptycho.io.scan_data import NEARFIELD
from adptycho.training.schedule import (MAX_ADAPTIVE_EPOCHS, Stage, format_schedule,
                                        parse_schedule)

__all__ = ["Schedule", "plan_schedule", "auto_schedule", "DEFAULT_EPOCHS", "AUTO_PIE_EPOCHS",
           "AUTO_LEARNING_RATE", "AUTO_PLATEAU", "LATENT_LEARNING_RATE"]

LATENT_LEARNING_RATE = 0.1
DEFAULT_EPOCHS = 50  # a named engine (or the default's adam-only fallback) without epochs
AUTO_PIE_EPOCHS = 50  # sequential ePIE epochs of the adaptive default before Adam
AUTO_LEARNING_RATE = 0.01  # object / probe Adam step after a PIE stage (it only polishes)
# PlateauSchedule of the adaptive Adam stage: halve the steps after 5 epochs without a 0.1%
# improvement of the loss, stop at the 4th plateau
AUTO_PLATEAU = {"patience": 5, "min_delta": 1e-3, "max_reductions": 4}


@dataclasses.dataclass
class Schedule:
    """The resolved schedule of a reconstruction.

    Attributes:
        stages: the ``Stage`` list run in order.
        search_probe: the probe is searched from the data first (``probe_search``).
        adaptive: ``engine="auto"``.
        uses_pie: a stage is a PIE engine.
        adam_stage: the schedule ends with an Adam stage run by the Adam optimizer.
        after_pie: a PIE stage comes before the Adam stage.
        adam_epochs: epochs of the Adam stage (``MAX_ADAPTIVE_EPOCHS`` when it stops on a
            plateau), or None without one.
        plateau: the Adam stage stops on a loss plateau (``AUTO_PLATEAU``).
        learning_rates: per-group Adam step sizes (None: the model's defaults).
        decay_rate: learning-rate factor per epoch.
        start_epochs: per-group first epoch of the Adam stage.
    """

    stages: list
    search_probe: bool = False
    adaptive: bool = False
    uses_pie: bool = False
    adam_stage: bool = False
    after_pie: bool = False
    adam_epochs: Optional[int] = None
    plateau: bool = False
    learning_rates: Optional[dict] = None
    decay_rate: float = 0.97
    start_epochs: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """What ran, for the settings: the schedule string, or the one engine's name."""
        if self.adaptive or len(self.stages) > 1:
            return format_schedule(self.stages)
        return self.stages[0].engine

    def fingerprint_schedule(self) -> str:
        """The schedule with the Adam stage's epochs left open (a finished fit may continue
        for more epochs from its checkpoint)."""
        return format_schedule([Stage(st.engine, None if st.engine == "adam" else st.epochs)
                                for st in self.stages])


def auto_schedule(scan, *, epochs, refine, object, optimizer, parametrisation, probe,
                  adam_only: bool):
    """The stages of ``engine="auto"`` and whether the probe is searched from the data.

    Pixel objects (complex parametrisation, Adam optimizer, object refined, no Adam-only option
    such as a strategy or a validation split): ``AUTO_PIE_EPOCHS`` sequential ePIE epochs form
    the object and probe quickly from any start, then Adam with the noise model refines every
    group (positions and distance too) until a loss plateau, or for ``epochs`` epochs. The probe
    is searched (``probe_search``) when none is given or stored, in far field; with refined
    positions (far field, per-pattern offsets) ``reconstruct`` first finds large position
    errors at half resolution (``coarse_positions``). Anything else: Adam alone, for ``epochs``
    (default 50).

    Returns:
        ``(stages, search_probe)``.
    """
    pie_first = (object == "pixels" and optimizer == "adam" and parametrisation == "complex"
                 and "object" in refine and not adam_only)
    if not pie_first:
        return [Stage("adam", DEFAULT_EPOCHS if epochs is None else epochs)], False
    return [Stage("epie", AUTO_PIE_EPOCHS), Stage("adam", epochs)], _probe_unknown(scan, probe)


def _probe_unknown(scan, probe) -> bool:
    """No probe given or stored, in far field: the probe is searched from the data."""
    return probe is None and scan.probe is None and scan.geometry != NEARFIELD


def _pie_probe_search(scan, stages, *, probe, object, parametrisation) -> bool:
    """Whether a named schedule with a PIE stage (``--engine epie``, ``epie:30,adam``) searches
    the probe from the data first, as the default schedule does: a pixel object (complex
    parametrisation), no probe given or stored, far field. The PIE engines converge from the
    searched probe where they stall from the unfocused mean-pattern guess (issue 18, item 3)."""
    return (any(stage.engine in PIE_ENGINES for stage in stages) and object == "pixels"
            and parametrisation == "complex" and _probe_unknown(scan, probe))


def plan_schedule(scan, config, probe, adam_only: bool) -> Schedule:
    """The ``Schedule`` of ``reconstruct(scan, config, probe=probe)``.

    Args:
        scan: the ``ScanData``.
        config: the ``ReconstructConfig``.
        probe: the caller's initial probe, or None.
        adam_only: an option only the Adam engine has is set (strategy, validation split,
            early stopping, a streamed scan).
    """
    c = config
    if c.engine == "auto":
        stages, search = auto_schedule(scan, epochs=c.epochs, refine=c.refine, object=c.object,
                                       optimizer=c.optimizer, parametrisation=c.parametrisation,
                                       probe=probe, adam_only=adam_only)
    else:
        stages = parse_schedule(c.engine, available_engines(),
                                DEFAULT_EPOCHS if c.epochs is None else c.epochs)
        if len(stages) > 1 and stages[-1].epochs is None:
            stages[-1] = Stage(stages[-1].engine, c.epochs)
        search = _pie_probe_search(scan, stages, probe=probe, object=c.object,
                                   parametrisation=c.parametrisation)
    names = [stage.engine for stage in stages]
    uses_pie = any(name in PIE_ENGINES for name in names)
    adam_stage = "adam" in names and c.optimizer != "lbfgs"
    schedule = Schedule(stages, search, c.engine == "auto", uses_pie, adam_stage,
                        after_pie=uses_pie and adam_stage)
    _check_stages(schedule, c, adam_only)
    _plan_step_sizes(schedule, c)
    return schedule


def _check_stages(schedule: Schedule, config, adam_only: bool) -> None:
    """Refuse option and stage combinations no engine runs (one ``AdptychoError`` line)."""
    c = config
    names = [stage.engine for stage in schedule.stages]
    if c.pie_options and not schedule.uses_pie:
        raise AdptychoError(f"pie_options apply to the PIE engines ({', '.join(PIE_ENGINES)}); "
                            f"the schedule {format_schedule(schedule.stages)!r} has none")
    if c.optimizer == "lbfgs" and schedule.uses_pie:
        raise AdptychoError("the lbfgs optimizer replaces adam; it does not combine with PIE stages")
    if "adam" in names and (names.count("adam") > 1 or names[-1] != "adam"):
        raise AdptychoError(f"a schedule has at most one adam stage, and it comes last (got "
                            f"{c.engine!r})")
    if adam_only and (any(name != "adam" for name in names) or c.optimizer == "lbfgs"):
        raise AdptychoError("strategy, validation_fraction and early stopping need the adam "
                            f"engine and optimizer (got engine={c.engine!r}, "
                            f"optimizer={c.optimizer!r})")
    if c.checkpoint_dir is not None and not schedule.adam_stage:
        raise AdptychoError(f"checkpoints apply to the adam engine, not {c.engine}")


def _plan_step_sizes(schedule: Schedule, config) -> None:
    """Set the schedule's learning rates, decay rate, Adam epochs and start epochs.

    After a PIE stage the object and probe steps default to ``AUTO_LEARNING_RATE`` and every
    group starts at once; the adaptive schedule does not decay (it halves the steps on a
    plateau instead); a latent object's step defaults to ``LATENT_LEARNING_RATE``. Otherwise
    the probe starts at epoch 1 and positions and distance after a fifth of the epochs (the
    object forms first). The caller's values always win.
    """
    c = config
    rates = dict(c.learning_rates or {}) or None
    if schedule.after_pie:
        rates = {"object": AUTO_LEARNING_RATE, "probe": AUTO_LEARNING_RATE, **(rates or {})}
    if c.object != "pixels" and "object" not in (rates or {}):
        rates = {**(rates or {}), "object": LATENT_LEARNING_RATE}
    schedule.learning_rates = rates
    decay_rate = c.decay_rate
    if decay_rate is None:
        decay_rate = 1.0 if schedule.adaptive and schedule.after_pie else 0.97
    schedule.decay_rate = decay_rate
    adam_epochs = next((st.epochs for st in schedule.stages if st.engine == "adam"), None)
    schedule.plateau = schedule.adam_stage and adam_epochs is None
    schedule.adam_epochs = MAX_ADAPTIVE_EPOCHS if schedule.plateau else adam_epochs
    span = schedule.adam_epochs or max(st.epochs or 1 for st in schedule.stages)
    later = max(1, span // 5)
    if schedule.after_pie:
        starts = {"object": 0, "probe": 0, "positions": 0, "distance": 0}
    else:
        starts = {"object": 0, "probe": 1 if span > 1 else 0, "positions": later,
                  "distance": later}
    schedule.start_epochs = {**starts, **(c.start_epochs or {})}

"""ePIE, rPIE and mPIE behind the engine interface (the algorithms: ``training.epie``)."""

from __future__ import annotations

import dataclasses

from adptycho.engines.base import (Engine, FitPlan, History, epoch_callbacks, patterns_of,
                                   progress_display)
from adptycho.errors import AdptychoError
from adptycho.training.pie_settings import PIE_ENGINES, PIESettings, pie_settings

__all__ = ["PIEEngine", "EPIE", "RPIE", "MPIE", "PIE_ENGINES", "PIE_OPTIONS"]


def _pie_options() -> frozenset:
    # every PIESettings field except those the engine sets from the fit's own arguments
    return frozenset(f.name for f in dataclasses.fields(PIESettings)) - {
        "engine", "batch_size", "refine_probe", "probe_start_epoch"}


PIE_OPTIONS = _pie_options()


class PIEEngine(Engine):
    """A PIE engine (``training.epie.PIETrainer``) on the model's object, probe and positions.

    Args:
        batch_size: patterns per vectorised update (1: sequential).
        refine: groups to refine (object, probe, positions).
        probe_start_epoch: first epoch (0-based, within this fit) of probe updates.
        seed: seeds the pattern order.
        options: further ``PIESettings`` fields (``object_step``, ``regularisation``, ...).
    """

    name = "epie"
    groups = ("object", "probe", "positions")

    def __init__(self, batch_size: int = 1, refine=("object", "probe"), probe_start_epoch: int = 0,
                 seed: int = 0, relaxation_weight=None, **options):
        self.check_refine(refine)
        unknown = set(options) - PIE_OPTIONS
        if unknown:
            raise AdptychoError(f"unknown PIE options {sorted(unknown)}")
        if "positions" in refine:
            options.setdefault("position_correction", True)
        self.settings = pie_settings(self.name, batch_size=batch_size,
                                     refine_probe="probe" in refine,
                                     probe_start_epoch=int(probe_start_epoch), **options)
        self.seed = int(seed)
        self.relaxation_weight = relaxation_weight

    @classmethod
    def from_plan(cls, plan: FitPlan, stage) -> "PIEEngine":
        # before an Adam stage: the PIE part of the groups, sequential updates, probe from the
        # second epoch unless the caller set its start
        refine = ([g for g in plan.refine if g in cls.groups] if plan.adam_stage
                  else plan.refine)
        starts = dict(plan.start_epochs)
        if plan.after_pie and not (plan.user_start_epochs or {}).get("probe"):
            starts["probe"] = 1 if (stage.epochs or 1) > 1 else 0
        batch = 1 if plan.batch_size is None or plan.adam_stage else plan.batch_size
        return cls(batch_size=batch, refine=refine, probe_start_epoch=int(starts.get("probe", 0)),
                   seed=plan.seed, **dict(plan.pie_options or {}))

    def fit(self, model, data, epochs: int, *, callbacks=None, sample_weight=None,
            verbose: int = 0, first_epoch: int = 0) -> History:
        from adptycho.training.epie import PIETrainer

        trainer = PIETrainer(model, self.settings)
        # the stage shows the same Keras display as the adam stage (one line per epoch)
        after = [f for f in (progress_display(epochs, verbose),
                             epoch_callbacks(callbacks, model, first_epoch)) if f is not None]

        def after_epoch(epoch, logs):
            for f in after:
                f(epoch, logs)
        logs = trainer.fit(patterns_of(data), epochs, sample_weight=sample_weight, seed=self.seed,
                           relaxation_weight=self.relaxation_weight,
                           callback=after_epoch if after else None)
        model.update_subpixel()  # positions the PIE stage refined may be fractional now
        return History(logs, range(first_epoch, first_epoch + len(logs["loss"])))


class EPIE(PIEEngine):
    """ePIE (Maiden & Rodenburg 2009)."""

    name = "epie"


class RPIE(PIEEngine):
    """rPIE (Maiden, Johnson & Li 2017)."""

    name = "rpie"


class MPIE(PIEEngine):
    """mPIE: rPIE with momentum (Maiden, Johnson & Li 2017)."""

    name = "mpie"

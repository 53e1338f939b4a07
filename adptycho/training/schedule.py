"""Engine schedules (``"epie:30,adam:200"``) and the loss-plateau rule of adaptive fits.

A schedule is a list of stages, each an engine and a number of epochs, run in order on the same
model: ``reconstruct(scan, engine="epie:30,adam:200")``. A stage whose epochs are ``None`` runs
until its loss reaches a plateau (``PlateauSchedule``), at most ``MAX_ADAPTIVE_EPOCHS`` epochs.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import keras
import numpy as np

from adptycho.errors import AdptychoError

__all__ = ["Stage", "parse_schedule", "format_schedule", "schedule_engines", "PlateauSchedule",
           "MAX_ADAPTIVE_EPOCHS"]

MAX_ADAPTIVE_EPOCHS = 300  # cap of a stage that stops on a plateau


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a schedule: ``engine`` (a name from the engine registry) for ``epochs``
    epochs, or until a loss plateau (at most ``MAX_ADAPTIVE_EPOCHS``) when ``epochs`` is None."""

    engine: str
    epochs: Optional[int] = None


def parse_schedule(spec: str, engines, epochs: Optional[int] = None) -> List[Stage]:
    """Parse ``"epie:30,adam:200"`` (or a bare engine name, run for ``epochs``).

    Args:
        spec: comma-separated ``engine[:epochs]`` items.
        engines: the known engine names.
        epochs: the epochs of a stage given without a count (None: adaptive).

    Raises:
        AdptychoError: an unknown engine, or a count that is not a positive integer.
    """
    stages = []
    items = [item.strip() for item in str(spec).split(",")]
    if not all(items):
        raise AdptychoError(f"empty stage in the engine schedule {spec!r}")
    for item in items:
        name, _, count = item.partition(":")
        if name not in engines:
            raise AdptychoError(f"unknown engine {name!r} in {spec!r}; available: "
                                f"{', '.join(engines)}")
        if count:
            try:
                value = int(count)
            except ValueError:
                value = 0
            if value < 1 or str(value) != count.strip():
                raise AdptychoError(f"the epochs of stage {item!r} must be a positive integer")
            stages.append(Stage(name, value))
        else:
            stages.append(Stage(name, epochs if len(items) == 1 or epochs is None else None))
    return stages


def schedule_engines(spec: str) -> list:
    """The engine names of ``"epie:30,adam:200"`` (no validation: ``parse_schedule`` does it)."""
    return [item.partition(":")[0].strip() for item in str(spec).split(",")]


def format_schedule(stages) -> str:
    """``[Stage("epie", 30), Stage("adam")]`` -> ``"epie:30,adam"``."""
    return ",".join(s.engine if s.epochs is None else f"{s.engine}:{s.epochs}" for s in stages)


class PlateauSchedule(keras.callbacks.Callback):
    """Halve the step sizes on a loss plateau; stop after ``max_reductions`` halvings.

    A plateau: the monitored loss has not fallen below ``(1 - min_delta)`` times its best value
    for ``patience`` epochs. The step sizes are halved through the model's
    ``step_size_factor`` (which ``PtychoModel.set_epoch`` applies to every group). After the
    ``max_reductions``-th plateau the fit stops; ``stop_reason`` says why (also on reaching the
    epoch cap, set by the caller).

    Args:
        monitor: ``loss`` or ``val_loss``.
        patience: epochs without improvement that make a plateau.
        min_delta: relative improvement that counts.
        max_reductions: plateaus before stopping.
    """

    def __init__(self, monitor: str = "loss", patience: int = 4, min_delta: float = 1e-3,
                 max_reductions: int = 3):
        super().__init__()
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.max_reductions = int(max_reductions)
        self.best = np.inf
        self.wait = 0
        self.reductions = 0
        self.stop_reason = None
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = float(np.asarray((logs or {}).get(self.monitor, np.nan)))
        if not np.isfinite(value):
            return
        if value < self.best - self.min_delta * abs(self.best) or not np.isfinite(self.best):
            self.best = value
            self.wait = 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.wait = 0
        self.reductions += 1
        if self.reductions >= self.max_reductions:
            self.model.stop_training = True
            self.stopped_epoch = epoch
            self.stop_reason = (f"the {self.monitor.replace('val_', 'validation ')} reached a "
                                f"plateau (no {100 * self.min_delta:g}% improvement in "
                                f"{self.patience} epochs, {self.reductions} times)")
            return
        factor = self.model.step_size_factor
        factor.assign(factor * 0.5)

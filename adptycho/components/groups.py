"""The parameter groups of a ``PtychoModel``: names, default step sizes, one Adam optimiser per
refined group, and the per-epoch step-size schedule (start epoch, decay, NaN-guard factor),
held together by ``GroupOptimizers``."""

from __future__ import annotations

import keras

from adptycho.errors import AdptychoError

__all__ = ["PARAMETER_GROUPS", "DEFAULT_LEARNING_RATES", "checked_refine", "build_optimizers",
           "epoch_learning_rates", "GroupOptimizers"]

PARAMETER_GROUPS = ("object", "probe", "positions", "distance")
DEFAULT_LEARNING_RATES = {"object": 0.05, "probe": 0.05, "positions": 0.05, "distance": 2e-3}


def checked_refine(refine, has_distance: bool, decay_rate: float) -> tuple:
    """``refine`` as a tuple of known groups (one-line errors for unknown groups, a distance
    the model does not have, nothing to refine, a decay rate outside (0, 1])."""
    refine = tuple(refine)
    for group in refine:
        if group not in PARAMETER_GROUPS:
            raise AdptychoError(
                f"unknown parameter group {group!r}; choose from {', '.join(PARAMETER_GROUPS)}")
    if "distance" in refine and not has_distance:
        raise AdptychoError(
            "far-field distance refinement needs the nominal sample-detector distance "
            "(farfield_distance_m; in a scan: detector_distance_m)")
    if not refine:
        raise AdptychoError("nothing to refine: give at least one parameter group")
    if not 0 < decay_rate <= 1:
        raise AdptychoError(f"decay_rate must be in (0, 1], got {decay_rate}")
    return refine


def build_optimizers(groups: dict, refine, learning_rates: dict) -> dict:
    """``{group: keras.optimizers.Adam}`` built for the variables of every refined group
    (Keras optimisers take real variables only: the model stores complex values as pairs)."""
    optimizers = {}
    for group in refine:
        if not groups[group]:
            raise AdptychoError(f"the {group} group has no trainable variables")
        optimizer = keras.optimizers.Adam(learning_rate=learning_rates[group],
                                          name=f"adam_{group}")
        optimizer.build(groups[group])
        optimizers[group] = optimizer
    return optimizers


def epoch_learning_rates(learning_rates: dict, decay_rate: float, start_epochs: dict, active,
                         epoch: int, factor: float) -> dict:
    """``{group: rate}`` of the ``active`` groups at ``epoch``: the initial rate decayed by
    ``decay_rate`` per epoch since the group started, times the guard's ``factor``."""
    return {group: learning_rates[group] * decay_rate ** (epoch - start_epochs[group]) * factor
            for group in active}


class GroupOptimizers:
    """The refined parameter groups of a model: one Adam optimiser each and their schedule.

    Args:
        groups: ``{group: [variables]}`` of the model (``PARAMETER_GROUPS``; the dict is shared
            with the model, so a group that changes, e.g. a generator's released blocks, is
            seen here).

    Attributes:
        refine: the groups being fitted; ``active``: those moving at the current epoch.
        optimizers: ``{group: keras.optimizers.Adam}`` (after ``configure``).
        learning_rates, start_epochs, decay_rate: the schedule (see ``PtychoModel.compile``).
    """

    def __init__(self, groups: dict):
        self.groups = groups
        self.refine = self.active = ("object",)
        self.optimizers = {}
        self.learning_rates = dict(DEFAULT_LEARNING_RATES)
        self.start_epochs = {g: 0 for g in PARAMETER_GROUPS}
        self.decay_rate = 0.97

    def configure(self, refine, learning_rates=None, start_epochs=None,
                  decay_rate: float = 0.97) -> None:
        """Build the optimisers of the (checked) ``refine`` groups with this schedule; the
        groups whose start epoch is 0 are active."""
        self.refine = tuple(refine)
        self.learning_rates = {**DEFAULT_LEARNING_RATES, **(learning_rates or {})}
        self.start_epochs = {**{g: 0 for g in PARAMETER_GROUPS}, **(start_epochs or {})}
        self.decay_rate = float(decay_rate)
        self.optimizers = build_optimizers(self.groups, self.refine, self.learning_rates)
        self.active = tuple(g for g in self.refine if self.start_epochs[g] <= 0)

    def activate(self, epoch: int) -> bool:
        """Make the groups whose start epoch has come active; True when that changed them."""
        active = tuple(g for g in self.refine if epoch >= self.start_epochs[g])
        changed = active != self.active
        self.active = active
        return changed

    def set_learning_rates(self, epoch: int, factor: float) -> None:
        """Set the active groups' step sizes for ``epoch`` (``epoch_learning_rates``)."""
        rates = epoch_learning_rates(self.learning_rates, self.decay_rate, self.start_epochs,
                                     self.active, epoch, factor)
        for group, rate in rates.items():
            self.optimizers[group].learning_rate = rate

    def apply(self, active, gradients) -> None:
        """One Adam update of each group in ``active`` from the gradients of their variables
        (in group order)."""
        start = 0
        for group in active:
            n = len(self.groups[group])
            self.optimizers[group].apply(gradients[start:start + n], self.groups[group])
            start += n

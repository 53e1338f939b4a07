"""The parameter groups of a ``PtychoModel``: names, default step sizes, one Adam optimiser per
refined group, and the per-epoch step-size schedule (start epoch, decay, NaN-guard factor)."""

from __future__ import annotations

import keras

from adptycho.errors import AdptychoError

__all__ = ["PARAMETER_GROUPS", "DEFAULT_LEARNING_RATES", "checked_refine", "build_optimizers",
           "epoch_learning_rates"]

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

"""Reconstruction engines behind one interface (``Engine.fit(model, data, epochs, ...) ->
History``, see ``engines.base``), registered in one table that ``reconstruct`` and the CLI read.

A new engine: one module with an ``Engine`` subclass, and one line in ``ENGINES``.
"""

from adptycho.engines.adam import AdamEngine
from adptycho.engines.base import Engine, FitPlan, History
from adptycho.engines.lbfgs import LBFGSEngine
from adptycho.engines.pie import EPIE, MPIE, PIE_ENGINES, RPIE, PIEEngine
from adptycho.engines.ptychogan import PtychoGANEngine

__all__ = ["ENGINES", "available_engines", "get_engine", "Engine", "FitPlan", "History",
           "PIE_ENGINES", "PIEEngine"]

# name -> Engine class: the one registry
ENGINES = {
    "adam": AdamEngine,
    "epie": EPIE,
    "rpie": RPIE,
    "mpie": MPIE,
    "lbfgs": LBFGSEngine,
    "ptychogan": PtychoGANEngine,
}


def available_engines() -> tuple:
    """The registered engine names, in registry order."""
    return tuple(ENGINES)


def get_engine(name: str):
    """The ``Engine`` class registered as ``name`` (one-line error naming the choices)."""
    from adptycho.errors import AdptychoError

    try:
        return ENGINES[name]
    except KeyError:
        raise AdptychoError(f"unknown engine {name!r}; available: "
                            f"{', '.join(available_engines())}") from None

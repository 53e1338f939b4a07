"""Calibrated uncertainty maps of reconstructions (issue 22).

``object_uncertainty(scan, reconstruction, method="fisher" | "laplace" | "hmc")`` returns an
``UncertaintyResult`` with per-pixel std maps of the object's amplitude and phase; see
``docs/uncertainty.md``.
"""

from adptycho.uncertainty.api import METHODS, check_belongs, object_uncertainty
from adptycho.uncertainty.result import UncertaintyResult, load_uncertainty

__all__ = ["METHODS", "check_belongs", "object_uncertainty", "UncertaintyResult",
           "load_uncertainty"]

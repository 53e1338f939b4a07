"""Exceptions raised by adptycho for bad input.

Every error that a user can cause (wrong shapes, NaN values, missing CXI fields, ...) is an
``AdptychoError`` (a ``ValueError``) whose message names the offending quantity, so the command-line
tool can print it as a one-line message without a traceback.
"""

__all__ = ["AdptychoError", "DataError", "GeometryError"]


class AdptychoError(ValueError):
    """Base class of all user-facing adptycho errors."""


class DataError(AdptychoError):
    """Bad or missing measured data (patterns, positions, mask, CXI fields)."""


class GeometryError(AdptychoError):
    """Inconsistent geometry (probe vs detector sizes, positions outside the object, ...)."""

"""Metrics and figures."""

from adptycho.analysis.metrics import (align, frc, frc_resolution, global_factor,
                                       illuminated_region, nrmse, phase_error, psnr, register)

__all__ = ["align", "frc", "frc_resolution", "global_factor", "illuminated_region", "nrmse",
           "phase_error", "psnr", "register"]

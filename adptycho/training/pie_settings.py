"""Settings of the PIE engines (ePIE, rPIE, mPIE; the algorithms: ``training.epie``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from adptycho.errors import AdptychoError

__all__ = ["PIE_ENGINES", "PIESettings", "pie_settings"]

PIE_ENGINES = ("epie", "rpie", "mpie")

# Engine defaults: ePIE alpha = beta = 1 (Maiden & Rodenburg 2009); rPIE regularisation a = 0.1
# (Maiden et al. 2017 recommend 0.05-0.25); mPIE = rPIE + momentum eta = 0.7 once per epoch
# (PtyLab's mPIE friction; the Optica paper uses eta ~ 0.7-0.9).
_DEFAULTS = {
    "epie": {"regularisation": 1.0, "momentum": 0.0},
    "rpie": {"regularisation": 0.1, "momentum": 0.0},
    "mpie": {"regularisation": 0.1, "momentum": 0.7},
}


@dataclasses.dataclass(frozen=True)
class PIESettings:
    """Settings of a PIE engine.

    Attributes:
        engine: ``epie``, ``rpie`` or ``mpie``.
        object_step: alpha, the object step size (ePIE Eq. 6; 1 in Maiden & Rodenburg 2009).
        probe_step: beta, the probe step size.
        regularisation: rPIE's ``a`` in [0, 1] (1 = ePIE's max|P|^2 denominator).
        momentum: mPIE's eta in [0, 1) (0 = none), applied once per epoch.
        batch_size: patterns per vectorised update (1 = sequential).
        refine_probe: update the probe.
        probe_start_epoch: first epoch (0-based) at which the probe moves.
        fourier_relaxation: rho >= 0, the Poisson noise bound of the Fourier constraint in
            units of its expected value (0 = exact modulus projection; 1 = stop at the
            expected noise level; see the module docstring).
        position_correction: refine the scan positions (module docstring: a Gauss-Newton
            shift per pattern update, momentum and gauges per epoch, a whole-pixel search
            every ``position_search_interval`` epochs); with it the windows are lit by the
            probe shifted to the sub-pixel positions. The refined positions are written into
            the model's ``position_corrections`` after every moving epoch.
        position_start_epoch: first epoch (0-based) at which the positions move (the object
            must have formed first); before it the object and probe are updated at the
            given (sub-pixel) positions.
        position_step: fraction of the Gauss-Newton shift applied per update, in (0, 2].
        position_max_shift: largest move of one position per update and axis, in pixels (> 0).
        position_momentum: eta in [0, 1) of the momentum on the positions, applied once per
            epoch like mPIE's (0 = none).
        position_search_radius: r >= 0 (whole pixels): every ``position_search_interval``
            epochs after ``position_start_epoch`` each position is also tried at the
            ``(2 r + 1)^2`` whole-pixel offsets around it and jumps to the one with the
            smallest amplitude misfit if that is more than 10% below the misfit in place (a
            deterministic form of the trial positions of Maiden et al., Ultramicroscopy 120,
            64 (2012)); it frees positions trapped more than ~1 px from the truth, where the
            gradient step's linearisation fails. 0 = no search.
        position_search_interval: epochs between searches (>= 1).
        probe_power_cap: c >= 0: after every epoch that updates the probe, a probe whose power
            ``sum |P|^2`` exceeds ``c`` times the largest pattern's total counts is scaled down to
            that bound (0 = no cap; off for scans with a detector mask, whose measured counts
            miss the masked part of the beam). For a transmission object the exit wave's power
            is ``sum |P|^2 |O|^2``, so ``c = 16`` allows an average intensity transmission down
            to 1/16, and a drift of the object-probe scale (a gauge) up to 4x in amplitude: with
            c = 4 a benign drift to 10x the counts was cut and a position-correcting rPIE fit
            ended at 0.61 px instead of 0.22 px (``tests/test_epie_positions.py``). Without a
            cap, at low dose (1e3-1e4 photons per pattern) sequential ePIE diverges: the probe
            power grew 600x (1e4) and 3e8x (1e3) over 50 epochs while the object shrank, and the
            data residual with them (robustness cases ``ff_lowdose_1e4``,
            ``ff_sparse_dose1e3``). Scaling the object up by the same factor instead (a pure
            gauge move) does not stop that divergence. PtyLab's ``probePowerCorrection`` pins
            the power to the largest pattern's counts instead.
    """

    engine: str = "epie"
    object_step: float = 1.0
    probe_step: float = 1.0
    regularisation: float = 1.0
    momentum: float = 0.0
    batch_size: int = 1
    refine_probe: bool = True
    probe_start_epoch: int = 0
    fourier_relaxation: float = 0.0
    position_correction: bool = False
    position_start_epoch: int = 5
    position_step: float = 1.0
    position_max_shift: float = 1.0
    position_momentum: float = 0.8
    position_search_radius: int = 3
    position_search_interval: int = 10
    probe_power_cap: float = 16.0

    def __post_init__(self):
        if self.engine not in PIE_ENGINES:
            raise AdptychoError(f"unknown PIE engine {self.engine!r}; choose from {', '.join(PIE_ENGINES)}")
        for name in ("object_step", "probe_step"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise AdptychoError(f"{name} must be a finite number >= 0, got {value}")
        if not 0.0 <= self.regularisation <= 1.0:
            raise AdptychoError(f"regularisation (rPIE alpha) must be in [0, 1], got {self.regularisation}")
        if not 0.0 <= self.momentum < 1.0:
            raise AdptychoError(f"momentum (mPIE eta) must be in [0, 1), got {self.momentum}")
        if int(self.batch_size) < 1:
            raise AdptychoError(f"batch_size must be at least 1, got {self.batch_size}")
        if int(self.probe_start_epoch) < 0:
            raise AdptychoError(f"probe_start_epoch must be >= 0, got {self.probe_start_epoch}")
        if not (np.isfinite(self.fourier_relaxation) and self.fourier_relaxation >= 0):
            raise AdptychoError("fourier_relaxation must be a finite number >= 0, got "
                                f"{self.fourier_relaxation}")
        if not isinstance(self.position_correction, (bool, np.bool_)):
            raise AdptychoError("position_correction must be True or False, got "
                                f"{self.position_correction!r}")
        object.__setattr__(self, "position_correction", bool(self.position_correction))
        if not (np.isfinite(self.probe_power_cap) and self.probe_power_cap >= 0):
            raise AdptychoError(f"probe_power_cap must be a finite number >= 0, got "
                                f"{self.probe_power_cap}")
        if not (np.isfinite(self.position_step) and 0.0 < self.position_step <= 2.0):
            raise AdptychoError(f"position_step must be in (0, 2], got {self.position_step}")
        for name, low in (("position_start_epoch", 0), ("position_search_radius", 0),
                          ("position_search_interval", 1)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.integer, np.floating))
                    and not isinstance(value, bool) and np.isfinite(value)
                    and value == int(value) and value >= low):
                raise AdptychoError(f"{name} must be an integer >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not 0.0 <= self.position_momentum < 1.0:
            raise AdptychoError(
                f"position_momentum must be in [0, 1), got {self.position_momentum}")
        if not (np.isfinite(self.position_max_shift) and self.position_max_shift > 0):
            raise AdptychoError("position_max_shift must be a finite number > 0 (pixels), got "
                                f"{self.position_max_shift}")


def pie_settings(engine: str = "epie", **overrides) -> PIESettings:
    """``PIESettings`` with the engine's defaults; ``None`` values in ``overrides`` are ignored."""
    if engine not in PIE_ENGINES:
        raise AdptychoError(f"unknown PIE engine {engine!r}; choose from {', '.join(PIE_ENGINES)}")
    values = {"engine": engine, **_DEFAULTS[engine]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PIESettings(**values)

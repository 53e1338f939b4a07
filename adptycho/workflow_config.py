"""The options of the calibration and oversampling workflows as config values.

``calibrate(scan, config)`` takes a ``CalibrationConfig`` and ``oversample(scan, initial, probe,
config)`` an ``OversamplingConfig``, as ``reconstruct`` takes a ``ReconstructConfig``
(``adptycho.config``): keyword calls build one from the defaults, keywords given with a config
override its fields, an unknown keyword is a ``TypeError`` and a bad value one
``AdptychoError`` line naming the option, before any data is touched. The config is written
verbatim (``to_dict``) as the result's ``settings["config"]``, so ``CalibrationConfig.from_dict(
calibration.settings["config"])`` is the same config (a calibration's settings keep the
``reconstruct`` config of its fit as ``settings["reconstruct_config"]``).

The run-time objects stay arguments next to the config: the initial ``probe``, a
``probe_support`` mask, Keras ``callbacks``, an ``error_fn`` and a weight schedule given as a
function. Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar, Optional, Tuple, Union

from adptycho.config import (LOSS_NAMES, POSITION_MODELS, ConfigBase, _check_rate, _check_start,
                             _choice, _fail, _group_values, _is_int, _is_number, _optional_count)

__all__ = ["CalibrationConfig", "OversamplingConfig", "OVERSAMPLING_ENGINES"]

OVERSAMPLING_ENGINES = ("epie", "rpie", "mpie")  # training.pie_settings.PIE_ENGINES


def _count(name: str, value, minimum: int = 1) -> int:
    if value is None:
        _fail(f"{name} must be an integer >= {minimum}, got None")
    return _optional_count(name, value, minimum)


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        _fail(f"{name} must be True or False, got {value!r}")
    return value


def _optional_flag(name: str, value) -> Optional[bool]:
    return None if value is None else _flag(name, value)


def _positive(name: str, value, allow_zero: bool = False) -> float:
    if not _is_number(value) or value < 0 or (value == 0 and not allow_zero):
        _fail(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, "
              f"got {value!r}")
    return float(value)


def _numbers(name: str, value, length: Optional[int] = None) -> Optional[tuple]:
    """None, or a sequence of finite numbers (of ``length``) as a tuple of floats."""
    if value is None:
        return None
    if isinstance(value, str) or not hasattr(value, "__len__"):
        _fail(f"{name} must be a sequence of numbers, got {value!r}")
    values = tuple(value)
    if not values or not all(_is_number(v) for v in values) or (
            length is not None and len(values) != length):
        _fail(f"{name} must be {length or 'one or more'} finite numbers, got {value!r}")
    return tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class CalibrationConfig(ConfigBase):
    """Every option of ``calibration.calibrate``, with its default (meanings there)."""

    function: ClassVar[str] = "calibrate"

    epochs: int = 60
    batch_size: int = 16
    refine_positions: bool = True
    refine_distance: Optional[bool] = None
    position_model: str = "offsets"
    loss: str = "amplitude"
    probe_modes: int = 1
    learning_rates: Optional[dict] = None
    start_epochs: Optional[dict] = None
    seed: int = 0
    verbose: int = 0
    checkpoint_dir: Optional[str] = None
    distance_search: Optional[bool] = None
    distance_search_epochs: int = 20
    distance_search_factors: Optional[Tuple[float, ...]] = None
    focus_search: Optional[bool] = None
    focus_search_epochs: Optional[int] = None
    probe_power: Union[None, float, str] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        for name in ("epochs", "batch_size", "probe_modes", "distance_search_epochs"):
            set_(name, _count(name, getattr(self, name)))
        set_("focus_search_epochs", _optional_count("focus_search_epochs",
                                                    self.focus_search_epochs))
        _flag("refine_positions", self.refine_positions)
        for name in ("refine_distance", "distance_search", "focus_search"):
            _optional_flag(name, getattr(self, name))
        _choice("position_model", self.position_model, POSITION_MODELS)
        _choice("loss", self.loss, LOSS_NAMES)
        set_("learning_rates", _group_values("learning_rates", self.learning_rates, _check_rate))
        set_("start_epochs", _group_values("start_epochs", self.start_epochs, _check_start))
        if not _is_int(self.seed):
            _fail(f"seed must be an integer, got {self.seed!r}")
        _choice("verbose", self.verbose, (0, 1, 2))
        if self.checkpoint_dir is not None:
            set_("checkpoint_dir", os.fspath(self.checkpoint_dir))
        factors = _numbers("distance_search_factors", self.distance_search_factors)
        if factors is not None and min(factors) <= 0:
            _fail(f"distance_search_factors must be positive, got {self.distance_search_factors!r}")
        set_("distance_search_factors", factors)
        if self.probe_power is not None and self.probe_power != "auto":
            if isinstance(self.probe_power, str) or not _is_number(self.probe_power) \
                    or self.probe_power <= 0:
                _fail(f"probe_power must be a number or 'auto', got {self.probe_power!r}")
            set_("probe_power", float(self.probe_power))


@dataclasses.dataclass(frozen=True)
class OversamplingConfig(ConfigBase):
    """Every option of ``training.oversampling.oversample``, with its default (a weight
    schedule given as a function is an argument of ``oversample``, not a field).

    Attributes:
        factor: Y, scan density factor per axis (N = Y^2 M patterns).
        weight: w: measured patterns step 1, simulated 1/w (``training.oversampling``: w < 1).
        repeats: how many simulate-and-ePIE rounds.
        weight_schedule: a sequence of ``repeats`` weights; overrides ``weight``.
        epochs: ePIE epochs per repeat.
        engine: ``epie`` (the paper), ``rpie`` or ``mpie``.
        batch_size: ePIE patterns per update (1 = sequential, the paper's algorithm).
        object_step: global ePIE alpha multiplying the per-pattern weights.
        regularisation: rPIE ``a`` (default: the engine's).
        step_px: measured scan step (default: median nearest-neighbour distance).
        object_origin_px: offset from ``scan.positions_px`` to the object grid (default: the
            result's ``object_origin_px`` or 0).
        warm_start: start each ePIE from the object it simulated from instead of the empty
            (all-ones) object of Algorithm 1.
        refine_probe: also update the probe (the paper keeps it known).
        fourier_relaxation: rho >= 0, Poisson noise bound of the Fourier constraint for the
            MEASURED patterns (``PIESettings.fourier_relaxation``; the simulated patterns are
            noise-free and always projected exactly). 0 = the paper's ePIE; 1 = the measured
            patterns pull the object only while their amplitude misfit exceeds the expected
            Poisson deviation (our addition for noisy counts; the paper's ePIE fits the noise).
        seed: pattern order.
        verbose: 1 prints one line per repeat.
    """

    function: ClassVar[str] = "oversample"

    factor: int = 3
    weight: float = 20.0
    repeats: int = 1
    weight_schedule: Optional[Tuple[float, ...]] = None
    epochs: int = 100
    engine: str = "epie"
    batch_size: int = 1
    object_step: float = 1.0
    regularisation: Optional[float] = None
    step_px: Union[None, float, Tuple[float, float]] = None
    object_origin_px: Optional[Tuple[float, float]] = None
    warm_start: bool = False
    refine_probe: bool = False
    fourier_relaxation: float = 0.0
    seed: int = 0
    verbose: int = 0

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        for name in ("factor", "repeats", "epochs", "batch_size"):
            set_(name, _count(name, getattr(self, name)))
        set_("weight", _positive("weight", self.weight))
        set_("weight_schedule", _numbers("weight_schedule", self.weight_schedule))
        if self.engine not in OVERSAMPLING_ENGINES:
            _fail(f"unknown engine {self.engine!r} for oversampling; choose from "
                  f"{', '.join(OVERSAMPLING_ENGINES)}")
        set_("object_step", _positive("object_step", self.object_step))
        if self.regularisation is not None:
            set_("regularisation", _positive("regularisation", self.regularisation, True))
        if self.step_px is not None:
            step = (_positive("step_px", self.step_px) if _is_number(self.step_px)
                    else _numbers("step_px", self.step_px, 2))
            set_("step_px", step)
        set_("object_origin_px", _numbers("object_origin_px", self.object_origin_px, 2))
        _flag("warm_start", self.warm_start)
        _flag("refine_probe", self.refine_probe)
        set_("fourier_relaxation", _positive("fourier_relaxation", self.fourier_relaxation, True))
        if not _is_int(self.seed):
            _fail(f"seed must be an integer, got {self.seed!r}")
        _choice("verbose", self.verbose, (0, 1, 2))

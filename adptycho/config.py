"""The options of a reconstruction as one value: ``ReconstructConfig``.

``reconstruct(scan, config)`` takes a ``ReconstructConfig``; keyword calls
(``reconstruct(scan, epochs=20)``) build one from the defaults, and keywords given with a config
override its fields (``reconstruct(scan, config, seed=3)``). The config is validated when it is
built (``__post_init__``: one ``AdptychoError`` naming the option), so a bad option fails before
any data is touched, and it is written verbatim (``to_dict``) into the result's
``settings["config"]``: ``ReconstructConfig.from_dict(result.settings["config"])`` is the same
config, so a saved reconstruction says how to run it again.

A config holds plain values only (numbers, strings, tuples, small dicts). The run-time objects of
a fit are arguments of ``reconstruct`` next to it, not fields: the initial ``probe`` and
``initial_object``, a ``probe_support`` mask, Keras ``callbacks``, a per-pixel readout-noise map
(``readout_noise=array``) and a ready ``tf.distribute.Strategy`` (``strategy=object``).

Engine names and PIE option names are checked by ``reconstruct`` against the engine registry;
everything else is checked here. Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import ClassVar, Optional, Tuple, Union

import numpy as np

from adptycho.errors import AdptychoError

__all__ = ["ConfigBase", "ReconstructConfig", "RUNTIME_ARGUMENTS", "LOSS_NAMES", "PARAMETER_GROUPS",
           "split_runtime_options", "config_keywords", "with_config_keywords"]

# the vocabularies (adptycho.losses.LOSSES, model.PARAMETER_GROUPS, ...: a test checks they
# agree; repeated here so that building a config imports no TensorFlow)
LOSS_NAMES = ("amplitude", "poisson", "poisson-gaussian")
PARAMETER_GROUPS = ("object", "probe", "positions", "distance")
PARAMETRISATIONS = ("complex", "amplitude-phase", "amplitude", "phase")
POSITION_MODELS = ("offsets", "affine")
OPTIMIZERS = ("adam", "lbfgs")
STRATEGY_NAMES = (None, "none", "mirrored", "multiworker")

# arguments of reconstruct() that are run-time objects, not options (see the module docstring)
RUNTIME_ARGUMENTS = ("probe", "initial_object", "probe_support", "callbacks")


def _fail(message: str):
    raise AdptychoError(message)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _is_number(value) -> bool:
    """A finite real number."""
    return _is_real(value) and math.isfinite(float(value))


def _optional_count(name: str, value, minimum: int = 1):
    if value is not None and (not _is_int(value) or value < minimum):
        _fail(f"{name} must be at least {minimum}, got {value!r}" if _is_int(value)
              else f"{name} must be an integer >= {minimum} or None, got {value!r}")
    return None if value is None else int(value)


def _choice(name: str, value, choices):
    if value not in choices:
        shown = ", ".join(str(c) for c in choices if c is not None)
        _fail(f"unknown {name} {value!r}; choose from {shown}")
    return value


def _group_values(name: str, values, check) -> Optional[dict]:
    """A {group: value} option (learning rates, start epochs): known groups, checked values."""
    if values is None:
        return None
    if not isinstance(values, dict):
        _fail(f"{name} must be a dict {{group: value}}, got {values!r}")
    for group, value in values.items():
        if group not in PARAMETER_GROUPS:
            _fail(f"{name}: unknown parameter group {group!r}; choose from "
                  f"{', '.join(PARAMETER_GROUPS)}")
        check(group, value)
    return dict(values)


def _check_rate(group, value):
    # an infinite step is a value (the NaN guard then stops the fit: tests/test_resilience.py)
    if not _is_real(value) or not value > 0:
        _fail(f"learning_rates[{group!r}] must be a positive number, got {value!r}")


def _check_start(group, value):
    if not _is_int(value) or value < 0:
        _fail(f"start_epochs[{group!r}] must be an integer >= 0, got {value!r}")


class ConfigBase:
    """What every options dataclass of a workflow shares (``ReconstructConfig``,
    ``workflow_config.CalibrationConfig``, ...): building from keywords, and saving as plain
    values (``to_dict``, written verbatim into the result's settings) and back."""

    function: ClassVar[str] = "reconstruct"  # the workflow whose options these are

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, config=None, **options):
        """``config`` (default: all defaults) with ``options`` replacing its fields.

        Raises:
            TypeError: an option that is not a field (as for an unknown keyword argument).
            AdptychoError: an invalid value.
        """
        unknown = sorted(set(options) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"{cls.function}() got an unexpected keyword argument {unknown[0]!r}")
        if config is None:
            return cls(**options)
        if not isinstance(config, cls):
            raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        return dataclasses.replace(config, **options) if options else config

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (tuples as lists)."""
        def plain(value):
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (tuple, list, np.ndarray)):
                return [plain(v) for v in value]
            if isinstance(value, np.generic):
                return value.item()
            return value

        return {name: plain(getattr(self, name)) for name in self.field_names()}

    @classmethod
    def from_dict(cls, values: dict):
        """The config of ``to_dict()`` (or of a result's ``settings["config"]``); fields a
        newer version added keep their defaults, unknown names are refused."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            _fail(f"unknown {cls.function} options {unknown} in the saved config")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class ReconstructConfig(ConfigBase):
    """Every option of ``reconstruct`` (``adptycho.reconstruction``), with its default.

    The validation here refuses values no engine can use (``AdptychoError`` naming the field).
    Sequences are stored as tuples, ``checkpoint_dir`` as a string.

    Attributes:
        engine: ``auto`` (default: ``training.planning.auto_schedule``), an engine name
            (``adam``, ``epie``, ``rpie``, ``mpie``, ...: the registry ``adptycho.engines``;
            PIE engines refine object and probe only) or a schedule of stages run in order on
            the same model, ``"epie:30,adam:200"`` (``training.schedule``; Keras callbacks and
            ``checkpoint_dir`` apply to the Adam stage).
        epochs: passes over the data of the last (Adam) stage. None: until a loss plateau for
            the adaptive default, 50 for a single named engine.
        batch_size: patterns per Adam step (default 32, shuffled every epoch); for a PIE engine
            the patterns per vectorised update (default 1: sequential, which converges where a
            batch can diverge).
        refine: parameter groups to fit: ``object``, ``probe``, ``positions``, ``distance``.
        loss: ``amplitude`` (default), ``poisson`` or ``poisson-gaussian``: the noise model of
            the Adam stage.
        readout_noise: camera readout noise in photons (``poisson-gaussian``); a per-pixel map
            is an argument of ``reconstruct``.
        learning_rates: per-group Adam step sizes (see ``PtychoModel.compile``; after a PIE
            stage the default object and probe step is ``training.planning.AUTO_LEARNING_RATE``;
            a latent object's ``LATENT_LEARNING_RATE``).
        start_epochs: per-group first epoch; default: object 0, probe 1, positions and distance
            after a fifth of the epochs (the object forms first); all 0 after a PIE stage.
        decay_rate: learning-rate decay per epoch (default 0.97, Seifert et al.; 1 for the
            adaptive schedule, which halves the steps on a plateau instead).
        object: ``pixels``, a shipped IRMAE (``irmae-mnist``, ``irmae-mnist-3``), a shipped
            StyleGAN2 generator, or a directory with IRMAE weights (a ``LatentObject``: only its
            latent vector is fitted; the result's ``object`` is the resized decoder output on
            the grid and ``extra_histories["latent"]`` the latent).
        parametrisation: pixel parametrisation (``complex``, ``amplitude-phase``, ``amplitude``,
            ``phase``).
        tv_weight: total-variation prior of a pixel object (``PixelObject``), in units of the
            loss summed over all patterns per unit of TV; it acts in the adam stage and the
            L-BFGS optimizer, not in PIE stages (0: none).
        probe_modes, object_shape, padding_px: see ``reconstruction.build_model``.
        seed: seeds Python, NumPy, TensorFlow and Keras (shuffling order) for this call only, so
            runs are repeatable; the caller's generator states are restored on return
            (``adptycho.runtime.restores_global_rngs``).
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch).
        checkpoint_dir: if given, the fit state is saved there after every epoch
            (``adptycho.training.checkpoint.FitCheckpoint``): a fit interrupted at any moment
            (even by SIGKILL) and restarted with the same arguments continues from the last
            completed epoch and ends with the result of an uninterrupted fit. The histories of
            the result cover all epochs.
        jit_compile: XLA-compile the training step (``"auto"``: see ``PtychoModel.compile``; on
            CPU, far-field steps run as XLA pieces joined by TensorFlow FFT ops).
        subpixel: ``"auto"``, True or False: Fourier sub-pixel shifts (``PtychoModel``).
        position_model: ``offsets`` or ``affine`` (global affine stage model plus offsets).
        optimizer: ``adam`` or ``lbfgs`` (full-batch L-BFGS of ``adptycho.training.lbfgs``,
            ``epochs`` iterations; object only, meant for latent objects).
        probe_power: fixed total probe power in photons per exposure (``PtychoModel``).
        latent_options: ``LatentObject`` keyword arguments (see ``build_model``).
        pie_options: PIE engines only: ``object_step`` (alpha), ``probe_step`` (beta),
            ``regularisation`` (rPIE a), ``momentum`` (mPIE eta), ``fourier_relaxation``
            (Poisson noise bound, ``PIESettings``); ``batch_size`` is the number of patterns
            per vectorised update (1 = sequential ePIE), ``start_epochs["probe"]`` the first
            epoch of probe updates.
        validation_fraction: hold out this fraction of the patterns (random, from ``seed``):
            they never enter a training batch; their loss and residual are evaluated after every
            epoch (``extra_histories["validation_loss"]``, ``["validation_residual"]``).
        early_stopping_patience: stop when the validation loss (the training loss without
            validation patterns) has not improved for this many epochs, and keep the best
            epoch's parameters.
        strategy: ``None``, ``"mirrored"`` or ``"multiworker"`` (``training.distribute``; a
            ready ``tf.distribute.Strategy`` is an argument of ``reconstruct``): data-parallel
            fit, patterns sharded across the replicas, gradients all-reduced. Adam engine only.
    """

    engine: str = "auto"
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    refine: Tuple[str, ...] = ("object", "probe")
    loss: str = "amplitude"
    readout_noise: float = 1.0
    learning_rates: Optional[dict] = None
    start_epochs: Optional[dict] = None
    decay_rate: Optional[float] = None
    object: str = "pixels"
    parametrisation: str = "complex"
    tv_weight: float = 0.0
    probe_modes: int = 1
    object_shape: Optional[Tuple[int, int]] = None
    padding_px: int = 8
    seed: int = 0
    verbose: int = 1
    checkpoint_dir: Optional[str] = None
    jit_compile: Union[str, bool] = "auto"
    subpixel: Union[str, bool] = "auto"
    position_model: str = "offsets"
    optimizer: str = "adam"
    probe_power: Optional[float] = None
    latent_options: Optional[dict] = None
    pie_options: Optional[dict] = None
    validation_fraction: float = 0.0
    early_stopping_patience: Optional[int] = None
    strategy: Optional[str] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        self._check_schedule(set_)
        self._check_noise_model(set_)
        self._check_object(set_)
        self._check_fit(set_)

    # -- validation (one method per topic, each sets the normalised values) ---------------
    def _check_schedule(self, set_):
        if not isinstance(self.engine, str) or not self.engine.strip():
            _fail(f"engine must be 'auto', an engine name or a schedule such as "
                  f"'epie:20,adam:80', got {self.engine!r}")
        set_("epochs", _optional_count("epochs", self.epochs))
        set_("batch_size", _optional_count("batch_size", self.batch_size))
        if isinstance(self.refine, str):
            _fail(f"refine must be a sequence of groups such as ('object', 'probe'), got "
                  f"the string {self.refine!r}")
        refine = tuple(self.refine)
        for group in refine:
            if group not in PARAMETER_GROUPS:
                _fail(f"refine: unknown parameter group {group!r}; choose from "
                      f"{', '.join(PARAMETER_GROUPS)}")
        if len(set(refine)) != len(refine):
            _fail(f"refine names a group twice: {refine}")
        set_("refine", refine)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.optimizer == "lbfgs" and refine != ("object",):
            _fail(f"the lbfgs optimizer refines the object only, got refine={refine}")
        set_("learning_rates", _group_values("learning_rates", self.learning_rates, _check_rate))
        set_("start_epochs", _group_values("start_epochs", self.start_epochs, _check_start))
        if self.decay_rate is not None and (not _is_number(self.decay_rate)
                                            or self.decay_rate <= 0):
            _fail(f"decay_rate must be a positive number or None, got {self.decay_rate!r}")
        if self.pie_options is not None and not isinstance(self.pie_options, dict):
            _fail(f"pie_options must be a dict or None, got {self.pie_options!r}")
        set_("pie_options", None if self.pie_options is None else dict(self.pie_options))

    def _check_noise_model(self, set_):
        if self.loss not in LOSS_NAMES:
            _fail(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSS_NAMES)}")
        if not _is_number(self.readout_noise) or self.readout_noise < 0:
            _fail(f"readout_noise must be a number >= 0 (photons), got {self.readout_noise!r} "
                  "(a per-pixel map is an argument of reconstruct, not a config field)")
        set_("readout_noise", float(self.readout_noise))

    def _check_object(self, set_):
        if self.object != "pixels" and not os.path.isdir(str(self.object)):
            from adptycho.nn.irmae import SHIPPED_MODELS  # the model names: imports Keras
            from adptycho.nn.stylegan2 import SHIPPED_STYLEGAN2

            objects = ("pixels",) + tuple(SHIPPED_MODELS) + tuple(SHIPPED_STYLEGAN2)
            if self.object not in objects:
                _fail(f"unknown object representation {self.object!r}; available: "
                      f"{', '.join(objects)} or a directory with IRMAE weights")
        set_("object", str(self.object))
        _choice("parametrisation", self.parametrisation, PARAMETRISATIONS)
        if not _is_number(self.tv_weight) or not np.isfinite(self.tv_weight) \
                or self.tv_weight < 0:
            _fail(f"tv_weight must be a finite number >= 0, got {self.tv_weight!r}")
        set_("tv_weight", float(self.tv_weight))
        if self.tv_weight > 0 and self.object != "pixels":
            _fail(f"tv_weight applies to pixel objects, not to {self.object!r}")
        set_("probe_modes", _optional_count("probe_modes", self.probe_modes))
        if self.probe_modes is None:
            _fail("probe_modes must be at least 1, got None")
        if not _is_int(self.padding_px) or self.padding_px < 0:
            _fail(f"padding_px must be an integer >= 0, got {self.padding_px!r}")
        if self.object_shape is not None:
            shape = tuple(self.object_shape)
            if len(shape) != 2 or not all(_is_int(n) and n > 0 for n in shape):
                _fail(f"object_shape must be two positive integers (Y, X), got "
                      f"{self.object_shape!r}")
            set_("object_shape", tuple(int(n) for n in shape))
        _choice("position_model", self.position_model, POSITION_MODELS)
        if self.probe_power is not None and (not _is_number(self.probe_power)
                                             or self.probe_power <= 0):
            _fail(f"probe_power must be a positive number of photons or None, got "
                  f"{self.probe_power!r}")
        if self.latent_options is not None:
            if not isinstance(self.latent_options, dict):
                _fail(f"latent_options must be a dict or None, got {self.latent_options!r}")
            if self.object == "pixels":
                _fail("latent_options apply to latent objects, not to object='pixels'")
            set_("latent_options", dict(self.latent_options))

    def _check_fit(self, set_):
        if not _is_int(self.seed):
            _fail(f"seed must be an integer, got {self.seed!r}")
        _choice("verbose", self.verbose, (0, 1, 2))
        for name in ("jit_compile", "subpixel"):
            _choice(name, getattr(self, name), ("auto", True, False))
        if self.checkpoint_dir is not None:
            set_("checkpoint_dir", os.fspath(self.checkpoint_dir))
        if not _is_number(self.validation_fraction) or not 0 <= self.validation_fraction < 1:
            _fail(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        set_("early_stopping_patience",
             _optional_count("early_stopping_patience", self.early_stopping_patience))
        _choice("strategy", self.strategy, STRATEGY_NAMES)


def split_runtime_options(options: dict):
    """Separate the run-time objects a keyword call may pass for two options: a per-pixel
    readout-noise map (``readout_noise=array``) and a ready ``tf.distribute.Strategy``
    (``strategy=object``). Returns ``(options for the config, readout map or None, strategy
    object or None)``."""
    options = dict(options)
    noise_map = None
    if "readout_noise" in options and np.ndim(options["readout_noise"]) > 0:
        noise_map = np.asarray(options.pop("readout_noise"), np.float32)
    strategy = None
    if options.get("strategy") is not None and not isinstance(options["strategy"], str):
        strategy = options.pop("strategy")
    return options, noise_map, strategy


def config_keywords(config_class):
    """A decorator that gives ``function(..., config=None, *, ..., **options)`` the signature
    that lists every field of ``config_class`` as a keyword-only parameter with its default
    instead of ``**options`` (what ``help()``, ``inspect.signature`` and editors show;
    ``signature.bind`` then refuses an unknown keyword as the call does)."""
    import inspect

    def decorate(function):
        signature = inspect.signature(function)
        parameters = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        parameters += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                         default=f.default, annotation=f.type)
                       for f in dataclasses.fields(config_class)]
        function.__signature__ = signature.replace(parameters=parameters)
        return function
    return decorate


with_config_keywords = config_keywords(ReconstructConfig)  # reconstruct(scan, config, ...)

"""The one interface of the reconstruction engines.

An engine moves a ``PtychoModel``'s parameters towards the measured data for a number of epochs:

    history = engine.fit(model, data, epochs, callbacks=[...], sample_weight=None, verbose=0)


``data`` is a ``ScanData`` or an (N, H, W) array of measured intensities in the model's
pattern order; ``history`` is a Keras ``History`` whose ``history`` dict holds one value per
epoch for each log (``loss`` and ``residual`` at least). Engines touch the model only through
its public methods (``object_tensor`` / ``assign_object``, ``probe_tensor`` / ``assign_probe``,
``get_positions`` / ``assign_positions``, ``groups``, ``batch_losses``, ``evaluate``, Keras
``fit``), never its private attributes.

Engine-specific settings go to the constructor; ``from_plan`` builds an engine from the
``FitPlan`` that ``reconstruct`` makes for a schedule (``reconstruct(engine="epie:20,adam:80")``).
A new engine is one module with an ``Engine`` subclass plus one line in ``ENGINES``
(``adptycho/engines/__init__.py``).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Optional, Sequence

import keras
import numpy as np

from adptycho.errors import AdptychoError

__all__ = ["Engine", "History", "FitPlan", "patterns_of", "epoch_callbacks",
           "progress_display"]


class History(keras.callbacks.History):
    """Keras ``History`` of an engine's fit: ``history`` maps a log name to one value per epoch,
    ``epoch`` lists the epoch numbers (0-based, offset by the stage's first epoch)."""

    def __init__(self, logs: Optional[dict] = None, epochs: Optional[Sequence[int]] = None):
        super().__init__()
        self.history = {k: list(v) for k, v in (logs or {}).items()}
        count = len(next(iter(self.history.values()), []))
        self.epoch = list(range(count)) if epochs is None else list(epochs)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    @classmethod
    def of(cls, value) -> "History":
        """A ``History`` from a Keras ``History`` or a ``{name: [values]}`` dict."""
        if isinstance(value, History):
            return value
        if isinstance(value, keras.callbacks.History):
            return cls(value.history, getattr(value, "epoch", None))
        return cls(value)

    def __len__(self) -> int:
        return len(self.epoch)


@dataclasses.dataclass
class FitPlan:
    """What ``reconstruct`` knows about a fit, from which every stage's engine is built.

    Attributes:
        refine: parameter groups of the fit (an engine refines those it can).
        start_epochs: per-group first epoch of the Adam stage (see ``PtychoModel.compile``).
        user_start_epochs: the start epochs the caller gave (None: defaults).
        batch_size: the caller's batch size (None: the engine's default).
        adam_batch_size: patterns per Adam step.
        seed: seeds the pattern order.
        training, validation: (K,) int pattern indices of the training / held-out patterns.
        steps: Adam steps per epoch.
        after_pie: the schedule has a PIE stage before the Adam stage.
        adam_stage: the schedule ends with an Adam stage (a PIE stage before it updates
            sequentially and only the groups it can refine).
        pie_options: ``PIESettings`` fields (step sizes, relaxation, position options).
        strategy: ``tf.distribute.Strategy`` or None.
        checkpoint_dir, fingerprint: Adam stage checkpoints (``training.checkpoint``).
        early_stopping_patience: Adam stage early stopping on the (validation) loss.
    """

    refine: tuple = ("object", "probe")
    start_epochs: dict = dataclasses.field(default_factory=dict)
    user_start_epochs: Optional[dict] = None
    batch_size: Optional[int] = None
    adam_batch_size: int = 32
    seed: int = 0
    training: Optional[np.ndarray] = None
    validation: Optional[np.ndarray] = None
    steps: Optional[int] = None
    after_pie: bool = False
    adam_stage: bool = False
    pie_options: Optional[dict] = None
    strategy: object = None
    checkpoint_dir: object = None
    fingerprint: Optional[dict] = None
    early_stopping_patience: Optional[int] = None


def patterns_of(data, model=None) -> np.ndarray:
    """(N, H, W) measured intensities of ``data`` (a ``ScanData`` or an array), checked
    against ``model``'s pattern count and detector shape when given."""
    patterns = np.asarray(data.patterns if hasattr(data, "patterns") else data)
    if model is not None and patterns.shape != (model.num_patterns,) + tuple(model.detector_shape):
        raise AdptychoError(f"patterns have shape {patterns.shape}, expected "
                            f"{(model.num_patterns,) + tuple(model.detector_shape)}")
    return patterns


class Engine(abc.ABC):
    """Base of the reconstruction engines (see the module docstring).

    Class attributes:
        name: the registry name.
        groups: the parameter groups the engine can refine.
    """

    name = "engine"
    groups: tuple = ("object",)

    @classmethod
    def from_plan(cls, plan: FitPlan, name: str) -> "Engine":
        """The engine of a schedule stage called ``name`` for ``reconstruct``'s ``plan``."""
        return cls()

    @classmethod
    def check_refine(cls, refine, name: Optional[str] = None) -> None:
        """Refuse groups this engine cannot refine (one line naming them)."""
        other = [g for g in refine if g not in cls.groups]
        if other or "object" not in refine:
            raise AdptychoError(
                f"the {name or cls.name} engine refines {', '.join(cls.groups)} only (with the "
                f"object); got refine={tuple(refine)} (use the adam engine for the others)")

    @abc.abstractmethod
    def fit(self, model, data, epochs: int, *, callbacks=None, sample_weight=None,
            verbose: int = 0, first_epoch: int = 0) -> History:
        """Run ``epochs`` epochs on ``model``; returns the ``History`` of these epochs.

        Args:
            model: a ``PtychoModel``.
            data: ``ScanData`` or (N, H, W) measured intensities.
            epochs: passes over the data.
            callbacks: Keras callbacks (``on_epoch_end`` after every epoch at least).
            sample_weight: (N,) non-negative per-pattern weights (engines that support them).
            verbose: 0 silent, 1 progress.
            first_epoch: the number of this fit's first epoch in a schedule (callbacks and
                ``History.epoch`` count from it; the Adam engine counts within its stage).
        """

    @classmethod
    def refuse_sample_weight(cls, sample_weight) -> None:
        """One-line ``AdptychoError`` when an engine without per-pattern weights gets some."""
        if sample_weight is not None:
            raise AdptychoError(f"the {cls.name} engine takes no per-pattern weights "
                                "(sample_weight applies to the PIE engines)")


def epoch_callbacks(callbacks, model, offset: int = 0):
    """``after_epoch(epoch, logs)`` that calls ``on_epoch_end(offset + epoch, logs)`` of the
    Keras ``callbacks`` (engines without Keras training state), or None without callbacks."""
    callbacks = list(callbacks or [])
    if not callbacks:
        return None
    for callback in callbacks:
        callback.set_model(model)

    def after_epoch(epoch, logs):
        for callback in callbacks:
            callback.on_epoch_end(offset + epoch, dict(logs))
    return after_epoch


def progress_display(epochs: int, verbose: int):
    """``show(epoch, logs)`` drawing Keras' own progress display (``ProgbarLogger``: ``Epoch
    k/N``, the epoch's time and its scalar logs) for an engine that is not a Keras fit, so that
    every stage of a schedule looks the same on screen; None when ``verbose`` is 0. Call it after
    every epoch (``epoch`` from 0 within the stage, as Keras counts); the first epoch's header
    is printed here, each next one when the previous ends (so the bar times the epoch)."""
    if not verbose:
        return None
    bar = keras.callbacks.ProgbarLogger()
    bar.set_params({"verbose": 1, "epochs": int(epochs), "steps": 1})
    bar.on_epoch_begin(0)

    def show(epoch, logs):
        bar.on_epoch_end(epoch, {k: float(v) for k, v in logs.items() if np.ndim(v) == 0})
        if epoch + 1 < int(epochs):
            bar.on_epoch_begin(epoch + 1)
    return show

"""Live view of a fit in TensorBoard: ``TensorBoardLogger`` (a Keras callback) and ``--tensorboard`` (``adptycho.commands.tensorboard``).

What it writes (one event file per run under ``log_dir``, read with ``tensorboard --logdir``):

* scalars, every epoch: every number in the epoch's logs (``loss``, ``residual``, ``val_loss``,
  ``val_residual``, ...; names as Keras logs them), and for a ``PtychoModel``
  ``learning_rate/<group>`` (the current Adam step of each refined group; Adam epochs only, not
  in ePIE/rPIE/mPIE stages), ``distance_m`` (near
  field, or far field with the distance refined), ``focus_distance_m`` (cone beam) and
  ``position_change_px`` (mean over the scan of the distance each position moved since the
  previous epoch, in object pixels). For any other Keras model, ``learning_rate`` of its
  optimizer.
* images, every ``image_every`` epochs and after the last one: ``object/amplitude`` and
  ``object/phase`` (each scaled to its own min..max), ``probe/mode_<m>`` amplitudes (all modes on
  the scale of the strongest).
* text, once: ``settings``, a two-column table of the run's settings.

Steps are the callback's own epoch count (0, 1, 2, ...) over all stages of a schedule: an ePIE
stage followed by an Adam stage continues the same step axis (the L-BFGS optimizer has no epochs
and writes nothing). Writing is skipped on the non-chief workers of a multi-worker fit.

Python use::

    from adptycho.training.tensorboard import TensorBoardLogger
    result = reconstruct(scan, callbacks=[TensorBoardLogger("runs/rec", settings={"note": "x"})])
"""

from __future__ import annotations

import json
import os
from typing import Optional

import keras
import numpy as np

__all__ = ["TensorBoardLogger", "GANStepLogger"]


def _unit(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant image becomes 0)."""
    values = np.asarray(values, np.float32)
    low, high = float(np.min(values)), float(np.max(values))
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _scalar(value) -> Optional[float]:
    try:
        value = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return value if np.isfinite(value) else None


class TensorBoardLogger(keras.callbacks.Callback):
    """Write a fit's scalars, object/probe images and settings to TensorBoard event files.

    Args:
        log_dir: folder for the event files (created; several runs may share a parent folder).
        image_every: write the object and probe images every this many epochs (and at the end).
        settings: dict of settings written once as a text table (values as JSON).
    """

    def __init__(self, log_dir, image_every: int = 5, settings: Optional[dict] = None):
        super().__init__()
        if int(image_every) < 1:
            raise ValueError(f"image_every must be at least 1, got {image_every}")
        self.log_dir = os.fspath(log_dir)
        self.image_every = int(image_every)
        self.settings = dict(settings or {})
        self._writer = None
        self._step = 0
        self._last_image_step = None
        self._previous_positions = None
        self._in_keras_fit = False  # learning rates only mean something inside a Keras fit

    # -- writer -------------------------------------------------------------------------
    def _ensure_writer(self):
        import tensorflow as tf

        if self._writer is not None:
            return self._writer
        from adptycho.training.distribute import is_chief

        if not is_chief(getattr(self.model, "distribute_strategy", None)):
            return None
        os.makedirs(self.log_dir, exist_ok=True)
        self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.text("settings", self._settings_table(), step=0)
        self._remember_positions()
        return self._writer

    def _settings_table(self) -> str:
        rows = ["| setting | value |", "|---|---|"]
        for key in sorted(self.settings):
            value = json.dumps(self.settings[key], default=str)
            rows.append(f"| {key} | {value.replace('|', '/')} |")
        return "\n".join(rows)

    # -- what a PtychoModel offers -------------------------------------------------------
    def _is_ptycho(self) -> bool:
        return hasattr(self.model, "get_object") and hasattr(self.model, "get_probe")

    def _remember_positions(self):
        if self._is_ptycho() and hasattr(self.model, "get_positions"):
            self._previous_positions = self.model.get_positions()

    def _model_scalars(self) -> dict:
        values = {}
        model = self.model
        if self._is_ptycho():
            for group, optimizer in getattr(model, "group_optimizers", {}).items():
                if self._in_keras_fit:  # not in a PIE stage (its steps are not Adam's)
                    values[f"learning_rate/{group}"] = _scalar(optimizer.learning_rate)
            values["distance_m"] = _scalar(model.get_distance()) \
                if model.get_distance() is not None else None
            focus = model.get_focus_distance() if hasattr(model, "get_focus_distance") else None
            values["focus_distance_m"] = _scalar(focus) if focus is not None else None
            positions = model.get_positions()
            if self._previous_positions is not None:
                moved = np.linalg.norm(positions - self._previous_positions, axis=1)
                values["position_change_px"] = float(np.mean(moved))
            self._previous_positions = positions
        elif getattr(model, "optimizer", None) is not None and self._in_keras_fit:
            values["learning_rate"] = _scalar(model.optimizer.learning_rate)
        return {k: v for k, v in values.items() if v is not None}

    def _write_images(self, step: int):
        import tensorflow as tf

        if not self._is_ptycho() or self._last_image_step == step:
            return
        obj = self.model.get_object()
        probe = np.abs(self.model.get_probe())  # (M, H, W)
        probe = probe / max(float(probe.max()), 1e-30)
        tf.summary.image("object/amplitude", _unit(np.abs(obj))[None, ..., None], step=step)
        tf.summary.image("object/phase", _unit(np.angle(obj))[None, ..., None], step=step)
        for mode, amplitude in enumerate(probe):
            tf.summary.image(f"probe/mode_{mode}", amplitude[None, ..., None].astype(np.float32),
                             step=step)
        self._last_image_step = step

    # -- Keras hooks (the PIE engines call on_epoch_end only) ----------------------------
    def on_train_begin(self, logs=None):
        self._in_keras_fit = True
        self._ensure_writer()

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        writer = self._ensure_writer()
        step = self._step
        self._step += 1
        if writer is None:
            return
        with writer.as_default():
            for name, value in (logs or {}).items():
                value = _scalar(value)
                if value is not None:
                    tf.summary.scalar(name, value, step=step)
            for name, value in self._model_scalars().items():
                tf.summary.scalar(name, value, step=step)
            if step % self.image_every == 0:
                self._write_images(step)
        writer.flush()

    def on_train_end(self, logs=None):
        self._in_keras_fit = False
        self.close()

    def close(self):
        """Write the last images and flush the event file (also called at the end of a fit)."""
        if self._writer is None:
            return
        if self._step:
            with self._writer.as_default():
                self._write_images(self._step - 1)
        self._writer.flush()


class GANStepLogger:
    """TensorBoard for ``nn.stylegan2_training.train_stylegan2`` (its own training loop, no Keras
    callbacks): called as ``on_step(step, values, g_ema)`` after every minibatch step.

    Writes the step's scalars (``g``, ``d``, ``r1``, ``D(x)``, ``D(G)``) every step, the settings
    once as text, and every ``image_every`` steps ``samples``: a 4 x 4 grid of the EMA
    generator's images for 16 latents fixed at the start (the same faces across steps).
    """

    def __init__(self, log_dir, image_every: int = 250, settings: Optional[dict] = None):
        if int(image_every) < 1:
            raise ValueError(f"image_every must be at least 1, got {image_every}")
        self.log_dir = os.fspath(log_dir)
        self.image_every = int(image_every)
        self._table = TensorBoardLogger(log_dir, settings=settings)._settings_table()
        self._writer = None
        self._latents = None

    def __call__(self, step: int, values: dict, g_ema) -> None:
        import tensorflow as tf

        if self._writer is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                tf.summary.text("settings", self._table, step=0)
        with self._writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(name, float(value), step=step)
            if step % self.image_every == 0 or step == 1:
                if self._latents is None:
                    self._latents = np.random.default_rng(0).standard_normal(
                        (16, int(g_ema.z_dim))).astype(np.float32)
                images = np.asarray(g_ema(tf.constant(self._latents), noise_mode="const"))
                tiles = _unit(images[..., 0] if images.ndim == 4 else images)
                size = tiles.shape[-1]
                grid = tiles.reshape(4, 4, size, size).transpose(0, 2, 1, 3).reshape(4 * size,
                                                                                     4 * size)
                tf.summary.image("samples", grid[None, ..., None], step=step)
        self._writer.flush()

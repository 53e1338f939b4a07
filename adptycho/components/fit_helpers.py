"""The per-step and per-epoch machinery of ``PtychoModel.fit``: the step's metrics (loss and
relative residual, weighted losses), the group schedule and the release of freed memory."""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["RelativeResidual", "GroupSchedule", "ReleaseFreedMemory", "weighted_losses",
           "update_step_metrics"]


class RelativeResidual(keras.metrics.Metric):
    """Epoch-accumulated relative amplitude residual ``sum (sqrt I - sqrt X)^2 / sum X``.

    The amplitude loss normalised by the counts: about N_pixels / (4 sum X) at the Poisson noise
    floor, 0 for a perfect fit.
    """

    def __init__(self, name="residual", **kwargs):
        super().__init__(name=name, **kwargs)
        self.numerator = self.add_variable(shape=(), initializer="zeros", name="numerator")
        self.denominator = self.add_variable(shape=(), initializer="zeros", name="denominator")

    def update_state(self, numerator, denominator):
        self.numerator.assign_add(numerator)
        self.denominator.assign_add(denominator)

    def result(self):
        return self.numerator / tf.maximum(self.denominator, 1e-30)

    def reset_state(self):
        self.numerator.assign(0.0)
        self.denominator.assign(0.0)


def weighted_losses(losses, sample_weight):
    """(B,) float32 ``losses`` times the (B,) per-pattern ``sample_weight`` (None: unchanged)."""
    if sample_weight is None:
        return losses
    return losses * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])


def update_step_metrics(loss_tracker, residual_tracker, losses, numerator, denominator,
                        ok=None) -> None:
    """Add a step's (B,) ``losses`` to the mean ``loss_tracker`` and its residual sums (scalars)
    to the ``RelativeResidual``; a step the NaN guard rolled back (``ok`` False) adds nothing."""
    if ok is None:
        loss_tracker.update_state(losses)
        residual_tracker.update_state(numerator, denominator)
        return
    weight = tf.broadcast_to(tf.cast(ok, tf.float32), tf.shape(losses))
    loss_tracker.update_state(tf.where(ok, losses, tf.zeros_like(losses)), sample_weight=weight)
    residual_tracker.update_state(tf.where(ok, numerator, 0.0), tf.where(ok, denominator, 0.0))


class GroupSchedule(keras.callbacks.Callback):
    """``model.set_epoch(epoch)`` at every epoch start (group starts, step-size decay)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_epoch(epoch)


class ReleaseFreedMemory(keras.callbacks.Callback):
    """Hand memory freed by the C allocator back to the system at every epoch start (glibc
    keeps the scratch memory of an XLA compilation otherwise: a group that starts mid-fit
    recompiles the step, and the peak resident memory of a streamed 20000-pattern fit went from
    1.03 to 1.40 GB without this). No-op where ``malloc_trim`` does not exist."""

    def __init__(self):
        super().__init__()
        try:
            import ctypes

            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None
        self._first = None

    def on_epoch_begin(self, epoch, logs=None):
        # only after an epoch that compiled the step (the first one, and any epoch that
        # started a parameter group): a trim walks the whole heap, too slow for every epoch
        if self._first is None:
            self._first = epoch
        if self._trim is not None and (epoch == self._first + 1
                                       or getattr(self.model, "recompiled_at", None) == epoch - 1):
            self._trim(0)

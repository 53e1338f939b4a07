"""The NaN guard of a ``PtychoModel``'s training step and its per-epoch callback.

A step whose loss or gradients are not finite (on any replica) changes no parameter (its
gradients are zeroed and its step size is 0); a step whose update leaves a parameter non-finite
is undone (the parameters are restored). Either way the step is counted in the model's
``rollback_count`` and all step sizes are halved (``step_size_factor``); ``NaNGuard`` warns at
the end of the epoch, resets optimiser moments that overflowed, and stops a fit that cannot go on.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.training.distribute import all_replicas_true

__all__ = ["guarded_update", "parameter_update", "NaNGuard"]


def guarded_update(model, active, gradients, losses):
    """``model.apply_group_gradients(active, gradients)`` under the NaN guard.

    Args:
        model: the ``PtychoModel`` (its ``groups``, ``group_optimizers``, ``rollback_count``,
            ``step_size_factor``).
        active: tuple of the active group names.
        gradients: the gradients of the active groups' variables, in group order.
        losses: (B,) float32 losses of the step.

    Returns:
        ``(finite, ok)`` scalar bools: the losses and gradients were finite; the step was kept.
    """
    variables = [v for g in active for v in model.groups[g]]
    finite = tf.reduce_all(tf.math.is_finite(losses))
    for g in gradients:
        finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
    finite = all_replicas_true(finite)
    gradients = [tf.where(finite, g, tf.zeros_like(g)) for g in gradients]
    previous = [tf.identity(v.value) for v in variables]
    rates = {}
    for group in active:
        rate = model.group_optimizers[group]._learning_rate
        rates[group] = tf.identity(rate.value)
        rate.assign(tf.where(finite, rates[group], 0.0))
    model.apply_group_gradients(active, gradients)
    updated_finite = tf.constant(True)
    for v in variables:
        updated_finite = tf.logical_and(updated_finite, tf.reduce_all(tf.math.is_finite(v.value)))
    ok = tf.logical_and(finite, updated_finite)
    for v, old in zip(variables, previous):
        v.assign(tf.where(ok, v.value, old))
    factor = tf.where(ok, 1.0, 0.5)
    for group in active:
        model.group_optimizers[group]._learning_rate.assign(rates[group] * factor)
    model.step_size_factor.assign(model.step_size_factor * factor)
    model.rollback_count.assign_add(1.0 - tf.cast(ok, tf.float32))
    return finite, ok


def parameter_update(model, active):
    """``update(gradients, losses) -> ok`` of a training step: ``apply_group_gradients`` of the
    ``active`` groups under the NaN guard (``ok``: scalar bool, the step was kept), or without
    it when ``model.nan_guard`` is off (``ok`` None: only to measure what the guard costs).
    On the XLA-pieces execution plan the element-wise Adam / guard passes run as one XLA
    cluster, as in a whole-XLA step."""
    def update(gradients, losses):
        if not model.nan_guard:
            model.apply_group_gradients(active, gradients)
            return None
        return guarded_update(model, active, gradients, losses)[1]

    if model.execution_plan.pieces:
        update = tf.function(update, jit_compile=True)
    return update


class NaNGuard(keras.callbacks.Callback):
    """Reports the steps the training step's NaN guard rolled back (a ``RuntimeWarning`` per
    epoch that had any), resets optimiser moments that became non-finite, and stops the fit with
    an error when the step sizes have been halved so often (``max_rollbacks``) that the fit cannot
    go on, instead of returning NaNs."""

    def __init__(self, max_rollbacks: int = 30):
        super().__init__()
        self.max_rollbacks = int(max_rollbacks)
        self._seen = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._seen is None:
            self._seen = float(self.model.rollback_count.numpy())

    def on_epoch_end(self, epoch, logs=None):
        total = float(self.model.rollback_count.numpy())
        new = int(round(total - (self._seen or 0.0)))
        self._seen = total
        if new == 0:
            return
        for optimizer in self.model.group_optimizers.values():
            for v in optimizer.variables:
                value = v.numpy()
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    v.assign(np.where(np.isfinite(value), value, 0).astype(value.dtype))
        factor = float(self.model.step_size_factor.numpy())
        warnings.warn(f"epoch {epoch + 1}: {new} step(s) with a non-finite loss, gradient or "
                      f"parameter were rolled back; step sizes are now {factor:.3g} x the "
                      "schedule", RuntimeWarning, stacklevel=2)
        if total >= self.max_rollbacks:
            raise AdptychoError(
                f"the fit produced non-finite values {int(total)} times (step sizes lowered to "
                f"{factor:.2g} x the schedule); check the data for NaN/inf and the learning rates")

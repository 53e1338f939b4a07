"""The Keras plumbing of ``PtychoModel`` besides its ``train_step``, and the helpers that expose
its components' state and methods under the model's names.

``KerasSteps`` is a mixin for a ``keras.Model`` with ``batch_losses(indices, measured, plan)``,
``call(indices, plan=)``, ``execution_plan``, ``loss_tracker`` / ``residual_tracker`` and
``group_optimizers``: evaluation (``test_step``), prediction (``predict_step``), the logged
metrics, and the build that ``tf.distribute`` would otherwise redo.
"""

from __future__ import annotations

import keras

from adptycho.components.fit_helpers import update_step_metrics, weighted_losses
from adptycho.losses import sum_of_pattern_values
from adptycho.training.distribute import replica_step_logs

__all__ = ["KerasSteps", "delegate", "state"]


def delegate(component_class, component: str, method: str):
    """A model method that calls ``self.<component>.<method>``, documented by the component."""
    def call(self, *args, **kwargs):
        return getattr(getattr(self, component), method)(*args, **kwargs)
    call.__name__ = method
    call.__doc__ = getattr(component_class, method).__doc__
    return call


def state(component: str, name: str, doc: str = None):
    """A read-only model property for ``self.<component>.<name>``."""
    return property(lambda self: getattr(getattr(self, component), name), doc=doc)


class KerasSteps:
    """Evaluation, prediction and metrics of a ``PtychoModel`` (see the module docstring)."""

    def test_step(self, data):
        indices, measured, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        losses, residuals, counts = self.batch_losses(indices, measured, self.execution_plan)
        update_step_metrics(self.loss_tracker, self.residual_tracker,
                            weighted_losses(losses, sample_weight),
                            sum_of_pattern_values(residuals), sum_of_pattern_values(counts))
        return replica_step_logs(self._logs())

    def predict_step(self, data):
        indices, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.call(indices, plan=self.execution_plan)

    def _logs(self):
        return {"loss": self.loss_tracker.result(), "residual": self.residual_tracker.result()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras builds a model under tf.distribute by averaging the first distributed batch
        over the replicas, which fails when a batch is split unevenly (5 patterns on 2
        replicas). Everything here is built already: variables in ``__init__``, optimisers in
        ``compile``."""
        if self.group_optimizers:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        return [self.loss_tracker, self.residual_tracker]

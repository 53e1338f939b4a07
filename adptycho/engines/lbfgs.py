"""Full-batch L-BFGS of the object group behind the engine interface (``training.lbfgs``)."""

from __future__ import annotations

import numpy as np

from adptycho.engines.base import Engine, FitPlan, History, patterns_of

__all__ = ["LBFGSEngine"]


class LBFGSEngine(Engine):
    """Full-batch L-BFGS (``tfp.optimizer.lbfgs_minimize``) of the object; an epoch is one
    iteration. Meant for small parameter vectors (the latent of a ``LatentObject``).

    Args:
        batch_size: patterns per forward pass inside a full-batch evaluation (memory bound).

    The history has the loss after every iteration and the relative amplitude residual
    before and after the fit (through ``model.evaluate``).
    """

    name = "lbfgs"
    groups = ("object",)

    def __init__(self, batch_size: int = 32, refine=("object",)):
        self.check_refine(refine)
        self.batch_size = int(batch_size)

    @classmethod
    def check_refine(cls, refine, name=None) -> None:
        from adptycho.errors import AdptychoError

        if tuple(refine) != ("object",):
            raise AdptychoError(f"the lbfgs optimizer refines the object only, got "
                                f"refine={tuple(refine)}")

    @classmethod
    def from_plan(cls, plan: FitPlan, stage) -> "LBFGSEngine":
        return cls(batch_size=plan.adam_batch_size, refine=plan.refine)

    def fit(self, model, data, epochs: int, *, callbacks=None, sample_weight=None,
            verbose: int = 0, first_epoch: int = 0) -> History:
        from adptycho.training.lbfgs import lbfgs_fit

        self.refuse_sample_weight(sample_weight)
        patterns = patterns_of(data, model)
        indices = np.arange(model.num_patterns)
        before = model.evaluate(indices, patterns, batch_size=self.batch_size, verbose=0,
                                return_dict=True)
        result = lbfgs_fit(model, patterns, groups=("object",), max_iterations=epochs,
                           chunk_iterations=1, batch_size=self.batch_size,
                           verbose=int(verbose > 0))
        after = model.evaluate(indices, patterns, batch_size=self.batch_size, verbose=0,
                               return_dict=True)
        losses = list(result.loss_history[1:]) or [after["loss"]]
        history = History({"loss": losses}, range(first_epoch, first_epoch + len(losses)))
        history.history["residual"] = [before["residual"], after["residual"]]
        return history

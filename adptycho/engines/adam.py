"""Adam (one optimiser per parameter group) as Keras ``fit`` over a ``tf.data`` pipeline."""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from adptycho.engines.base import Engine, FitPlan, History

__all__ = ["AdamEngine"]


class AdamEngine(Engine):
    """Keras ``fit`` of a compiled ``PtychoModel`` (``PtychoModel.compile`` chose the groups,
    step sizes and start epochs) over the deterministic, prefetched ``tf.data`` pipeline of
    ``training.data``: streamed scans are read in batches, never whole.

    Args:
        batch_size: patterns per step.
        seed: the pattern order of epoch ``e`` depends only on ``(seed, e)``.
        training, validation: (K,) pattern indices to fit and to evaluate after every epoch
            (default: all, none).
        strategy: ``tf.distribute.Strategy`` or None.
        checkpoint_dir, fingerprint: save the fit state after every epoch and resume from it
            (``training.checkpoint.FitCheckpoint``); the history covers restored epochs too.
        early_stopping_patience: stop when the (validation) loss has not improved for this
            many epochs and keep the best epoch's parameters.

    Epochs are numbered within the stage (the checkpoint and the step-size schedule count
    from the stage start).
    """

    name = "adam"
    groups = ("object", "probe", "positions", "distance")

    def __init__(self, batch_size: int = 32, seed: int = 0, training=None, validation=None,
                 strategy=None, checkpoint_dir=None, fingerprint: Optional[dict] = None,
                 early_stopping_patience: Optional[int] = None):
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.training = training
        self.validation = np.zeros(0, np.int64) if validation is None else validation
        self.strategy = strategy
        self.checkpoint_dir = checkpoint_dir
        self.fingerprint = fingerprint
        self.early_stopping_patience = early_stopping_patience

    @classmethod
    def from_plan(cls, plan: FitPlan, stage) -> "AdamEngine":
        return cls(batch_size=plan.adam_batch_size, seed=plan.seed, training=plan.training,
                   validation=plan.validation, strategy=plan.strategy,
                   checkpoint_dir=plan.checkpoint_dir, fingerprint=plan.fingerprint,
                   early_stopping_patience=plan.early_stopping_patience)

    def _checkpoint(self, model, verbose):
        """``(checkpoint, first_epoch, restored_logs)`` (no checkpoint: ``(None, 0, {})``)."""
        from adptycho.training.checkpoint import FitCheckpoint
        from adptycho.training.distribute import is_chief

        if self.checkpoint_dir is None:
            return None, 0, {}
        checkpoint = FitCheckpoint(self.checkpoint_dir, self.fingerprint,
                                   write=is_chief(self.strategy))
        first = checkpoint.restore(model)
        if first and verbose:
            print(f"adptycho: resumed from {self.checkpoint_dir} after epoch {first}")
        return checkpoint, first, checkpoint.history

    def _datasets(self, scan, training, first_epoch: int, epochs: int):
        from adptycho.training import data as pipelines

        batch, validation = self.batch_size, self.validation
        if self.strategy is None:
            return (pipelines.training_dataset(scan, training, batch, self.seed, first_epoch,
                                               epochs),
                    pipelines.validation_dataset(scan, validation, batch) if len(validation)
                    else None)
        return (pipelines.distributed_training_dataset(self.strategy, scan, training, batch,
                                                       self.seed, first_epoch, epochs),
                pipelines.distributed_validation_dataset(self.strategy, scan, validation, batch)
                if len(validation) else None)

    def fit(self, model, data, epochs: int, *, callbacks=None, sample_weight=None,
            verbose: int = 0, first_epoch: int = 0) -> History:
        from adptycho.io.scan_data import ScanData

        self.refuse_sample_weight(sample_weight)
        scan = data if isinstance(data, ScanData) else ScanData(
            np.asarray(data, np.float32), model.get_positions())
        training = np.arange(scan.num_patterns) if self.training is None else self.training
        callbacks = list(callbacks or [])
        checkpoint, start, restored = self._checkpoint(model, verbose)
        if checkpoint is not None and checkpoint.finished:
            return History(restored)
        if self.early_stopping_patience is not None:
            monitor = "val_loss" if len(self.validation) else "loss"
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=monitor, patience=int(self.early_stopping_patience),
                restore_best_weights=True))
        if checkpoint is not None:  # last: the saved state includes every callback's changes
            callbacks.append(checkpoint)
        if start >= epochs:
            return History(restored)
        steps = int(np.ceil(len(training) / self.batch_size))
        dataset, validation_data = self._datasets(scan, training, start, epochs)
        history = model.fit(dataset, epochs=epochs, initial_epoch=start, steps_per_epoch=steps,
                            shuffle=False,  # the dataset is already in its seeded order
                            validation_data=validation_data,
                            validation_steps=int(np.ceil(len(self.validation) / self.batch_size))
                            or None, verbose=verbose, callbacks=callbacks)
        if checkpoint is not None:
            return History(checkpoint.history)
        return History({k: list(restored.get(k, [])) + list(v)
                        for k, v in history.history.items()})

"""Resumable fits: epoch checkpoints of a ``PtychoModel`` and its per-group optimisers.

``FitCheckpoint`` is a Keras callback that, at the end of every epoch, writes one
``tf.train.Checkpoint`` holding every model variable (object, probe, positions, distance, NaN
guard state), every group optimiser's state (Adam moments, iteration count, step size), the
number of completed epochs and the per-epoch logs so far. ``tf.train.CheckpointManager`` writes
the new files first and only then updates the index atomically, so a fit killed at any moment
(SIGKILL included) leaves the last completed epoch readable.

A fit restarted with the same arguments calls ``restore`` before ``fit``: it reloads that
state and continues at the next epoch; with the deterministic data order of
``adptycho.training.data`` (the order of epoch ``e`` depends only on the seed and ``e``) the
result equals that of an uninterrupted fit. A checkpoint written by a different fit is refused
with an error naming what differs rather than silently mixed in: the fingerprint
(``adptycho.training.fingerprint``) holds a digest of the pattern values, the positions, mask,
geometry, the initial object and probe and every option.

``ADPTYCHO_KILL_AFTER_CHECKPOINT=k`` (a fault-injection point for tests) makes the process kill
itself with SIGKILL right after the checkpoint of epoch ``k`` is written.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError

__all__ = ["FitCheckpoint"]


KILL_AFTER_CHECKPOINT = "ADPTYCHO_KILL_AFTER_CHECKPOINT"


def _fault_point(completed_epochs: int) -> None:
    """Fault injection for tests: with the environment variable ``ADPTYCHO_KILL_AFTER_CHECKPOINT``
    set to ``k``, the process kills itself with SIGKILL right after the checkpoint of epoch ``k``
    has been written (as a crash or an out-of-memory kill would, with no clean-up), so that a
    resume can be tested without racing a timer."""
    target = os.environ.get(KILL_AFTER_CHECKPOINT)
    if target and completed_epochs == int(target):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _clean(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _tf_variable(v):
    return v.value if hasattr(v, "value") and isinstance(v.value, tf.Variable) else v


class FitCheckpoint(keras.callbacks.Callback):
    """Save the fit state after every epoch; restore it before a restarted fit.

    Args:
        directory: checkpoint directory (created; one checkpoint kept).
        fingerprint: JSON-able description of the fit (``fingerprint.fit_fingerprint``: data
            digest, positions, options, initial state, ...); a restore from a checkpoint with
            another fingerprint raises, naming what differs.
        write: False on the non-chief workers of a multi-worker fit (they restore but do not
            write; the chief's directory is the one checkpoint).
    """

    def __init__(self, directory, fingerprint: dict, write: bool = True):
        super().__init__()
        self.directory = os.fspath(directory)
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)
        self.write = bool(write)
        self.history = {}
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
        self._finished = tf.Variable(False, trainable=False, name="finished")
        self._logs = tf.Variable("{}", dtype=tf.string, trainable=False, name="logs")
        self._fingerprint = tf.Variable(self.fingerprint, dtype=tf.string, trainable=False,
                                        name="fingerprint")
        self._checkpoint = None
        self._manager = None

    def _build(self, model) -> None:
        if self._checkpoint is not None:
            return
        tracked = {"completed_epochs": self._epoch, "finished": self._finished,
                   "logs": self._logs, "fingerprint": self._fingerprint}
        # keys by position, not by name: Keras numbers the names of the layers made in one
        # process (pixel_object, pixel_object_1, ...), the order of the weights is fixed
        for i, v in enumerate(model.weights):
            tracked[f"model_{i:03d}_" + _clean(v.name)] = _tf_variable(v)
        for group, optimizer in sorted(model.group_optimizers.items()):
            for i, v in enumerate(optimizer.variables):
                tracked[f"optimizer_{group}_{i:03d}"] = _tf_variable(v)
        self._checkpoint = tf.train.Checkpoint(**tracked)
        self._manager = tf.train.CheckpointManager(self._checkpoint, self.directory,
                                                   max_to_keep=1)

    def restore(self, model) -> int:
        """Load the latest checkpoint (if any) into ``model`` (compiled); returns the number
        of completed epochs (0 when there is none) and fills ``history``."""
        self._build(model)
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is None:
            return 0
        reader = tf.train.load_checkpoint(latest)
        keys = reader.get_variable_to_shape_map()
        fingerprint_key = next((k for k in keys if k.startswith("fingerprint/")), None)
        stored = reader.get_tensor(fingerprint_key).decode() if fingerprint_key else ""
        if stored != self.fingerprint:
            from adptycho.training.fingerprint import describe_mismatch

            raise AdptychoError(
                f"the checkpoint in {self.directory} was written by a different fit: "
                f"{describe_mismatch(stored, self.fingerprint)}; remove it or give another "
                "checkpoint directory")
        status = self._checkpoint.restore(latest)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as exc:
            raise AdptychoError(f"the checkpoint in {self.directory} does not match this model: "
                                f"{exc}") from None
        self.history = {k: list(v) for k, v in json.loads(self._logs.numpy().decode()).items()}
        return int(self._epoch.numpy())

    @property
    def finished(self) -> bool:
        """True when the restored fit had been ended by early stopping."""
        return bool(self._finished.numpy())

    def _save(self) -> None:
        if not self.write:
            return
        self._logs.assign(json.dumps(self.history))
        self._manager.save(checkpoint_number=int(self._epoch.numpy()))
        _fault_point(int(self._epoch.numpy()))

    def on_train_begin(self, logs=None):
        self._build(self.model)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(np.asarray(value)))
        self._epoch.assign(epoch + 1)
        self._save()

    def on_train_end(self, logs=None):
        if getattr(self.model, "stop_training", False):  # early stopping: the fit is over
            self._finished.assign(True)
            self._save()


"""Data-parallel fits with ``tf.distribute``: strategy by name, chief detection.

* ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local devices (all GPUs; on a
  CPU-only machine, the logical CPU devices made by ``logical_cpu_devices``).
* ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy``, one process per host (or
  several per host), configured by the ``TF_CONFIG`` environment variable. TensorFlow requires
  it to be created before any other TensorFlow operation runs in the process (the CLI does so
  first thing).

Patterns are sharded (each replica takes its share of every global batch, each worker reads only
its own replicas' patterns: ``adptycho.training.data``), gradients are all-reduced (summed; the
per-replica loss is normalised by the global batch so the sum is the single-device gradient),
and object, probe, positions and distance are mirrored variables, identical on every replica.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Union

import tensorflow as tf

from adptycho.errors import AdptychoError

__all__ = ["STRATEGIES", "make_strategy", "is_chief", "logical_cpu_devices", "worker_index",
           "global_batch_mean", "replica_share", "all_replicas_true", "replica_step_logs"]

STRATEGIES = ("none", "mirrored", "multiworker")


def logical_cpu_devices(count: int) -> None:
    """Split the CPU into ``count`` logical devices (for ``MirroredStrategy`` on a CPU-only
    machine). Must run before TensorFlow initialises its devices."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(count))])
    except RuntimeError as exc:
        raise AdptychoError(f"cannot create {count} logical CPU devices after TensorFlow "
                            f"has started: {exc}") from None


def make_strategy(strategy: Union[None, str, tf.distribute.Strategy]):
    """``None``/``"none"`` -> None; ``"mirrored"`` / ``"multiworker"`` -> a new strategy; a
    ``tf.distribute.Strategy`` is returned as is."""
    if strategy is None or strategy == "none":
        return None
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "mirrored":
        devices = tf.config.list_logical_devices("GPU")
        if not devices:
            devices = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if strategy == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise AdptychoError("--strategy multiworker needs the TF_CONFIG environment variable "
                                "(cluster addresses and this worker's index); see README")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as exc:
            raise AdptychoError(f"TF_CONFIG is not valid JSON: {exc}") from None
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as exc:
            raise AdptychoError(f"cannot start the multi-worker strategy: {exc}") from None
    raise AdptychoError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


def worker_index(strategy) -> int:
    """This process's worker index in a multi-worker cluster (0 otherwise)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 0
    return int(resolver.task_id or 0)


def is_chief(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """True for single-process fits and for the chief (worker 0 or ``chief``) of a cluster:
    the process that writes checkpoints and the output file."""
    if strategy is None:
        return True
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 \
        and "chief" not in cluster


# -- inside a replica's training step ---------------------------------------------------------
def global_batch_mean(losses):
    """Mean loss of the global batch. Under ``tf.distribute`` each replica returns
    sum(its losses) / (patterns in the global batch), so the all-reduced (summed) gradients
    equal the single-device gradient of the same batch, however unevenly it was split."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.reduce_mean(losses)
    count = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.size(losses), tf.float32))
    return tf.reduce_sum(losses) / tf.maximum(count, 1.0)


def replica_share(value):
    """``value / replicas``: a whole-batch term (a prior) added on every replica, so that the
    all-reduced (summed) gradients count it once."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return value / float(context.num_replicas_in_sync)


def all_replicas_true(flag):
    """A scalar bool that is True only if it is True on every replica."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return flag
    bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(flag, tf.float32))
    return tf.equal(bad, 0.0)


def replica_step_logs(logs: dict) -> dict:
    """The logs a training step returns: Keras reduces per-replica logs of a multi-worker step
    with a mean over axis 0, which needs a vector: (1,) per replica -> one scalar."""
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs

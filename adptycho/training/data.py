"""``tf.data`` input pipelines for fits: deterministic epochs, streaming, sharding.

A fit draws, for every epoch ``e``, a permutation of its training patterns from the stateless
seed ``(seed, e)``: the data order depends only on the seed and the epoch number, so a fit resumed
at epoch ``e`` sees exactly the batches an uninterrupted fit would have seen. Patterns are read
per batch (``ScanData.read_patterns``: an array slice in memory, an HDF5 read for streamed scans)
and prefetched, so the reader runs ahead of the fit and at most a few batches are in memory.

Under ``tf.distribute`` every global batch is split across the replicas (replica ``r`` of ``R``
takes the patterns ``r, r + R, ...`` of each batch); each input pipeline (one per worker) reads only
the patterns of its own replicas.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.io.scan_data import ScanData

__all__ = ["epoch_order", "split_validation", "training_dataset", "validation_dataset",
           "distributed_training_dataset", "distributed_validation_dataset", "PREFETCH_BATCHES"]

PREFETCH_BATCHES = 4


def epoch_order(indices, seed: int, epoch: int) -> np.ndarray:
    """The order in which ``indices`` (K,) are visited in ``epoch``: a permutation drawn from
    the seed pair (seed, epoch) (NumPy PCG64), independent of any earlier epoch."""
    rng = np.random.default_rng([int(seed) & 0x7FFFFFFF, int(epoch)])
    return np.asarray(indices, np.int64)[rng.permutation(len(indices))]


def split_validation(num_patterns: int, fraction: float, seed: int = 0):
    """Random, seeded split of ``range(num_patterns)`` into sorted training and validation
    index arrays (validation has ``round(fraction * N)`` patterns, at least one when
    fraction > 0, and at least one pattern is left for training)."""
    fraction = float(fraction)
    if not 0 <= fraction < 1:
        raise AdptychoError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return np.arange(num_patterns), np.zeros(0, np.int64)
    count = int(round(fraction * num_patterns))
    count = min(max(count, 1), num_patterns - 1)
    if count < 1:
        raise AdptychoError(f"cannot hold out validation patterns from a scan of {num_patterns}")
    rng = np.random.default_rng([int(seed) & 0x7FFFFFFF, 0x5EED])
    validation = np.sort(rng.choice(num_patterns, size=count, replace=False))
    training = np.setdiff1d(np.arange(num_patterns), validation)
    return training, validation


def _reader(scan: ScanData):
    h, w = scan.detector_shape

    def read(indices):
        indices = np.asarray(indices, np.int64)
        if indices.size == 0:
            return np.zeros((0, h, w), np.float32)
        return scan.read_patterns(indices).astype(np.float32, copy=False)

    def tf_read(indices):
        patterns = tf.numpy_function(read, [indices], tf.float32, stateful=False)
        patterns.set_shape([None, h, w])
        return tf.cast(indices, tf.int32), patterns
    return tf_read


def _finish(scan: ScanData, index_batches: tf.data.Dataset, prefetch: int) -> tf.data.Dataset:
    """Index batches -> ``(indices (b,) int32, patterns (b, H, W) float32)``, prefetched."""
    data = index_batches.map(_reader(scan), num_parallel_calls=1, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    # The buffer sizes are fixed, so tf.data's autotuning has nothing to tune; its model thread
    # also made deleting the iterator at the end of a fit wait up to ~18 s (seen on the tike
    # scan: RootDataset::Iterator::~Iterator waiting for the autotune thread).
    options.autotune.enabled = False
    return data.with_options(options).prefetch(prefetch)


def _split_for_replicas(batches: tf.data.Dataset, replicas: int, local: int, first: int):
    """Each global batch -> ``local`` consecutive parts for replicas first .. first+local-1."""
    if replicas == 1:
        return batches

    def parts(batch):
        return tf.data.Dataset.range(local).map(
            lambda k: tf.strided_slice(batch, [tf.cast(first, tf.int64) + k],
                                       [tf.cast(tf.size(batch), tf.int64)], [replicas]))
    return batches.flat_map(parts)


def _epoch_index_batches(indices, batch_size: int, seed: int, first_epoch: int,
                         last_epoch: int) -> tf.data.Dataset:
    """Dataset of (b,) int64 index batches for epochs first..last-1 (permutations made one
    epoch at a time, so memory does not grow with the number of epochs)."""
    indices = np.asarray(indices, np.int64)
    count = len(indices)

    def order(epoch):
        return epoch_order(indices, seed, int(epoch))

    def one_epoch(epoch):
        permutation = tf.numpy_function(order, [epoch], tf.int64, stateful=False)
        permutation.set_shape([count])
        return tf.data.Dataset.from_tensor_slices(permutation).batch(batch_size)

    return tf.data.Dataset.range(first_epoch, last_epoch).flat_map(one_epoch)


def training_dataset(scan: ScanData, indices, batch_size: int, seed: int, first_epoch: int,
                     epochs: int, prefetch: int = PREFETCH_BATCHES) -> tf.data.Dataset:
    """All training batches of epochs ``first_epoch .. epochs - 1``, in order.

    Args:
        scan: the data (in memory or streamed).
        indices: (K,) int training pattern indices.
        batch_size: patterns per step (the last batch of an epoch may be smaller).
        seed, first_epoch, epochs: epoch ``e`` visits ``epoch_order(indices, seed, e)``.

    Returns:
        ``tf.data.Dataset`` of ``(indices (b,) int32, patterns (b, H, W) float32)``; use with
        ``steps_per_epoch = ceil(K / batch_size)``.
    """
    batches = _epoch_index_batches(indices, batch_size, seed, first_epoch, epochs)
    return _finish(scan, batches, prefetch)


def validation_dataset(scan: ScanData, indices, batch_size: int,
                       prefetch: int = PREFETCH_BATCHES) -> tf.data.Dataset:
    """The validation patterns ``indices`` in fixed order (re-iterated every epoch)."""
    batches = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64)).batch(batch_size)
    return _finish(scan, batches, prefetch)


def _pipeline_layout(strategy, context):
    replicas = strategy.num_replicas_in_sync
    pipelines = max(context.num_input_pipelines, 1)
    local = replicas // pipelines
    return replicas, local, context.input_pipeline_id * local


def distributed_training_dataset(strategy, scan: ScanData, indices, batch_size: int, seed: int,
                                 first_epoch: int, epochs: int,
                                 prefetch: int = PREFETCH_BATCHES):
    """``training_dataset`` distributed by ``strategy``: every global batch (the same batches
    as without a strategy) is split across the replicas, each worker reading only its share."""

    def make(context):
        replicas, local, first = _pipeline_layout(strategy, context)
        batches = _epoch_index_batches(indices, batch_size, seed, first_epoch, epochs)
        return _finish(scan, _split_for_replicas(batches, replicas, local, first), prefetch)

    return strategy.distribute_datasets_from_function(make)


def distributed_validation_dataset(strategy, scan: ScanData, indices, batch_size: int,
                                   prefetch: int = PREFETCH_BATCHES):
    """``validation_dataset`` split across the replicas like the training batches."""

    def make(context):
        replicas, local, first = _pipeline_layout(strategy, context)
        batches = tf.data.Dataset.from_tensor_slices(
            np.asarray(indices, np.int64)).batch(batch_size)
        return _finish(scan, _split_for_replicas(batches, replicas, local, first), prefetch)

    return strategy.distribute_datasets_from_function(make)


def steps_per_execution_for(steps_per_epoch: int, limit: int = 64) -> int:
    """Largest divisor of ``steps_per_epoch`` not above ``limit``: compiled multi-step calls
    then never run across an epoch boundary of a dataset that spans several epochs."""
    for k in range(min(limit, steps_per_epoch), 0, -1):
        if steps_per_epoch % k == 0:
            return k
    return 1

